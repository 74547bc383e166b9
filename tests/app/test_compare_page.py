"""AppTest of the Compare page on two real seeds of an image-demo fit (the second fitted by the "seeds" job), a
smaller fit of the same PEFs and a run over another scope, in a workspace of their own (the demos linked in)."""
from pathlib import Path

import numpy as np
import pytest
from streamlit.testing.v1 import AppTest

import analysis.jobs
from analysis import compare as cmp
from analysis.demos import load_demo
from analysis.jobs import list_jobs, run_job, seeds_spec
from analysis.runs import fit_run, pefs_run
from analysis.store import Workspace

APP = Path(__file__).resolve().parents[2] / "app.py"


@pytest.fixture(scope="module")
def runs(demo_workspace, tmp_path_factory) -> dict:
    """{root, seed0, job, seed1, small, elsewhere, n_parameters}: run ids of the image demo in a fresh workspace."""
    root = tmp_path_factory.mktemp("compare") / "ws"
    root.mkdir()
    (root / "demos").symlink_to(Path(demo_workspace) / "demos")
    model, dataset, _ = load_demo("image", root)
    ws = Workspace(root)
    pefs = pefs_run(ws, model, dataset, kind="lrm", n_values_per_example=200)
    seed0 = fit_run(ws, pefs, n_components=6, n_iters=20, n_iters_g_only=20)
    ws.create_job("seeds", "seeds", seeds_spec(seed0.id, [1]))
    job = run_job(ws, "seeds")
    small = fit_run(ws, pefs, n_components=4, n_iters=20, n_iters_g_only=20)
    ids = {"model_id": seed0.model_id, "dataset_id": seed0.dataset_id}  # a run over another scope: rows only
    pefs = ws.start_run("pefs", {"scope": "elsewhere", "scope_spec": {"mode": "pattern", "pattern": "fc"}}, **ids)
    ws.complete_run(pefs.id, {"n_examples": len(dataset), "n_parameters": 10, "kind": "lrm"})
    elsewhere = ws.start_run("npeff-lrm", {"pefs": pefs.key, "n_components": 2, "n_iters": 1, "seed": 0}, **ids)
    ws.complete_run(elsewhere.id, {"pefs_run": pefs.id, "kind": "lrm", "n_components": 2, "n_parameters": 10,
                                   "relative_error": 0.9, "final_loss": 1.0})
    ws.close()
    return {"root": root, "seed0": seed0.id, "seed1": job.result, "job": job, "small": small.id,
            "elsewhere": elsewhere.id, "n_parameters": seed0.summary["n_parameters"]}


def test_the_seeds_job_refits_the_same_settings_with_the_new_seed(runs):
    ws = Workspace(runs["root"])
    job, seed0, seed1 = runs["job"], ws.get_run(runs["seed0"]), ws.get_run(runs["seed1"])
    assert (job.status, job.stage, job.message) == ("complete", "Seed 1 (1/1)", "Seed 1 (1/1): 40/40")
    assert cmp.fit_settings(seed1) == {**cmp.fit_settings(seed0), "seed": 1}
    assert seed1.params["pefs"] == seed0.params["pefs"] and seed1.id != seed0.id
    assert [s.id for s in cmp.seed_siblings(ws, seed0)] == [seed1.id]
    ws.close()


def test_two_seeds_are_matched_with_a_stability_score_and_shown_side_by_side(runs, monkeypatch):
    monkeypatch.setenv("NPEFF_WORKSPACE", str(runs["root"]))
    monkeypatch.setattr(analysis.jobs, "_spawn", lambda ws, job_id: None)  # "Fit more seeds" queues its job only
    seed0, seed1 = runs["seed0"], runs["seed1"]
    at = AppTest.from_file(str(APP), default_timeout=300).run()
    at.query_params.update({"run": seed0})
    at.switch_page("pages/compare.py").run()
    assert not at.exception, at.exception
    assert not at.error, [e.value for e in at.error]
    assert any("image-demo" in m.value for m in at.sidebar.markdown)  # the link's demo was activated
    assert at.selectbox(key="compare_reference").value == seed0
    assert at.multiselect(key="compare_others").value == [seed1]  # the other seed, preselected
    table = at.dataframe[0].value
    assert table["component"].tolist() == list(range(6))
    assert sorted(table[f"{seed1} component"]) == list(range(6))  # a one-to-one matching
    np.testing.assert_allclose(table["stability"], table[f"{seed1} cos"], atol=1e-9)  # one other run: its cos
    assert ((table["stability"] >= 0) & (table["stability"] <= 1)).all() and table["stability"].max() > 0.5
    assert at.query_params["others"] == seed1

    at.selectbox(key="compare_component").set_value(2).run()
    assert not at.exception, at.exception
    partner = int(table[f"{seed1} component"].iloc[2])
    matched = [m.value for m in at.markdown if m.value.startswith("Matched to component")]
    assert matched and f"**{partner}**" in matched[0] and "pseudo-Fisher cosine" in matched[0]
    links = [(p.proto.label, p.proto.page) for p in at.get("page_link")]
    assert f"Open component 2 of {seed0}" in [label for label, _ in links]
    assert f"Open component {partner} of {seed1}" in [label for label, _ in links]

    at.radio(key="compare_by").set_value("examples").run()  # matched on the overlap of top examples
    assert not at.exception, at.exception
    by_examples = at.dataframe[0].value
    np.testing.assert_allclose(by_examples["stability"], by_examples[f"{seed1} overlap"], atol=1e-9)

    at.number_input(key="compare_n_seeds").set_value(2).run()
    at.button(key="compare_fit_seeds").click().run()
    assert not at.exception, at.exception
    ws = Workspace(runs["root"])
    queued = [job for job in list_jobs(ws) if job.kind == "seeds" and job.status == "queued"]
    assert [job.spec for job in queued] == [seeds_spec(seed0, [2, 3])]  # the next unused seeds
    assert at.button(key="compare_fit_seeds").disabled  # while that job is active
    with ws.transaction() as con:  # never started: gone again for the browser test
        con.execute("DELETE FROM jobs WHERE id = ?", [queued[0].id])
    ws.close()


def test_a_smaller_run_leaves_components_unmatched_and_another_scope_is_refused(runs, monkeypatch):
    monkeypatch.setenv("NPEFF_WORKSPACE", str(runs["root"]))
    at = AppTest.from_file(str(APP), default_timeout=300).run()
    at.query_params.update({"run": runs["seed0"], "others": runs["small"]})
    at.switch_page("pages/compare.py").run()
    assert not at.exception, at.exception
    assert not at.error, [e.value for e in at.error]
    assert at.multiselect(key="compare_others").value == [runs["small"]]  # the URL's choice
    table = at.dataframe[0].value
    assert (table[f"{runs['small']} component"] == -1).sum() == 2  # 6 components against 4
    assert table["min"].min() == 0.0
    at.multiselect(key="compare_others").select(runs["elsewhere"]).run()
    assert not at.exception, at.exception
    assert [e.value for e in at.error] == [
        f"runs {runs['seed0']} and {runs['elsewhere']} are not comparable: {runs['seed0']} was fitted over scope "
        f"'all parameters' \\({runs['n_parameters']:,} parameters\\) and {runs['elsewhere']} over "
        "'names matching /fc/' \\(10\\); compare decompositions of PEFs over the same parameter scope"]


@pytest.mark.slow
@pytest.mark.browser
def test_browser_shows_two_seeds_matched_side_by_side_with_their_stability(runs):
    from playwright.sync_api import sync_playwright

    from tests.app.conftest import ARTIFACTS, CHROMIUM_ARGS, streamlit_app

    seed0, seed1 = runs["seed0"], runs["seed1"]
    with streamlit_app({"NPEFF_WORKSPACE": str(runs["root"])}) as url, sync_playwright() as p:
        browser = p.chromium.launch(executable_path="/usr/bin/chromium", args=CHROMIUM_ARGS)
        page = browser.new_page(viewport={"width": 1400, "height": 1900})
        page.goto(f"{url}/compare?run={seed0}")
        page.get_by_role("heading", name="Compare decompositions").wait_for(timeout=180_000)
        page.get_by_text("Stability table (CSV)").first.wait_for(timeout=180_000)  # below the stability table
        page.get_by_text("Matched to component").first.wait_for(timeout=60_000)
        page.get_by_text(f"{seed1} · component").first.wait_for(timeout=30_000)  # the partner's column
        page.wait_for_timeout(2000)  # let Plotly finish drawing the two image grids
        assert page.locator(".js-plotly-plot").count() >= 2  # the two image grids
        ARTIFACTS.mkdir(exist_ok=True)
        page.screenshot(path=str(ARTIFACTS / "compare_seeds.png"), full_page=True)
        page.get_by_role("tab", name="Figures").click()
        page.get_by_text("Stability over 1 other run(s)").first.wait_for(timeout=60_000)
        page.get_by_text("matched pairs on the diagonal").first.wait_for(timeout=60_000)
        page.wait_for_timeout(1000)
        page.screenshot(path=str(ARTIFACTS / "compare_matrix.png"), full_page=True)
        page.get_by_role("tab", name="Side by side").click()
        page.get_by_role("link", name=f"Open component 0 of {seed0}").click()
        page.get_by_role("heading", name="Component 0").wait_for(timeout=180_000)  # the Components page permalink
        assert f"run={seed0}" in page.url and "component=0" in page.url
        browser.close()
    assert (ARTIFACTS / "compare_seeds.png").stat().st_size > 10_000
