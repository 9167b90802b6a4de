"""Code comments point only at what ships with the repository: a reader of a clone has no copy of
the design notes or style guides the project was planned from."""

from __future__ import annotations

import re
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
OUTSIDE = re.compile(r"\b(DESIGN|STYLE)(\.md)?\s*(section|§|item)|\.\./shared|\bshared/(DESIGN|STYLE|seeds)")
CODE = [p for folder in ("data", "world_model", "heads", "stages", "scripts", "tests")
        for p in (REPO / folder).rglob("*") if p.suffix in (".py", ".sh", ".toml", ".yaml")]


def test_the_pattern_catches_outside_references():
    for text in ("(DESIGN section 4)", "see DESIGN §7", "STYLE item 5", "../shared/DESIGN.md"):
        assert OUTSIDE.search(text), text
    assert not OUTSIDE.search("the design of the heads; style of the config")


def test_code_does_not_point_outside_the_repository():
    hits = [f"{p.relative_to(REPO)}:{n}" for p in CODE if p != Path(__file__)
            for n, line in enumerate(p.read_text().splitlines(), 1) if OUTSIDE.search(line)]
    assert hits == []
