"""Test session set-up.

CUDA kernels run in Numba's CUDA simulator in this process (the variable must be set before
numba.cuda is first imported). PTX compilation needs the real numba-cuda, so those tests run
``spingpu info --check-kernels`` in a subprocess without the variable.
"""

import os

os.environ["NUMBA_ENABLE_CUDASIM"] = "1"

import numba  # noqa: E402

numba.config.reload_config()
assert numba.config.ENABLE_CUDASIM, "the CUDA simulator must be on before numba.cuda is imported"
