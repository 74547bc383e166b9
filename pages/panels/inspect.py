"""Inspect a new input: edit a dataset text (or upload an image) and see the prediction, its coefficients on every
component beside those of the example it started from, the top components with their names and the highlights of
the top one."""
from __future__ import annotations

import hashlib

import numpy as np
import pandas as pd
import streamlit as st

from analysis import components as cs
from analysis.datasets import Dataset, dataset_subset
from analysis.figures.components import example_grid
from analysis.figures.inspect import coefficients_figure
from analysis.highlights import heat_overlay, highlighted_html
from analysis.inspect import N_ITERS, Inspection, image_example, inspect_input, text_example, top_components
from pages.common import escape_markdown, export_buttons
from pages.panels.browse import COMPONENT_KEY, BrowseContext, cached_decomposition
from pages.panels.examples import highlight_caption
from pages.panels.notes import notes

START_KEY = "cmp_inspect_start"  # the dataset example the input starts from
ON_KEY = "cmp_inspect_on"  # set once Inspect was pressed: from then on every edit is inspected
N_PROBABILITIES = 5  # classes listed with their probability


@st.cache_data(show_spinner="Fitting the input's coefficients…", max_entries=64)
def _inspect(_ws, _model, _example: Dataset, root: str, run_id: str, model_key: str, input_key: str) -> Inspection:
    run, dec, _ = cached_decomposition(_ws, root, run_id)
    return inspect_input(_ws, run, dec, _model, _example)


def _text_key(i: int) -> str:
    return f"cmp_inspect_text_{i}"


def _fill_texts(dataset: Dataset) -> None:
    """Put the start example's texts into the text areas (on a new start example)."""
    for i, text in enumerate(dataset.texts[int(st.session_state[START_KEY])]):
        st.session_state[_text_key(i)] = text


def _typed_input(ctx: BrowseContext, start: int) -> tuple[Dataset, str] | None:
    """The input to inspect and its cache key ('example:<start>' while it is the start example unchanged): the
    edited texts, or the uploaded (else the start) image."""
    dataset = ctx.dataset
    if ctx.texts is not None:
        if _text_key(0) not in st.session_state:
            _fill_texts(dataset)
        texts = tuple(st.text_area(column, key=_text_key(i), height=100)
                      for i, column in enumerate(dataset.text_columns))
        key = f"example:{start}" if texts == tuple(dataset.texts[start]) else "texts:" + "\x1f".join(texts)
        try:
            return text_example(dataset, texts), key
        except ValueError as e:
            st.error(escape_markdown(e))
            return None
    upload = st.file_uploader("Upload an image (PNG or JPEG); without one the start example is inspected",
                              type=["png", "jpg", "jpeg"], key="cmp_inspect_upload")
    if upload is None:
        return dataset_subset(dataset, [start]), f"example:{start}"
    data = upload.getvalue()
    try:
        return image_example(dataset, data, upload.name), "upload:" + hashlib.sha256(data).hexdigest()
    except ValueError as e:
        st.error(escape_markdown(e))
        return None


def inspect_panel(ctx: BrowseContext) -> None:
    """The input editor and what the open decomposition says about the input."""
    data = ctx.data
    if START_KEY not in st.session_state:  # start from the selected component's top example
        st.session_state[START_KEY] = int(cs.top_examples(data.W, int(st.session_state.get(COMPONENT_KEY, 0)), 1,
                                                          ctx.index["top_indices"])[0])
    action = "Edit a text" if ctx.texts is not None else "Upload an image"
    st.caption(f"{action} and see how the model and the components read it. Its coefficients are fitted with the "
               f"components fixed ({N_ITERS} multiplicative updates) on its per-example Fisher, computed as the "
               "decomposition's were (same scope and sparsity).")
    start = int(st.number_input("Start from dataset example", 0, data.n_examples - 1, key=START_KEY,
                                on_change=_fill_texts if ctx.texts is not None else None,
                                args=(ctx.dataset,) if ctx.texts is not None else None))
    typed = _typed_input(ctx, start)
    if typed is None:
        return
    example, key = typed
    if not st.session_state.get(ON_KEY):  # the tabs all run on every rerun: nothing is computed before asked
        st.button("Inspect", key="cmp_inspect_go", type="primary", on_click=st.session_state.__setitem__,
                  args=(ON_KEY, True), help="Then every edit is inspected as you make it (about a second each)")
        return
    try:
        found = _inspect(ctx.ws, ctx.model, example, ctx.root, ctx.run_id, ctx.model.content_hash, key)
        reference = _inspect(ctx.ws, ctx.model, dataset_subset(ctx.dataset, [start]), ctx.root, ctx.run_id,
                             ctx.model.content_hash, f"example:{start}")
    except ValueError as e:
        st.error(escape_markdown(e))
        return
    _prediction(ctx, found)
    named = notes(ctx)
    series = {"this input": found.coefficients}
    if key != f"example:{start}":
        series[f"example #{start}"] = reference.coefficients
    fig = coefficients_figure(series, [f"{k} · {named[k].name}" if k in named and named[k].name else str(k)
                                       for k in range(ctx.n_components)])
    st.plotly_chart(fig, key="cmp_inspect_coefficients")
    export_buttons(fig, "inspected_coefficients", key="cmp_inspect_export")
    st.markdown("**Top components**")
    st.dataframe(top_components(found.coefficients, data.W, named), hide_index=True, key="cmp_inspect_top",
                 column_config={"coefficient": st.column_config.NumberColumn(format="%.4g"),
                                "dataset percentile": st.column_config.NumberColumn(format="percent"),
                                "largest in dataset": st.column_config.NumberColumn(format="%.4g")})
    _highlight(ctx, example, found)


def _prediction(ctx: BrowseContext, found: Inspection) -> None:
    names = ctx.data.label_names
    order = np.argsort(-found.probabilities, kind="stable")[:N_PROBABILITIES]
    p1, p2 = st.columns([1, 2])
    p1.metric("Prediction", names[found.prediction], f"p = {found.probabilities[found.prediction]:.3f}",
              delta_color="off", delta_arrow="off")
    p2.dataframe(pd.DataFrame({"class": [names[c] for c in order], "probability": found.probabilities[order]}),
                 hide_index=True, key="cmp_inspect_probabilities",
                 column_config={"probability": st.column_config.ProgressColumn(min_value=0.0, max_value=1.0,
                                                                               format="%.3f")})


def _highlight(ctx: BrowseContext, example: Dataset, found: Inspection) -> None:
    """Gradient × (input − baseline) of the top component's score on the input."""
    k = found.top_component
    st.markdown(f"**Highlights for the top component {k}**")
    if found.highlight is None:
        st.info(f"Highlights use s_k(x) = Σ_y p_y (g_kᵀ∇_θ log p_y)², which is not defined for "
                f"{ctx.variant.title} components ({ctx.variant.description}).")
        return
    texts = ctx.model.adapter.display_texts(example)
    if texts is not None:
        st.html(highlighted_html(texts[0], found.highlight))
    else:
        image = ctx.model.adapter.display_images(example)  # [1, H, W] or [1, H, W, 3]
        pictures = heat_overlay(np.concatenate([image, image]), np.stack([np.zeros_like(found.highlight.scores),
                                                                          found.highlight.scores]))
        st.plotly_chart(example_grid(pictures, ["input", f"component {k}"], n_cols=2), key="cmp_inspect_heat")
    st.caption(highlight_caption(found.highlight) + ". Red raises s_k, blue lowers it.")
