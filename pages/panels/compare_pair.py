"""The Compare page's matched side-by-side view: one reference component and its partner in another run, each
with its name, top examples and a link to it on the Components page."""
from __future__ import annotations

import numpy as np
import streamlit as st

from analysis import components as cs
from analysis.compare import Matching
from analysis.datasets import Dataset
from analysis.models import ClassifierModel
from analysis.notes import get_notes
from analysis.store import Workspace
from pages.common import escape_markdown
from pages.panels.examples import dataset_images, show_examples


@st.cache_resource(show_spinner=False, max_entries=8)
def _browse_data(_ws: Workspace, root: str, run_id: str) -> cs.BrowseData:
    return cs.load_browse_data(_ws, _ws.get_run(run_id))


@st.cache_resource(show_spinner=False, max_entries=4)
def _texts(_model: ClassifierModel, _dataset: Dataset, model_key: str, dataset_key: str) -> list[str] | None:
    return _model.adapter.display_texts(_dataset)


def _component(ws: Workspace, model: ClassifierModel, dataset: Dataset, run_id: str, k: int, n_top: int,
               key: str) -> None:
    """One component: its name, a link to it on the Components page and its top examples."""
    name = get_notes(ws, run_id).get(k)
    st.markdown(f"**{escape_markdown(run_id)} · component {k}**" +
                (f" · {escape_markdown(name.name)}" if name is not None and name.name else ""))
    st.page_link("pages/components.py", label=f"Open component {k} of {run_id}", icon=":material/extension:",
                 query_params={"run": run_id, "component": str(k)})
    data = _browse_data(ws, str(ws.root), run_id)
    top = cs.top_examples(data.W, k, n_top)
    frame = cs.example_table(data, top, k, _texts(model, dataset, model.content_hash, dataset.content_hash))
    show_examples(frame, key=key, images=dataset_images(model, dataset), title=f"{run_id} · component {k}",
                  captions=[f"#{i}" for i in frame["idx"]],
                  extras={"coefficient": "{:.4f}"})


def pair_panel(ws: Workspace, model: ClassifierModel, dataset: Dataset, reference: str, other: str,
               matching: Matching, stability: np.ndarray, names: dict[int, str]) -> None:
    """Pick a reference component; show it next to its partner in `other` with the pair's scores."""
    c1, c2 = st.columns([2, 1])
    k = int(c1.selectbox("Reference component", range(matching.shape[0]), key="compare_component",
                         format_func=lambda c: " · ".join([str(c), *([names[c]] if names.get(c) else []),
                                                           f"stability {stability[c]:.2f}"])))
    n_top = int(c2.slider("Top examples", 4, 40, 8, key="compare_n_top"))
    partner = int(matching.partner()[k])
    if partner < 0:
        st.info(f"Component {k} of {reference} has no partner in {other}, which has fewer components.")
    else:
        st.markdown(f"Matched to component **{partner}** of **{escape_markdown(other)}**: pseudo-Fisher cosine "
                    f"**{matching.cosines[k, partner]:.3f}**, top-{matching.top_n} overlap "
                    f"**{matching.overlaps[k, partner]:.2f}**")
    left, right = st.columns(2)
    with left:
        _component(ws, model, dataset, reference, k, n_top, key="compare_left")
    if partner >= 0:
        with right:
            _component(ws, model, dataset, other, partner, n_top, key="compare_right")
