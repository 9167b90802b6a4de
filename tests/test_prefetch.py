"""stages.trainer.prefetch: batches reach the step unchanged and in order; on CUDA each copy runs on
a side stream one batch ahead, and the step waits for its own batch's copy only.  The CUDA
schedule is checked against a recording stand-in for torch.cuda (no GPU here)."""

from __future__ import annotations

import torch

from stages.trainer import prefetch


def batches(n: int) -> list[dict]:
    return [{"x": torch.full((2, 3), float(i)), "taps": [torch.arange(4) + i], "name": f"b{i}"} for i in range(n)]


def test_off_cuda_batches_arrive_unchanged_and_in_order():
    source = batches(3)
    got = list(prefetch.prefetch_to_device(iter(source), torch.device("cpu")))
    assert [b["name"] for b in got] == ["b0", "b1", "b2"]
    for a, b in zip(source, got):
        assert torch.equal(a["x"], b["x"]) and torch.equal(a["taps"][0], b["taps"][0])


class Recorder:
    """Stand-ins for torch.cuda's streams and events that log what the prefetcher asks of them."""

    def __init__(self) -> None:
        self.log: list[tuple] = []
        self.current = self.consumer = self.Stream("consumer")
        self.events = 0

    def Stream(self, name: str = "side"):  # noqa: N802 (mirrors torch.cuda.Stream)
        recorder = self

        class Stream:
            def __init__(self) -> None:
                self.name = name

            def wait_event(self, event) -> None:
                recorder.log.append(("wait", self.name, event.id))

        return Stream()

    def install(self, monkeypatch) -> None:
        recorder = self

        class Event:
            def __init__(self) -> None:
                recorder.events += 1
                self.id = recorder.events - 1

            def record(self, stream) -> None:
                recorder.log.append(("record", stream.name, self.id))

        class StreamContext:
            def __init__(self, stream) -> None:
                self.stream = stream

            def __enter__(self) -> None:
                self.previous, recorder.current = recorder.current, self.stream

            def __exit__(self, *exc) -> None:
                recorder.current = self.previous

        def copy(batch: dict, device) -> dict:
            recorder.log.append(("copy", recorder.current.name, batch["name"]))
            return batch

        monkeypatch.setattr(torch.cuda, "Stream", lambda device=None: self.Stream("side"))
        monkeypatch.setattr(torch.cuda, "Event", Event)
        monkeypatch.setattr(torch.cuda, "stream", StreamContext)
        monkeypatch.setattr(torch.cuda, "current_stream", lambda device=None: recorder.current)
        monkeypatch.setattr(torch.Tensor, "record_stream",
                            lambda tensor, stream: recorder.log.append(("keep", stream.name)), raising=False)
        monkeypatch.setattr(prefetch, "to_device", copy)


def test_on_cuda_each_copy_runs_ahead_on_a_side_stream_and_the_step_waits_for_its_own(monkeypatch):
    recorder = Recorder()
    recorder.install(monkeypatch)
    for batch in prefetch.prefetch_to_device(iter(batches(3)), torch.device("cuda")):
        recorder.log.append(("use", recorder.current.name, batch["name"]))
    steps = [entry for entry in recorder.log if entry[0] != "keep"]
    assert steps == [
        ("copy", "side", "b0"), ("record", "side", 0),
        ("copy", "side", "b1"), ("record", "side", 1),  # issued before b0 is used: it overlaps b0's step
        ("wait", "consumer", 0), ("use", "consumer", "b0"),  # b0 waits for its own copy, not for b1's
        ("copy", "side", "b2"), ("record", "side", 2),
        ("wait", "consumer", 1), ("use", "consumer", "b1"),
        ("wait", "consumer", 2), ("use", "consumer", "b2"),
    ]
    # Every tensor (two per batch) is marked as used by the consumer's stream before it is used,
    # so the caching allocator cannot hand its memory to the next copy too early.
    keeps = [i for i, entry in enumerate(recorder.log) if entry[0] == "keep"]
    uses = [i for i, entry in enumerate(recorder.log) if entry[0] == "use"]
    assert len(keeps) == 6 and all(recorder.log[i] == ("keep", "consumer") for i in keeps)
    assert [sum(k < u for k in keeps) for u in uses] == [2, 4, 6]
