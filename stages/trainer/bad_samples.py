"""The bad-sample policy: what a training run does with a sample it cannot read.

Long runs meet damaged files (a frame truncated by a copy, a cache entry hit by a disk fault).
Stopping at once would lose the steps since the last checkpoint; silently skipping would hide a
broken data set.  So a loader worker that fails to read item i logs the failure in the sample and
reads a replacement drawn from (i, attempt) alone, which a resumed run draws again, so its data
stays the same.  The training process writes each failure to ``<run>/bad_samples.jsonl``; at the
next step boundary the ranks agree on the count (the one collective they already share with the
SIGTERM check), and with ``data.on_error=stop``, or past ``data.max_bad_samples``, the run
checkpoints and ends with status 2 and one line naming the file.
"""

from __future__ import annotations

import json
import logging
import random
from pathlib import Path
from typing import Any

from torch.utils.data import Dataset

from data.errors import DataFormatError

log = logging.getLogger(__name__)

BAD_KEY = "bad_samples"
"""Sample field carrying, as JSON, the failures met while reading it (collates as a list of str)."""
MAX_TRIES = 8
"""Replacements tried for one item before the worker gives up (a data set mostly unreadable)."""


def replacement(index: int, attempt: int, size: int) -> int:
    """The item read instead of ``index`` at ``attempt`` (>= 1): a function of those alone (string
    seeds hash the same in every process), so every worker and every resumed run agree."""
    return random.Random(f"bad-sample:{index}:{attempt}").randrange(size)


class SkippingDataset(Dataset):
    """A training set whose items never raise a data error: they carry it under BAD_KEY instead."""

    def __init__(self, inner: Dataset) -> None:
        self.inner = inner

    def __len__(self) -> int:
        return len(self.inner)

    def __getattr__(self, name: str) -> Any:  # set_epoch, scene_of, ...: the wrapped set's
        if name == "inner":
            raise AttributeError(name)
        return getattr(self.inner, name)

    def __getitem__(self, index: int) -> dict:
        failures = []
        for attempt in range(MAX_TRIES):
            item = index if attempt == 0 else replacement(index, attempt, len(self))
            try:
                sample = self.inner[item]
            except DataFormatError as error:
                failures.append({"index": item, "file": str(error.path), "reason": error.problem})
                continue
            sample[BAD_KEY] = json.dumps(failures)
            return sample
        raise DataFormatError(failures[0]["file"], f"{failures[0]['reason']} (and {MAX_TRIES - 1} replacement "
                                                   "samples could not be read either)")


class BadSampleLog:
    """The training process's side: records failures, counts them over ranks and decides to stop."""

    def __init__(self, run_dir: Path, on_error: str, limit: int, rank: int) -> None:
        self.path, self.on_error, self.limit, self.rank = Path(run_dir) / "bad_samples.jsonl", on_error, limit, rank
        self.count = 0
        """Samples skipped so far over all ranks (agreed at step boundaries; kept in checkpoints)."""
        self.new: list[dict] = []

    def take(self, batch: dict, step: int, epoch: int) -> None:
        """Pop the failures a batch carries and append them to the log file."""
        records = [dict(r, step=step + 1, epoch=epoch, rank=self.rank)
                   for text in batch.pop(BAD_KEY, []) for r in json.loads(text)]
        if not records:
            return
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with open(self.path, "a") as handle:
            handle.writelines(json.dumps(r) + "\n" for r in records)
        for r in records:
            log.warning("skipped a bad sample (data.on_error=%s): %s: %s", self.on_error, r["file"], r["reason"])
        self.new += records

    def agreed_count(self, new_over_ranks: int) -> str | None:
        """Add the failures all ranks met since the last boundary; the reason to stop, or None."""
        self.count += new_over_ranks
        if new_over_ranks and self.on_error == "stop":
            return "data.on_error=stop"
        if self.count > self.limit:
            return f"{self.count} bad samples, above data.max_bad_samples={self.limit}"
        return None

    def stop_error(self, first: dict, why: str, step: int) -> DataFormatError:
        return DataFormatError(first["file"], f"{first['reason']}; stopped ({why}) with checkpoint-{step} saved. "
                                              f"Every bad sample is listed in {self.path}; fix or remove the files "
                                              "(or raise the limit) and run the same command to resume")

    def state_dict(self) -> dict:
        return {"count": self.count}

    def load_state_dict(self, state: dict | None) -> None:
        self.count = int((state or {}).get("count", 0))
