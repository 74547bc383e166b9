"""captum attributions of one top example: its predicted class and the component score s_k. The example is
kept in the URL (?example=) for permalinks."""
from __future__ import annotations

import pandas as pd
import streamlit as st

from analysis import components as cs
from analysis.attributions import class_attribution, component_attribution
from analysis.figures import components as figs
from analysis.store import Workspace
from pages.common import escape_markdown, export_buttons
from pages.panels.browse import BrowseContext, cached_decomposition

EXAMPLE_KEY = "cmp_attr_idx"  # the example whose attributions are shown (also ?example=)


@st.cache_data(show_spinner="Integrating gradients…", max_entries=32)
def _attributions(_model, _ws: Workspace, root: str, run_id: str, k: int, idx: int, n_steps: int, _dataset,
                  dataset_key: str):
    run, dec, _ = cached_decomposition(_ws, root, run_id)
    scoped = cs.scoped_model(_ws, run, _model)
    return (class_attribution(scoped, _dataset, idx, n_steps=n_steps),
            component_attribution(scoped, _dataset, dec.full_component(k), idx, n_steps=n_steps))


def _restore_example(options: list[int]) -> None:
    """Select the URL's ?example= when it is among the options and the session has not chosen one yet."""
    wanted = st.query_params.get("example", "")
    if EXAMPLE_KEY not in st.session_state and wanted.isdigit() and int(wanted) in options:
        st.session_state[EXAMPLE_KEY] = int(wanted)


def attribution_panel(ctx: BrowseContext, k: int, frame: pd.DataFrame) -> int | None:
    """Integrated gradients of a top example (a row of `frame`), computed when asked; the chosen example's index
    (None when the variant has no component attributions)."""
    if not ctx.variant.component_attributions:
        st.info(f"Component attributions use s_k(x) = Σ_y p_y (g_kᵀ∇_θ log p_y)², which is not defined for "
                f"{ctx.variant.title} components ({ctx.variant.description}).")
        return None
    data = ctx.data
    a1, a2 = st.columns([3, 1])
    options = frame["idx"].tolist()
    _restore_example(options)
    idx = int(a1.selectbox("Example", options, key=EXAMPLE_KEY,
                           format_func=lambda i: f"#{i} (coefficient {data.W[i, k]:.4f})"))
    st.query_params["example"] = str(idx)
    n_steps = int(a2.number_input("Integration steps", 4, 256, 32, key="cmp_attr_steps"))
    request = (ctx.run_id, k, idx, n_steps)
    st.button("Compute attributions", key="cmp_attr_go", on_click=st.session_state.__setitem__,
              args=("cmp_attr_request", request))
    if st.session_state.get("cmp_attr_request") != request:
        st.caption("Integrated gradients of the predicted class probability and of the component score "
                   "s_k(x) (a Jacobian-vector product along g_k) with respect to the input.")
        return idx
    images = ctx.images
    try:
        cls, comp = _attributions(ctx.model, ctx.ws, ctx.root, ctx.run_id, k, idx, n_steps, ctx.dataset,
                                  ctx.dataset.content_hash)
    except ValueError as e:
        st.error(escape_markdown(e))
        return idx
    predicted = data.label_names[data.predictions[idx]]
    scores = {f"predicted class '{predicted}' (p = {cls.target_value:.3f})": cls.scores,
              f"component {k} score s_k = {comp.target_value:.3g}": comp.scores}
    fig = (figs.token_attribution_figure(cls.tokens, scores) if cls.tokens is not None
           else figs.pixel_attribution_figure(images[idx], scores))
    st.plotly_chart(fig, key="cmp_attr_fig")
    export_buttons(fig, f"component_{k}_example_{idx}_attributions", key="cmp_attr_export")
    st.caption(f"Completeness error (Σ attributions − (f(x) − f(baseline))): class {cls.delta:.2g}, "
               f"component {comp.delta:.2g}. Baseline: "
               f"{'[PAD] tokens' if cls.tokens is not None else figs.zero_image_description(images[idx])}.")
    if abs(comp.delta) > 0.1 * abs(comp.target_value - comp.baseline_value):
        st.warning("The component attributions miss a large part of s_k(x) − s_k(baseline): s_k jumps where "
                   "ReLU units switch on or off along the path, and gradients do not see jumps. Read them "
                   "qualitatively, or compare with more integration steps.")
    return idx
