"""A UMAP of the examples' coefficient vectors (stored per settings); a box or lasso lists the examples inside."""
from __future__ import annotations

import numpy as np
import streamlit as st

from analysis import components as cs
from analysis.embedding import dominant_component, stored_umap
from analysis.jobs import find_job, start_or_reuse_job, umap_spec
from analysis.figures import components as figs
from pages.common import export_buttons
from pages.panels.browse import BrowseContext
from pages.panels.examples import show_examples
from pages.panels.job import live_job

MAX_IMAGES = 48  # selected examples drawn in the image grid (all are in the table)


def map_panel(ctx: BrowseContext) -> None:
    """UMAP settings, the map (fitted once when asked), and the examples selected on it."""
    data, texts = ctx.data, ctx.texts
    mm1, mm2, mm3 = st.columns(3)
    n_neighbors = int(mm1.number_input("UMAP neighbours", 2, 200, 15, key="cmp_umap_nn"))
    min_dist = float(mm2.number_input("UMAP min. distance", 0.0, 1.0, 0.1, 0.05, key="cmp_umap_md"))
    colour_by = mm3.radio("Colour by", ["dominant component", "gold label", "correctness", *ctx.annotations],
                          key="cmp_umap_colour")
    settings = {"n_neighbors": n_neighbors, "min_dist": min_dist}
    xy = stored_umap(ctx.ws, ctx.run, **settings)
    if xy is None:
        st.info("The map is fitted once per decomposition and settings and then stored in the workspace "
                "(the first UMAP fit in a process takes about 15 s).")
        spec = umap_spec(ctx.run.id, settings)
        job = find_job(ctx.ws, "umap", spec)
        if st.button("Fit the map", key="cmp_umap_fit", disabled=job is not None and job.active):
            start_or_reuse_job(ctx.ws, "umap", spec)
            st.rerun()  # the sidebar, drawn before the page, lists the new job
        if job is not None:
            live_job(ctx.ws, job, key="cmp_umap_job")
        return
    colours = {"dominant component": dominant_component(data.W),
               "gold label": [data.label_names[l] if l >= 0 else "?" for l in data.labels],
               "correctness": figs.correctness(data.correct, data.known), **ctx.annotations}[colour_by]
    hover = ([t[:80] for t in texts] if texts is not None else
             [f"{data.label_names[l]}→{data.label_names[p]}" for l, p in zip(data.labels, data.predictions)])
    map_fig = figs.example_map(xy, colours, colour_name=colour_by, hover=hover,
                               colors=figs.CORRECTNESS_COLORS if colour_by == "correctness" else None)
    picked = st.plotly_chart(map_fig, key="cmp_map", on_select="rerun", selection_mode=("box", "lasso"))
    export_buttons(map_fig, "component_map", key="cmp_map_export")
    points = picked.selection.points if picked is not None else []
    selected = np.unique([int(p["customdata"]) for p in points if "customdata" in p])
    if not len(selected):
        st.caption("Draw a box or lasso on the map to list the examples inside.")
        return
    st.caption(f"{len(selected)} selected example(s)")
    chosen = ctx.examples(selected)
    chosen.insert(1, "dominant", [c[0] for c in cs.loadings(data.W, selected, n=1)["components"]])
    show_examples(chosen, key="cmp_map_selected", images=ctx.images, table=True, max_images=MAX_IMAGES,
                  extras={"dominant": "{}"})
