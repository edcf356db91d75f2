"""Knowledge distillation: a digital teacher's soft targets for MTJ students.

The student's loss (``TrainConfig.distillation``, Hinton, Vinyals & Dean, arXiv 1503.02531) is

    L = (1 - alpha) CE(y, softmax(s)) + alpha T^2 KL(softmax(t / T) || softmax(s / T))

with s the student's and t the teacher's logits on the same training sample.
"""

from __future__ import annotations

import numpy as np

from ..devices import get_model
from ..errors import ConfigError
from .config import DIGITAL_MODES, TrainConfig
from .numpy_engine import NoiseSource, NumpyEngine


def teacher_logits(dataset, config: TrainConfig, network=0):
    """Train one digital teacher (``config.grad_mode`` tanh, relu or sigmoid) with the reference
    engine and return its logits (n_train, n_classes) on ``dataset.x_train``, with its test
    accuracy. One BLAS thread, as :func:`spingpu.train` uses for this engine: with several, OpenBLAS
    rounds MNIST-size products differently, and the teacher (and every student distilled from it)
    would depend on the thread count of the process or Dask worker that trains it."""
    from .trainer import _one_blas_thread, _train_batched

    if config.grad_mode not in DIGITAL_MODES:
        raise ConfigError("teacher grad_mode", f"{config.grad_mode!r}; a teacher is digital: {', '.join(DIGITAL_MODES)}")
    if config.distillation is not None:
        raise ConfigError("teacher distillation", "a teacher is trained on the labels, without distillation")
    with _one_blas_thread():
        metrics, _, engine = _train_batched(NumpyEngine, dataset, config, np.array([network]),
                                            get_model("stt_compact"), None, False)
        silent = NoiseSource(config.seed, engine.networks, 0, 0, 0, False)  # digital layers draw no noise
        logits, _ = engine.forward(dataset.x_train, silent)
    return logits[0].astype(np.float64), float(metrics["test_acc"][0])
