"""SIGTERM (scheduler preemption, torchrun shutting down) saves the step reached and exits 143; the
rerun resumes exactly.  Without the handler the steps since the last periodic checkpoint were lost."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from stages.trainer.preemption import EXIT_STATUS
from tests.conftest import start_stage
from tests.helpers import DEMO, REPO, overrides

LONG = {"optim.max_steps": 16, "checkpoint.every_steps": 1000}  # only the final step is checkpointed on schedule


def signal_after(process: subprocess.Popen, log: Path, text: str, timeout: float = 300, group: bool = False) -> None:
    """SIGTERM ``process`` (or its whole process group, as SLURM does) once ``text`` is in its log."""
    deadline = time.time() + timeout
    while text not in log.read_text() and process.poll() is None and time.time() < deadline:
        time.sleep(0.05)
    if group:
        os.killpg(process.pid, signal.SIGTERM)
    else:
        process.send_signal(signal.SIGTERM)


def start(args: list[str], log: Path) -> subprocess.Popen:
    """stage1.py in a session of its own, so its process group can be signalled alone."""
    return start_stage("stages/stage1.py", DEMO, args, log, new_session=True)


def stopped_step(log: Path) -> int:
    found = re.search(r"SIGTERM: stopped at step (\d+) of 16 with checkpoint-\1 saved", log.read_text())
    assert found, log.read_text()[-3000:]
    return int(found.group(1))


@pytest.fixture(scope="module")
def uninterrupted(generated_dataset, tmp_path_factory) -> dict[str, torch.Tensor]:
    """The heads of a run never stopped (the cached path reads the same batches with any number
    of loader workers, so one run serves both stopped runs)."""
    root, csv = generated_dataset
    out = tmp_path_factory.mktemp("uninterrupted")
    run = start(overrides(root, csv, out / "run", out / "cache", **LONG), out / "run.log")
    assert run.wait(timeout=300) == 0, (out / "run.log").read_text()[-3000:]
    return load_file(out / "run" / "final" / "heads.safetensors")


@pytest.mark.parametrize("workers, group", [(0, False), (2, True)], ids=["process", "process-group-with-workers"])
def test_sigterm_checkpoints_the_step_reached_and_the_rerun_resumes_exactly(workers, group, uninterrupted,
                                                                             generated_dataset, tmp_path):
    """Signalled as a process group (SLURM), the loader's workers get SIGTERM too: they must not
    die before the checkpoint is written."""
    root, csv = generated_dataset
    args = overrides(root, csv, tmp_path / "stopped", tmp_path / "cache", **LONG, **{"run.num_workers": workers})
    log = tmp_path / "stopped.log"
    victim = start(args, log)
    signal_after(victim, log, "step 2/16", group=group)
    assert victim.wait(timeout=300) == EXIT_STATUS, log.read_text()[-3000:]
    step = stopped_step(log)
    assert 2 <= step < 16 and (tmp_path / "stopped" / f"checkpoint-{step}" / "COMPLETE").is_file()
    assert not (tmp_path / "stopped" / "final").exists()
    resumed = start(args, tmp_path / "resumed.log")
    assert resumed.wait(timeout=300) == 0, (tmp_path / "resumed.log").read_text()[-3000:]
    stopped = load_file(tmp_path / "stopped" / "final" / "heads.safetensors")
    assert stopped.keys() == uninterrupted.keys()
    assert all(torch.equal(stopped[k], uninterrupted[k]) for k in stopped)


def test_sigterm_during_the_feature_cache_build_keeps_what_was_written(generated_dataset, tmp_path):
    """Before training, the cache build stops after the window in hand with status 143, and the
    rerun computes only the windows still missing."""
    root, csv = generated_dataset
    args = overrides(root, csv, tmp_path / "run", tmp_path / "cache", **{"features.windows_per_scene": 6})
    log = tmp_path / "stopped.log"
    victim = start(args, log)
    signal_after(victim, log, "to compute")
    assert victim.wait(timeout=300) == EXIT_STATUS, log.read_text()[-3000:]
    assert "SIGTERM: stopped building the feature cache" in log.read_text()
    total, missing = map(int, re.search(r"feature cache: (\d+) windows x \d+ views, (\d+) to compute", log.read_text()).groups())
    resumed = start(args, tmp_path / "resumed.log")
    assert resumed.wait(timeout=300) == 0, (tmp_path / "resumed.log").read_text()[-3000:]
    left = int(re.search(r"feature cache: \d+ windows x \d+ views, (\d+) to compute", (tmp_path / "resumed.log").read_text())[1])
    assert total == missing and 0 < left < total, (total, left)


@pytest.mark.parametrize("distributed", [["--multi_gpu"], ["--config_file", str(REPO / "stages/configs/accelerate_zero2.yaml")]],
                         ids=["ddp", "zero2"])
def test_sigterm_to_a_two_process_launch_stops_both_ranks_at_one_checkpoint(distributed, generated_dataset, tmp_path):
    """torchrun forwards the signal to every rank; they agree on one step, save it together (a
    collective; under ZeRO-2 each rank's partition) and leave instead of hanging or being killed
    after the grace period."""
    root, csv = generated_dataset
    log = tmp_path / "launch.log"
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}
    command = [sys.executable, "-m", "accelerate.commands.launch", *distributed, "--num_processes", "2",
               "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no", "--main_process_port", "29519",
               str(REPO / "stages/stage1.py"), "--config", str(DEMO),
               *overrides(root, csv, tmp_path / "run", tmp_path / "cache", **LONG)]
    launcher = subprocess.Popen(command, stdout=log.open("w"), stderr=subprocess.STDOUT, env=env, cwd=REPO)
    signal_after(launcher, log, "step 2/16")
    assert launcher.wait(timeout=300) != 0
    step = stopped_step(log)
    checkpoint = tmp_path / "run" / f"checkpoint-{step}"
    assert (checkpoint / "COMPLETE").is_file(), log.read_text()[-3000:]
    assert len(torch.load(checkpoint / "rng.pt", weights_only=True)["ranks"]) == 2
    assert json.loads((checkpoint / "meta.json").read_text())["sampler"]["position"] == 2 * step
    if "--config_file" in distributed:
        assert "DeepSpeed ZeRO-2" in log.read_text()
        assert len(torch.load(checkpoint / "state.pt", weights_only=True)["optimizer"]) == 2, "both partitions"


def test_a_signal_on_one_rank_stops_every_rank():
    """The ranks agree by a sum over them at each step boundary (stages.trainer.runner.step_boundary,
    the one collective between steps): one rank's SIGTERM is every rank's stop."""
    from types import SimpleNamespace

    from stages.trainer.preemption import StopRequest
    from stages.trainer.runner import step_boundary

    def run(others: float):  # a one-process run whose "other rank" adds ``others`` to the SIGTERM count
        def reduce(flags, op):
            return flags + torch.tensor([others, 0.0])

        return SimpleNamespace(bad_samples=None, accelerator=SimpleNamespace(device=torch.device("cpu"), reduce=reduce))

    before = signal.getsignal(signal.SIGTERM)
    with StopRequest() as stop:
        assert not step_boundary(run(0.0), stop)[0]
        assert step_boundary(run(1.0), stop)[0], "another rank was signalled"
        os.kill(os.getpid(), signal.SIGTERM)
        assert stop.received and step_boundary(run(0.0), stop)[0]
    assert signal.getsignal(signal.SIGTERM) is before
