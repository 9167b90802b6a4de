"""Console commands: every [project.scripts] entry names a function of stages.entry, and each
command's --help runs without the repository being put on sys.path by hand."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from stages import entry

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10
    import tomli as tomllib  # type: ignore[no-redef]

SCRIPTS = tomllib.loads((Path(__file__).resolve().parents[1] / "pyproject.toml").read_text())["project"]["scripts"]


def test_every_command_is_declared_and_points_at_entry():
    assert set(SCRIPTS) == set(entry.COMMANDS)
    for target in SCRIPTS.values():
        module, function = target.split(":")
        assert module == "stages.entry" and callable(getattr(entry, function))


@pytest.mark.parametrize("command", sorted(SCRIPTS))
def test_help_of_every_command(command, monkeypatch, capsys):
    monkeypatch.setattr(sys, "argv", [command, "--help"])
    with pytest.raises(SystemExit) as done:
        getattr(entry, SCRIPTS[command].split(":")[1])()
    assert done.value.code in (0, None)
    assert "usage" in capsys.readouterr().out.lower()


def test_a_result_is_not_an_exit_status(monkeypatch):
    """A main that returns its metrics must still exit 0 (sys.exit(dict) would exit 1)."""
    monkeypatch.setattr(entry, "import_module", lambda name: type("M", (), {"main": staticmethod(lambda: {"x": 1})}))
    assert entry.stage1() == 0
    monkeypatch.setattr(entry, "import_module", lambda name: type("M", (), {"main": staticmethod(lambda: 3)}))
    assert entry.validate() == 3
