"""The one way pages show dataset examples: text cards (a meta line, long texts collapsed, tokens coloured when
highlights are given) or an image grid (exportable, with a heat overlay when highlights are given), each with
the table of the rows; used for top examples, bands, search hits, flips and previews."""
from __future__ import annotations

from typing import Mapping, Sequence

import numpy as np
import pandas as pd
import streamlit as st

from analysis.datasets import Dataset
from analysis.figures.components import example_grid
from analysis.highlights import ExampleHighlight, heat_overlay, highlighted_html
from analysis.models import ClassifierModel
from pages.common import escape_markdown, export_buttons

LONG_TEXT = 400  # characters shown before a text collapses
COLUMN_CONFIG = {
    "probability": st.column_config.NumberColumn("probability", format="%.3f"),
    "coefficient": st.column_config.NumberColumn("coefficient", format="%.4f"),
    "text": st.column_config.TextColumn("text", width="large"),
}


def dataset_images(model: ClassifierModel, dataset: Dataset) -> np.ndarray | None:
    """The images of a dataset as the model's adapter shows them; None for texts (their frames carry a 'text'
    column)."""
    return model.adapter.display_images(dataset)


def meta_line(row: Mapping, extras: Mapping[str, str]) -> str:
    """'#idx · gold · predicted (p) · misclassified', from the columns the row has, then each extra column
    formatted by its format string ({'coefficient': '{:.4f}'})."""
    parts = [f"**#{row['idx']}**"]
    if "gold" in row:
        parts.append(f"gold **{escape_markdown(row['gold'])}**")
    if "prediction" in row:
        probability = f" ({row['probability']:.0%})" if "probability" in row else ""
        parts.append(f"predicted **{escape_markdown(row['prediction'])}**{probability}")
    if "correct" in row and row["correct"] is not None and not row["correct"]:  # None: no gold label
        parts.append("*misclassified*")
    parts += [f"{escape_markdown(column)} **{escape_markdown(fmt.format(row[column]))}**"
              for column, fmt in extras.items()]
    return " · ".join(parts)


def highlight_caption(highlight: ExampleHighlight) -> str:
    """'s_k(x) 0.012 · baseline 0.3 · Σ scores −0.011 (completeness error 98%)' under a highlighted example."""
    error = f"{highlight.relative_error:.0%}" if np.isfinite(highlight.relative_error) else "not defined"
    return (f"s_k(x) {highlight.value:.3g} · s_k(baseline) {highlight.baseline_value:.3g} · "
            f"Σ scores {highlight.scores.sum():.3g} (completeness error {error})")


def text_cards(frame: pd.DataFrame, extras: Mapping[str, str] | None = None,
               highlights: Mapping[int, ExampleHighlight] | None = None) -> None:
    """Examples as readable cards: one meta line, then the text (long ones collapse), its tokens coloured when
    `highlights` has the example's idx."""
    for row in frame.to_dict("records"):
        text, highlight = row["text"], (highlights or {}).get(int(row["idx"]))
        with st.container(border=True):
            st.markdown(meta_line(row, extras or {}))
            if highlight is not None:
                st.html(highlighted_html(text, highlight, limit=LONG_TEXT))
                st.caption(highlight_caption(highlight))
            elif len(text) <= LONG_TEXT:
                st.markdown(escape_markdown(text))
            else:
                st.markdown(escape_markdown(text[:LONG_TEXT]) + " …")
            if len(text) > LONG_TEXT:
                with st.expander(f"Full text ({len(text):,} characters)"):
                    if highlight is not None:
                        st.html(highlighted_html(text, highlight))
                    else:
                        st.markdown(escape_markdown(text))


def _default_captions(frame: pd.DataFrame) -> list[str]:
    if {"gold", "prediction"} <= set(frame.columns):
        return [f"#{i} {g}→{p}" for i, g, p in zip(frame["idx"], frame["gold"], frame["prediction"])]
    return [f"#{i}" for i in frame["idx"]]


def show_examples(frame: pd.DataFrame, *, key: str, images: np.ndarray | None = None, title: str | None = None,
                  name: str | None = None, captions: Sequence[str] | None = None,
                  extras: Mapping[str, str] | None = None, toggle: bool = True, table: bool = False,
                  max_images: int | None = None, height: int | None = None,
                  column_config: Mapping | None = None,
                  highlights: Mapping[int, ExampleHighlight] | None = None) -> None:
    """Rows of examples (an 'idx' column, and 'text' for text datasets).

    Texts: cards, or the table when `table` (with a 'Table view' toggle starting there unless toggle=False).
    Images (`images` [n, H, W], indexed by 'idx'): a grid of the first `max_images` with PNG/SVG/PDF export
    (files called `name`, default the key), then the table. `extras` are the columns each card's meta line
    adds, with their format strings ({'coefficient': '{:.4f}'}). `highlights` {idx: scores} colour the tokens
    of those examples' cards, or lay a heat map over their images.
    """
    config = {**COLUMN_CONFIG, **(column_config or {})}
    if images is None:
        if toggle:
            table = st.toggle("Table view", value=table, key=f"{key}_table")
        if table:
            st.dataframe(frame, hide_index=True, column_config=config, height=height or "auto")
        else:
            text_cards(frame, extras, highlights)
        return
    shown = frame if max_images is None else frame.head(max_images)
    captions = list(captions)[:len(shown)] if captions is not None else _default_captions(shown)
    pictures = images[shown["idx"].to_numpy()]  # [b, H, W] or [b, H, W, 3]
    if highlights:
        heat = np.zeros((len(shown), *pictures.shape[1:3]))  # [b, H, W]; no overlay where an example has none
        for i, idx in enumerate(shown["idx"]):
            if int(idx) in highlights:
                heat[i] = highlights[int(idx)].scores
        pictures = heat_overlay(pictures, heat)
    grid = example_grid(pictures, captions, n_cols=8, title=title)
    st.plotly_chart(grid, key=f"{key}_grid")
    export_buttons(grid, name or key, key=f"{key}_export")
    st.dataframe(frame, hide_index=True, column_config=config, height=height or "auto")
