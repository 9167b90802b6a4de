"""Config <-> text: field docs and `--help` (docstring_parser), plain dicts (pydantic), TOML (tomli_w).

TOML cannot spell `None`: it is saved as "none", which the loader reads back as None for Optional fields.
"""

from __future__ import annotations

import dataclasses
import inspect
import json
import os
import textwrap
import typing
from pathlib import Path
from typing import Any

import docstring_parser
import tomli_w
from pydantic_core import to_jsonable_python


def field_docs(cls: type) -> dict[str, str]:
    """Field name -> attribute docstring, inherited fields included, so `--help` documents every field."""
    docs: dict[str, str] = {}
    for base in reversed(cls.__mro__):
        if dataclasses.is_dataclass(base):
            params = docstring_parser.parse_from_object(base).params
            docs.update({p.arg_name: inspect.cleandoc(p.description or "") for p in params if p.args[0] == "attribute"})
    return docs


def config_fields(cls: type) -> list[tuple[dataclasses.Field, Any, bool]]:
    """(field, annotation, is a nested section) for each init field: the walk help and checks share."""
    hints = typing.get_type_hints(cls)
    fields = [(f, hints.get(f.name, f.type)) for f in dataclasses.fields(cls) if f.init]
    return [(f, tp, isinstance(tp, type) and dataclasses.is_dataclass(tp)) for f, tp in fields]


def missing_docstrings(cls: type, prefix: str = "") -> list[str]:
    """Dotted names of fields without a docstring; tests require none, since `--help` shows them."""
    docs, missing = field_docs(cls), []
    for f, tp, nested in config_fields(cls):
        missing += [] if f.name in docs else [prefix + f.name]
        missing += missing_docstrings(tp, f"{prefix}{f.name}.") if nested else []
    return missing


def type_name(tp: Any) -> str:
    """Readable annotation (`int`, `tuple[int, ...]`, `str | None`) for help and error messages."""
    return tp.__name__ if isinstance(tp, type) and not typing.get_args(tp) else str(tp).replace("typing.", "")


def default_repr(f: dataclasses.Field) -> str:
    """The default as help shows it; a factory is called, so `field(default_factory=dict)` shows `{}`."""
    if f.default is not dataclasses.MISSING:
        return repr(f.default)
    return "<required>" if f.default_factory is dataclasses.MISSING else repr(f.default_factory())


def help_text(cls: type, prefix: str = "", width: int = 100) -> str:
    """Every field as `name (type, default)` plus its docstring, sections after plain fields, for --help."""
    doc = inspect.cleandoc(cls.__doc__ or "").split("\n\n")[0]
    lines = [f"{f'[{prefix[:-1]}]' if prefix else cls.__name__}  {doc}".rstrip()]
    docs, fields = field_docs(cls), config_fields(cls)
    for f, tp, _ in (entry for entry in fields if not entry[2]):
        lines.append(f"  {prefix}{f.name} ({type_name(tp)}, default {default_repr(f)})")
        text = " ".join(docs.get(f.name, "(undocumented)").split())
        lines += textwrap.wrap(text, width=width, initial_indent=" " * 6, subsequent_indent=" " * 6)
    for f, tp, _ in (entry for entry in fields if entry[2]):
        lines += ["", help_text(tp, f"{prefix}{f.name}.", width)]
    return "\n".join(lines)


def to_dict(config: Any) -> dict[str, Any]:
    """Nested plain dict of a config dataclass (tuples -> lists, paths -> str) for runs, checkpoints, trackers."""
    if not (dataclasses.is_dataclass(config) and not isinstance(config, type)):
        raise TypeError(f"to_dict expects a dataclass instance, got {type(config).__name__}")
    return to_jsonable_python(config, inf_nan_mode="constants")


def _none_as_text(value: Any) -> Any:
    """Replace None by "none" (TOML has no null) so Optional fields survive the round trip."""
    if isinstance(value, dict):
        return {k: _none_as_text(v) for k, v in value.items()}
    return [_none_as_text(v) for v in value] if isinstance(value, list) else "none" if value is None else value


def save_config(config: Any, path: str | os.PathLike) -> Path:
    """Write the resolved config as TOML (.toml) or JSON (.json) atomically; TOML loads back equal."""
    out = Path(path)
    if out.suffix.lower() not in (".toml", ".json"):
        raise ValueError(f"save_config: unknown format {out.suffix!r} for {out}; use .toml or .json")
    data = to_dict(config)
    text = tomli_w.dumps(_none_as_text(data)) if out.suffix.lower() == ".toml" else json.dumps(data, indent=2) + "\n"
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(f".{out.name}.{os.getpid()}.tmp")
    try:
        with open(tmp, "w", encoding="utf-8") as handle:
            handle.write(text)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, out)
    finally:
        tmp.unlink(missing_ok=True)
    return out
