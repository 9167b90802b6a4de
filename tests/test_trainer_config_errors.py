"""pydantic reports errors over several lines; the config layer must still give one line naming source and field."""

from __future__ import annotations

from pathlib import Path

import pytest

from stages.trainer.config import ConfigError, coerce, load_config
from tests.test_trainer_config import ToyConfig


@pytest.mark.parametrize("overrides, env, toml, expected", [
    (["optim.lr=abc"], {}, "", r"^CLI override 'optim.lr=abc': cannot use 'abc' for 'optim.lr' \(float\): "),
    (["optim.max_steps=x"], {}, "", r"'optim.max_steps' \(int \| None\)"),
    ([], {"PWM_DATA__FRAMES": "many"}, "", r"^env PWM_DATA__FRAMES: cannot use 'many' for 'data.frames'"),
    ([], {}, "[optim]\ngrad_accum = true\n", r"^TOML .*cfg.toml: cannot use True for 'optim.grad_accum' \(int\)"),
    ([], {}, "[data]\nmode = 'test'\n", r"'data.mode'.*'train' or 'val'"),
    (["data.frames=0"], {}, "", r"^invalid config in 'data': frames must be >= 1, got 0$"),
    ([], {}, "[optim\n", r"^config file .*cfg.toml: "),
])
def test_errors_are_one_line_naming_source_and_field(tmp_path: Path, overrides, env, toml, expected) -> None:
    path = tmp_path / "cfg.toml"
    path.write_text(toml)
    with pytest.raises(ConfigError, match=expected) as caught:
        load_config(ToyConfig, path, overrides, env)
    assert "\n" not in str(caught.value)


def test_nested_sections_in_env_and_lists_in_brackets() -> None:
    cfg = load_config(ToyConfig, None, ["data.taps=(1, 2)"], {"PWM_DATA__SIZE": "[32, 48]", "PWM_LAUNCHER_X": "1"})
    assert cfg.data.taps == (1, 2) and cfg.data.size == (32, 48)
    assert coerce("", list[str]) == [] and coerce("[]", tuple[int, ...]) == ()
