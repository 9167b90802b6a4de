"""Batches on the device one step ahead: the next batch's host-to-device copy overlaps this step.

A ``non_blocking`` copy from pinned memory frees the host at once, but on the compute stream the
GPU still runs it between two steps' kernels, computing nothing meanwhile: a cached stage-1 batch
at 49x480^2 is ~0.36 GB (features, RGB and targets), ~15 ms of copying per micro-batch.  Issued
on a side stream one batch ahead, the copy runs while the current batch computes.  Off CUDA the
batches are moved as they come.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator

import torch


def to_device(batch: dict, device: torch.device) -> dict:
    """Tensors (and lists of tensors) of ``batch`` on ``device``; other values as they are."""
    moved = {}
    for key, value in batch.items():
        if isinstance(value, torch.Tensor):
            moved[key] = value.to(device, non_blocking=True)
        elif isinstance(value, list) and value and isinstance(value[0], torch.Tensor):
            moved[key] = [v.to(device, non_blocking=True) for v in value]
        else:
            moved[key] = value
    return moved


def batch_tensors(batch: dict) -> Iterator[torch.Tensor]:
    """The tensors of a batch: its tensor values and the tensors in its list values."""
    for value in batch.values():
        if isinstance(value, torch.Tensor):
            yield value
        elif isinstance(value, list):
            yield from (v for v in value if isinstance(v, torch.Tensor))


def prefetch_to_device(batches: Iterable[dict], device: torch.device) -> Iterator[dict]:
    """The batches of ``batches`` on ``device``; on CUDA each copy is issued one batch ahead.

    The generator pulls batch i+1 before it yields batch i: a caller that counts consumption
    (the resumable sampler) must count what it receives, not what this pulls.
    """
    if device.type != "cuda":
        for batch in batches:
            yield to_device(batch, device)
        return
    copy_stream = torch.cuda.Stream(device)
    pending = None
    for batch in batches:
        with torch.cuda.stream(copy_stream):
            moved = to_device(batch, device)
            copied = torch.cuda.Event()
            copied.record(copy_stream)
        if pending is not None:
            yield _hand_over(*pending, device)
        pending = (moved, copied)
    if pending is not None:
        yield _hand_over(*pending, device)


def _hand_over(batch: dict, copied: torch.cuda.Event, device: torch.device) -> dict:
    """Make the consumer's stream wait for this batch's copy (only this one: waiting for the whole
    copy stream would wait for the next batch's copy too), and tell the caching allocator that the
    consumer uses the memory, so it is not reused while the consumer's kernels still read it."""
    consumer = torch.cuda.current_stream(device)
    consumer.wait_event(copied)
    for tensor in batch_tensors(batch):
        tensor.record_stream(consumer)
    return batch


__all__ = ["batch_tensors", "prefetch_to_device", "to_device"]
