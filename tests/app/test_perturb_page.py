"""AppTest of the Perturb page on a real decomposition of the image demo."""
import random
import time
from pathlib import Path

from streamlit.testing.v1 import AppTest

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


def _until(at: AppTest, done, timeout_s: float = 120) -> None:
    """Rerun the page until done(at): a sweep or perturb-all runs as a background job, shown when complete."""
    deadline = time.monotonic() + timeout_s
    while not done(at):
        assert not at.exception and not at.error, [e.value for e in at.error] or at.exception
        assert time.monotonic() < deadline, [m.value for m in at.main.markdown]
        time.sleep(1)
        at.run()


def test_one_perturbation_sweep_and_perturb_all(app_env, image_run):
    at = _perturb_page(image_run)
    assert f"Decomposition **{image_run}**" in at.main.caption[1].value
    at.selectbox(key="pt_component").set_value(2).run()
    at.button(key="pt_one").click().run()
    assert not at.exception and not at.error, [e.value for e in at.error]
    assert [m.label for m in at.metric][:3] == ["KL on top examples", "KL on baseline", "KL ratio"]
    assert float(at.metric[2].value) > 1  # a component's own top examples move more than the baseline
    at.number_input(key="pt_points").set_value(3).run()
    at.number_input(key="pt_seed").set_value(random.randrange(1, 10_000)).run()  # settings not stored yet
    at.button(key="pt_sweep").click().run()
    assert any("Perturbation sweep" in m.value for m in at.main.markdown)  # the job's live card
    _until(at, lambda at: len(at.dataframe) >= 1)
    at.button(key="pt_all").click().run()
    _until(at, lambda at: any("median KL ratio" in c.value for c in at.main.caption))
    assert not at.exception and not at.error, [e.value for e in at.error]
    assert len(at.dataframe[-1].value) == 6  # one row per component


def test_a_d_npeff_run_offers_its_own_settings(app_env, diag_run):
    at = _perturb_page(diag_run)
    assert "(D-NPEFF, 4 components)" in at.main.caption[1].value
    assert "Fisher-weighted merge" in at.main.caption[1].value
    assert at.select_slider(key="pt_magnitude").label == "Merge step δ"
    assert at.slider(key="pt_lam").label == "Merge weight λ"
    assert not [n for n in at.number_input if n.key == "pt_max_sim"]  # semi-orthogonalization is LRM's
    at.button(key="pt_one").click().run()
    assert not at.exception and not at.error, [e.value for e in at.error]
    assert any(m.value.endswith("baseline)") and "flipped" in m.value for m in at.main.markdown)


def test_no_decomposition_links_to_compute(app_env, tmp_path, monkeypatch):
    monkeypatch.setenv("NPEFF_WORKSPACE", str(tmp_path / "empty"))
    import shutil
    shutil.copytree(app_env / "demos", tmp_path / "empty" / "demos")
    at = AppTest.from_file(str(APP), default_timeout=300).run()
    at.switch_page("pages/perturb.py").run()
    assert not at.exception
    assert at.info[0].value == "No decomposition of this model and dataset yet."
