"""Session glue shared by the pages: workspace, active model and dataset, progress widgets.

Everything heavy is in analysis/; this module only caches it for Streamlit and keeps the
user's choices in st.session_state.
"""
from __future__ import annotations

import atexit
import gc
import hashlib
import os
import re
import runpy
import threading
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Callable, Iterator, TypeVar

import pandas as pd
import plotly.graph_objects as go
import streamlit as st

from analysis.components import check_decomposition_run, decomposition_scope
from analysis.datasets import Dataset
from analysis.demos import DEMOS, METRICS, demo_folder
from analysis.figures.export import FORMATS, export_problem, figure_bytes
from analysis.jobs import demo_spec, get_job, start_or_reuse_job
from analysis.loading import (DEMO_PREFIX, DatasetSpec, ModelSpec, check_pair, demo_specs, load_dataset_spec,
                              load_model_spec, pair_dataset, register_pair)
from analysis.models import ClassifierModel
from analysis.paths import PathNotAllowedError, allowed_roots, confine, upload_path
from analysis.run_pairs import run_pair
from analysis.store import DEFAULT_WORKSPACE, Run, Workspace

WORKSPACE_KEY = "workspace_folder"  # the sidebar's folder box
DEMO_POLL_S = 1.0  # how often a page waiting for a demo build reads its job
MARKDOWN_SPECIALS = re.compile(r"([\\`*_{}\[\]()#!$~|<>&])")
MARKDOWN_LINE_STARTS = re.compile(r"^(\s*)([-+=]|\d+\.)", re.MULTILINE)  # list items, setext underlines

APP = Path(__file__).resolve().parent.parent / "app.py"
_shell = threading.local()  # .running is True while app.py runs the current page


@contextmanager
def app_shell() -> Iterator[None]:
    """app.py runs the selected page inside this, so pages can tell they have the sidebar and navigation."""
    _shell.running = True
    try:
        yield
    finally:
        _shell.running = False


def in_app_shell() -> None:
    """Called first by every page: make sure it runs inside app.py's shell.

    Streamlit treats *.py in pages/ as legacy auto-discovered pages until st.navigation has run once, so
    a deep link that is a fresh server's first request runs the page alone. Then run app.py here (it
    runs this page inside its navigation, without a rerun that would drop widget events) and stop.
    """
    if getattr(_shell, "running", False):
        return
    runpy.run_path(str(APP), run_name="__main__")
    st.stop()


def escape_markdown(text: object) -> str:
    """Text shown literally where Streamlit renders Markdown (names, labels, paths, example texts, error
    messages): no images, links, emphasis, HTML or $math$. Plain words, hyphens and decimals read unchanged."""
    escaped = MARKDOWN_SPECIALS.sub(r"\\\1", str(text))
    return MARKDOWN_LINE_STARTS.sub(lambda m: f"{m[1]}{m[2][:-1]}\\{m[2][-1]}", escaped)


T = TypeVar("T")


def read_first_then_afresh(first: T, read: Callable[[], T]) -> Callable[[], T]:
    """What a live fragment draws: on the page run, `first`, the value the run has just read (a second query could
    see a job end and rerun the page half-drawn); on each timer rerun, read() afresh."""
    pending = [first]
    return lambda: pending.pop() if pending else read()


def _initial_workspace() -> str:
    """The operator's workspace: NPEFF_WORKSPACE, else the default folder."""
    return os.environ.get("NPEFF_WORKSPACE", str(DEFAULT_WORKSPACE))


def workspace_root() -> str:
    return st.session_state.setdefault("workspace_root", _initial_workspace())


def path_roots() -> tuple[Path, ...]:
    """The folders pages may read and write (analysis.paths: NPEFF_ALLOWED_ROOTS or home and the repository),
    plus the operator's workspace."""
    return allowed_roots(extra=[_initial_workspace()])


def allowed_path(typed: str) -> str | None:
    """A path typed into a page, resolved, when the server may open it; else an error saying how to allow it."""
    if not typed.strip():
        return None
    try:
        return str(confine(typed.strip(), path_roots()))
    except PathNotAllowedError as e:
        st.error(escape_markdown(e))
        return None


def switch_workspace() -> None:
    """on_change of the sidebar folder: open an allowed folder; a refused one keeps the current workspace."""
    typed = st.session_state[WORKSPACE_KEY].strip()
    try:
        if not typed:
            raise PathNotAllowedError("give a folder for the workspace")
        root = str(confine(typed, path_roots()))
        _workspace(root)  # creates the folder and its database, or says why it cannot
    except Exception as e:  # refused, or not a folder the server can write: keep the current workspace
        st.session_state["workspace_refused"] = f"Workspace not changed: {e}"
        st.session_state[WORKSPACE_KEY] = workspace_root()
        return
    st.session_state["workspace_root"] = st.session_state[WORKSPACE_KEY] = root


@st.cache_resource(show_spinner=False)
def freeze_startup_heap() -> bool:
    """Once per server process, after its first run: the objects alive then (imported modules, the first model and
    dataset; ~540k) leave the garbage collector's full passes, one of which took 250 ms in the middle of a component
    view. Garbage is collected first, so none is kept; at exit they are handed back, for the final collection."""
    gc.collect()
    gc.freeze()
    atexit.register(gc.unfreeze)
    return True


@st.cache_resource(show_spinner=False)
def _workspace(root: str) -> Workspace:
    return Workspace(root)

def workspace() -> Workspace:
    return _workspace(workspace_root())

@st.cache_resource(show_spinner="Loading model…", max_entries=4)
def _load(spec: ModelSpec, root: str) -> ClassifierModel:
    return load_model_spec(spec, Path(root))

@st.cache_resource(show_spinner="Reading dataset…", max_entries=4)
def _dataset(spec: DatasetSpec) -> Dataset:
    return load_dataset_spec(spec)

def model_for(spec: ModelSpec) -> ClassifierModel:
    """The (cached) model a spec points to."""
    return _load(spec, workspace_root())

@st.cache_resource(show_spinner=False, max_entries=4)
def _paired(model_spec: ModelSpec, dataset_spec: DatasetSpec, root: str) -> Dataset:
    return pair_dataset(_load(model_spec, root), _dataset(dataset_spec))

def dataset_for(model_spec: ModelSpec, dataset_spec: DatasetSpec) -> Dataset:
    """The (cached) dataset a spec points to, with the model's classes (a next-token model's vocabulary)."""
    return _paired(model_spec, dataset_spec, workspace_root())

def ensure_demo(kind: str) -> None:
    """Build a demo checkpoint the first time, as a background job (minutes for text, seconds for image): start
    one, or join the one another tab started, and wait for it with its live progress."""
    from pages.panels.job import job_progress  # it imports this module

    if (demo_folder(kind, Path(workspace_root())) / METRICS).exists():
        return
    ws = workspace()
    job = start_or_reuse_job(ws, "demo", demo_spec(kind))
    box = st.empty()
    while job.active:
        with box.container(border=True):
            st.caption(f"Building the {kind} demo once for this workspace (it goes on if this tab is closed)")
            job_progress(job)
        time.sleep(DEMO_POLL_S)
        job = get_job(ws, job.id)
    box.empty()
    if job.status != "complete":
        raise RuntimeError(f"building the {kind} demo {job.status} (job {job.id}): {job.error}; "
                           "start it again from the Jobs page or the Load page")

def activate(model_spec: ModelSpec, dataset_spec: DatasetSpec) -> tuple[ClassifierModel, Dataset]:
    """Load, check and register a model+dataset pair; the session keeps them only if all succeeds."""
    for path in (model_spec.source, model_spec.config, dataset_spec.source):
        if path and not path.startswith(DEMO_PREFIX):
            confine(path, path_roots())  # every page's paths, whatever the page checked
    model = model_for(model_spec)
    dataset = dataset_for(model_spec, dataset_spec)
    check_pair(model, dataset)
    register_pair(workspace(), model, dataset, model_spec.source)
    st.session_state["model_spec"], st.session_state["dataset_spec"] = model_spec, dataset_spec
    return model, dataset

def active() -> tuple[ClassifierModel, Dataset]:
    """The session's model and dataset; the text demo on first visit (zero configuration)."""
    if "model_spec" not in st.session_state:
        ensure_demo("text")
        return activate(*demo_specs("text"))
    model_spec, dataset_spec = st.session_state["model_spec"], st.session_state["dataset_spec"]
    return model_for(model_spec), dataset_for(model_spec, dataset_spec)

def save_upload(upload) -> str:
    """Keep an uploaded file under the workspace, named by its content hash (never executed or unpickled)."""
    data = upload.getvalue()
    folder = Path(workspace_root()) / "uploads" / hashlib.sha256(data).hexdigest()[:16]
    folder.mkdir(parents=True, exist_ok=True)
    path = upload_path(folder, upload.name)
    path.write_bytes(data)
    return str(path)

def export_buttons(fig: go.Figure, name: str, *, key: str) -> None:
    """PNG / SVG / PDF downloads of a figure, rendered only when clicked; what to do instead when export cannot
    run here (no Chromium), or a warning above them when it failed last time."""
    if problem := export_problem():
        message, impossible = problem
        st.caption(escape_markdown(message[0].upper() + message[1:]))
        if impossible:
            return
    cols = st.columns(len(FORMATS))
    for col, (fmt, mime) in zip(cols, FORMATS.items()):
        col.download_button(fmt.upper(), data=lambda f=fmt: figure_bytes(fig, f), file_name=f"{name}.{fmt}",
                            mime=mime, key=f"{key}_{fmt}", on_click="ignore")


def decomposition_runs(model: ClassifierModel, dataset: Dataset) -> pd.DataFrame:
    """The complete NPEFF runs of this model and dataset (id, kind, summary, updated, ...), newest first."""
    return workspace().decomposition_runs(model.content_hash, dataset.content_hash)


def _link_target(ws: Workspace, run_id: str) -> Run | None:
    try:
        run = ws.get_run(run_id)
        check_decomposition_run(run)
    except (KeyError, ValueError) as e:
        st.warning(f"The link's decomposition cannot be opened: {escape_markdown(e)}")
        return None
    return run


def _demo_of(ws: Workspace, model_id: str) -> str | None:
    """'text' or 'image' when a model is one of the demos (runs computed from the CLI leave it unregistered)."""
    if record := ws.model_record(model_id):
        return record["source"].removeprefix("demo:") if record["source"].startswith("demo:") else None
    built = [k for k in DEMOS if (demo_folder(k, ws.root) / METRICS).exists()]
    return next((k for k in built if model_for(demo_specs(k)[0]).content_hash == model_id), None)


def _open_linked_pair(ws: Workspace, run: Run, model: ClassifierModel, dataset: Dataset) -> None:
    """Make a linked run's model/dataset active when they are a demo's (rerun); else say whose run it is, that
    the page shows the active pair's instead, and offer to load the run's pair when a job recorded it."""
    kind = _demo_of(ws, run.model_id)
    if kind and DEMOS[kind].dataset().content_hash == run.dataset_id:
        activate(*demo_specs(kind, decomposition_scope(ws, run)))
        st.session_state["opened_demo"] = kind
        st.rerun()  # the sidebar, drawn before the page, shows the new pair
    pair = run_pair(ws, run)
    model_name, dataset_name = escape_markdown(pair.model_name), escape_markdown(pair.dataset_name)
    st.warning(f"Decomposition {escape_markdown(run.id)} belongs to model '{model_name}' on dataset "
               f"'{dataset_name}', not to the active pair ('{escape_markdown(model.name)}' on "
               f"'{escape_markdown(dataset.name)}'): the page shows the active pair's decompositions instead, and "
               "the URL now names one of them.")
    if pair.specs is not None:
        st.button(f"Load {model_name} on {dataset_name} and open {escape_markdown(run.id)}", type="primary",
                  key="linked_pair_load", on_click=_load_linked_pair, args=(run.id, pair.specs))
    else:
        st.caption(f"No job in this workspace recorded how that pair was loaded (it was computed from the command "
                   f"line): load model {escape_markdown(pair.model_source)} and dataset "
                   f"{escape_markdown(pair.dataset_source)} on the Load page.")


def _load_linked_pair(run_id: str, specs: tuple[ModelSpec, DatasetSpec]) -> None:
    """Callback of the linked-pair button: make the run's model and dataset active and open the run."""
    try:
        activate(*specs)
    except Exception as e:  # a moved file, a changed checkpoint: say so and keep the active pair
        st.session_state["linked_pair_error"] = f"Could not load the pair of decomposition {run_id}: {e}"
        return
    st.session_state["decomposition_run"] = run_id
    st.query_params["run"] = run_id


def active_decomposition(model: ClassifierModel, dataset: Dataset) -> Run | None:
    """The decomposition in the URL (?run=, opening its demo pair if needed), else the session's, else the
    newest of the active model and dataset; None when there is none. Kept in the URL for permalinks."""
    ws = workspace()
    if opened := st.session_state.pop("opened_demo", None):
        st.toast(f"Opened the {opened} demo, which this link's decomposition belongs to")
    if error := st.session_state.pop("linked_pair_error", None):
        st.error(escape_markdown(error))
    runs = decomposition_runs(model, dataset)["id"].tolist()
    linked = st.query_params.get("run")
    if linked and linked not in runs and (target := _link_target(ws, linked)) is not None:
        _open_linked_pair(ws, target, model, dataset)
    for candidate in (linked, st.session_state.get("decomposition_run")):
        if candidate in runs:
            break
    else:
        candidate = runs[0] if runs else None
    if candidate is None:
        return None
    st.session_state["decomposition_run"] = candidate
    st.query_params["run"] = candidate
    return ws.get_run(candidate)
