"""``python -m spingpu``: the ``spingpu`` command."""

import sys

from spingpu.cli.main import main

sys.exit(main())
