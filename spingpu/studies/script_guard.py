"""A study started at the top level of a script, where Dask's local worker processes would run it again.

Dask starts a local cluster's worker processes by spawning (``distributed.worker.multiprocessing-
method``, ``spawn`` by default), and a spawned Python process imports the main script again, as
``__mp_main__``, before it runs anything (Python's multiprocessing guidelines: "safe importing of
main module"). A script that calls :func:`~spingpu.studies.run_study` outside
``if __name__ == "__main__":`` therefore starts the study again in every worker as it starts: the
run's lock then says another run is writing the store, the workers die and Dask reports
``Nanny failed to start`` under a long traceback. :func:`check_main_guard` finds such a call
before anything starts and says what to do in one line.
"""

from __future__ import annotations

import ast
import sys

from ..errors import ConfigError


def _is_main_test(test):
    """True for the test ``__name__ == "__main__"`` (either way round), alone or as a part of an
    ``and`` (``if __name__ == "__main__" and len(sys.argv) > 1:``)."""
    if isinstance(test, ast.BoolOp) and isinstance(test.op, ast.And):
        return any(_is_main_test(value) for value in test.values)
    if not (isinstance(test, ast.Compare) and len(test.ops) == 1 and isinstance(test.ops[0], ast.Eq)):
        return False
    sides = {type(node).__name__: node for node in (test.left, test.comparators[0])}
    name, constant = sides.get("Name"), sides.get("Constant")
    return name is not None and constant is not None and name.id == "__name__" and constant.value == "__main__"


def guarded(source, line):
    """Whether line ``line`` of the Python ``source`` lies inside an ``if __name__ == "__main__":``
    block (None where the source does not parse)."""
    try:
        tree = ast.parse(source)
    except (SyntaxError, ValueError):
        return None
    return any(isinstance(node, ast.If) and _is_main_test(node.test) and node.lineno <= line <= node.end_lineno
               for node in ast.walk(tree))


def _respawned_main_file():
    """The main script's path where a spawned process imports it again, else None (an interactive
    session or notebook, ``python -c``, ``python -m package``: multiprocessing runs no
    ``__main__`` module of a package again)."""
    import multiprocessing.spawn

    try:
        data = multiprocessing.spawn.get_preparation_data("spingpu")
    except Exception:  # an embedded interpreter without what it reads: nothing to say
        return None
    if "init_main_from_path" in data:
        return data["init_main_from_path"]
    name = data.get("init_main_from_name")
    if name and name != "__main__" and not name.endswith(".__main__"):
        return getattr(sys.modules.get("__main__"), "__file__", None)
    return None


def check_main_guard(field="run_study"):
    """ConfigError where this call comes from the top level of a main script that Dask's spawned
    worker processes import again (:func:`_respawned_main_file`), outside an
    ``if __name__ == "__main__":`` block; nothing where the workers are forked or the call is
    guarded, in a function called from a guarded line, or not from a script."""
    import dask

    if dask.config.get("distributed.worker.multiprocessing-method", "spawn") == "fork":
        return
    path = _respawned_main_file()
    main = sys.modules.get("__main__")
    if path is None or main is None:
        return
    frame = sys._getframe(1)
    while frame is not None and not (frame.f_globals is main.__dict__ and frame.f_code.co_name == "<module>"):
        frame = frame.f_back
    if frame is None:
        return
    try:
        with open(frame.f_code.co_filename, encoding="utf-8") as handle:
            source = handle.read()
    except (OSError, UnicodeDecodeError):
        return
    if guarded(source, frame.f_lineno) is False:
        raise ConfigError(field, f"called at the top level of {frame.f_code.co_filename} (line {frame.f_lineno}), "
                                 "which each Dask worker process imports again as it starts, and would start the "
                                 'study again; call it under if __name__ == "__main__": (or run the study with '
                                 "spingpu run STUDY.toml)")
