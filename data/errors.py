"""One exception type for bad input, so callers can catch data problems separately from bugs."""

from __future__ import annotations

from pathlib import Path


class DataFormatError(ValueError):
    """A file or directory does not match the sim_physics format.

    The message always starts with the offending path so a user can go straight to it.
    """

    def __init__(self, path: str | Path, problem: str) -> None:
        self.path = Path(path)
        self.problem = problem
        super().__init__(f"{self.path}: {problem}")
