"""The Components page's context: one frozen BrowseContext per script run, built from cached loaders, which
every panel receives explicitly; plus the run picker, the selected component and tab kept in the URL, and the
view's permalink."""
from __future__ import annotations

import json
from dataclasses import dataclass
from urllib.parse import urlencode

import numpy as np
import pandas as pd
import streamlit as st

from analysis import components as cs
from analysis.datasets import Dataset
from analysis.models import ClassifierModel
from analysis.runs import load_decomposition
from analysis.store import Run, Workspace
from analysis.variants import Variant, variant_of_run_kind
from pages.common import decomposition_runs
from pages.panels.examples import dataset_images

COMPONENT_KEY = "cmp_component"  # the selected component (also ?component=)
TAB_KEY = "tab"  # the page's tab, bound to ?tab= (st.tabs(..., bind="query-params") names the parameter by key)
BROWSE_TAB = "Browse"  # the tab holding the overview and the component view
PAGE_PATH = "/components"  # the page's URL path (st.navigation names it after pages/components.py)


@dataclass(frozen=True)
class BrowseContext:
    """What the Components page's panels read: the active pair and one decomposition with its derived tables."""

    model: ClassifierModel
    dataset: Dataset
    ws: Workspace
    run: Run
    variant: Variant
    decomposition: cs.Decomposition
    data: cs.BrowseData  # W [n, r], labels [n], probs [n, C]
    index: dict[str, np.ndarray]  # top_indices [r, TOP_K], similarity [r, r]
    texts: list[str] | None  # [n] display texts; None for images
    profiles: tuple[np.ndarray, list[str]] | None  # per-tensor shares [r, T] and names; None: model mismatch
    overview: pd.DataFrame  # one row per component (plus 'modules' shares when profiles exist)
    n_top_overview: int  # top examples the overview's purity, entropy, accuracy and summaries are over
    threshold: float  # a coefficient above this is notable
    annotations: dict[str, np.ndarray]  # [n] values of each annotation column (a ground truth); {} when none

    @property
    def run_id(self) -> str:
        return self.run.id

    @property
    def root(self) -> str:
        return str(self.ws.root)

    @property
    def n_components(self) -> int:
        return self.data.n_components

    @property
    def images(self) -> np.ndarray | None:
        """[n, H, W] for image datasets, else None."""
        return dataset_images(self.model, self.dataset)

    def examples(self, indices: np.ndarray, k: int | None = None) -> pd.DataFrame:
        """The example table of some examples (idx, gold, prediction, probability, correct, coefficient on k, text)."""
        return cs.example_table(self.data, indices, k, self.texts)


# ------------------------------------------------------------------------------------------ cached loaders

@st.cache_resource(show_spinner="Reading the decomposition…", max_entries=4)
def cached_decomposition(_ws: Workspace, root: str, run_id: str) -> tuple[Run, cs.Decomposition, cs.BrowseData]:
    run = _ws.get_run(run_id)
    return run, load_decomposition(_ws, run), cs.load_browse_data(_ws, run)


@st.cache_resource(show_spinner="Indexing top examples and similarities (once per decomposition)…", max_entries=4)
def _index(_ws: Workspace, root: str, run_id: str) -> dict[str, np.ndarray]:
    run, dec, _ = cached_decomposition(_ws, root, run_id)
    return cs.component_index(_ws, run, dec)


@st.cache_resource(show_spinner=False, max_entries=4)
def _profiles(_ws: Workspace, _model, root: str, run_id: str, model_id: str) -> tuple[np.ndarray, list[str]] | None:
    """Per-tensor shares [r, T] and tensor names, or None when the model does not match the run's scope."""
    run, dec, _ = cached_decomposition(_ws, root, run_id)
    try:
        names, offsets = cs.parameter_layout(cs.scoped_model(_ws, run, _model))
    except ValueError:
        return None
    return cs.component_profiles(_ws, run, dec, offsets), names


@st.cache_data(show_spinner=False, max_entries=8)
def _overview(_data: cs.BrowseData, _index: dict, root: str, run_id: str, n_top: int) -> pd.DataFrame:
    return cs.overview(_data, _index["top_indices"], _index["similarity"], n_top=n_top)


@st.cache_resource(show_spinner=False, max_entries=4)
def _texts(_model: ClassifierModel, _dataset: Dataset, model_key: str, dataset_key: str) -> list[str] | None:
    return _model.adapter.display_texts(_dataset)


def browse_context(model: ClassifierModel, dataset: Dataset, ws: Workspace,
                   run_id: str) -> BrowseContext:
    """The context of one decomposition of the active pair (its arrays and tables cached across reruns)."""
    root = str(ws.root)
    run, dec, data = cached_decomposition(ws, root, run_id)
    index = _index(ws, root, run_id)
    profiles = _profiles(ws, model, root, run_id, model.content_hash)
    n_top = min(cs.N_TOP_STATS, index["top_indices"].shape[1])
    overview = _overview(data, index, root, run_id, n_top).copy()
    if profiles is not None:
        overview["modules"] = cs.group_profiles(*profiles, by="module").to_numpy().tolist()
    annotations = cs.annotation_values(dataset.annotations, data.n_examples)
    overview = overview.join(cs.annotation_overview(annotations, index["top_indices"][:, :n_top]))
    return BrowseContext(model=model, dataset=dataset, ws=ws, run=run, variant=variant_of_run_kind(run.kind),
                         decomposition=dec, data=data, index=index, texts=_texts(model, dataset, model.content_hash, dataset.content_hash),
                         profiles=profiles, overview=overview, n_top_overview=n_top,
                         threshold=cs.notable_threshold(data.W), annotations=annotations)


# --------------------------------------------------------------------------- run and component selection

def _run_label(row: pd.Series) -> str:
    s = json.loads(row["summary"])
    return (f"{row['id']} · {variant_of_run_kind(row['kind']).title} · {s.get('n_components', '?')} components · "
            f"rel. error {float(s.get('relative_error', float('nan'))):.3f}")


def _on_run_change() -> None:
    st.query_params["run"] = st.session_state["cmp_run"]
    st.session_state["decomposition_run"] = st.session_state["cmp_run"]
    st.query_params.pop("component", None)
    st.session_state.pop(COMPONENT_KEY, None)


def run_picker(model: ClassifierModel, dataset: Dataset, run_id: str) -> None:
    """The 'Decomposition' select box over the pair's complete runs, showing `run_id` (the active one)."""
    runs = decomposition_runs(model, dataset)
    st.session_state["cmp_run"] = run_id
    labels = {row["id"]: _run_label(row) for _, row in runs.iterrows()}
    st.selectbox("Decomposition", list(labels), format_func=labels.get, key="cmp_run", on_change=_on_run_change)


def restore_component(n_components: int) -> None:
    """Select the URL's ?component= (else 0) unless the session has a valid selection already."""
    wanted = st.query_params.get("component", "0")
    if st.session_state.get(COMPONENT_KEY) not in range(n_components):
        st.session_state[COMPONENT_KEY] = int(wanted) if wanted.isdigit() and int(wanted) < n_components else 0


def open_component(k: int) -> None:
    """Callback of the 'open' buttons and overview rows: select component k (and put it in the URL)."""
    st.session_state[COMPONENT_KEY] = int(k)
    st.query_params["component"] = str(int(k))


def open_in_browse(k: int) -> None:
    """Callback of buttons on other tabs: select component k and switch to the Browse tab that shows it."""
    open_component(k)
    st.session_state[TAB_KEY] = BROWSE_TAB


def permalink(params: dict[str, object]) -> str:
    """The full URL of this page with these query parameters (the browser's address when Streamlit knows it,
    else the page's path)."""
    return f"{st.context.url or PAGE_PATH}?{urlencode({k: str(v) for k, v in params.items()})}"
