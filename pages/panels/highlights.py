"""Highlights of a component's top examples in the component view: the stored ones with their legend, or a button
starting the job that computes them."""
from __future__ import annotations

import streamlit as st

from analysis.highlights import ExampleHighlight, legend, stored_highlights
from analysis.jobs import find_job, highlights_spec, start_or_reuse_job
from pages.panels.browse import BrowseContext
from pages.panels.job import live_job


def highlights_panel(ctx: BrowseContext, k: int, n_top: int) -> dict[int, ExampleHighlight]:
    """{idx: highlight} of component k's top examples stored so far (a caption names the attribution and its
    completeness error); a button computes those of the top n_top as a job when they are not all stored."""
    if not ctx.variant.component_attributions:
        return {}
    found = stored_highlights(ctx.ws, ctx.run, k)
    if found is not None:
        st.caption(legend(found))
    if found is None or len(found) < n_top:
        spec = highlights_spec(st.session_state["model_spec"], st.session_state["dataset_spec"], ctx.run_id, k, n_top)
        job = find_job(ctx.ws, "highlights", spec)
        what = "tokens" if ctx.texts is not None else "pixels"
        if st.button(f"Highlight {what} of the top {n_top}", key="cmp_hl_go", disabled=job is not None and job.active,
                     help="Gradient × (input − baseline) of the component score s_k(x), one backward pass per batch "
                          "of examples, as a background job; stored in the workspace"):
            start_or_reuse_job(ctx.ws, "highlights", spec)
            st.rerun()  # the sidebar, drawn before the page, lists the new job
        if job is not None and job.status != "complete":
            live_job(ctx.ws, job, key="cmp_hl_job")
    return {} if found is None else found.by_index()
