"""Console logging for the training entry points: readable beside tqdm, and not silenced by imports.

modelscope (which ``import diffsynth`` pulls in) sets every plain ``StreamHandler`` on the root
logger to ERROR when torch.distributed is already initialised, to quiet its own rank>0 output.
In a multi-process run that import happens after accelerate set up the process group, so every
step line, checkpoint and resume message vanished.  Our handler is a subclass, which that reset
skips, and it writes through ``tqdm.write`` so log lines land above the progress bar, not in it.
"""

from __future__ import annotations

import logging
import sys

from tqdm import tqdm

FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"


class TqdmHandler(logging.StreamHandler):
    """A stderr handler that prints through tqdm, keeping any active progress bar intact."""

    def emit(self, record: logging.LogRecord) -> None:
        try:
            tqdm.write(self.format(record), file=self.stream)
        except Exception:  # logging must never take the run down
            self.handleError(record)


def configure_logging(level: int | str = logging.INFO) -> None:
    """One TqdmHandler on the root logger at ``level``, in place of plain stream handlers (other
    handlers, such as pytest's capture, stay)."""
    root = logging.getLogger()
    for handler in list(root.handlers):
        if type(handler) is logging.StreamHandler or isinstance(handler, TqdmHandler):
            root.removeHandler(handler)
    handler = TqdmHandler(sys.stderr)
    handler.setFormatter(logging.Formatter(FORMAT))
    root.addHandler(handler)
    root.setLevel(level)
