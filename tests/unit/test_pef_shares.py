"""How the chunks of a PEF run are shared out over torchrun ranks (rank and world size planted, no process group)."""
from types import SimpleNamespace

import numpy as np
import pytest

from analysis import runs
from analysis.store import Workspace


@pytest.mark.parametrize("rank, world, chunks, reported", [
    (0, 1, [1, 2, 4, 5], [15, 20, 25, 30]),  # one process: every pending chunk, exact counts
    (1, 2, [2, 5], [20, 30]),  # rank 1 of 2: the 2nd and 4th pending chunks, its pace taken for the others'
    (0, 2, [1, 4], [20, 30]),
])
def test_a_rank_computes_every_worldth_pending_chunk(tmp_path, monkeypatch, rank, world, chunks, reported):
    monkeypatch.setattr(runs, "rank_and_world", lambda: (rank, world))
    ws = Workspace(tmp_path)
    run = ws.start_run("pefs", {"planted": True})
    plan = runs.pef_plan(30, 5)  # 6 chunks; 0 and 3 recorded by an earlier attempt

    def chunk_pefs(start: int, stop: int, progress=None):
        progress(stop - start)
        return SimpleNamespace(values=np.arange(start, stop))

    seen = []
    runs._compute_share(ws, run, plan, {0, 3}, ["values"], chunk_pefs, lambda done, n: seen.append((done, n)))
    assert ws.chunk_ranges(run.id) == {c: (5 * c, 5) for c in chunks}
    for c in chunks:
        assert np.array_equal(ws.load_array(run.id, f"chunk{c:06d}_values"), np.arange(5 * c, 5 * c + 5))
    assert seen == [(done, 30) for done in reported]


def test_a_plan_covers_the_examples_in_chunks():
    assert runs.pef_plan(11, 4) == [(0, 4), (4, 8), (8, 11)]
    with pytest.raises(ValueError, match="^chunk_size must be >= 1, got 0$"):
        runs.pef_plan(11, 0)


def test_in_one_process_every_rank_is_the_work_itself():
    def fail() -> None:
        raise FloatingPointError("row 3 is not finite")

    with pytest.raises(FloatingPointError, match="^row 3 is not finite$"):
        runs.every_rank(fail)
