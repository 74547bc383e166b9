"""Load page: pick a model and a dataset (demo, local path or upload), validate, register, preview."""
from __future__ import annotations

import inspect
from pathlib import Path

import numpy as np
import pandas as pd
import streamlit as st

from analysis.adapters import ADAPTERS, OptionSpec
from analysis.datasets import (MAX_MAPPED_LABELS, column_profile, default_label_column, image_folder_classes,
                               label_values, preview_images, read_table, unmatched_labels)
from analysis.demos import DEMOS, METRICS, demo_folder
from analysis.errors import describe_error
from analysis.figures.data import label_counts
from analysis.image_models import ARCHITECTURES
from analysis.loading import (DatasetSpec, ModelSpec, adapter_choices, adapter_options, demo_specs,
                              label_word_tokens, paired_dataset_spec)
from analysis.models import WEIGHT_SUFFIXES, ParamScope
from analysis.sample_accuracy import SAMPLE_SIZE, sample_accuracy
from pages.common import (activate, active, allowed_path, ensure_demo, escape_markdown, in_app_shell, model_for,
                          save_upload, workspace, workspace_root)
from pages.panels.examples import dataset_images, show_examples

in_app_shell()

PREVIEW_TEXTS, PREVIEW_IMAGES = 50, 24  # examples of the active dataset shown at the bottom
SHOWN_CLASSES = 20  # class names listed in the summary (a next-token model's classes are its vocabulary)
DEMO_SOURCES = {f"{kind.capitalize()} demo": kind for kind in DEMOS}  # "Text demo" -> "text", ...
SOURCES = [*DEMO_SOURCES, "Local path", "Upload"]
PREVIEW_BEFORE_LOAD = 8  # rows or images of a dataset file shown before it is loaded
LOADED_NOTE = "load_note"  # session key: what the last Load loaded, shown after the rerun that redraws the sidebar

st.title("Load model & data")
st.caption("Models load safely: safetensors preferred, `.bin/.pt` only as plain tensors (never unpickled), "
           "no remote code, zip archives checked before extraction. Local paths must lie in the folders the "
           "server allows (`NPEFF_ALLOWED_ROOTS`, default: your home and the repository).")


def scope_picker(default: ParamScope, key: str) -> ParamScope:
    """The parameter scope, starting from `default` (a demo's own scope; the last layer for other models)."""
    modes = {"Last N layers + head": "last_layers", "All parameters": "all", "Names matching a regex": "pattern"}
    label = st.selectbox("Parameters in scope (per-example Fishers are taken over these)", list(modes),
                         index=list(modes.values()).index(default.mode), key=f"model_scope_{key}")
    mode = modes[label]
    if mode == "last_layers":
        return ParamScope(mode, n_layers=int(st.number_input("N layers", 1, 48, default.n_layers, key="model_scope_layers")))
    if mode == "pattern":
        pattern = st.text_input("Regex over parameter names", r"classifier|pooler", key="model_scope_pattern")
        return ParamScope(mode, pattern=pattern)
    return ParamScope(mode)


def bare_weights_options(path: str) -> dict:
    """Extra inputs for a bare state dict: a transformers config or an image architecture."""
    if Path(path).suffix not in WEIGHT_SUFFIXES:
        return {}
    st.info("A bare state dict needs its architecture: a transformers config.json (tokenizer beside it), "
            "or one of the built-in image architectures.")
    kind = st.radio("Architecture from", ["transformers config.json", "built-in image architecture"], horizontal=True,
                    key="model_architecture_from")
    if kind == "transformers config.json":
        return {"config": allowed_path(st.text_input("Path to config.json (or its folder)", key="model_config"))}
    labels = st.text_input("Class names, comma separated", "0,1,2,3,4,5,6,7,8,9", key="model_label_names")
    return {"architecture": st.selectbox("Architecture", sorted(ARCHITECTURES), key="model_architecture"),
            "label_names": tuple(s.strip() for s in labels.split(",") if s.strip())}


def option_input(kind: str, option: OptionSpec) -> object:
    """One adapter setting as an input: a number for integer settings, else text."""
    key = f"model_option_{kind}_{option.name}"
    if isinstance(option.default, int):
        return int(st.number_input(option.label, 1, 100_000, option.default, help=option.help, key=key))
    return st.text_input(option.label, str(option.default), help=option.help, key=key)


def adapter_picker(path: str) -> dict:
    """The adapter that reads a checkpoint (those that fit it; default what loading would pick) and its
    settings; {} for checkpoints read as they declare (image folders, bare weights)."""
    try:
        kinds, default = adapter_choices(path, Path(workspace_root()))
    except Exception as e:  # an unreadable config or zip: loading will say the same
        st.error(escape_markdown(e))
        return {}
    if not kinds:
        return {}
    kind = st.selectbox("Adapter (how the model's outputs become classes)", kinds, index=kinds.index(default),
                        format_func=lambda k: ADAPTERS[k].title, key="model_adapter")
    options = {o.name: option_input(kind, o) for o in adapter_options(kind)}
    if options.get("verbalizer"):
        try:
            tokens = label_word_tokens(path, Path(workspace_root()), options["verbalizer"])
            st.caption("Label word → token: " + " · ".join(f"{escape_markdown(w)} → `{t}`" for w, t in tokens.items()))
        except ValueError as e:
            st.warning(escape_markdown(e))
    return {"adapter": kind, "options": tuple(sorted(options.items()))}


def dataset_caption(kind: str) -> str:
    """What a demo's browsing dataset is (its builder's docstring)."""
    return " ".join(inspect.getdoc(DEMOS[kind].dataset).split())


def follow_model_source() -> None:
    """on_change of the model source: a demo model starts paired with its own data (another can be picked)."""
    if st.session_state["model_source"] in DEMO_SOURCES:
        st.session_state["data_source"] = st.session_state["model_source"]


@st.cache_data(show_spinner=False, max_entries=4)
def _table(path: str, modified_ns: int) -> pd.DataFrame:
    return read_table(path)


def table_of(path: str) -> pd.DataFrame:
    """A table file, re-read when it changes."""
    return _table(path, Path(path).stat().st_mtime_ns)


def model_classes(spec: ModelSpec | None) -> tuple[str, ...] | None:
    """The class names the model reads a label column with; None when they are not known yet (no model, a demo
    not built, a checkpoint that does not load: Load says why) or the adapter maps labels itself (answer strings)."""
    if spec is None or (spec.demo and not (demo_folder(spec.demo, Path(workspace_root())) / METRICS).exists()):
        return None
    try:
        return model_for(spec).adapter.data_label_names() or None
    except Exception:  # shown when Load is pressed, with the whole message
        return None


def label_map_editor(values: list[str], unmatched: list[str], classes: tuple[str, ...] | None) -> tuple:
    """A class of the model for each label value that is not one of its class names or indices: the label map
    (value, class) pairs the dataset spec keeps."""
    if classes is None or not unmatched:
        return ()
    if len(values) > MAX_MAPPED_LABELS:
        st.warning(f"The label column has {len(values):,} distinct values, too many to map to the model's "
                   f"{len(classes)} classes; choose the column that holds the classes")
        return ()
    st.markdown(f"**Map labels to the model's classes** ({len(unmatched)} of {len(values)} values are not "
                "class names or indices)")
    cols = st.columns(min(len(unmatched), 4))
    chosen = [(value, cols[i % len(cols)].selectbox(f"{escape_markdown(value)} →", classes, index=None,
                                                     placeholder="choose a class", key=f"data_label_map_{value}"))
              for i, value in enumerate(unmatched)]
    return tuple((value, cls) for value, cls in chosen if cls is not None)


def image_preview(path: str) -> None:
    """The first images of an .npz, or one per class subfolder, before loading."""
    try:
        shown = preview_images(path, PREVIEW_BEFORE_LOAD)
    except (ValueError, OSError) as e:
        st.error(escape_markdown(e))
        return
    if shown:
        st.image([pixels for _, pixels in shown], caption=[c for c, _ in shown], width=64)


def table_inputs(path: str, classes: tuple[str, ...] | None) -> dict:
    """Preview of a table (detected columns, first rows), then its text, label and annotation columns and the
    label map: DatasetSpec fields."""
    try:
        frame = table_of(path)
    except (ValueError, OSError) as e:  # not a table, or no such file
        st.error(escape_markdown(describe_error(e)))
        return {}
    profile = column_profile(frame)
    st.caption(f"{len(frame):,} rows · detected columns:")
    st.dataframe(profile, hide_index=True)
    st.dataframe(frame.head(PREVIEW_BEFORE_LOAD), hide_index=True)
    columns = list(frame.columns)
    texts = profile.loc[profile["kind"] == "text", "column"].tolist()[:1] or columns[:1]
    text_columns = tuple(st.multiselect("Text column(s) (two for sentence pairs)", columns, default=texts,
                                        max_selections=2, key="data_text_columns"))
    options = ["(none)", *columns]
    label = st.selectbox("Label column", options, index=options.index(default_label_column(columns, texts) or "(none)"),
                         key="data_label_column", help="class names or indices; for a free-form next-token model, "
                                                       "the answer strings (each stands for its first token)")
    label_column = None if label == "(none)" else label
    label_map = ()
    if label_column and classes:
        label_map = label_map_editor(label_values(frame[label_column]), unmatched_labels(frame[label_column], classes),
                                     classes)
    rest = [c for c in columns if c not in (*text_columns, label_column)]
    annotations = tuple(st.multiselect("Annotation columns (browsed by, e.g. a ground-truth rule)", rest,
                                       key="data_annotations"))
    return {"text_columns": text_columns, "label_column": label_column, "annotation_columns": annotations,
            "label_map": label_map}


def folder_inputs(path: str, classes: tuple[str, ...] | None) -> dict:
    """Preview of an image folder (one image per class), its resize and the label map of its subfolders."""
    image_preview(path)
    subfolders = image_folder_classes(path)
    st.caption(f"Class subfolders: {escape_markdown(', '.join(subfolders[:SHOWN_CLASSES]))}. Images are resized to "
               "one size (0 × 0: the first image's size).")
    h, w = st.columns(2)
    size = (int(h.number_input("Height", 0, 4096, 0, key="data_image_height")),
            int(w.number_input("Width", 0, 4096, 0, key="data_image_width")))
    lower = {c.lower() for c in classes or ()}
    unmatched = [s for s in subfolders if s.lower() not in lower]
    return {"image_size": size if all(size) else None,
            "label_map": label_map_editor(subfolders, unmatched, classes)}


def dataset_inputs(path: str | None, classes: tuple[str, ...] | None) -> dict:
    """The DatasetSpec fields of a dataset file or folder, after its preview."""
    if not path:
        return {}
    if Path(path).is_dir():
        return folder_inputs(path, classes)
    if path.endswith(".npz"):
        image_preview(path)
        return {}
    return table_inputs(path, classes)


def specs_to_load(model_spec: ModelSpec | None, data_source: str, data_path: str | None,
                  data_fields: dict) -> tuple[ModelSpec, DatasetSpec]:
    """The pair the Load button loads: a demo's data is taken as it is, a file's labels are read as the model's
    classes (its adapter decides)."""
    if model_spec is None:
        raise ValueError("give a model path or upload a file first")
    if model_spec.demo:
        ensure_demo(model_spec.demo)
    if data_source in DEMO_SOURCES:
        kind = DEMO_SOURCES[data_source]
        ensure_demo(kind)
        return model_spec, demo_specs(kind)[1]
    if not data_path:
        raise ValueError("give a dataset path or upload a file first")
    return model_spec, paired_dataset_spec(model_for(model_spec), DatasetSpec(source=data_path, **data_fields))


model_col, data_col = st.columns(2, gap="large")
with model_col:
    st.subheader("Model")
    source = st.radio("Source", SOURCES, horizontal=True, key="model_source", on_change=follow_model_source)
    demo = DEMO_SOURCES.get(source)
    model_path, extra = None, {}
    if demo:
        st.write(DEMOS[demo].title)
    elif source == "Local path":
        model_path = allowed_path(st.text_input("Checkpoint folder, .zip of one, or weights file "
                                                "(.safetensors/.bin/.pt)", key="model_path"))
    else:
        upload = st.file_uploader("Checkpoint .zip or weights file", type=["zip", "safetensors", "bin", "pt"],
                                  key="model_upload")
        model_path = save_upload(upload) if upload else None
    if model_path:
        extra = bare_weights_options(model_path) or adapter_picker(model_path)
    scope = scope_picker(DEMOS[demo].scope if demo else ParamScope("last_layers", n_layers=1), demo or "upload")
    model_spec = (demo_specs(demo, scope)[0] if demo else
                  ModelSpec(source=model_path, scope=scope, **extra) if model_path else None)

with data_col:
    st.subheader("Dataset")
    data_source = st.radio("Source", SOURCES, horizontal=True, key="data_source")
    data_path = None
    if data_source in DEMO_SOURCES:
        st.write(escape_markdown(dataset_caption(DEMO_SOURCES[data_source])))
    elif data_source == "Local path":
        data_path = allowed_path(st.text_input("CSV, JSONL, Parquet, .npz of images, or a folder of images "
                                               "with one subfolder per class", key="data_path"))
    else:
        up = st.file_uploader("Dataset file", type=["csv", "jsonl", "json", "parquet", "npz"], key="data_upload")
        data_path = save_upload(up) if up else None
    data_fields = dataset_inputs(data_path, model_classes(model_spec) if data_path else None)

if st.button("Load", type="primary", key="load_pair"):
    loaded = None
    with st.status("Loading and validating…", expanded=False) as status:
        try:
            loaded = activate(*specs_to_load(model_spec, data_source, data_path, data_fields))
        except Exception as e:  # every failure is shown as a message; the previous pair stays active
            status.update(label=f"Not loaded: {escape_markdown(describe_error(e))}", state="error", expanded=True)
            st.error(f"Not loaded: {escape_markdown(e)}")
        else:
            status.update(label="Loaded and registered in the workspace", state="complete")
    if loaded:
        st.session_state[LOADED_NOTE] = f"Loaded {loaded[0].name} with {loaded[1].name}"
        st.rerun()  # the sidebar, drawn before this page, shows the new pair
if note := st.session_state.pop(LOADED_NOTE, None):
    st.success(escape_markdown(note))

model, dataset = active()
summary = model.summary()
st.divider()
st.subheader(f"Active model: {escape_markdown(summary.name)}")
c1, c2, c3, c4, c5 = st.columns(5)
c1.metric("Classes", len(summary.label_names))
c2.metric("Parameters", f"{summary.n_parameters:,}")
c3.metric("In scope", f"{summary.n_parameters_in_scope:,}")
c4.metric("Examples", f"{len(dataset):,}")
try:
    with st.spinner(f"Measuring the accuracy on up to {SAMPLE_SIZE} labelled examples (once per pair)…"):
        measured = sample_accuracy(workspace(), model, dataset)
except Exception as e:  # the pair stays loaded; only its accuracy is missing
    st.warning(f"Accuracy not measured: {escape_markdown(describe_error(e))}")
    measured = None
if measured:
    c5.metric("Accuracy", f"{measured.accuracy:.1%}", help=f"Predictions vs gold labels {measured.describe()}")
    st.caption(f"Accuracy {measured.accuracy:.1%} {measured.describe()} (a seeded sample of at most {SAMPLE_SIZE}, "
               "scored once per pair and kept in the workspace)")
classes = ", ".join(summary.label_names[:SHOWN_CLASSES])
if len(summary.label_names) > SHOWN_CLASSES:
    classes += f" … ({len(summary.label_names):,} in all)"
st.markdown(f"**Architecture:** {escape_markdown(summary.architecture)} · **adapter:** "
            f"{escape_markdown(summary.adapter)} · **classes:** {escape_markdown(classes)} · "
            f"**scope:** {escape_markdown(summary.scope)} · **content hash:** `{summary.content_hash[:16]}`")
if tokens := getattr(model.adapter, "label_tokens", None):
    st.caption("Label word → token: " + " · ".join(f"{escape_markdown(w)} → `{t}`" for w, t in tokens.items()))
for note in summary.notes:
    st.caption(escape_markdown(note))
with st.expander("Parameters in scope"):
    params = dict(model.named_parameters())
    st.dataframe(pd.DataFrame([{"name": n, "shape": tuple(params[n].shape), "count": params[n].numel()}
                               for n in model.param_names_in_scope()]), hide_index=True)
left, right = st.columns([3, 2])
with right:
    known = dataset.labels >= 0
    present = np.unique(dataset.labels[known])  # the classes that occur (of a whole vocabulary, a few)
    shown = np.full(len(dataset), -1)
    shown[known] = np.searchsorted(present, dataset.labels[known])
    st.plotly_chart(label_counts(shown, [dataset.label_names[c] for c in present]), key="label_counts")
with left:
    st.markdown(f"**Dataset:** {escape_markdown(dataset.name)} · source: {escape_markdown(dataset.source)}")
    texts = model.adapter.display_texts(dataset)
    n = PREVIEW_TEXTS if texts is not None else PREVIEW_IMAGES
    preview = pd.DataFrame({"idx": range(min(n, len(dataset))),
                            "gold": [dataset.label_names[i] if i >= 0 else "not available"
                                     for i in dataset.labels[:n]]})
    if texts is not None:
        preview["text"] = texts[:n]
    show_examples(preview, key="load_preview", images=dataset_images(model, dataset), table=True, height=300,
                  name="dataset_preview", captions=preview["gold"].tolist())
