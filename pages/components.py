"""Components page: browse an NPEFF decomposition — overview, component view, search, map, attributions, export.

Reads the decomposition, its PEF run's logits and labels, and stored derived tables from the workspace;
never recomputes Fishers. The selected run and component live in st.query_params, so a URL reopens a view.
"""
from __future__ import annotations

import json
import re

import numpy as np
import pandas as pd
import streamlit as st

from analysis import components as cs
from analysis.attributions import class_attribution, component_attribution
from analysis.embedding import dominant_component, stored_umap, umap_coordinates
from analysis.figures import components as figs
from analysis.latex import top_examples_latex
from analysis.runs import load_decomposition
from analysis.store import Run, Workspace
from pages.common import (active, active_decomposition, decomposition_runs, export_buttons, in_app_shell,
                          workspace)

in_app_shell()

LONG_TEXT = 400  # characters shown before a text collapses
N_TOP_OVERVIEW = 50  # purity, entropy and accuracy in the overview are over this many top examples
MARKDOWN_SPECIALS = re.compile(r"([\\`*_{}\[\]()#+\-.!$~|<>])")
COLUMN_CONFIG = {
    "probability": st.column_config.NumberColumn("probability", format="%.3f"),
    "coefficient": st.column_config.NumberColumn("coefficient", format="%.4f"),
    "text": st.column_config.TextColumn("text", width="large"),
}


# ------------------------------------------------------------------------------------------ cached loaders

@st.cache_resource(show_spinner="Reading the decomposition…", max_entries=4)
def _decomposition(_ws: Workspace, root: str, run_id: str) -> tuple[Run, cs.Decomposition, cs.BrowseData]:
    run = _ws.get_run(run_id)
    return run, load_decomposition(_ws, run), cs.load_browse_data(_ws, run)


@st.cache_resource(show_spinner="Indexing top examples and similarities (once per decomposition)…", max_entries=4)
def _index(_ws: Workspace, root: str, run_id: str) -> dict[str, np.ndarray]:
    run, dec, _ = _decomposition(_ws, root, run_id)
    return cs.component_index(_ws, run, dec)


@st.cache_resource(show_spinner=False, max_entries=4)
def _profiles(_ws: Workspace, _model, root: str, run_id: str, model_id: str) -> tuple[np.ndarray, list[str]] | None:
    """Per-tensor shares [r, T] and tensor names, or None when the model does not match the run's scope."""
    run, dec, _ = _decomposition(_ws, root, run_id)
    try:
        names, offsets = cs.parameter_layout(cs.scoped_model(_ws, run, _model))
    except ValueError:
        return None
    return cs.component_profiles(_ws, run, dec, offsets), names


@st.cache_data(show_spinner=False, max_entries=8)
def _overview(_data: cs.BrowseData, _index: dict, root: str, run_id: str, n_top: int) -> pd.DataFrame:
    return cs.overview(_data, _index["top_indices"], _index["similarity"], n_top=n_top)


@st.cache_resource(show_spinner=False, max_entries=4)
def _texts(_dataset, content_hash: str) -> list[str] | None:
    return _dataset.display_texts() if hasattr(_dataset, "display_texts") else None


@st.cache_data(show_spinner="Integrating gradients…", max_entries=32)
def _attributions(_model, _ws: Workspace, root: str, run_id: str, k: int, idx: int, n_steps: int, _example):
    run, dec, _ = _decomposition(_ws, root, run_id)
    scoped = cs.scoped_model(_ws, run, _model)
    return (class_attribution(scoped, _example, n_steps=n_steps),
            component_attribution(scoped, _example, dec.full_component(k), n_steps=n_steps))


# ------------------------------------------------------------------------------------------------ helpers

def _md(text: str) -> str:
    """Text shown literally in markdown (no emphasis, links or $math$)."""
    return MARKDOWN_SPECIALS.sub(r"\\\1", text)


def _run_label(row: pd.Series) -> str:
    s = json.loads(row["summary"])
    kind = "LRM" if row["kind"] == "npeff-lrm" else "D"
    return (f"{row['id']} · {kind}-NPEFF · {s.get('n_components', '?')} components · "
            f"rel. error {float(s.get('relative_error', float('nan'))):.3f}")


def _on_run_change() -> None:
    st.query_params["run"] = st.session_state["cmp_run"]
    st.session_state["decomposition_run"] = st.session_state["cmp_run"]
    st.query_params.pop("component", None)
    st.session_state.pop("cmp_component", None)


def _open_component(k: int) -> None:
    st.session_state["cmp_component"] = int(k)
    st.query_params["component"] = str(int(k))


def _show_texts(frame: pd.DataFrame) -> None:
    """Examples as readable cards: one meta line, then the text (long ones collapse)."""
    for row in frame.itertuples():
        meta = (f"**#{row.idx}** · gold **{_md(row.gold)}** · predicted **{_md(row.prediction)}** "
                f"({row.probability:.0%}){'' if row.correct else ' · *misclassified*'}")
        if hasattr(row, "coefficient"):
            meta += f" · coefficient **{row.coefficient:.4f}**"
        with st.container(border=True):
            st.markdown(meta)
            if len(row.text) <= LONG_TEXT:
                st.markdown(_md(row.text))
            else:
                st.markdown(_md(row.text[:LONG_TEXT]) + " …")
                with st.expander(f"Full text ({len(row.text):,} characters)"):
                    st.markdown(_md(row.text))


def _show_examples(frame: pd.DataFrame, *, key: str, title: str, captions: list[str] | None = None) -> None:
    """Text cards, or an image grid (exportable) plus a table for image datasets."""
    if texts is not None:
        if st.toggle("Table view", key=f"{key}_table"):
            st.dataframe(frame, hide_index=True, column_config=COLUMN_CONFIG)
        else:
            _show_texts(frame)
        return
    captions = captions or [f"#{i} {g}→{p}" for i, g, p in zip(frame["idx"], frame["gold"], frame["prediction"])]
    grid = figs.example_grid(dataset.images[frame["idx"].to_numpy()], captions, n_cols=8, title=title)
    st.plotly_chart(grid, key=f"{key}_grid")
    export_buttons(grid, key, key=f"{key}_export")
    st.dataframe(frame, hide_index=True, column_config=COLUMN_CONFIG)


# ------------------------------------------------------------------------------------------- component view

def attribution_panel(k: int, frame: pd.DataFrame) -> None:
    """captum attributions of a top example: its predicted class and the component score s_k."""
    if not is_lrm:
        st.info("Component attributions use s_k(x) = Σ_y p_y (g_kᵀ∇_θ log p_y)², defined for LRM-NPEFF "
                "directions; this is a D-NPEFF decomposition.")
        return
    a1, a2 = st.columns([3, 1])
    idx = int(a1.selectbox("Example", frame["idx"].tolist(), key="cmp_attr_idx",
                           format_func=lambda i: f"#{i} (coefficient {data.W[i, k]:.4f})"))
    n_steps = int(a2.number_input("Integration steps", 4, 256, 32, key="cmp_attr_steps"))
    request = (run_id, k, idx, n_steps)
    st.button("Compute attributions", key="cmp_attr_go", on_click=st.session_state.__setitem__,
              args=("cmp_attr_request", request))
    if st.session_state.get("cmp_attr_request") != request:
        st.caption("Integrated gradients of the predicted class probability and of the component score "
                   "s_k(x) (a Jacobian-vector product along g_k) with respect to the input.")
        return
    example = dataset.texts[idx] if texts is not None else dataset.images[idx]
    try:
        cls, comp = _attributions(model, ws, root, run_id, k, idx, n_steps, example)
    except ValueError as e:
        st.error(str(e))
        return
    predicted = data.label_names[data.predictions[idx]]
    scores = {f"predicted class '{predicted}' (p = {cls.target_value:.3f})": cls.scores,
              f"component {k} score s_k = {comp.target_value:.3g}": comp.scores}
    fig = (figs.token_attribution_figure(cls.tokens, scores) if cls.tokens is not None
           else figs.pixel_attribution_figure(dataset.images[idx], scores))
    st.plotly_chart(fig, key="cmp_attr_fig")
    export_buttons(fig, f"component_{k}_example_{idx}_attributions", key="cmp_attr_export")
    st.caption(f"Completeness error (Σ attributions − (f(x) − f(baseline))): class {cls.delta:.2g}, "
               f"component {comp.delta:.2g}. Baseline: "
               f"{'[PAD] tokens' if cls.tokens is not None else 'a black image'}.")
    if abs(comp.delta) > 0.1 * abs(comp.target_value - comp.baseline_value):
        st.warning("The component attributions miss a large part of s_k(x) − s_k(baseline): s_k jumps where "
                   "ReLU units switch on or off along the path, and gradients do not see jumps. Read them "
                   "qualitatively, or compare with more integration steps.")


@st.fragment
def component_view() -> None:
    """One component in depth; reruns alone when its own widgets change."""
    c1, c2 = st.columns([1, 3])
    k = int(c1.selectbox("Component", range(r), key="cmp_component",
                         format_func=lambda c: f"{c} · mostly {table['majority_label'].iloc[c]} "
                                               f"({table['purity'].iloc[c]:.0%})"))
    n_top = int(c2.slider("Top examples", 5, min(200, data.n_examples), min(20, data.n_examples),
                          key="cmp_n_top"))
    st.query_params["component"] = str(k)
    top = cs.top_examples(data.W, k, n_top, index["top_indices"])
    frame = cs.example_table(data, top, k, texts)
    row = table.iloc[k]
    st.subheader(f"Component {k}")
    m1, m2, m3, m4, m5 = st.columns(5)
    m1.metric("Top coefficient", f"{row['top_coefficient']:.4f}")
    m2.metric("Notable examples", f"{row['notable']:,}")
    m3.metric(f"Purity (top {n_top})", f"{cs.label_distribution(data.labels[top], len(data.label_names)).max():.0%}")
    m4.metric(f"Accuracy (top {n_top})", f"{data.correct[top].mean():.0%}")
    m5.metric("Most similar", f"{int(row['most_similar'])}" if r > 1 else "—",
              f"|cos| {row['similar_abs_cos']:.2f}" if r > 1 else None, delta_color="off", delta_arrow="off")
    st.caption(f"Permalink: `?run={run_id}&component={k}`")

    t_top, t_quant, t_stats, t_attr = st.tabs(["Top examples", "Quantiles", "Statistics", "Attributions"])
    with t_top:
        _show_examples(frame, key=f"cmp_top_{k}", title=f"Top {n_top} examples of component {k}",
                       captions=[f"#{i} {g}→{p} ({c:.2f})" for i, g, p, c in
                                 zip(frame["idx"], frame["gold"], frame["prediction"], frame["coefficient"])])
    with t_quant:
        q1, q2 = st.columns(2)
        n_bands = int(q1.number_input("Bands", 2, 10, 5, key="cmp_bands"))
        per_band = int(q2.number_input("Examples per band", 1, 20, 3, key="cmp_per_band"))
        bands = cs.quantile_sample(data.W[:, k], n_bands=n_bands, per_band=per_band, threshold=threshold)
        if bands.empty:
            st.info("No example has a notable coefficient on this component.")
        else:
            st.caption("Examples with a notable coefficient, split into equal-count bands by rank "
                       "(band 1 = largest coefficients), a seeded sample from each.")
            q = cs.example_table(data, bands["idx"].to_numpy(), k, texts)
            q.insert(1, "band", bands["band"].to_numpy())
            _show_examples(q, key=f"cmp_quant_{k}", title=f"Coefficient bands of component {k}",
                           captions=[f"band {b}: #{i} ({c:.2f})" for b, i, c in
                                     zip(q["band"], q["idx"], q["coefficient"])])
    with t_stats:
        s1, s2 = st.columns(2)
        with s1:
            hist = figs.coefficient_histogram(data.W[:, k], k=k, threshold=threshold)
            st.plotly_chart(hist, key="cmp_hist")
            export_buttons(hist, f"component_{k}_coefficients", key="cmp_hist_export")
        with s2:
            labels_fig = figs.label_breakdown_figure(cs.breakdown(data, top), k=k, n_top=n_top)
            st.plotly_chart(labels_fig, key="cmp_labels")
            export_buttons(labels_fig, f"component_{k}_labels", key="cmp_labels_export")
        s3, s4 = st.columns(2)
        with s3:
            similar = cs.most_similar(index["similarity"], k, n=min(8, r - 1)) if r > 1 else None
            if similar is not None:
                sim_fig = figs.similar_components_figure(similar, k=k)
                st.plotly_chart(sim_fig, key="cmp_similar")
                export_buttons(sim_fig, f"component_{k}_similar", key="cmp_similar_export")
                jump = st.selectbox("Open a similar component", similar["component"].tolist(), key="cmp_jump")
                st.button("Open", key="cmp_jump_go", on_click=_open_component, args=(jump,))
        with s4:
            if profiles is None:
                st.info("The layer/module profile needs the model the decomposition was fitted with.")
            else:
                by = st.radio("Profile by", ["module", "layer"], horizontal=True, key="cmp_profile_by")
                shares = cs.group_profiles(*profiles, by=by).iloc[k]
                prof_fig = figs.module_profile_figure(shares, k=k, by=by)
                st.plotly_chart(prof_fig, key="cmp_profile")
                export_buttons(prof_fig, f"component_{k}_profile", key="cmp_profile_export")
    with t_attr:
        attribution_panel(k, frame)


# ------------------------------------------------------------------------------------------- run selection

st.title("Components")
model, dataset = active()
ws = workspace()
root = str(ws.root)

run_id = getattr(active_decomposition(model, dataset), "id", None)
if run_id is None:
    st.info(f"No complete NPEFF decomposition of **{model.name}** on **{dataset.name}** yet. "
            "Fit one on the Compute page; it is stored in the workspace and browsed here.")
    st.page_link("pages/compute.py", label="Compute a decomposition", icon="⚙️")
    st.stop()
runs = decomposition_runs(model, dataset)
st.session_state["cmp_run"] = run_id
labels = {row["id"]: _run_label(row) for _, row in runs.iterrows()}
st.selectbox("Decomposition", list(labels), format_func=labels.get, key="cmp_run", on_change=_on_run_change)

run, dec, data = _decomposition(ws, root, run_id)
index = _index(ws, root, run_id)
texts = _texts(dataset, dataset.content_hash)
r = data.n_components
is_lrm = run.kind == "npeff-lrm"
profiles = _profiles(ws, model, root, run_id, model.content_hash)
module_shares = cs.group_profiles(*profiles, by="module") if profiles else None
threshold = cs.notable_threshold(data.W)

wanted = st.query_params.get("component", "0")
if st.session_state.get("cmp_component") not in range(r):
    st.session_state["cmp_component"] = int(wanted) if wanted.isdigit() and int(wanted) < r else 0

st.caption(f"{r} components of {data.n_examples:,} examples · model **{model.name}** · dataset "
           f"**{dataset.name}** · scope {cs.decomposition_scope(ws, run).describe()} · "
           f"notable = coefficient > {cs.NOTABLE_FRACTION:.0%} of the largest ({threshold:.3g})")

tab_browse, tab_search, tab_map, tab_export = st.tabs(["Browse", "Search", "Map", "Export"])

# ---------------------------------------------------------------------------------------------- overview

with tab_browse:
    n_top_overview = min(N_TOP_OVERVIEW, index["top_indices"].shape[1])
    table = _overview(data, index, root, run_id, n_top_overview).copy()
    if module_shares is not None:
        table["modules"] = module_shares.to_numpy().tolist()
    f1, f2, f3 = st.columns(3)
    majority = f1.multiselect("Majority label of top examples", data.label_names, key="cmp_filter_label")
    min_purity = f2.slider("Minimum purity", 0.0, 1.0, 0.0, 0.05, key="cmp_filter_purity")
    min_notable = f3.number_input("Minimum notable examples", 0, data.n_examples, 0, key="cmp_filter_notable")
    shown = table[(table["purity"] >= min_purity) & (table["notable"] >= min_notable)
                  & (table["majority_label"].isin(majority) if majority else True)].reset_index(drop=True)
    event = st.dataframe(
        shown, hide_index=True, height=min(38 + 35 * len(shown), 320), key="cmp_overview",
        on_select="rerun", selection_mode="single-row",
        column_config={
            "component": st.column_config.NumberColumn("component", help="click a row to open it"),
            "notable": st.column_config.NumberColumn("notable", help="examples with a notable coefficient"),
            "top_coefficient": st.column_config.NumberColumn("top coef.", format="%.4f"),
            "majority_label": "majority label",
            "purity": st.column_config.ProgressColumn("purity", min_value=0.0, max_value=1.0, format="%.2f",
                                                      help=f"share of the majority gold label in the top "
                                                           f"{n_top_overview} examples"),
            "entropy_bits": st.column_config.NumberColumn("entropy (bits)", format="%.2f"),
            "accuracy": st.column_config.NumberColumn("accuracy", format="%.2f",
                                                      help="model accuracy on the top examples"),
            "most_similar": st.column_config.NumberColumn("most similar"),
            "similar_abs_cos": st.column_config.NumberColumn("|cos|", format="%.2f"),
            "modules": st.column_config.BarChartColumn(
                "direction by module", y_min=0.0, y_max=1.0,
                help="share of ‖g‖² per module, in parameter order"),
        })
    rows = event.selection.rows if event is not None else []
    if rows and rows[0] < len(shown):
        picked = int(shown["component"].iloc[rows[0]])
        if st.session_state.get("cmp_overview_applied") != picked:
            st.session_state["cmp_overview_applied"] = picked
            _open_component(picked)
    else:
        st.session_state.pop("cmp_overview_applied", None)
    component_view()

# ------------------------------------------------------------------------------------------------- search

with tab_search:
    query = st.text_input("Find examples by text (substring) or index (#12, 40)", key="cmp_search")
    found = cs.find_examples(query, texts, data.n_examples)
    if query and len(found) == 0:
        st.info("No example matches.")
    elif len(found):
        hits = cs.example_table(data, found, None, texts)
        loads = cs.loadings(data.W, found, n=3)
        hits.insert(1, "loads on", [", ".join(f"{c} ({w:.3f})" for c, w in zip(comps, coefs))
                                    for comps, coefs in zip(loads["components"], loads["coefficients"])])
        hits.insert(2, "share", loads["share"].to_numpy())
        st.caption(f"{len(found)} example(s); 'loads on' lists each example's 3 largest coefficients, 'share' "
                   "their fraction of its total coefficient mass.")
        st.dataframe(hits, hide_index=True, column_config={
            **COLUMN_CONFIG, "share": st.column_config.ProgressColumn("share", min_value=0.0, max_value=1.0,
                                                                      format="%.2f")})
        choices = sorted({c for comps in loads["components"] for c in comps})
        o1, o2 = st.columns([3, 1])
        target = o1.selectbox("Open component", choices, key="cmp_search_open")
        o2.button("Open in Browse", key="cmp_search_go", on_click=_open_component, args=(target,))

# ---------------------------------------------------------------------------------------------------- map

with tab_map:
    mm1, mm2, mm3 = st.columns(3)
    n_neighbors = int(mm1.number_input("UMAP neighbours", 2, 200, 15, key="cmp_umap_nn"))
    min_dist = float(mm2.number_input("UMAP min. distance", 0.0, 1.0, 0.1, 0.05, key="cmp_umap_md"))
    colour_by = mm3.radio("Colour by", ["dominant component", "gold label", "correctness"], key="cmp_umap_colour")
    settings = {"n_neighbors": n_neighbors, "min_dist": min_dist}
    xy = stored_umap(ws, run, **settings)
    if xy is None:
        st.info("The map is fitted once per decomposition and settings and then stored in the workspace "
                "(the first UMAP fit in a process takes about 15 s).")
        if st.button("Fit the map", key="cmp_umap_fit"):
            with st.spinner("Fitting UMAP…"):
                umap_coordinates(ws, run, data.W, **settings)
            st.rerun()
    if xy is not None:
        colours = {"dominant component": dominant_component(data.W),
                   "gold label": [data.label_names[l] if l >= 0 else "?" for l in data.labels],
                   "correctness": np.where(data.correct, "correct", "wrong")}[colour_by]
        hover = ([t[:80] for t in texts] if texts is not None else
                 [f"{data.label_names[l]}→{data.label_names[p]}" for l, p in zip(data.labels, data.predictions)])
        map_fig = figs.example_map(xy, colours, colour_name=colour_by, hover=hover)
        picked = st.plotly_chart(map_fig, key="cmp_map", on_select="rerun", selection_mode=("box", "lasso"))
        export_buttons(map_fig, "component_map", key="cmp_map_export")
        points = picked.selection.points if picked is not None else []
        selected = np.unique([int(p["customdata"]) for p in points if "customdata" in p])
        if len(selected):
            st.caption(f"{len(selected)} selected example(s)")
            chosen = cs.example_table(data, selected, None, texts)
            loads = cs.loadings(data.W, selected, n=1)
            chosen.insert(1, "dominant", [c[0] for c in loads["components"]])
            st.dataframe(chosen, hide_index=True, column_config=COLUMN_CONFIG)
        else:
            st.caption("Draw a box or lasso on the map to list the examples inside.")

# -------------------------------------------------------------------------------------------------- export

with tab_export:
    st.markdown("**Top examples as a LaTeX table** (label, prediction, coefficient, escaped text)")
    e1, e2 = st.columns([3, 1])
    chosen_components = e1.multiselect("Components", list(range(r)), default=[st.session_state["cmp_component"]],
                                       key="cmp_export_components")
    per_component = int(e2.number_input("Examples each", 1, 100, 10, key="cmp_export_n"))
    tables = {c: cs.example_table(data, cs.top_examples(data.W, c, per_component, index["top_indices"]), c, texts)
              for c in chosen_components}
    latex = top_examples_latex(tables, title=f"NPEFF run {run_id}: top examples")
    st.download_button("LaTeX (.tex)", latex, file_name=f"npeff_{run_id}_top_examples.tex", mime="text/x-tex",
                       key="cmp_export_tex", on_click="ignore", disabled=not chosen_components)
    with st.expander("Preview"):
        st.code(latex, language="latex")
    st.markdown("**Coefficients and components**")
    x1, x2, x3 = st.columns(3)
    x1.download_button("Coefficients (CSV)", lambda: cs.coefficients_frame(data).to_csv(index=False),
                       file_name=f"npeff_{run_id}_coefficients.csv", mime="text/csv", key="cmp_export_csv",
                       on_click="ignore")
    x2.download_button("Coefficients (Parquet)", lambda: cs.coefficients_frame(data).to_parquet(index=False),
                       file_name=f"npeff_{run_id}_coefficients.parquet",
                       mime="application/vnd.apache.parquet", key="cmp_export_parquet", on_click="ignore")
    x3.download_button("Components (safetensors)",
                       lambda: cs.components_safetensors(dec, {"run": run_id, "model": run.model_id,
                                                               "dataset": run.dataset_id}),
                       file_name=f"npeff_{run_id}_components.safetensors", mime="application/octet-stream",
                       key="cmp_export_safetensors", on_click="ignore")
    st.caption("Components are stored over the kept parameters: `components` [r, m] and `kept` [m] (their flat "
               "index among the parameters in scope, row-major in named_parameters() order).")
