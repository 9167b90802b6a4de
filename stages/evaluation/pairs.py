"""Violation pairs: the manifest (pairs.csv) and how a verifier is scored on it.

``pairs.csv`` has the columns ``plausible,implausible,kind``: two video directories relative to
the data root, spelled as metadata.csv's ``video`` column, and a free label that only groups the
report.  A verifier is right on a pair when the plausible clip scores higher; ties count half.
"""

from __future__ import annotations

import csv
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from data.errors import DataFormatError

COLUMNS = ("plausible", "implausible", "kind")
BOOTSTRAP_SAMPLES = 2000


@dataclass(frozen=True)
class Pair:
    plausible: str
    implausible: str
    kind: str


def _check_row(path: Path, number: int, row: dict, root: Path) -> Pair:
    where = f"row {number}"
    values = {key: (row.get(key) or "").strip() for key in COLUMNS}
    empty = [key for key in COLUMNS if not values[key]]
    if empty:
        raise DataFormatError(path, f"{where}: empty {', '.join(empty)}")
    if values["plausible"].rstrip("/") == values["implausible"].rstrip("/"):
        raise DataFormatError(path, f"{where}: names {values['plausible']} as both plausible and implausible")
    for key in ("plausible", "implausible"):
        if not (root / values[key]).is_dir():
            raise DataFormatError(path, f"{where}: {key} video {values[key]} is not a directory under {root}")
    return Pair(**values)


def read_pairs(path: str | Path, root: str | Path) -> list[Pair]:
    """Rows of a manifest, checked: columns present, both directories exist, two different clips."""
    path, root = Path(path), Path(root)
    if not path.is_file():
        raise DataFormatError(path, "pairs manifest not found")
    with path.open(newline="") as handle:
        reader = csv.DictReader(handle)
        missing = [c for c in COLUMNS if c not in (reader.fieldnames or [])]
        if missing:
            raise DataFormatError(path, f"lacks column(s) {', '.join(missing)} (header must hold {','.join(COLUMNS)})")
        pairs = [_check_row(path, number, row, root) for number, row in enumerate(reader, start=2)]
    if not pairs:
        raise DataFormatError(path, "has no pairs")
    return pairs


def pair_outcomes(pairs: list[Pair], scores: dict[str, float]) -> np.ndarray:
    """1 where the plausible clip scores higher, 0.5 on a tie, 0 otherwise (NaN scores tie)."""
    out = []
    for pair in pairs:
        a, b = scores[pair.plausible], scores[pair.implausible]
        out.append(0.5 if not (np.isfinite(a) and np.isfinite(b)) or a == b else float(a > b))
    return np.asarray(out)


def bootstrap_interval(outcomes: np.ndarray, seed: int = 0) -> list[float]:
    """95 % percentile interval of the mean outcome, resampling pairs."""
    rng = np.random.default_rng(seed)
    draws = rng.integers(0, len(outcomes), size=(BOOTSTRAP_SAMPLES, len(outcomes)))
    means = outcomes[draws].mean(axis=1)
    return [float(np.percentile(means, 2.5)), float(np.percentile(means, 97.5))]


def accuracy_row(pairs: list[Pair], scores: dict[str, float]) -> dict:
    """verify.json's row of one verifier: overall pairwise accuracy, by kind, and its 95 % interval."""
    outcomes = pair_outcomes(pairs, scores)
    kinds = sorted({p.kind for p in pairs})
    by_kind = {k: float(np.mean([o for o, p in zip(outcomes, pairs) if p.kind == k])) for k in kinds}
    return {"overall": float(outcomes.mean()), "by_kind": by_kind, "ci95": bootstrap_interval(outcomes)}
