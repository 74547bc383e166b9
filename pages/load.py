"""Load page: pick a model and a dataset (demo, local path or upload), validate, register, preview."""
from __future__ import annotations

import inspect
from pathlib import Path

import numpy as np
import pandas as pd
import streamlit as st

from analysis.adapters import ADAPTERS, OptionSpec
from analysis.datasets import read_table
from analysis.demos import DEMOS
from analysis.loading import (DatasetSpec, ModelSpec, adapter_choices, adapter_options, demo_specs,
                              label_word_tokens, paired_dataset_spec)
from analysis.figures.data import label_counts
from analysis.image_models import ARCHITECTURES
from analysis.models import WEIGHT_SUFFIXES, ParamScope
from pages.common import (activate, active, allowed_path, ensure_demo, escape_markdown, in_app_shell, model_for,
                          save_upload, workspace_root)
from pages.panels.examples import dataset_images, show_examples

in_app_shell()

PREVIEW_TEXTS, PREVIEW_IMAGES = 50, 24  # examples of the active dataset shown at the bottom
SHOWN_CLASSES = 20  # class names listed in the summary (a next-token model's classes are its vocabulary)
DEMO_SOURCES = {f"{kind.capitalize()} demo": kind for kind in DEMOS}  # "Text demo" -> "text", ...
SOURCES = [*DEMO_SOURCES, "Local path", "Upload"]

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


model_col, data_col = st.columns(2, gap="large")
with model_col:
    st.subheader("Model")
    source = st.radio("Source", SOURCES, horizontal=True, key="model_source")
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

with data_col:
    st.subheader("Dataset")
    if demo:
        st.write(escape_markdown(dataset_caption(demo)))
        data_source = None
    else:
        data_source = st.radio("Source", SOURCES, horizontal=True, key="data_source")
    data_path, text_columns, label_column, annotation_columns, image_size = None, (), None, (), None
    if data_source in ("Local path", "Upload"):
        if data_source == "Local path":
            data_path = allowed_path(st.text_input("CSV, JSONL, Parquet, .npz of images, or a folder of images "
                                                   "with one subfolder per class", key="data_path"))
        else:
            up = st.file_uploader("Dataset file", type=["csv", "jsonl", "json", "parquet", "npz"], key="data_upload")
            data_path = save_upload(up) if up else None
        if data_path and Path(data_path).is_dir():
            st.caption("Images are resized to one size (0 × 0: the first image's size).")
            h, w = st.columns(2)
            size = (int(h.number_input("Height", 0, 4096, 0, key="data_image_height")),
                    int(w.number_input("Width", 0, 4096, 0, key="data_image_width")))
            image_size = size if all(size) else None
        elif data_path and not data_path.endswith(".npz"):
            try:
                columns = list(read_table(data_path).columns)
            except ValueError as e:
                st.error(escape_markdown(e))
                columns = []
            if columns:
                text_columns = tuple(st.multiselect("Text column(s) (two for sentence pairs)", columns,
                                                    default=columns[:1], max_selections=2, key="data_text_columns"))
                label = st.selectbox("Label column", ["(none)", *columns], index=min(2, len(columns)),
                                     key="data_label_column",
                                     help="class names or indices; for a free-form next-token model, the answer "
                                          "strings (each stands for its first token)")
                label_column = None if label == "(none)" else label
                rest = [c for c in columns if c not in (*text_columns, label_column)]
                annotation_columns = tuple(st.multiselect("Annotation columns (browsed by, e.g. a ground-truth "
                                                          "rule)", rest, key="data_annotations"))

if st.button("Load", type="primary", key="load_pair"):
    try:
        with st.status("Loading and validating…", expanded=False) as status:
            if demo:
                ensure_demo(demo)
                model_spec, dataset_spec = demo_specs(demo, scope)
            else:
                if not model_path:
                    raise ValueError("give a model path or upload a file first")
                model_spec = ModelSpec(source=model_path, scope=scope, **extra)
                if data_source in DEMO_SOURCES:
                    kind = DEMO_SOURCES[data_source]
                    ensure_demo(kind)
                    dataset_spec = demo_specs(kind)[1]
                elif not data_path:
                    raise ValueError("give a dataset path or upload a file first")
                else:
                    model = model_for(model_spec)
                    dataset_spec = paired_dataset_spec(model, DatasetSpec(
                        source=data_path, text_columns=text_columns, label_column=label_column,
                        annotation_columns=annotation_columns, image_size=image_size))
            activate(model_spec, dataset_spec)
            status.update(label="Loaded and registered in the workspace", state="complete")
    except Exception as e:  # every failure is shown as a message; the previous pair stays active
        st.error(f"Not loaded: {escape_markdown(e)}")

model, dataset = active()
summary = model.summary()
st.divider()
st.subheader(f"Active model: {escape_markdown(summary.name)}")
c1, c2, c3, c4 = st.columns(4)
c1.metric("Classes", len(summary.label_names))
c2.metric("Parameters", f"{summary.n_parameters:,}")
c3.metric("In scope", f"{summary.n_parameters_in_scope:,}")
c4.metric("Examples", f"{len(dataset):,}")
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
