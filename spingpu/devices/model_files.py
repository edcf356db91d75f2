"""Device models registered by a Python file that a study names (``[model] module = "models.py"``),
so that ``spingpu run`` (a process of its own) trains a model of the user's: the file is run once
per process and contents, its :func:`spingpu.register_model` calls register the models, and the
study's Dask workers get them with each task (:func:`spingpu.devices.models.registered_models`).
The file is not imported as a module of its name: its functions pickle by value, so a worker
needs neither the file nor a path to it."""

from __future__ import annotations

import hashlib
import importlib.util

from ..errors import ConfigError, one_line
from . import models

_RUN = {}  # resolved path -> (sha256 of the contents run, names of the models it registered)


def run_model_file(path, field="model.module"):
    """Run the Python file at ``path`` (absolute) unless this process ran these contents of it
    already; the models an earlier version of it registered are unregistered first, so that an
    edited file registers its models anew. ConfigError naming ``field`` where the file cannot be
    read or fails."""
    try:
        with open(path, "rb") as handle:
            source = handle.read()
    except OSError as err:
        raise ConfigError(field, f"cannot read {path}: {err.strerror or err}") from None
    digest = hashlib.sha256(source).hexdigest()
    done = _RUN.get(path)
    if done is not None and done[0] == digest:
        return
    for name in done[1] if done else ():
        models.unregister_model(name)
    before = dict(models._REGISTRY)
    spec = importlib.util.spec_from_loader(f"spingpu_model_file_{digest[:16]}", loader=None, origin=path)
    module = importlib.util.module_from_spec(spec)
    module.__file__ = path
    try:
        code = compile(source, path, "exec")  # a SyntaxError names its line itself
        exec(code, module.__dict__)  # noqa: S102 (the user's own file, as a study names it)
    except BaseException as err:
        for name, model in list(models._REGISTRY.items()):  # what it registered before it failed goes again
            if before.get(name) is not model:
                models.unregister_model(name)
        if not isinstance(err, Exception):  # Ctrl-C
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
    _RUN[path] = (digest, [name for name, model in models._REGISTRY.items() if before.get(name) is not model])
