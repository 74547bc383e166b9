"""The estimates against a recorded run: the per-batch and per-iteration clock of a real text-demo PEF run and fit
(tests/data/estimate_record.json, written by `python -m benchmarks.bench_estimates --record`), fed to the
calibration arithmetic as the calibration would see it, must land within 30% of the run's recorded total; so must
the memory estimate from the calibration batches' recorded peak.

The process's CPU seconds are used: on a shared 2-core machine the load (~9 runnable processes in an earlier
record) made each batch's wall seconds vary ±50% with the other processes, not with the work; the record keeps the
wall seconds too."""
import json
from pathlib import Path

import numpy as np
import pytest

from analysis.estimates import (FIT_CALIBRATION_ITERS, calibrated_costs, calibration_batches,
                                fit_seconds, iteration_seconds, run_peak_memory)
from analysis.npeff import LrmFitConfig

RECORD = json.loads((Path(__file__).parents[1] / "data" / "estimate_record.json").read_text())
TOLERANCE = 0.3


def pef_estimate(batch_indices: list[int]) -> float:
    """The whole run's seconds from the recorded batches at these indices (the first one the warm-up): the costs
    per example and per padded token they give, over every batch of the run."""
    pefs = RECORD["pefs"]
    per_example, per_token = calibrated_costs(*([pefs[field][i] for i in batch_indices] for field in
                                                ("batch_cpu_seconds", "batch_sizes", "batch_padded_lengths")))
    sizes, lengths = np.array(pefs["batch_sizes"]), np.array(pefs["batch_padded_lengths"])
    return per_example * sizes.sum() + per_token * (sizes * lengths).sum()


def calibration_indices() -> list[int]:
    """The record's batches the calibration times: its positions in the first chunk (length order), as batches."""
    chunk = min(RECORD["chunk_size"], RECORD["n_examples"])
    return [int(b[0]) // RECORD["batch_size"] for b in calibration_batches(chunk, RECORD["batch_size"])]


def test_the_record_is_a_whole_run_in_batches():
    pefs = RECORD["pefs"]
    assert sum(pefs["batch_sizes"]) == RECORD["n_examples"] == 1000
    assert (len(pefs["batch_seconds"]) == len(pefs["batch_cpu_seconds"]) == len(pefs["batch_sizes"])
            == len(pefs["batch_padded_lengths"]))
    # the batches end before the last chunk is assembled
    assert sum(pefs["batch_cpu_seconds"]) <= pefs["total_cpu_seconds"]


def test_the_calibrated_pef_estimate_is_within_30_percent_of_the_recorded_run():
    assert calibration_indices() == [0, 2, 5, 7]  # a warm-up batch, then 3 spread over the 8 of the first chunk
    ratio = pef_estimate(calibration_indices()) / RECORD["pefs"]["total_cpu_seconds"]
    assert abs(ratio - 1) <= TOLERANCE, ratio
    # per example alone (the estimate before the padded length counted) misses by more: 0.88 in this record, 1.5 in
    # one made on a loaded machine (the first chunk's texts are longer than most chunks')
    pefs = RECORD["pefs"]
    seconds, sizes = ([pefs[f][i] for i in calibration_indices()] for f in ("batch_cpu_seconds", "batch_sizes"))
    per_example_only = calibrated_costs(seconds, sizes, [1] * len(sizes))[0] * RECORD["n_examples"]
    assert abs(per_example_only / pefs["total_cpu_seconds"] - 1) > abs(ratio - 1)


def test_the_calibrated_pef_memory_is_within_30_percent_of_the_recorded_run():
    pefs = RECORD["pefs"]
    ratio = run_peak_memory(pefs["calibration_memory_bytes"]) / pefs["peak_memory_bytes"]
    assert abs(ratio - 1) <= TOLERANCE, ratio
    # the calibration batches' own peak misses it: a run's heap grows over its many batches
    assert pefs["calibration_memory_bytes"] / pefs["peak_memory_bytes"] < 1 - TOLERANCE


def test_the_record_costs_more_per_example_for_longer_texts():
    """Each chunk's batches are in length order: its last (longest) batch costs more per example than its first
    after the warm-up, so where the calibration's batches sit in the order matters."""
    pefs = RECORD["pefs"]
    per_example = np.array(pefs["batch_cpu_seconds"]) / np.array(pefs["batch_sizes"])  # [batches]
    chunks = [per_example[i:i + 8] for i in range(0, len(per_example) - 7, 8)]
    assert all(chunk[-1] > 1.2 * chunk[1] for chunk in chunks)


def test_the_calibrated_fit_estimate_is_within_30_percent_of_the_recorded_fit():
    fit = RECORD["fit"]
    config = LrmFitConfig(n_components=fit["n_components"], n_iters=fit["n_iters"],
                          n_iters_g_only=fit["n_iters_g_only"])
    # (updates done, clock) of each progress report; the first entry is the clock before the fit started
    stamps = list(zip(fit["updates_done"][1:], fit["cpu_seconds"][1:]))
    calibration = [(done, t) for done, t in stamps if done <= config.n_iters_g_only + FIT_CALIBRATION_ITERS]
    setup = calibration[0][1]  # before the first report: loading and building X
    estimate = setup + fit_seconds(config, iteration_seconds(calibration, config.phase))
    ratio = estimate / fit["total_cpu_seconds"]
    assert abs(ratio - 1) <= TOLERANCE, ratio
    # scaling the calibration's clock, setup included, to every iteration misses: the setup is paid once
    done, clock = calibration[-1]
    assert abs(clock / done * config.total_iters / fit["total_cpu_seconds"] - 1) > TOLERANCE
    assert np.all(np.diff(fit["cpu_seconds"]) >= 0)
