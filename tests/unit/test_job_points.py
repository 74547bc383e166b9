"""The fit recorder of a job: losses buffered and written in batches, progress passed on to the reporter."""
from analysis.job_points import LOSS, FitRecorder


class FakeWorkspace:
    """Counts the writes; `locked` makes them fail as a workspace held by another process does."""

    def __init__(self):
        self.writes: list[list[tuple[int, float]]] = []
        self.locked = False

    def append_job_points(self, job_id: str, series: str, points: list[tuple[int, float]]) -> None:
        assert (job_id, series) == ("j1", LOSS)
        if self.locked:
            raise RuntimeError("workspace is locked by another process")
        self.writes.append(list(points))

    def close(self) -> None:
        pass


class _Reporter:
    """Records the progress reports."""

    job_id = "j1"

    def __init__(self, calls: list):
        self.calls = calls

    def __call__(self, stage: str, step: int, total: int | None, detail: str = "") -> None:
        self.calls.append((stage, step, total, detail))


def test_losses_are_written_in_batches_not_one_write_per_iteration():
    ws, calls = FakeWorkspace(), []
    record = FitRecorder(ws, _Reporter(calls), every_s=3600)
    for done in range(0, 100, 4):
        record(done, 100, 1.0 / (done + 1))
    assert ws.writes == [[(0, 1.0)]]  # the first point at once, the rest wait for the interval or the end
    record(100, 100, 0.001)
    assert len(ws.writes) == 2 and [s for s, _ in ws.writes[1]] == list(range(4, 100, 4)) + [100]
    assert calls[-1] == ("NPEFF", 100, 100, "loss 0.001") and len(calls) == 26


def test_a_locked_workspace_keeps_the_points_for_the_next_write():
    ws, calls = FakeWorkspace(), []
    record = FitRecorder(ws, _Reporter(calls), every_s=0)
    ws.locked = True
    record(0, 10, 2.0)
    ws.locked = False
    record(1, 10, None)  # no loss: nothing to add, the kept point is written
    record(2, 10, 1.5)
    assert ws.writes == [[(0, 2.0)], [(2, 1.5)]] and calls[1] == ("NPEFF", 1, 10, "")
