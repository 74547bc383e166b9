"""Estimates from shapes, the refusal check against free disk and memory, and the stored time per example."""
import json
from dataclasses import asdict, replace
from types import SimpleNamespace

import numpy as np
import pytest

from analysis.estimates import (CALIBRATED, LAST_RUN, MAX_CLASS_CHOICES, RUN_MEMORY_GROWTH, TIMINGS, FitMeasure,
                                PefEstimate, PefMeasure, Resources, available_memory_bytes, calibrated_costs,
                                padded_batches, calibration_batches, class_options, default_values_per_example,
                                duration, estimate_pefs, fit_key, fit_seconds, fit_seconds_from_size, gib,
                                iteration_seconds, measure_pefs, measure_seconds_per_example, resource_problems,
                                stored_pef_measure, timing_key)
from analysis.npeff import DiagFitConfig, LrmFitConfig

MiB, GiB = 2**20, 2**30


class SevenTokens:
    """An adapter whose every input is 7 tokens long."""

    def input_sizes(self, data) -> np.ndarray:
        return np.full(len(data), 7)


def fake_model(n_parameters: int, n_classes: int):
    """What the estimates read of a model: its size in scope, classes and identity (nothing can be computed)."""
    return SimpleNamespace(summary=lambda: SimpleNamespace(n_parameters_in_scope=n_parameters),
                           label_names=[str(c) for c in range(n_classes)], content_hash="m" * 8,
                           scope=SimpleNamespace(describe=lambda: "all parameters"),
                           adapter=SevenTokens())


class Examples(list):
    """What the estimates read of a dataset: its length and identity."""

    content_hash = "d" * 8


def estimate(disk: int = 10 * MiB, pef_memory: int = 20 * MiB, fit_memory: int = 30 * MiB) -> PefEstimate:
    return PefEstimate(pef_bytes=disk // 2, disk_bytes=disk, pef_memory_bytes=pef_memory,
                       fit_memory_bytes=fit_memory, pef_seconds=None)


def test_sizes_follow_the_shapes():
    """500 examples, 3,818 parameters, 10 classes, 200 values kept: the image demo."""
    e = estimate_pefs(fake_model(3818, 10), Examples(range(500)), kind="lrm", n_values_per_example=200,
                      top_k_classes=None, n_components=None, batch_size=16, seconds_each=0.002)
    assert e.pef_bytes == 500 * 200 * (4 + 8) + 500 * 11 * 8
    assert e.disk_bytes == 2 * e.pef_bytes  # chunk files and the assembled arrays, until the chunks go
    assert e.pef_memory_bytes == max(3 * 16 * 10 * 3818 * 4, 2 * e.pef_bytes)
    assert e.fit_memory_bytes == 0 and e.peak_bytes == e.pef_memory_bytes
    assert e.pef_seconds == pytest.approx(1.0)
    with_fit = estimate_pefs(fake_model(3818, 10), Examples(range(500)), kind="lrm", n_values_per_example=200,
                             top_k_classes=None, n_components=4, batch_size=16, seconds_each=None)
    # X by columns at 24 B per stored value, one block of 2**17 values at 100 B, counts and column map over the
    # 3,818 parameters, four [m, r] and [n*c, r] float32 arrays with every parameter kept
    assert with_fit.fit_memory_bytes == (24 * 500 * 200 + 100 * 2**17 + 2 * 8 * 3818 + 4 * 4 * (3818 + 5000) * 4)
    assert with_fit.pef_seconds is None
    measured = estimate_pefs(fake_model(3818, 10), Examples(range(500)), kind="lrm", n_values_per_example=200,
                             top_k_classes=None, n_components=4, batch_size=16, seconds_each=None,
                             pef_memory_bytes=123 * MiB, fit_bytes_per_value=50.0)
    assert measured.pef_memory_bytes == 123 * MiB and measured.fit_memory_bytes == 50 * 500 * 200


def test_keeping_all_values_of_a_large_model_is_refused():
    """1.85M rows, MiniLM's last layer + head (1.8M parameters) × 2 classes, all values kept: 43 MB per example."""
    e = estimate_pefs(fake_model(1_800_000, 2), Examples(range(1_850_000)), kind="lrm", n_values_per_example=None,
                      top_k_classes=None, n_components=None, batch_size=16, seconds_each=None)
    assert e.pef_bytes / 1_850_000 == pytest.approx(43.2e6, rel=1e-3)
    assert resource_problems(e, Resources(free_disk_bytes=500 * GiB, available_memory_bytes=24 * GiB)) == [
        f"the PEFs need about {gib(e.disk_bytes)} of disk while computing, 500.0 GiB are free",
        f"the computation needs about {gib(e.peak_bytes)} of memory, 24.0 GiB are available"]


def test_default_values_per_example():
    assert default_values_per_example(fake_model(3818, 10)) == 2048
    assert default_values_per_example(fake_model(100, 3)) == 300


def test_nothing_to_refuse_when_it_fits():
    assert resource_problems(estimate(), Resources(free_disk_bytes=GiB, available_memory_bytes=GiB)) == []


def test_refused_when_the_disk_is_too_small():
    assert resource_problems(estimate(disk=10 * MiB), Resources(free_disk_bytes=5 * MiB,
                                                                available_memory_bytes=GiB)) == [
        "the PEFs need about 10.0 MiB of disk while computing, 5.0 MiB are free"]


def test_refused_when_memory_is_too_small():
    assert resource_problems(estimate(fit_memory=3 * GiB), Resources(free_disk_bytes=GiB,
                                                                     available_memory_bytes=2 * GiB)) == [
        "the computation needs about 3.0 GiB of memory, 2.0 GiB are available"]


def test_unknown_memory_is_not_checked():
    assert resource_problems(estimate(fit_memory=3 * GiB), Resources(free_disk_bytes=GiB,
                                                                     available_memory_bytes=None)) == []


def test_stored_pefs_need_no_disk_and_only_the_fit_memory():
    tight = Resources(free_disk_bytes=MiB, available_memory_bytes=25 * MiB)
    assert resource_problems(estimate(disk=10 * MiB, pef_memory=40 * MiB, fit_memory=20 * MiB), tight,
                             pefs_stored=True) == []
    assert len(resource_problems(estimate(disk=10 * MiB, pef_memory=40 * MiB, fit_memory=20 * MiB), tight)) == 2


def test_available_memory_is_read_from_meminfo(tmp_path):
    meminfo = tmp_path / "meminfo"
    meminfo.write_text("MemTotal:       24576000 kB\nMemFree:         1000000 kB\nMemAvailable:   12288000 kB\n")
    assert available_memory_bytes(meminfo) == 12288000 * 1024
    assert available_memory_bytes(tmp_path / "absent") is None


def test_formats():
    assert [gib(5 * MiB), gib(1.5 * GiB)] == ["5.0 MiB", "1.5 GiB"]
    assert [duration(0.2), duration(42), duration(600), duration(380 * 3600)] == ["< 1 s", "42 s", "10.0 min",
                                                                                   "380.0 h"]


def test_the_stored_measure_is_used_without_computing(tmp_path):
    model, data = fake_model(3818, 10), Examples(range(500))  # a fake model: computing would raise
    key = timing_key(model, data, kind="lrm", top_k_classes=None, n_values_per_example=200)
    assert stored_pef_measure(tmp_path, key, 16) is None
    measure = PefMeasure(seconds_per_example=0.25, memory_bytes=7 * MiB, batch_size=16, source=CALIBRATED,
                         seconds_per_token=0.01)
    (tmp_path / TIMINGS).write_text(json.dumps({key: asdict(measure)}))
    assert measure_pefs(tmp_path, model, data, kind="lrm", top_k_classes=None, n_values_per_example=200,
                        batch_size=16) == measure
    assert measure_seconds_per_example(tmp_path, model, data, kind="lrm", top_k_classes=None, n_values_per_example=200,
                                       batch_size=16) == pytest.approx(0.25 + 0.01 * 7)  # every input 7 tokens
    assert stored_pef_measure(tmp_path, key, 32) is None  # memory depends on the batch size: measured again
    assert timing_key(model, data, kind="lrm", top_k_classes=2, n_values_per_example=200) != key
    assert timing_key(model, data, kind="diag", top_k_classes=None, n_values_per_example=200) != key
    assert timing_key(model, data, kind="lrm", top_k_classes=None, n_values_per_example=None) != key
    (tmp_path / TIMINGS).write_text(json.dumps({key: 0.25}))  # a bare time from before memory was measured
    assert stored_pef_measure(tmp_path, key, 16) is None
    (tmp_path / TIMINGS).write_text("{broken")
    assert stored_pef_measure(tmp_path, key, 16) is None


def test_a_calibration_s_memory_is_scaled_to_a_run_and_a_run_s_own_is_not():
    calibrated = PefMeasure(seconds_per_example=0.25, memory_bytes=100 * MiB, batch_size=16, source=CALIBRATED)
    assert calibrated.run_memory_bytes == round(100 * MiB * RUN_MEMORY_GROWTH) > 100 * MiB
    assert replace(calibrated, source=LAST_RUN).run_memory_bytes == 100 * MiB
    assert replace(calibrated, memory_bytes=None).run_memory_bytes is None


def test_class_choices_drop_all_for_a_vocabulary():
    assert class_options(3) == ["all", "1", "2"]
    assert class_options(50_257) == [str(k) for k in range(1, MAX_CLASS_CHOICES + 1)]


def test_the_warm_up_batch_is_ignored_and_the_medians_taken():
    # batches of 16, 16, 16, 8 examples of one length: a slow first batch (allocation), one batch slowed by
    # another process
    assert calibrated_costs([4.0, 0.32, 0.96, 0.16], [16, 16, 16, 8], [30] * 4) == pytest.approx((0.02, 0.0))
    with pytest.raises(ValueError, match="calibration needs a warm-up batch and at least one timed batch with "
                                         "their sizes and lengths, got 1 times, 1 sizes and 1 lengths"):
        calibrated_costs([4.0], [16], [30])


def test_the_costs_per_example_and_per_token_are_recovered_from_batches_of_several_lengths():
    lengths = np.array([50, 12, 25, 40, 64])  # padded lengths; the first batch is the warm-up
    sizes = np.array([16, 16, 16, 16, 8])
    seconds = sizes * (0.01 + 0.002 * lengths)  # 0.01 s per example + 0.002 s per example and token
    seconds[0] *= 10
    assert calibrated_costs(seconds, sizes, lengths) == pytest.approx((0.01, 0.002))
    seconds[2] *= 3  # one batch slowed by another process: the medians keep the line
    per_example, per_token = calibrated_costs(seconds, sizes, lengths)
    assert per_token == pytest.approx(0.002, rel=0.35) and per_example == pytest.approx(0.01, rel=0.35)
    # shorter batches that took longer: no negative cost per token
    assert calibrated_costs([1.0, 0.64, 0.32], [16, 16, 16], [10, 10, 40]) == pytest.approx((0.03, 0.0))


def test_padded_batches_follow_the_run_s_chunks_and_length_order():
    examples, lengths = padded_batches(np.array([5, 1, 3, 2, 9, 4]), batch_size=2, chunk_size=4)
    assert examples.tolist() == [2, 2, 2] and lengths.tolist() == [2, 5, 9]  # [1, 2 | 3, 5] then [4, 9]


def test_calibration_batches_spread_over_the_length_ordered_chunk():
    batches = calibration_batches(128, 16)
    assert [b[0] for b in batches] == [0, 32, 80, 112] and all(len(b) == 16 for b in batches)
    assert [len(b) for b in calibration_batches(40, 16)] == [16, 16, 8]  # only 3 batches: all of them
    short = calibration_batches(10, 16)  # one batch: warm-up, then the same batch timed
    assert len(short) == 2 and short[0].tolist() == short[1].tolist() == list(range(10))


def test_fit_iterations_are_timed_by_phase_after_the_first():
    # (updates done, clock) as the fit reports them: setup and the first update slow, then 3 warm-up updates at
    # 0.1 s, then joint updates at 0.3 s, the end reported twice
    stamps = [(0, 0.0), (1, 5.0), (2, 5.1), (3, 5.2), (4, 5.5), (5, 5.8), (6, 6.1), (6, 6.2)]
    config = LrmFitConfig(n_components=4, n_iters=10, n_iters_g_only=3)
    per_iteration = iteration_seconds(stamps, config.phase)
    assert per_iteration == pytest.approx({"warm-up": 0.1, "joint": 0.3})
    assert fit_seconds(config, per_iteration) == pytest.approx(3 * 0.1 + 10 * 0.3)
    assert fit_seconds(DiagFitConfig(n_components=4, n_iters=10), {"joint": 0.2}) == pytest.approx(2.0)
    with pytest.raises(ValueError, match="fit calibration needs at least 3 progress reports, got 2"):
        iteration_seconds(stamps[:2], config.phase)


def test_the_fit_time_from_its_size_uses_the_measured_coefficient(tmp_path):
    config = LrmFitConfig(n_components=4, n_iters=100, n_iters_g_only=50)
    assert fit_seconds_from_size(tmp_path, config, 10_000) is None
    (tmp_path / TIMINGS).write_text(json.dumps({fit_key("lrm"): asdict(FitMeasure(1e-8, 60.0, LAST_RUN))}))
    assert fit_seconds_from_size(tmp_path, config, 10_000) == pytest.approx(1e-8 * 10_000 * 4 * 150)
    assert fit_seconds_from_size(tmp_path, DiagFitConfig(n_components=4, n_iters=100), 10_000) is None
