"""Perturb page: move the model along a component's parameter direction and see which examples change."""
from __future__ import annotations

import math

import numpy as np
import pandas as pd
import streamlit as st

from analysis import components as cs
from analysis.datasets import Dataset
from analysis.errors import describe_error
from analysis.figures.components import example_grid
from analysis.jobs import find_job, perturb_spec, start_or_reuse_job
from analysis.models import ClassifierModel
from analysis.figures.perturb import flipped_probability_figure, kl_ratio_histogram, kl_sweep_figure
from analysis.notes import ComponentNote
from analysis.perturb.api import perturb_component
from analysis.perturb.diag import DEFAULT_LAM
from analysis.perturb.evaluation import DEFAULT_BASELINE_N, DEFAULT_TOP_N, PerturbationResult
from analysis.perturb.runs import load_perturb_all, load_sweep, most_selective, readable
from analysis.tables import csv_bytes
from pages.common import active, active_decomposition, escape_markdown, export_buttons, in_app_shell, workspace
from pages.panels.browse import BrowseContext, browse_context, run_picker
from pages.panels.examples import dataset_images, show_examples
from pages.panels.job import live_job
from pages.panels.notes import component_summaries, notes

in_app_shell()

MAX_FLIP_IMAGES = 24  # flipped examples drawn in the image grid (all are in the table)
PREVIEW_N = 5  # top examples in the chosen component's preview
FLIP_COLUMNS = {  # the flips table's headers
    "idx": st.column_config.NumberColumn("Example"), "set": st.column_config.TextColumn("Set"),
    "before": st.column_config.TextColumn("Prediction before"),
    "after": st.column_config.TextColumn("Prediction after"),
    "p_original": st.column_config.TextColumn("p(prediction before): before → after"),
    "text": st.column_config.TextColumn("Text", width="large")}


def show_flips(result: PerturbationResult, model: ClassifierModel, dataset: Dataset, k: int, *, key: str) -> None:
    """The examples whose prediction the perturbation flipped, and how their probabilities moved (widget keys
    start with `key`: a tab's own flips)."""
    flipped = result.examples[result.examples["flipped"]]
    names = dataset.label_names
    st.markdown(f"**{len(flipped)} prediction(s) flipped** ({result.n_flipped_top} top, "
                f"{result.n_flipped_baseline} baseline)")
    if flipped.empty:
        return
    before = [names[i] for i in flipped["original_prediction"]]
    after = [names[i] for i in flipped["new_prediction"]]
    table = pd.DataFrame({"idx": flipped["index"].to_numpy(), "set": flipped["set"].to_numpy(),
                          "before": before, "after": after,
                          "p_original": [f"{a:.3f} → {b:.3f}" for a, b in
                                         zip(flipped["p_original_before"], flipped["p_original_after"])]})
    texts = model.adapter.display_texts(dataset)
    if texts is not None:
        table["text"] = [texts[i] for i in table["idx"]]
    show_examples(table, key=f"{key}_flipped", images=dataset_images(model, dataset), toggle=False, table=True,
                  title=f"Flipped predictions, component {k}", name=f"component{k}_flipped",
                  max_images=MAX_FLIP_IMAGES, captions=[f"{b}→{a}" for b, a in zip(before, after)],
                  column_config=FLIP_COLUMNS)
    fig = flipped_probability_figure(result, label_names=names)
    st.plotly_chart(fig, key=f"{key}_flip_prob")
    export_buttons(fig, f"component{k}_flips", key=f"{key}_flip_prob")


def show_table(table: pd.DataFrame) -> None:
    """A sweep or perturb-all table with readable column names and numbers to 3 significant digits."""
    shown = readable(table)
    st.dataframe(shown, hide_index=True, column_config={
        c: st.column_config.NumberColumn(format="%.3g") for c in shown.select_dtypes("float").columns})


def component_title(c: int, note: ComponentNote | None) -> str:
    """'3 · low-key reviews': the component's number and its name when it has one."""
    return f"{c} · {note.name}" if note is not None and note.name else str(c)


def component_preview(ctx: BrowseContext, k: int, note: ComponentNote) -> None:
    """What component k is about before perturbing it: its name and tags, the automatic summary of its top
    examples and the top PREVIEW_N themselves (a row of images, or a short table of texts)."""
    summary = component_summaries(ctx)[k]
    top = cs.top_examples(ctx.data.W, k, PREVIEW_N, ctx.index["top_indices"])
    frame = ctx.examples(top, k)
    with st.container(border=True):
        tags = f" · tags: {escape_markdown(note.tags_text)}" if note.tags else ""
        st.markdown(f"**Component {k}**" + (f" · *{escape_markdown(note.name)}*" if note.name else "") + tags)
        st.caption(f"Summary of its top {summary.n_top} examples against the rest: {escape_markdown(summary.text)}")
        if ctx.images is None:
            st.dataframe(frame[["idx", "gold", "prediction", "coefficient", "text"]], hide_index=True,
                         column_config={"idx": st.column_config.NumberColumn("Example"),
                                        "coefficient": st.column_config.NumberColumn(format="%.4f"),
                                        "text": st.column_config.TextColumn(width="large")})
        else:
            images = example_grid(ctx.images[top], [f"#{i} {g}→{p} ({c:.2f})" for i, g, p, c in zip(
                frame["idx"], frame["gold"], frame["prediction"], frame["coefficient"])], n_cols=PREVIEW_N)
            st.plotly_chart(images.update_layout(height=190, margin=dict(t=30, b=5)), key="pt_preview_grid")


st.title("Perturb components")
st.caption("A selective component changes its top examples far more than a random disjoint baseline: "
           "KL ratio ≫ 1. The shared model is never modified: each perturbed model θ' is evaluated on a "
           "private copy of the parameters.")
model, dataset = active()
run = active_decomposition(model, dataset)
if run is None:
    st.info("No decomposition of this model and dataset yet.")
    st.page_link("pages/compute.py", label="Compute one", icon=":material/calculate:")
    st.stop()
run_picker(model, dataset, run.id)
ws = workspace()
ctx = browse_context(model, dataset, ws, run.id)
dec, variant, r = ctx.decomposition, ctx.variant, ctx.n_components
st.caption(f"Decomposition **{escape_markdown(run.id)}** ({variant.title}, {r} components) of "
           f"{escape_markdown(model.name)} on {escape_markdown(dataset.name)}: "
           f"{escape_markdown(variant.perturbation_formula)}")
if st.session_state.get("pt_run") != run.id:  # another decomposition's component numbers mean nothing here
    st.session_state.pop("pt_component", None)
    st.session_state["pt_run"] = run.id
found = notes(ctx)
wanted = st.query_params.get("component", "0")
c1, c2, c3 = st.columns(3)
k = int(c1.selectbox("Component", range(r), index=int(wanted) if wanted.isdigit() and int(wanted) < r else 0,
                     format_func=lambda c: component_title(c, found.get(c)), key="pt_component"))
st.query_params["component"] = str(k)
sign = 1 if c2.radio("Sign", ["+", "−"], horizontal=True, key="pt_sign") == "+" else -1
grid = [float(f"{v:.3g}") for v in variant.magnitude.grid()]
magnitude = float(c3.select_slider(variant.magnitude.label, options=grid, value=grid[len(grid) // 2],
                                   key="pt_magnitude"))
with st.expander("Advanced"):
    a1, a2, a3, a4 = st.columns(4)
    top_n = int(a1.number_input("Top examples", 1, 1000, DEFAULT_TOP_N, key="pt_top_n"))
    baseline_n = int(a2.number_input("Baseline examples", 1, 5000, DEFAULT_BASELINE_N, key="pt_baseline_n"))
    seed = int(a3.number_input("Seed", 0, 10_000, 0, key="pt_seed"))
    if variant.perturbation.merges:
        options = {"lam": float(a4.slider("Merge weight λ", 0.035, 0.965, DEFAULT_LAM, key="pt_lam"))}
    else:
        sim = a4.number_input("Semi-orthogonalize: max |cos| (0 = off)", 0.0, 1.0, 0.0, key="pt_max_sim")
        options = {"max_sim": float(sim) or None}
component_preview(ctx, k, found.get(k, ComponentNote(k)))
top_n = min(top_n, len(dataset) - 1)
common = dict(top_n=top_n, baseline_n=min(baseline_n, len(dataset) - top_n), seed=seed, **options)

single, sweep, everything = st.tabs(["One perturbation", "Sweep", "Perturb all components"])
with single:
    if st.button("Perturb", type="primary", key="pt_one"):
        try:
            with st.spinner("Evaluating the perturbed model on the top and baseline examples…"):
                result = perturb_component(model, dataset, dec, k, magnitude=magnitude, sign=sign, **common)
            m1, m2, m3, m4 = st.columns(4)
            m1.metric("KL on top examples", f"{result.kl_top:.3g}")
            m2.metric("KL on baseline", f"{result.kl_baseline:.3g}")
            m3.metric("KL ratio", f"{result.kl_ratio:.3g}")
            change = result.acc_top_after - result.acc_top_before
            m4.metric("Top accuracy", cs.percent(result.acc_top_after), None if math.isnan(change) else f"{change:+.0%}")
            show_flips(result, model, dataset, k, key="pt_one")
        except ValueError as e:
            st.error(escape_markdown(e))
def stored_job(kind: str, spec: dict, button: str, key: str):
    """The job of these settings: its stored result once complete (None while it runs, failed or is not
    started); the button starts it, an active one shows its live card (another tab's too)."""
    job = find_job(ws, kind, spec)
    if job is not None and job.status == "complete" and ws.get_run(job.result).status == "complete":
        return ws.get_run(job.result)
    if st.button(button, key=key, disabled=job is not None and job.active):
        try:
            start_or_reuse_job(ws, kind, spec)
        except Exception as e:  # shown as a message
            st.error(f"Could not start: {escape_markdown(describe_error(e))}")
            return None
        st.rerun()  # the sidebar, drawn before the page, lists the new job
    if job is not None:
        live_job(ws, job, key=key)
    return None


model_spec, dataset_spec = st.session_state["model_spec"], st.session_state["dataset_spec"]
with sweep:
    s1, s2, s3 = st.columns(3)
    low = float(s1.select_slider("From", options=grid, value=grid[4], key="pt_sweep_from"))
    high = float(s2.select_slider("To", options=grid, value=grid[-4], key="pt_sweep_to"))
    points = int(s3.number_input("Points", 2, 30, 8, key="pt_points"))
    magnitudes = [float(v) for v in np.geomspace(min(low, high), max(low, high), points)]
    sweep_spec = perturb_spec(model_spec, dataset_spec, run.id,
                              {"k": k, "magnitudes": magnitudes, "sign": sign, **common})
    if (sweep_result := stored_job("sweep", sweep_spec, "Run sweep", "pt_sweep")) is not None:
        results = load_sweep(ws, sweep_result)
        fig = kl_sweep_figure(results)
        st.plotly_chart(fig, key="pt_sweep_fig")
        export_buttons(fig, f"component{k}_sweep", key="pt_sweep_fig")
        summary = pd.DataFrame([r.scalars() for r in results])
        show_table(summary)
        st.download_button("CSV", csv_bytes(summary), f"component{k}_sweep.csv", "text/csv",
                           key="pt_sweep_csv")
        best = most_selective(results)
        shown_at = st.selectbox(
            "Flipped predictions at", range(len(results)), key=f"pt_at_{sweep_result.id}",
            index=next(i for i, result in enumerate(results) if result is best),
            format_func=lambda i: f"{variant.magnitude.label} = {results[i].magnitude:.3g} · KL ratio "
                                  f"{results[i].kl_ratio:.3g}" + (" (most selective)" if results[i] is best else ""),
            help="Starts at the most selective magnitude (largest KL ratio): the largest ones move every example")
        show_flips(results[shown_at], model, dataset, k, key="pt_sweep")
with everything:
    both = len(variant.perturbation.default_signs) > 1
    st.write(f"Perturb each of the {r} components at the magnitude above "
             f"({'both signs by default; the larger KL ratio is kept' if both else 'sign +'}) and compare their "
             "selectivity (it also fills the Components overview's selectivity column).")
    chosen_signs = {}
    if both:
        signs = {"both": None, "+ only": 1, "− only": -1}[st.radio(
            "Signs", ["both", "+ only", "− only"], horizontal=True, key="pt_all_signs",
            help="One sign takes about half the time")]
        chosen_signs = {} if signs is None else {"signs": signs}
    all_spec = perturb_spec(model_spec, dataset_spec, run.id, {"magnitude": magnitude, **common, **chosen_signs})
    if (all_run := stored_job("perturb_all", all_spec, "Perturb all", "pt_all")) is not None:
        table = load_perturb_all(ws, all_run)
        fig = kl_ratio_histogram(table)
        st.plotly_chart(fig, key="pt_hist")
        export_buttons(fig, "kl_ratio_histogram", key="pt_hist")
        st.caption(f"median KL ratio {all_run.summary['median_kl_ratio']:.3g} over {len(table)} components")
        show_table(table)
        st.download_button("CSV", csv_bytes(table), "perturb_all.csv", "text/csv", key="pt_all_csv")
