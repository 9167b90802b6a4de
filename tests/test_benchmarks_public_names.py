"""The benchmarks time what training runs, reached through public names: a private name of stages/
imported by a script is code the trainer may change without the benchmark noticing."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SCRIPTS = sorted((REPO / "scripts").glob("*.py"))


def private_stage_names(source: str) -> list[str]:
    """Names starting with '_' that a module imports from stages/, or reads off a stages module."""
    tree = ast.parse(source)
    found, stage_modules = [], set()
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("stages"):
            for alias in node.names:
                if alias.name.startswith("_"):
                    found.append(f"{node.module}.{alias.name}")
                stage_modules.add(alias.asname or alias.name)
        elif isinstance(node, ast.Import):
            stage_modules.update(a.asname or a.name for a in node.names if a.name.startswith("stages"))
    for node in ast.walk(tree):
        if (isinstance(node, ast.Attribute) and node.attr.startswith("_") and not node.attr.startswith("__")
                and isinstance(node.value, ast.Name) and node.value.id in stage_modules):
            found.append(f"{node.value.id}.{node.attr}")
    return found


def test_the_check_sees_a_private_import():
    assert private_stage_names("from stages.stage1 import _cached, heads_loss\n") == ["stages.stage1._cached"]
    assert private_stage_names("from stages import stage1\nstage1._assemble(1)\n") == ["stage1._assemble"]
    assert private_stage_names("from stages.stage1 import heads_loss\n") == []


@pytest.mark.parametrize("script", SCRIPTS, ids=lambda p: p.name)
def test_scripts_use_only_public_names_of_stages(script):
    assert private_stage_names(script.read_text()) == []
