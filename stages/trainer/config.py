"""Load a stage's dataclass config from defaults, a TOML file, PWM_* env vars and CLI overrides.

Precedence is CLI > env > TOML > dataclass defaults (old torchtitan `config/manager.py`). Every
layer is parsed into one nested dict of *typed* values first, checked against the dataclass
fields (unknown names fail with a did-you-mean), and only then are the dataclasses constructed,
innermost first. Constructing at the end (never mutating afterwards) means each `__post_init__`
validates the final values, whichever layer they came from.

    cfg = load_config(Stage1Config, "stages/configs/stage1.toml", ["optim.lr=3e-5"], os.environ)

Override forms: `optim.lr=3e-5`, `--optim.lr 3e-5`, `--optim.lr=3e-5` (see `split_cli`), and env
`PWM_OPTIM__LR=3e-5` (sections separated by a double underscore). Strings are parsed by the field's
annotation: int, float, bool (true/false/1/0/yes/no/on/off), str, Path, Literal, Optional ("none"
or "null" -> None), tuple/list ("1,2,3" or TOML arrays) and dict (JSON text or a TOML table).
"""

from __future__ import annotations

import argparse
import dataclasses
import difflib
import json
import os
import sys
import types
import typing
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, TypeVar

from stages.trainer.config_text import help_text, resolved_hints, type_name

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - Python 3.10
    import tomli as tomllib  # type: ignore[no-redef]

T = TypeVar("T")
_TRUE = {"true", "1", "yes", "on"}
_FALSE = {"false", "0", "no", "off"}
_NONE = {"none", "null"}


class ConfigError(ValueError):
    """A config value, name or file that cannot be used; the message names the field and source."""


def _is_section(tp: Any) -> bool:
    return isinstance(tp, type) and dataclasses.is_dataclass(tp)


def _unknown(name: str, valid: Sequence[str], where: str, source: str) -> ConfigError:
    """Error for a misspelt name, with difflib's closest match and the full list of valid names."""
    close = difflib.get_close_matches(name, valid, n=1)
    hint = f" Did you mean '{close[0]}'?" if close else ""
    return ConfigError(f"{source}: unknown field '{name}' in {where}.{hint} Valid names: {', '.join(valid)}")


def _parse_scalar(text: str, tp: Any) -> Any:
    """Parse one string as `tp` (a non-container annotation); raises ValueError on failure."""
    if tp is Any or tp is str:
        return text
    if tp is bool:
        low = text.strip().lower()
        if low in _TRUE | _FALSE:
            return low in _TRUE
        raise ValueError("expected true/false/1/0/yes/no/on/off")
    if tp is int:
        return int(text.strip().replace("_", ""))
    if tp is float:
        return float(text.strip())
    if isinstance(tp, type):  # Path, Enum and other one-argument constructors
        return tp(text)
    raise ValueError(f"unsupported type {type_name(tp)}")


def _split_list(text: str) -> list[str]:
    body = text.strip()
    if body[:1] in "[(" and body[-1:] in "])":
        body = body[1:-1]
    parts = [part.strip() for part in body.split(",") if part.strip()]
    # A TOML-style array typed on the command line ('["a", "b"]') quotes its strings.
    return [p[1:-1] if len(p) >= 2 and p[0] == p[-1] and p[0] in "\"'" else p for p in parts]


def coerce(value: Any, tp: Any) -> Any:
    """Convert `value` (a CLI/env string or a TOML value) to annotation `tp`; ValueError if impossible."""
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if origin in (typing.Union, types.UnionType):
        inner = [a for a in args if a is not type(None)]
        if type(None) in args and (value is None or (isinstance(value, str) and value.strip().lower() in _NONE)):
            return None
        errors = []
        for option in inner:
            try:
                return coerce(value, option)
            except (ValueError, TypeError) as error:
                errors.append(str(error))
        raise ValueError("; ".join(errors) or "None is not allowed")
    if value is None:
        raise ValueError("None is not allowed (field is not Optional)")
    if origin is typing.Literal:
        for choice in args:
            try:
                candidate = coerce(value, type(choice))
            except (ValueError, TypeError):
                continue
            if candidate == choice:
                return choice
        raise ValueError(f"expected one of {list(args)}")
    if origin in (tuple, list, set, frozenset) or tp in (tuple, list):
        return _coerce_sequence(value, origin or tp, args)
    if origin is dict or tp is dict:
        return _coerce_dict(value, args)
    if isinstance(value, str):
        return _parse_scalar(value, tp)
    return _check_typed(value, tp)


def _coerce_sequence(value: Any, container: type, args: tuple[Any, ...]) -> Any:
    items = _split_list(value) if isinstance(value, str) else value
    if not isinstance(items, (list, tuple)):
        raise ValueError(f"expected a list, got {type(items).__name__}")
    if container is tuple and args and args[-1] is not Ellipsis:  # fixed-length tuple[int, int]
        if len(items) != len(args):
            raise ValueError(f"expected {len(args)} items, got {len(items)}")
        return tuple(coerce(v, a) for v, a in zip(items, args))
    element = args[0] if args else Any
    return container(coerce(v, element) for v in items)


def _coerce_dict(value: Any, args: tuple[Any, ...]) -> dict[Any, Any]:
    if isinstance(value, str):
        value = json.loads(value) if value.strip() else {}
    if not isinstance(value, dict):
        raise ValueError(f"expected a table/dict, got {type(value).__name__}")
    key_tp, val_tp = args if args else (Any, Any)
    return {coerce(k, key_tp): coerce(v, val_tp) for k, v in value.items()}


def _check_typed(value: Any, tp: Any) -> Any:
    """Accept an already-typed (TOML/JSON) value if it fits `tp`; ints widen to float."""
    if tp is Any:
        return value
    if tp is bool:
        if isinstance(value, bool):
            return value
        raise ValueError("expected a boolean")
    if tp in (int, float) and isinstance(value, bool):
        raise ValueError(f"expected {tp.__name__}, got a boolean")
    if tp is float and isinstance(value, int):
        return float(value)
    if isinstance(tp, type) and isinstance(value, tp):
        return value
    raise ValueError(f"expected {type_name(tp)}, got {type(value).__name__}")


def _merge(cls: type, target: dict[str, Any], updates: Mapping[str, Any], source: str, path: str = "") -> None:
    """Check `updates` against `cls`'s fields, coerce the values, and write them into `target`."""
    hints = resolved_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls) if f.init}
    where = f"section '{path.rstrip('.')}'" if path else cls.__name__
    for name, value in updates.items():
        if name not in fields:
            raise _unknown(name, sorted(fields), where, source)
        tp = hints.get(name, fields[name].type)
        dotted = path + name
        if _is_section(tp):
            if not isinstance(value, Mapping):
                valid = ", ".join(f.name for f in dataclasses.fields(tp))
                raise ConfigError(f"{source}: '{dotted}' is a section; set its fields as {dotted}.<field> ({valid})")
            _merge(tp, target.setdefault(name, {}), value, source, dotted + ".")
            continue
        try:
            target[name] = coerce(value, tp)
        except (ValueError, TypeError) as error:
            raise ConfigError(f"{source}: cannot use {value!r} for '{dotted}' ({type_name(tp)}): {error}") from None


def _nest(dotted: str, value: Any) -> dict[str, Any]:
    keys = [k for k in dotted.split(".")]
    if any(not k for k in keys):
        raise ConfigError(f"malformed key {dotted!r}: expected section.field")
    out: dict[str, Any] = {keys[-1]: value}
    for key in reversed(keys[:-1]):
        out = {key: out}
    return out


def parse_overrides(overrides: Sequence[str]) -> list[tuple[str, str]]:
    """`["optim.lr=1e-4"]` -> `[("optim.lr", "1e-4")]`; a missing '=' is an error naming the item."""
    pairs = []
    for item in overrides:
        key, sep, value = item.partition("=")
        if not sep:
            raise ConfigError(f"override {item!r} is not of the form section.field=value")
        pairs.append((key.strip().lstrip("-"), value))
    return pairs


def env_overrides(cls: type, env: Mapping[str, str], prefix: str = "PWM_") -> list[tuple[str, str]]:
    """(dotted key, value) for `PREFIX<SECTION>__<FIELD>` vars, and `PREFIX<FIELD>` for top-level fields.

    Prefixed vars without a double underscore that name no top-level field are left alone, so
    launchers may keep their own `PWM_*` settings (e.g. a data root) beside config overrides.
    """
    top = {f.name for f in dataclasses.fields(cls)}
    pairs = []
    for name in sorted(env):
        if not name.startswith(prefix):
            continue
        rest = name[len(prefix):].lower()
        if "__" in rest or rest in top:
            pairs.append((".".join(rest.split("__")), env[name]))
    return pairs


def _build(cls: type[T], values: Mapping[str, Any], path: str = "") -> T:
    """Construct `cls` from merged values, building nested sections first so each validates."""
    hints = resolved_hints(cls)
    kwargs = {}
    for name, value in values.items():
        tp = hints.get(name)
        kwargs[name] = _build(tp, value, f"{path}{name}.") if _is_section(tp) else value
    try:
        return cls(**kwargs)
    except (ValueError, TypeError) as error:
        where = path.rstrip(".") or cls.__name__
        raise ConfigError(f"invalid config in '{where}': {error}") from error


def load_config(
    cls: type[T],
    toml_path: str | os.PathLike | None = None,
    overrides: Sequence[str] = (),
    env: Mapping[str, str] | None = None,
    env_prefix: str = "PWM_",
) -> T:
    """Resolve `cls` from defaults < TOML file < env vars < CLI `section.field=value` overrides."""
    merged: dict[str, Any] = {}
    if toml_path is not None:
        path = Path(toml_path)
        try:
            data = tomllib.loads(path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            raise ConfigError(f"config file not found: {path}") from None
        except tomllib.TOMLDecodeError as error:
            raise ConfigError(f"config file {path} is not valid TOML: {error}") from None
        _merge(cls, merged, data, f"TOML {path}")
    for key, value in env_overrides(cls, env or {}, env_prefix):
        env_name = env_prefix + key.upper().replace(".", "__")
        _merge(cls, merged, _nest(key, value), f"env {env_name}")
    for key, value in parse_overrides(overrides):
        _merge(cls, merged, _nest(key, value), f"CLI override '{key}={value}'")
    return _build(cls, merged)


def split_cli(argv: Sequence[str]) -> tuple[list[str], list[str]]:
    """Separate config overrides from other arguments: returns (other_args, ["a.b=v", ...]).

    Recognised: `a.b=v`, `--a.b=v`, `--a.b v`, and a bare `--a.b` followed by another option or
    nothing (meaning `true`, for bool flags). Only dotted keys are overrides, so a script's own
    options (`--config`, `--help`) pass through untouched; top-level fields use `seed=3` form.
    """
    rest, overrides = [], []
    i = 0
    while i < len(argv):
        arg = argv[i]
        key, sep, value = arg.partition("=")
        bare = key[2:] if key.startswith("--") else None
        if bare is not None and "." in bare:
            if sep:
                overrides.append(f"{bare}={value}")
            elif i + 1 < len(argv) and not argv[i + 1].startswith("--"):
                overrides.append(f"{bare}={argv[i + 1]}")
                i += 1
            else:
                overrides.append(f"{bare}=true")
        elif not key.startswith("-") and sep and key.replace(".", "").replace("_", "").isalnum():
            overrides.append(arg)
        else:
            rest.append(arg)
        i += 1
    return rest, overrides


def parse_cli(
    cls: type[T],
    argv: Sequence[str] | None = None,
    description: str = "",
    default_config: str | None = None,
    parser: argparse.ArgumentParser | None = None,
) -> tuple[T, argparse.Namespace]:
    """argparse front end for entry points: `--config FILE` plus overrides; `--help` lists every field.

    Pass `parser` to add script-specific options first. Environment overrides are read from
    `os.environ` (PWM_*). Returns (config, parsed namespace).
    """
    parser = parser or argparse.ArgumentParser(description=description)
    parser.formatter_class = argparse.RawDescriptionHelpFormatter
    parser.epilog = (
        "config fields (override as section.field=value, --section.field value or PWM_SECTION__FIELD=value):\n\n"
        + help_text(cls)
    )
    parser.add_argument("--config", default=default_config, help="TOML file (default: %(default)s)")
    rest, overrides = split_cli(list(sys.argv[1:] if argv is None else argv))
    args = parser.parse_args(rest)
    return load_config(cls, args.config, overrides, os.environ), args


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
