"""Device models registered by a Python file that a study names (``[model] module = "models.py"``),
so that ``spingpu run`` (a process of its own) trains a model of the user's: the file is run once
per process and contents, its :func:`spingpu.register_model` calls register the models, and the
study's Dask workers get them with each task (:func:`spingpu.devices.models.registered_models`).
The file is not imported as a module of its name: its functions pickle by value, so a worker
needs neither the file nor a path to it (nor what the file imports from its own folder, which is
not on ``sys.path``: a model file is self-contained, importing installed packages only)."""

from __future__ import annotations

import hashlib
import types

from ..errors import ConfigError, one_line, os_error_reason
from . import models

_RUN = {}  # sha256 of a file's contents -> {name: model} that running them registered


def registers_text(names):
    """What a model file registered, for a message: ``registers 'a', 'b'`` or ``registers no model``."""
    return f"registers {', '.join(map(repr, names))}" if names else "registers no model"


def run_model_file(path, field="model.module"):
    """Run the Python file at ``path`` (absolute) unless this process ran the same contents
    already (this file, or a copy of it in another study folder: its models are this process's
    models again). A file may register a name that a model file registered before (an edited file
    registers its models anew); one that fails leaves the models as they were. Returns the names
    of the models it registers. ConfigError naming ``field`` where the file cannot be read or
    fails, with its line."""
    try:
        with open(path, "rb") as handle:
            source = handle.read()
    except OSError as err:
        raise ConfigError(field, f"cannot read {path}: {os_error_reason(err)}") from None
    digest = hashlib.sha256(source).hexdigest()
    if digest in _RUN:
        models._REGISTRY.update(_RUN[digest])
        return tuple(_RUN[digest])
    before = dict(models._REGISTRY)
    module = types.ModuleType(f"spingpu_model_file_{digest[:16]}")  # not in sys.modules: pickled by value
    module.__file__ = path
    models._FILE_MODELS = frozenset(name for made in _RUN.values() for name in made)
    try:
        code = compile(source, path, "exec")  # a SyntaxError names its line itself
        exec(code, module.__dict__)  # noqa: S102 (the user's own file, as a study names it)
    except BaseException as err:
        models._REGISTRY.clear()  # what it registered before it failed goes again
        models._REGISTRY.update(before)
        if not isinstance(err, Exception):  # Ctrl-C, or the file's sys.exit()
            raise
        if isinstance(err, ConfigError):
            raise ConfigError(field, f"{path}: {err}") from None
        where = f" (line {err.lineno})" if isinstance(err, SyntaxError) and err.lineno else ""
        tb = err.__traceback__
        while tb is not None:
            if tb.tb_frame.f_code.co_filename == path:
                where = f" (line {tb.tb_lineno})"
            tb = tb.tb_next
        message = err.msg if isinstance(err, SyntaxError) else err
        raise ConfigError(field, one_line(f"{path}{where}: {type(err).__name__}: {message}")) from None
    finally:
        models._FILE_MODELS = frozenset()
    _RUN[digest] = {name: model for name, model in models._REGISTRY.items() if before.get(name) is not model}
    return tuple(_RUN[digest])
