"""Resolve a stage's dataclass config: defaults < TOML file < PWM_* env vars < CLI overrides.

pydantic (a TypeAdapter over the plain dataclasses) checks the values and builds the dataclasses once,
at the end, so each `__post_init__` sees the final values. Spellings and errors: docs/configuration.md.
"""

from __future__ import annotations

import argparse
import difflib
import functools
import json
import os
import sys
import types
import typing
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, TypeVar

from pydantic import TypeAdapter, ValidationError
from pydantic_core import to_json

from stages.trainer.config_text import config_fields, help_text, type_name

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - Python 3.10
    import tomli as tomllib  # type: ignore[no-redef]

T = TypeVar("T")


class ConfigError(ValueError):
    """A config value, name or file that cannot be used; the message names the field and source."""


@functools.cache
def _adapter(tp: Any) -> TypeAdapter:
    """One pydantic TypeAdapter per annotation, since building one costs more than validating."""
    return TypeAdapter(tp)


def _from_text(text: str, tp: Any) -> Any:
    """Shape CLI/env text where pydantic would not: "none" for Optional, "1,2"/"[a, b]" lists, JSON dicts."""
    union = typing.get_origin(tp) in (typing.Union, types.UnionType)
    if union and type(None) in typing.get_args(tp) and text.strip().lower() in ("none", "null"):
        return None
    shapes = {typing.get_origin(a) or a for a in (typing.get_args(tp) if union else (tp,))}
    if shapes & {list, tuple, set, frozenset}:
        body = text.strip()
        body = body[1:-1] if body[:1] + body[-1:] in ("[]", "()") else body
        return [part.strip().strip("\"'") for part in body.split(",") if part.strip()]
    return (json.loads(text) if text.strip() else {}) if dict in shapes else text


def coerce(value: Any, tp: Any) -> Any:
    """`value` as annotation `tp`: text leniently (pydantic lax), TOML values strictly (a bool is no int)."""
    if isinstance(value, str):
        return _adapter(tp).validate_python(_from_text(value, tp))
    return _adapter(tp).validate_json(to_json(value, inf_nan_mode="constants"), strict=True)


def _reason(error: ValueError) -> str:
    """pydantic's multi-line report as one line, with a `__post_init__` message as written."""
    items = error.errors() if isinstance(error, ValidationError) else [{"msg": error}]
    return "; ".join(str(e.get("ctx", {}).get("error", e["msg"])) for e in items)


def _merge(cls: type, target: dict[str, Any], updates: Mapping[str, Any], source: str, path: str = "") -> None:
    """Check `updates` against `cls`'s fields and coerce them into `target`, naming `source` on error."""
    fields = {f.name: (tp, nested) for f, tp, nested in config_fields(cls)}
    for key, value in updates.items():
        name, _, rest = key.partition(".")  # CLI and env keys are dotted, TOML keys are nested tables
        value, dotted = ({rest: value} if rest else value), path + name
        if name not in fields:
            close = difflib.get_close_matches(name, fields, n=1)
            hint = (f" Did you mean '{close[0]}'?" if close else "") + " Valid names: " + ", ".join(sorted(fields))
            where = f"section '{path[:-1]}'" if path else cls.__name__
            raise ConfigError(f"{source}: unknown field '{name}' in {where}.{hint}")
        tp, nested = fields[name]
        if nested and not isinstance(value, Mapping):
            raise ConfigError(f"{source}: '{dotted}' is a section; set its fields as {dotted}.<field>")
        if nested:
            _merge(tp, target.setdefault(name, {}), value, source, dotted + ".")
            continue
        try:
            target[name] = coerce(value, tp)
        except ValueError as error:
            reason = _reason(error)
            raise ConfigError(f"{source}: cannot use {value!r} for '{dotted}' ({type_name(tp)}): {reason}") from None


def env_overrides(cls: type, env: Mapping[str, str], prefix: str = "PWM_") -> list[tuple[str, str, str]]:
    """(dotted key, value, var name) for `PWM_SECTION__FIELD` and top-level `PWM_FIELD` vars; other `PWM_*`
    vars (no double underscore, no top-level field) are left to launchers, e.g. a data root."""
    top = {f.name for f, _, _ in config_fields(cls)}
    keys = {name: name[len(prefix):].lower() for name in sorted(env) if name.startswith(prefix)}
    return [(key.replace("__", "."), env[name], name) for name, key in keys.items() if "__" in key or key in top]


def _build(cls: type[T], values: Mapping[str, Any]) -> T:
    """Construct all dataclasses once, through pydantic, so each `__post_init__` sees the final values."""
    try:
        return _adapter(cls).validate_python(values)
    except ValidationError as error:
        where = ".".join(map(str, error.errors()[0]["loc"])) or cls.__name__
        raise ConfigError(f"invalid config in '{where}': {_reason(error)}") from None


def load_config(cls: type[T], toml_path: str | os.PathLike | None = None, overrides: Sequence[str] = (),
                env: Mapping[str, str] | None = None, env_prefix: str = "PWM_") -> T:
    """Resolve `cls` from defaults < TOML file < env vars < CLI `section.field=value` overrides."""
    merged: dict[str, Any] = {}
    if toml_path is not None:
        try:
            data = tomllib.loads(Path(toml_path).read_text(encoding="utf-8"))
        except (OSError, tomllib.TOMLDecodeError) as error:
            raise ConfigError(f"config file {toml_path}: {error}") from None
        _merge(cls, merged, data, f"TOML {toml_path}")
    for key, value, name in env_overrides(cls, env or {}, env_prefix):
        _merge(cls, merged, {key: value}, f"env {name}")
    for item in overrides:
        key, sep, value = item.partition("=")
        if not sep:
            raise ConfigError(f"override {item!r} is not of the form section.field=value")
        _merge(cls, merged, {key.strip().lstrip("-"): value}, f"CLI override '{item}'")
    return _build(cls, merged)


def split_cli(argv: Sequence[str]) -> tuple[list[str], list[str]]:
    """(other args, ["a.b=v", ...]) from `--a.b v`, `--a.b=v`, bare `--a.b` (true), `a.b=v`, `seed=3`; only
    dotted `--` keys are overrides, so a script's own options (`--config`, `--help`) pass through."""
    rest, overrides, args = [], [], list(argv)
    while args:
        arg = args.pop(0)
        key, sep, value = arg.partition("=")
        if key.startswith("--") and "." in key:
            value = value if sep else args.pop(0) if args and not args[0].startswith("--") else "true"
            overrides.append(f"{key[2:]}={value}")
        elif sep and not key.startswith("-") and key.replace(".", "").replace("_", "").isalnum():
            overrides.append(arg)
        else:
            rest.append(arg)
    return rest, overrides


def parse_cli(cls: type[T], argv: Sequence[str] | None = None, description: str = "", default_config: str | None = None,
              parser: argparse.ArgumentParser | None = None) -> tuple[T, argparse.Namespace]:
    """argparse front end: `--config FILE`, overrides and PWM_* vars; `--help` lists every field. Pass
    `parser` to add script-specific options first. Returns (config, parsed namespace)."""
    parser = parser or argparse.ArgumentParser(description=description)
    parser.formatter_class = argparse.RawDescriptionHelpFormatter
    parser.epilog = "config fields (override as section.field=value, --section.field value or " \
        "PWM_SECTION__FIELD=value):\n\n" + help_text(cls)
    parser.add_argument("--config", default=default_config, help="TOML file (default: %(default)s)")
    rest, overrides = split_cli(sys.argv[1:] if argv is None else argv)
    args = parser.parse_args(rest)
    return load_config(cls, args.config, overrides, os.environ), args


ALIASES = {"--resume": "checkpoint.resume"}
"""Alias -> config field; ``--resume latest|none|PATH`` is the spelling users expect."""


def expand_aliases(argv: list[str]) -> list[str]:
    """Rewrite ``--resume VALUE`` and ``--resume=VALUE`` (argparse reads both) into ``section.field=VALUE``."""
    parser = argparse.ArgumentParser(add_help=False, allow_abbrev=False)
    for alias, key in ALIASES.items():
        parser.add_argument(alias, dest=key)
    known, rest = parser.parse_known_args(argv)
    return [f"{key}={value}" for key, value in vars(known).items() if value is not None] + rest
