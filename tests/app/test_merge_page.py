"""AppTest of the Merge page: the merge-pair demo's sweep as a background job, then its figures and tables."""
import random
from pathlib import Path

from streamlit.testing.v1 import AppTest

from analysis.merge.specs import demo_parents, load_parent
from analysis.runs import fit_run, pefs_run
from analysis.store import Workspace
from tests.app.conftest import rerun_until

APP = Path(__file__).resolve().parents[2] / "app.py"


def _merge_page() -> AppTest:
    at = AppTest.from_file(str(APP), default_timeout=300)
    at.run()
    at.switch_page("pages/merge.py").run()
    assert not at.exception, at.exception
    return at


def test_merge_demo_sweep_runs_as_a_job_and_shows_both_methods(merge_pair_workspace, app_env):
    at = _merge_page()
    assert at.title[0].value == "Merge models"
    at.number_input(key="mg_lambdas").set_value(random.randrange(3, 12)).run()  # settings not stored yet
    at.button(key="mg_run").click().run()
    assert any("Model merging sweep" in m.value for m in at.main.markdown)  # the job's live card
    rerun_until(at, lambda at: len(at.dataframe) >= 1)
    best = at.dataframe[0].value
    assert list(best["method"]) == ["average", "fisher"]
    assert len(at.get("plotly_chart")) == 2
    assert any(c.value.startswith("Merge run **") for c in at.main.caption)

    # NPEFF tie-in: a decomposition of model A on its validation digits, then each component through the merge
    ws = Workspace(app_env)
    parent = load_parent(ws, demo_parents(app_env)[0])
    run = fit_run(ws, pefs_run(ws, parent.model, parent.eval_data, kind="lrm", n_values_per_example=200),
                  n_components=4, n_iters=30)
    ws.close()
    at.run()
    at.selectbox(key="mg_np_run").set_value(run.id).run()
    at.button(key="mg_np_measure").click().run()
    assert not at.exception and not at.error, [e.value for e in at.error]
    survival = at.dataframe[-1].value
    assert list(survival["component"]) == [0, 1, 2, 3] and (survival["KL ratio"] > 0).all()


def test_checkpoints_wait_for_every_path(app_env):
    at = _merge_page()
    at.radio(key="mg_source").set_value("Checkpoints").run()
    assert not at.exception and not at.error
    assert "give every model's checkpoint and datasets" in at.info[0].value
    assert [b for b in at.button if b.key == "mg_run"] == []
