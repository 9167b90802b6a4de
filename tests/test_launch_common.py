"""The launchers' shared shell functions, run under the launchers' own `set -euo pipefail`."""

from __future__ import annotations

import subprocess
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def test_a_fresh_clone_without_scenes_generates_the_demo_data(tmp_path):
    """Before the fix, `ls` finding no scene failed the pipeline and the first run of a fresh clone
    ended silently with status 2."""
    script = (f'set -euo pipefail; source "{REPO}/stages/launch_common.sh"; DATA_ROOT="{tmp_path}/scenes"; '
              f'METADATA="{tmp_path}/demo.csv"; PYTHON=echo; pwm_demo_data; echo finished')
    proc = subprocess.run(["bash", "-c", script], capture_output=True, text=True, check=False)
    assert proc.returncode == 0, proc.stderr
    assert "demo: generating scenes" in proc.stderr
    assert "-m scripts.generate_scenes" in proc.stdout and "-m scripts.make_metadata" in proc.stdout
    assert proc.stdout.rstrip().endswith("finished")
