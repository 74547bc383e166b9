"""AppTest of the Perturb page on a real decomposition of the image demo."""
import json
import math
import random
from pathlib import Path

from streamlit.testing.v1 import AppTest

from tests.app.conftest import rerun_until

APP = Path(__file__).resolve().parents[2] / "app.py"


def _perturb_page(image_run) -> AppTest:
    at = AppTest.from_file(str(APP), default_timeout=300)
    at.query_params["run"] = image_run
    at.run()
    at.radio(key="model_source").set_value("Image demo").run()
    at.button(key="load_pair").click().run()
    at.switch_page("pages/perturb.py").run()
    assert not at.exception, at.exception
    return at


def _table(at: AppTest, column: str):
    """The shown dataframe element with this column (None when there is none)."""
    return next((d for d in at.dataframe if column in d.value.columns), None)


def test_one_perturbation_sweep_and_perturb_all(app_env, image_run):
    at = _perturb_page(image_run)
    assert f"Decomposition **{image_run}**" in at.main.caption[1].value
    assert at.selectbox(key="cmp_run").value == image_run  # the decomposition picker, on the linked run
    at.selectbox(key="pt_component").set_value(2).run()
    # what the component is about (the notes browser test may name it meanwhile: the workspace is shared)
    assert any(m.value.startswith("**Component 2**") for m in at.main.markdown)
    assert any(c.value.startswith("Summary of its top") and "mostly" in c.value for c in at.main.caption)
    grid = json.loads(at.get("plotly_chart")[0].proto.spec)
    assert len([t for t in grid["data"] if t["type"] == "heatmap"]) == 5  # its top 5 images
    at.button(key="pt_one").click().run()
    assert not at.exception and not at.error, [e.value for e in at.error]
    assert [m.label for m in at.metric][:3] == ["KL on top examples", "KL on baseline", "KL ratio"]
    assert float(at.metric[2].value) > 1  # a component's own top examples move more than the baseline
    at.number_input(key="pt_points").set_value(3).run()
    at.number_input(key="pt_seed").set_value(random.randrange(1, 10_000)).run()  # settings not stored yet
    at.button(key="pt_sweep").click().run()
    assert any("Perturbation sweep" in m.value for m in at.main.markdown)  # the job's live card
    rerun_until(at, lambda at: _table(at, "KL ratio (top / baseline)") is not None)
    sweep = _table(at, "KL ratio (top / baseline)")
    assert "kl_ratio" not in sweep.value.columns and "Magnitude" in sweep.value.columns  # human column names
    assert json.loads(sweep.proto.columns)["KL, top examples"]["type_config"]["format"] == "%.3g"
    ratios = [r if math.isfinite(r) else -1 for r in sweep.value["KL ratio (top / baseline)"]]
    flips_at = next(s for s in at.selectbox if s.label == "Flipped predictions at")
    assert flips_at.value == ratios.index(max(ratios))  # the most selective magnitude, not the last one
    assert "(most selective)" in flips_at.format_func(flips_at.value)
    at.button(key="pt_all").click().run()
    rerun_until(at, lambda at: any("median KL ratio" in c.value for c in at.main.caption))
    assert not at.exception and not at.error, [e.value for e in at.error]
    assert len(_table(at, "KL ratio, sign +").value) == 6  # one row per component, readable columns


def test_a_d_npeff_run_offers_its_own_settings(app_env, diag_run, image_run):
    at = _perturb_page(diag_run)
    assert "(D-NPEFF, 4 components)" in at.main.caption[1].value
    assert "Fisher-weighted merge" in at.main.caption[1].value
    assert at.select_slider(key="pt_magnitude").label == "Merge step δ"
    assert at.slider(key="pt_lam").label == "Merge weight λ"
    assert not [n for n in at.number_input if n.key == "pt_max_sim"]  # semi-orthogonalization is LRM's
    at.button(key="pt_one").click().run()
    assert not at.exception and not at.error, [e.value for e in at.error]
    assert any(m.value.endswith("baseline)") and "flipped" in m.value for m in at.main.markdown)
    at.selectbox(key="pt_component").set_value(3).run()
    picker = at.selectbox(key="cmp_run")
    assert {diag_run, image_run} <= {o.split(" · ")[0] for o in picker.options}  # the pair's decompositions
    picker.set_value(image_run).run()
    assert at.query_params["run"] == image_run  # kept in the URL
    assert "(LRM-NPEFF, 6 components)" in at.main.caption[1].value
    assert at.selectbox(key="pt_component").value == 0  # the other run's component 3 means nothing here


def test_no_decomposition_links_to_compute(app_env, tmp_path, monkeypatch):
    monkeypatch.setenv("NPEFF_WORKSPACE", str(tmp_path / "empty"))
    import shutil
    shutil.copytree(app_env / "demos", tmp_path / "empty" / "demos")
    at = AppTest.from_file(str(APP), default_timeout=300).run()
    at.switch_page("pages/perturb.py").run()
    assert not at.exception
    assert at.info[0].value == "No decomposition of this model and dataset yet."
