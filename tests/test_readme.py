"""The README says what the code does: its Python examples run, and its command-line synopsis names
every option of every command, and no other."""

import argparse
import os
import re
import subprocess
import sys
from pathlib import Path

from spingpu.cli.main import build_parser

README = (Path(__file__).resolve().parents[1] / "README.md").read_text()

# Sizes of the README's examples that a test cannot afford (the text, its stand-in); each must occur.
# (The NumPy engine: the fused one would compile a trainer for the example's network, ~30 s.)
SMALLER = [("n_networks=1000)", "n_networks=3, backend='numpy')"), ("epochs=200", "epochs=2"),
           ("networks=np.arange(1000)", "networks=np.arange(7)"), ("networks = 40", "networks = 3"),
           ("epochs = 100", "epochs = 2"), ("workers=2)", "workers=1, backend='numpy')")]


def fenced(language):
    """The README's ```language blocks, in order."""
    return re.findall(rf"^```{language}\n(.*?)^```", README, flags=re.MULTILINE | re.DOTALL)


def test_the_python_examples_run(tmp_path):
    """In a folder of their own (the study example writes its file and store), and with the model
    registered in the script only: the study's Dask workers, processes of their own, get it from
    the task (spingpu.devices.models.registered_models)."""
    blocks = fenced("python")
    assert len(blocks) >= 3
    script = "\n".join(blocks)
    for text, stand_in in SMALLER:
        assert text in script, f"the README no longer has {text!r}: update SMALLER"
        script = script.replace(text, stand_in)
    # One process of its own: the examples register a model under a global name.
    done = subprocess.run([sys.executable, "-c", script + "\nprint('examples ran')"], capture_output=True,
                          text=True, cwd=tmp_path, env={**os.environ, "PYTHONWARNINGS": "error::SyntaxWarning"}, timeout=600)
    assert done.returncode == 0 and done.stdout.rstrip().endswith("examples ran"), done.stderr[-3000:]


def synopsis():
    """{command: text of its synopsis} from the README's "Command line" section."""
    section = README.split("## Command line\n", 1)[1].split("\nDefaults", 1)[0]
    parts = re.split(r"^    spingpu (\w+) ?", section, flags=re.MULTILINE)[1:]
    return dict(zip(parts[::2], parts[1::2]))


def parsers():
    parser = build_parser()
    (commands,) = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
    return commands.choices


def test_the_command_line_synopsis_names_every_option_and_only_those():
    """Each option of each command is written in its synopsis (by one of its names), and each name
    written there is an option of that command."""
    documented, commands = synopsis(), parsers()
    assert sorted(documented) == sorted(commands)
    for name, parser in commands.items():
        written = set(re.findall(r"(?<=[\[ |])--?[a-z][a-z0-9-]*", documented[name]))
        assert written <= set(parser._option_string_actions), (name, sorted(written - set(parser._option_string_actions)))
        missing = [a.option_strings for a in parser._actions
                   if a.option_strings and a.dest != "help" and not written & set(a.option_strings)]
        assert not missing, (name, missing)
