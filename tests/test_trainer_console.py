"""Log lines of multi-process runs must survive modelscope's import-time reset of root handlers."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]

# A one-process gloo group stands in for accelerate's; then modelscope's logger is created, as
# `import diffsynth` does after accelerate set up the group.
SCRIPT = """
import logging, sys, tempfile
import torch.distributed as dist
dist.init_process_group("gloo", init_method="file://" + tempfile.mktemp(), rank=0, world_size=1)
if sys.argv[1] == "ours":
    from stages.trainer.tracking import configure_logging
    configure_logging()
else:
    logging.basicConfig(level=logging.INFO)
from modelscope.utils.logger import get_logger
get_logger()
logging.getLogger("stages.trainer.loop").info("step line survives")
dist.destroy_process_group()
"""


@pytest.mark.parametrize("setup, shown", [("ours", True), ("basicConfig", False)])
def test_info_lines_survive_modelscope_under_torch_distributed(setup, shown):
    proc = subprocess.run([sys.executable, "-c", SCRIPT, setup], capture_output=True, text=True, cwd=REPO,
                          env={"PYTHONPATH": str(REPO), "PATH": "/usr/bin:/bin"}, timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]
    # The control (plain basicConfig) shows the bug is real: its line is swallowed.
    assert ("step line survives" in proc.stderr) is shown, proc.stderr[-2000:]


def test_log_lines_do_not_break_a_progress_bar(capsys):
    import logging

    from tqdm import tqdm

    from stages.trainer.tracking import configure_logging

    configure_logging()
    try:
        with tqdm(total=2, desc="bar", file=sys.stderr) as bar:
            logging.getLogger("stages.test").info("between updates")
            bar.update(1)
        err = capsys.readouterr().err
        line = next(row for row in err.replace("\r", "\n").splitlines() if "between updates" in row)
        assert "bar" not in line, "the log line was written into the progress bar's line"
    finally:
        for handler in [h for h in logging.getLogger().handlers if type(h).__name__ == "TqdmHandler"]:
            logging.getLogger().removeHandler(handler)
