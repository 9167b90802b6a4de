"""Config <-> text: field docstrings, `--help` text, plain dicts and TOML/JSON files.

Kept apart from `config.py` (which parses overrides) so each file stays small. The TOML writer is
hand-rolled because `tomllib` only reads and `tomli_w` is not a dependency; config values are
scalars, arrays and nested tables, which is all it needs to cover. `None` cannot be spelt in TOML,
so it is written as the string "none", which the loader parses back to None for Optional fields.
"""

from __future__ import annotations

import ast
import dataclasses
import functools
import inspect
import json
import logging
import math
import os
import re
import tempfile
import textwrap
import typing
from enum import Enum
from pathlib import Path, PurePath
from typing import Any

logger = logging.getLogger(__name__)

_BARE_KEY = re.compile(r"^[A-Za-z0-9_-]+$")


@functools.cache
def _own_field_docs(cls: type) -> dict[str, str]:
    """Docstrings of the annotated assignments written in `cls` itself (string right after it)."""
    try:
        source = textwrap.dedent(inspect.getsource(cls))
    except (OSError, TypeError):  # dynamically created class: no source to read
        return {}
    tree = ast.parse(source)
    node = next((n for n in tree.body if isinstance(n, ast.ClassDef)), None)
    if node is None:
        return {}
    docs: dict[str, str] = {}
    body = node.body
    for current, following in zip(body, body[1:]):
        if (
            isinstance(current, ast.AnnAssign)
            and isinstance(current.target, ast.Name)
            and isinstance(following, ast.Expr)
            and isinstance(following.value, ast.Constant)
            and isinstance(following.value.value, str)
        ):
            docs[current.target.id] = inspect.cleandoc(following.value.value)
    return docs


def field_docs(cls: type) -> dict[str, str]:
    """Field name -> docstring for a dataclass, including fields inherited from base dataclasses."""
    docs: dict[str, str] = {}
    for base in reversed(cls.__mro__):
        if dataclasses.is_dataclass(base):
            docs.update(_own_field_docs(base))
    return docs


def resolved_hints(cls: type) -> dict[str, Any]:
    """Type hints with string annotations (`from __future__ import annotations`) resolved."""
    try:
        return typing.get_type_hints(cls)
    except (NameError, TypeError):  # class defined in a local scope: fall back to raw annotations
        return {f.name: f.type for f in dataclasses.fields(cls)}


def missing_docstrings(cls: type, prefix: str = "") -> list[str]:
    """Dotted names of fields without a docstring (every config field must have one); for tests."""
    docs, hints, missing = field_docs(cls), resolved_hints(cls), []
    for f in dataclasses.fields(cls):
        if not f.init:
            continue
        if f.name not in docs:
            missing.append(prefix + f.name)
        tp = hints.get(f.name)
        if isinstance(tp, type) and dataclasses.is_dataclass(tp):
            missing.extend(missing_docstrings(tp, prefix + f.name + "."))
    return missing


def type_name(tp: Any) -> str:
    """Readable name of an annotation: `int`, `tuple[int, ...]`, `str | None`."""
    if isinstance(tp, type) and not typing.get_args(tp):
        return tp.__name__
    return str(tp).replace("typing.", "")


def _default_repr(f: dataclasses.Field) -> str:
    if f.default is not dataclasses.MISSING:
        return repr(f.default)
    if f.default_factory is not dataclasses.MISSING:  # type: ignore[misc]
        return "<section>" if dataclasses.is_dataclass(f.default_factory) else repr(f.default_factory())  # type: ignore[misc]
    return "<required>"


def help_text(cls: type, prefix: str = "", width: int = 100) -> str:
    """Every field as `name (type, default): docstring`, sections in order, for a launcher's --help."""
    lines: list[str] = []
    doc = inspect.cleandoc(cls.__doc__ or "").split("\n\n")[0]
    title = f"[{prefix.rstrip('.')}]" if prefix else cls.__name__
    lines.append(f"{title}  {doc}".rstrip())
    docs, hints = field_docs(cls), resolved_hints(cls)
    nested: list[tuple[str, type]] = []
    for f in dataclasses.fields(cls):
        if not f.init:
            continue
        tp = hints.get(f.name, f.type)
        if isinstance(tp, type) and dataclasses.is_dataclass(tp):
            nested.append((f.name, tp))
            continue
        lines.append(f"  {prefix}{f.name} ({type_name(tp)}, default {_default_repr(f)})")
        text = " ".join(docs.get(f.name, "(undocumented)").split())
        lines.extend(textwrap.wrap(text, width=width, initial_indent="      ", subsequent_indent="      "))
    for name, sub in nested:
        lines.append("")
        lines.append(help_text(sub, f"{prefix}{name}.", width))
    return "\n".join(lines)


def _plain(value: Any) -> Any:
    """Convert a config value into JSON/TOML-friendly Python (tuples -> lists, paths -> str)."""
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {f.name: _plain(getattr(value, f.name)) for f in dataclasses.fields(value)}
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if isinstance(value, PurePath):
        return str(value)
    if isinstance(value, Enum):
        return value.value
    return value


def to_dict(config: Any) -> dict[str, Any]:
    """Nested plain dict of a config dataclass (the form saved in runs, checkpoints and trackers)."""
    if not (dataclasses.is_dataclass(config) and not isinstance(config, type)):
        raise TypeError(f"to_dict expects a dataclass instance, got {type(config).__name__}")
    return _plain(config)


def _toml_key(key: str) -> str:
    return key if _BARE_KEY.match(key) else json.dumps(key)


def _toml_value(value: Any) -> str:
    if value is None:
        return '"none"'
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        if math.isnan(value):
            return "nan"
        if math.isinf(value):
            return "inf" if value > 0 else "-inf"
        return repr(value)
    if isinstance(value, str):
        return json.dumps(value, ensure_ascii=False)  # JSON escapes are valid TOML basic-string escapes
    if isinstance(value, list):
        return "[" + ", ".join(_toml_value(v) for v in value) + "]"
    if isinstance(value, dict):
        return "{ " + ", ".join(f"{_toml_key(k)} = {_toml_value(v)}" for k, v in value.items()) + " }"
    raise TypeError(f"cannot write {type(value).__name__} value {value!r} to TOML")


def _dump_section(config: Any, table: str) -> list[str]:
    """TOML lines of one dataclass: its plain fields, then one [table] per nested dataclass field.

    Walking the dataclass (not a plain dict) tells sections apart from dict-valued fields, which are
    written as inline tables.
    """
    lines: list[str] = []
    sections: list[tuple[str, Any]] = []
    for f in dataclasses.fields(config):
        value = getattr(config, f.name)
        if dataclasses.is_dataclass(value) and not isinstance(value, type):
            sections.append((f.name, value))
        else:
            lines.append(f"{_toml_key(f.name)} = {_toml_value(_plain(value))}")
    if table and lines:
        lines.insert(0, f"[{table}]")
    for name, sub in sections:
        sub_lines = _dump_section(sub, f"{table}.{_toml_key(name)}" if table else _toml_key(name))
        if sub_lines:
            lines.extend(["", *sub_lines] if lines else sub_lines)
    return lines


def dumps_toml(config: Any) -> str:
    """TOML text of a config dataclass instance."""
    return "\n".join(_dump_section(config, "")) + "\n"


def save_config(config: Any, path: str | os.PathLike) -> Path:
    """Write the resolved config as TOML (.toml) or JSON (.json), atomically; returns the path.

    The TOML form loads back with `load_config(type(config), path, [])` to an equal config.
    """
    out = Path(path)
    suffix = out.suffix.lower()
    if suffix == ".json":
        text = json.dumps(to_dict(config), indent=2, sort_keys=False) + "\n"
    elif suffix == ".toml":
        text = dumps_toml(config)
    else:
        raise ValueError(f"save_config: unknown format {suffix!r} for {out}; use .toml or .json")
    out.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{out.name}.", suffix=".tmp", dir=out.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            handle.write(text)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, out)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    return out
