"""One component in depth: metrics, top examples, coefficient bands, statistics and attributions."""
from __future__ import annotations

import numpy as np
import streamlit as st

from analysis import components as cs
from analysis.figures import components as figs
from analysis.notes import ComponentNote
from pages.common import escape_markdown, export_buttons
from pages.panels.attributions import attribution_panel
from pages.panels.browse import COMPONENT_KEY, TAB_KEY, BrowseContext, open_component, permalink
from pages.panels.examples import show_examples
from pages.panels.highlights import highlights_panel
from pages.panels.notes import note_panel, notes

TOP_KEY = "top"  # the 'Top examples' slider, bound to ?top=
VIEW_KEY = "view"  # the component view's section tabs, bound to ?view=
VIEWS = ["Top examples", "Quantiles", "Statistics", "Attributions"]


@st.fragment
def component_view(ctx: BrowseContext) -> None:
    """One component in depth; reruns alone when its own widgets change."""
    data, table, r = ctx.data, ctx.overview, ctx.n_components
    found = notes(ctx)
    c1, c2 = st.columns([2, 3])  # room for the component's name in the picker
    k = int(c1.selectbox("Component", range(r), key=COMPONENT_KEY,
                         format_func=lambda c: _component_title(table, c, found.get(c), ctx.n_top_overview)))
    n_top = int(c2.slider("Top examples", 5, min(200, data.n_examples), min(20, data.n_examples),
                          key=TOP_KEY, bind="query-params"))
    st.query_params["component"] = str(k)
    top = cs.top_examples(data.W, k, n_top, ctx.index["top_indices"])
    frame = ctx.examples(top, k)
    row = table.iloc[k]
    note = found.get(k, ComponentNote(k))
    st.subheader(f"Component {k}" + (f" · {escape_markdown(note.name)}" if note.name else ""))
    m1, m2, m3, m4, m5 = st.columns(5)
    m1.metric("Top coefficient", f"{row['top_coefficient']:.4f}")
    m2.metric("Notable examples", f"{row['notable']:,}")
    m3.metric(f"Purity (top {ctx.n_top_overview})", cs.percent(row["purity"]),
              help="share of the majority gold label among the top examples, as in the overview")
    m4.metric(f"Accuracy (top {ctx.n_top_overview})", cs.percent(row["accuracy"]))
    m5.metric("Most similar", f"{int(row['most_similar'])}" if r > 1 else "—",
              f"|cos| {row['similar_abs_cos']:.2f}" if r > 1 else None, delta_color="off", delta_arrow="off")
    link = st.container()  # filled last, once the example is chosen
    note_panel(ctx, k, note)

    t_top, t_quant, t_stats, t_attr = st.tabs(VIEWS, key=VIEW_KEY, bind="query-params")
    with t_top:
        highlights = highlights_panel(ctx, k, n_top)
        show_examples(frame, key=f"cmp_top_{k}", images=ctx.images, title=f"Top {n_top} examples of component {k}",
                      captions=[f"#{i} {g}→{p} ({c:.2f})" for i, g, p, c in
                                zip(frame["idx"], frame["gold"], frame["prediction"], frame["coefficient"])],
                      extras={"coefficient": "{:.4f}"}, highlights=highlights)
    with t_quant:
        _bands(ctx, k)
    with t_stats:
        _statistics(ctx, k, top, n_top)
    with t_attr:
        example = attribution_panel(ctx, k, frame)
    shown = {"run": ctx.run_id, "component": k, "tab": st.session_state.get(TAB_KEY),
             "view": st.session_state.get(VIEW_KEY), "top": n_top, "example": example}
    link.caption("Permalink to this view (tab, section, top examples and the attributions' example):")
    link.code(permalink({key: value for key, value in shown.items() if value is not None}), language=None)


def _component_title(table, c: int, note: ComponentNote | None, n_top: int) -> str:
    """'3 · low-key reviews · mostly fresh (80% of top 50)': the number, the name when it has one, and the
    majority label with the overview's purity when the top examples have gold labels."""
    purity = table["purity"].iloc[c]
    name = [note.name] if note is not None and note.name else []
    label = [] if np.isnan(purity) else [
        f"mostly {table['majority_label'].iloc[c]} ({cs.percent(purity)} of top {n_top})"]
    return " · ".join([str(c), *name, *label])


def _bands(ctx: BrowseContext, k: int) -> None:
    """A seeded sample of each equal-count band of the notable coefficients."""
    q1, q2 = st.columns(2)
    n_bands = int(q1.number_input("Bands", 2, 10, 5, key="cmp_bands"))
    per_band = int(q2.number_input("Examples per band", 1, 20, 3, key="cmp_per_band"))
    bands = cs.quantile_sample(ctx.data.W[:, k], n_bands=n_bands, per_band=per_band, threshold=ctx.threshold)
    if bands.empty:
        st.info("No example has a notable coefficient on this component.")
        return
    st.caption("Examples with a notable coefficient, split into equal-count bands by rank "
               "(band 1 = largest coefficients), a seeded sample from each.")
    q = ctx.examples(bands["idx"].to_numpy(), k)
    q.insert(1, "band", bands["band_name"].to_numpy())
    show_examples(q, key=f"cmp_quant_{k}", images=ctx.images, title=f"Coefficient bands of component {k}",
                  captions=[f"band {b}/{n_bands}: #{i} ({c:.2f})"
                            for b, i, c in zip(bands["band"], q["idx"], q["coefficient"])],
                  extras={"band": "{}", "coefficient": "{:.4f}"})


def _statistics(ctx: BrowseContext, k: int, top: np.ndarray, n_top: int) -> None:
    """Coefficient histogram, label and annotation breakdowns of the top examples, similar components,
    layer/module profile."""
    data, r = ctx.data, ctx.n_components
    s1, s2 = st.columns(2)
    with s1:
        hist = figs.coefficient_histogram(data.W[:, k], k=k, threshold=ctx.threshold)
        st.plotly_chart(hist, key="cmp_hist")
        export_buttons(hist, f"component_{k}_coefficients", key="cmp_hist_export")
    with s2:
        if not data.has_labels:
            st.caption(f"Gold labels: {cs.NOT_AVAILABLE} for this dataset; the predictions are shown.")
        labels_fig = figs.label_breakdown_figure(cs.breakdown(data, top), k=k, n_top=n_top)
        st.plotly_chart(labels_fig, key="cmp_labels")
        export_buttons(labels_fig, f"component_{k}_labels", key="cmp_labels_export")
    columns = st.columns(2) if ctx.annotations else []
    for i, (name, values) in enumerate(ctx.annotations.items()):  # ground-truth columns of the dataset
        with columns[i % 2]:
            fig = figs.annotation_breakdown_figure(cs.annotation_breakdown(values, top), name=name, k=k, n_top=n_top)
            st.plotly_chart(fig, key=f"cmp_annotation_{name}")
            export_buttons(fig, f"component_{k}_{name}", key=f"cmp_annotation_{name}_export")
    s3, s4 = st.columns(2)
    with s3:
        if r > 1:
            similar = cs.most_similar(ctx.index["similarity"], k, n=min(8, r - 1))
            sim_fig = figs.similar_components_figure(similar, k=k)
            st.plotly_chart(sim_fig, key="cmp_similar")
            export_buttons(sim_fig, f"component_{k}_similar", key="cmp_similar_export")
            jump = st.selectbox("Open a similar component", similar["component"].tolist(), key="cmp_jump")
            st.button("Open", key="cmp_jump_go", on_click=open_component, args=(jump,))
    with s4:
        if ctx.profiles is None:
            st.info("The layer/module profile needs the model the decomposition was fitted with.")
        else:
            by = st.radio("Profile by", ["module", "layer"], horizontal=True, key="cmp_profile_by")
            shares = cs.group_profiles(*ctx.profiles, by=by).iloc[k]
            prof_fig = figs.module_profile_figure(shares, k=k, by=by)
            st.plotly_chart(prof_fig, key="cmp_profile")
            export_buttons(prof_fig, f"component_{k}_profile", key="cmp_profile_export")
