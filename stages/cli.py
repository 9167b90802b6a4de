"""Short command-line aliases shared by the stage entry points (``--resume latest``)."""

from __future__ import annotations

ALIASES = {"--resume": "checkpoint.resume"}
"""Alias -> config field; ``--resume latest|none|PATH`` is the spelling users expect."""


def expand_aliases(argv: list[str]) -> list[str]:
    """Rewrite ``--alias VALUE`` and ``--alias=VALUE`` into ``section.field=VALUE`` overrides."""
    out, i = [], 0
    while i < len(argv):
        name, eq, value = argv[i].partition("=")
        if name in ALIASES:
            if not eq:
                if i + 1 >= len(argv):
                    raise SystemExit(f"{name} needs a value")
                value, i = argv[i + 1], i + 1
            out.append(f"{ALIASES[name]}={value}")
        else:
            out.append(argv[i])
        i += 1
    return out
