"""Each PEF run and fit records what it took next to its estimate, and its numbers become the next estimate's."""
import json

import pytest

import analysis.runs as runs
from analysis.estimates import (CALIBRATED, LAST_RUN, RECORD, SHAPES, TIMINGS, describe_record, fit_key,
                                measure_pefs, run_record, stored_fit_measure, stored_pef_measure, timing_key,
                                tokens_per_example, workspace_estimate)
from analysis.models import ParamScope, load_model
from analysis.store import Workspace
from tests.integration.test_runs import _dataset


@pytest.fixture
def model(tiny_bert_dir):
    return load_model(tiny_bert_dir, scope=ParamScope("last_layers", n_layers=1))


def test_a_pef_run_and_a_fit_record_and_feed_back(tmp_path, model):
    ws, data = Workspace(tmp_path / "ws"), _dataset(24)
    key = timing_key(model, data, kind="lrm", top_k_classes=None, n_values_per_example=50)
    calibration = measure_pefs(ws.root, model, data, kind="lrm", top_k_classes=None, n_values_per_example=50,
                               batch_size=4)
    assert calibration.source == CALIBRATED and stored_pef_measure(ws.root, key, 4) == calibration
    pefs = runs.pefs_run(ws, model, data, kind="lrm", n_values_per_example=50, chunk_size=8, batch_size=4)
    record = run_record(ws, pefs.id)
    # the estimate recorded is the one made from the calibration before the run
    tokens = tokens_per_example(model, data, 4)  # the mean padded length of the run's batches
    assert tokens > 1 and record.estimated_seconds == pytest.approx(calibration.seconds_each(tokens) * 24)
    assert record.estimated_memory_bytes == calibration.run_memory_bytes and record.estimate_source == CALIBRATED
    after = stored_pef_measure(ws.root, key, 4)  # the calibration's two rates, scaled to the run's time
    assert after.source == LAST_RUN and after.seconds_each(tokens) * 24 == pytest.approx(record.seconds)
    assert (after.seconds_per_example * calibration.seconds_per_token
            == pytest.approx(after.seconds_per_token * calibration.seconds_per_example))
    assert after.memory_bytes == record.peak_memory_bytes
    assert workspace_estimate(ws.root, model, data, kind="lrm", n_values_per_example=50, top_k_classes=None,
                              n_components=2, batch_size=4).pef_source == LAST_RUN

    assert stored_fit_measure(ws.root, "lrm") is None
    fit = runs.fit_run(ws, pefs, n_components=2, n_iters=3, n_iters_g_only=2)
    fit_record = run_record(ws, fit.id)
    assert fit_record.estimate_source == SHAPES and fit_record.estimated_seconds is None
    measure = stored_fit_measure(ws.root, "lrm")
    n_values = runs.load_pefs(ws, pefs).values.size
    assert measure.source == LAST_RUN
    assert measure.seconds_per_value == pytest.approx(fit_record.seconds / (n_values * 2 * 5))
    assert fit_key("lrm") in json.loads((ws.root / TIMINGS).read_text())
    assert describe_record("NPEFF fit", fit_record).startswith("NPEFF fit: took ")

    # a reused run records nothing new
    (ws.run_dir(pefs.id) / RECORD).unlink()
    assert runs.pefs_run(ws, model, data, kind="lrm", n_values_per_example=50, chunk_size=8).id == pefs.id
    assert run_record(ws, pefs.id) is None
