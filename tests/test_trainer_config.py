"""Config machinery: precedence CLI > env > TOML > defaults, typed parsing, clear errors, save/reload."""

from __future__ import annotations

import json

from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import pytest

from stages.trainer.config import ConfigError, coerce, load_config, parse_cli, split_cli, tomllib
from stages.trainer.config_text import field_docs, help_text, missing_docstrings, save_config, to_dict
from stages.trainer.sections import CheckpointConfig, EMAConfig, GuardConfig, LogConfig, OptimConfig


@dataclass
class DataSection:
    """Toy data section."""

    root: str = "data"
    """Dataset root."""

    frames: int = 49
    """Frames per clip."""

    size: tuple[int, int] = (480, 480)
    """Frame size (H, W)."""

    taps: tuple[int, ...] = (7, 14, 21, 29)
    """Tapped blocks."""

    limit: int | None = None
    """Optional cap on the clip count."""

    mode: Literal["train", "val"] = "train"
    """Split."""

    weights: dict[str, float] = field(default_factory=dict)
    """Per-loss weights."""

    def __post_init__(self) -> None:
        if self.frames < 1:
            raise ValueError(f"frames must be >= 1, got {self.frames}")


@dataclass
class ToyConfig:
    """A stage-like top-level config."""

    seed: int = 0
    """Global seed."""

    data: DataSection = field(default_factory=DataSection)
    """Data section."""

    optim: OptimConfig = field(default_factory=OptimConfig)
    """Optimiser section."""

    checkpoint: CheckpointConfig = field(default_factory=CheckpointConfig)
    """Checkpoint section."""

    log: LogConfig = field(default_factory=LogConfig)
    """Logging section."""

    ema: EMAConfig = field(default_factory=EMAConfig)
    """EMA section."""

    guard: GuardConfig = field(default_factory=GuardConfig)
    """Guard section."""


def _toml(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "cfg.toml"
    path.write_text(text)
    return path


def test_defaults_without_any_source() -> None:
    assert load_config(ToyConfig, None, []) == ToyConfig()


def test_precedence_cli_over_env_over_toml_over_defaults(tmp_path: Path) -> None:
    path = _toml(tmp_path, "seed = 1\n[optim]\nlr = 0.5\nwarmup_steps = 3\ngrad_accum = 2\n[data]\nframes = 9\n")
    env = {"PWM_OPTIM__LR": "0.25", "PWM_OPTIM__WARMUP_STEPS": "4", "PWM_SEED": "2", "PWM_DATA_ROOT_DIR": "ignored"}
    cfg = load_config(ToyConfig, path, ["optim.lr=0.125"], env)
    assert cfg.optim.lr == 0.125  # CLI beats env and TOML
    assert cfg.optim.warmup_steps == 4  # env beats TOML
    assert cfg.seed == 2
    assert cfg.optim.grad_accum == 2  # TOML beats default
    assert cfg.data.frames == 9
    assert cfg.optim.eps == 1e-8  # default


def test_types_parse_from_strings() -> None:
    cfg = load_config(
        ToyConfig,
        None,
        ["data.size=256,320", "data.taps=[1, 2, 3]", "data.limit=7", "ema.enabled=true", "data.mode=val",
         "optim.betas=0.8,0.9", 'data.weights={"flow": 2.0}', "optim.max_steps=none", "optim.lr=3e-5"],
    )
    assert cfg.data.size == (256, 320) and cfg.data.taps == (1, 2, 3)
    assert cfg.data.limit == 7 and cfg.ema.enabled is True and cfg.data.mode == "val"
    assert cfg.optim.betas == (0.8, 0.9) and cfg.data.weights == {"flow": 2.0}
    assert cfg.optim.max_steps is None and cfg.optim.lr == 3e-5
    assert load_config(ToyConfig, None, ["ema.enabled=0"]).ema.enabled is False


def test_toml_arrays_and_int_widening(tmp_path: Path) -> None:
    path = _toml(tmp_path, "[data]\ntaps = [3, 5]\nsize = [64, 64]\n[optim]\nlr = 1\n")
    cfg = load_config(ToyConfig, path, [])
    assert cfg.data.taps == (3, 5) and isinstance(cfg.data.taps, tuple)
    assert cfg.optim.lr == 1.0 and isinstance(cfg.optim.lr, float)


def test_coerce_edge_cases() -> None:
    assert coerce("none", int | None) is None
    assert coerce("5", int | None) == 5
    assert coerce("", tuple[int, ...]) == ()
    assert coerce([1, 2], list[int]) == [1, 2]
    with pytest.raises(ValueError):
        coerce(True, int)  # a TOML bool is not an int
    with pytest.raises(ValueError):
        coerce("1,2,3", tuple[int, int])


def test_a_toml_array_of_strings_typed_on_the_command_line_loses_its_quotes() -> None:
    assert coerce('["holdout", \'holdout_look\']', list[str]) == ["holdout", "holdout_look"]
    assert coerce("holdout,holdout_look", list[str]) == ["holdout", "holdout_look"]


def test_unknown_names_suggest_the_closest(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"unknown field 'lrr' in section 'optim'.*Did you mean 'lr'"):
        load_config(ToyConfig, None, ["optim.lrr=1"])
    with pytest.raises(ConfigError, match=r"Did you mean 'optim'.*Valid names: checkpoint, data"):
        load_config(ToyConfig, None, ["optimm.lr=1"])
    with pytest.raises(ConfigError, match=r"env PWM_OPTIM__LRR"):
        load_config(ToyConfig, None, [], {"PWM_OPTIM__LRR": "1"})
    with pytest.raises(ConfigError, match=r"TOML .*unknown field 'frams'.*Did you mean 'frames'"):
        load_config(ToyConfig, _toml(tmp_path, "[data]\nframs = 3\n"), [])


def test_type_errors_name_field_and_value() -> None:
    with pytest.raises(ConfigError, match=r"'abc' for 'optim.lr' \(float\)"):
        load_config(ToyConfig, None, ["optim.lr=abc"])
    with pytest.raises(ConfigError, match=r"'maybe' for 'ema.enabled'"):
        load_config(ToyConfig, None, ["ema.enabled=maybe"])
    with pytest.raises(ConfigError, match=r"'optim' is a section"):
        load_config(ToyConfig, None, ["optim=3"])
    with pytest.raises(ConfigError, match=r"not of the form"):
        load_config(ToyConfig, None, ["optim.lr"])


def test_validation_runs_after_overrides(tmp_path: Path) -> None:
    # TOML sets an invalid value that the CLI then fixes: validation must see only the final value.
    path = _toml(tmp_path, "[data]\nframes = 0\n")
    assert load_config(ToyConfig, path, ["data.frames=5"]).data.frames == 5
    with pytest.raises(ConfigError, match=r"invalid config in 'data': frames must be >= 1, got 0"):
        load_config(ToyConfig, path, [])
    with pytest.raises(ConfigError, match=r"backend must be one of"):
        load_config(ToyConfig, None, ["log.backend=mlflow"])


def test_split_cli_forms() -> None:
    rest, overrides = split_cli(
        ["--config", "a.toml", "--optim.lr", "1e-4", "--data.frames=9", "seed=3", "--ema.enabled", "--help"]
    )
    assert rest == ["--config", "a.toml", "--help"]
    assert overrides == ["optim.lr=1e-4", "data.frames=9", "seed=3", "ema.enabled=true"]


def test_parse_cli_reads_config_and_overrides(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PWM_OPTIM__WARMUP_STEPS", "7")
    path = _toml(tmp_path, "[optim]\nlr = 0.5\n")
    cfg, args = parse_cli(ToyConfig, ["--config", str(path), "--optim.grad_accum", "4"])
    assert (cfg.optim.lr, cfg.optim.grad_accum, cfg.optim.warmup_steps) == (0.5, 4, 7)
    assert args.config == str(path)


@pytest.mark.parametrize("suffix", [".toml", ".json"])
def test_save_and_reload_round_trip(tmp_path: Path, suffix: str) -> None:
    cfg = load_config(ToyConfig, None, ["data.limit=3", "data.root=a \"quoted\" dir", "optim.max_steps=100",
                                        'data.weights={"flow": 1.5, "depth": 0.5}', "checkpoint.resume=none"])
    path = save_config(cfg, tmp_path / f"resolved{suffix}")
    if suffix == ".toml":
        assert load_config(ToyConfig, path, []) == cfg
        assert tomllib.loads(path.read_text())["optim"]["lr"] == cfg.optim.lr
    else:
        assert json.loads(path.read_text()) == to_dict(cfg)
    assert to_dict(cfg)["data"]["size"] == [480, 480]


def test_none_survives_toml_round_trip(tmp_path: Path) -> None:
    @dataclass
    class WithNone:
        """x"""

        limit: int | None = 5
        """Non-None default, set to None."""

    # A locally defined class: annotations resolve without module globals, still parse fine.
    cfg = load_config(WithNone, None, ["limit=none"])
    assert cfg.limit is None
    assert load_config(WithNone, save_config(cfg, tmp_path / "c.toml"), []).limit is None


def test_help_text_lists_every_field_with_docstring() -> None:
    text = help_text(ToyConfig)
    assert "optim.lr (float, default 0.0001)" in text
    assert "data.taps (tuple[int, ...], default (7, 14, 21, 29))" in text
    assert "Peak learning rate after warmup" in text
    assert "[checkpoint]" in text and "guard.max_consecutive_nonfinite" in text
    assert field_docs(DataSection)["frames"] == "Frames per clip."


def test_shared_sections_document_every_field() -> None:
    assert missing_docstrings(ToyConfig) == []


def test_shared_section_checks() -> None:
    for bad in (["optim.lr=0"], ["optim.grad_accum=0"], ["optim.min_lr_ratio=2"], ["checkpoint.keep_last=-1"],
                ["ema.decay=1.0"], ["guard.max_consecutive_nonfinite=0"], ["optim.max_steps=5", "optim.warmup_steps=9"]):
        with pytest.raises(ConfigError):
            load_config(ToyConfig, None, bad)
    assert OptimConfig(max_steps=None, epochs=3, grad_accum=4).total_steps(10) == 9
    assert OptimConfig(max_steps=42).total_steps(10) == 42
