"""Load page: pick a model and a dataset (demo, local path or upload), validate, register, preview."""
from __future__ import annotations

from pathlib import Path

import pandas as pd
import streamlit as st

from analysis.datasets import read_table
from analysis.demos import DEMOS
from analysis.loading import DatasetSpec, ModelSpec, demo_specs
from analysis.figures.data import label_counts
from analysis.image_models import ARCHITECTURES
from analysis.models import WEIGHT_SUFFIXES, ParamScope
from pages.common import (activate, active, allowed_path, ensure_demo,
                          escape_markdown, in_app_shell, model_for, save_upload)
from pages.panels.examples import dataset_images, show_examples

in_app_shell()

PREVIEW_TEXTS, PREVIEW_IMAGES = 50, 24  # examples of the active dataset shown at the bottom

st.title("Load model & data")
st.caption("Models load safely: safetensors preferred, `.bin/.pt` only as plain tensors (never unpickled), "
           "no remote code, zip archives checked before extraction. Local paths must lie in the folders the "
           "server allows (`NPEFF_ALLOWED_ROOTS`, default: your home and the repository).")


def scope_picker(default_kind: str) -> ParamScope:
    modes = {"Last N layers + head": "last_layers", "All parameters": "all", "Names matching a regex": "pattern"}
    label = st.selectbox("Parameters in scope (per-example Fishers are taken over these)", list(modes),
                         index=0 if default_kind == "text" else 1, key=f"model_scope_{default_kind}")
    mode = modes[label]
    if mode == "last_layers":
        return ParamScope(mode, n_layers=int(st.number_input("N layers", 1, 48, 1, key="model_scope_layers")))
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


model_col, data_col = st.columns(2, gap="large")
with model_col:
    st.subheader("Model")
    source = st.radio("Source", ["Text demo", "Image demo", "Local path", "Upload"], horizontal=True,
                      key="model_source")
    demo = {"Text demo": "text", "Image demo": "image"}.get(source)
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
        extra = bare_weights_options(model_path)
    scope = scope_picker(demo or "text")

with data_col:
    st.subheader("Dataset")
    if demo:
        st.write("The demo's held-out examples." if demo == "text" else "500 held-out digits.")
        data_source = None
    else:
        data_source = st.radio("Source", ["Text demo", "Image demo", "Local path", "Upload"], horizontal=True,
                               key="data_source")
    data_path, text_columns, label_column = None, (), None
    if data_source in ("Local path", "Upload"):
        if data_source == "Local path":
            data_path = allowed_path(st.text_input("CSV, JSONL, Parquet, or .npz of images", key="data_path"))
        else:
            up = st.file_uploader("Dataset file", type=["csv", "jsonl", "json", "parquet", "npz"], key="data_upload")
            data_path = save_upload(up) if up else None
        if data_path and not data_path.endswith(".npz"):
            try:
                columns = list(read_table(data_path).columns)
            except ValueError as e:
                st.error(escape_markdown(e))
                columns = []
            if columns:
                text_columns = tuple(st.multiselect("Text column(s) (two for sentence pairs)", columns,
                                                    default=columns[:1], max_selections=2))
                label = st.selectbox("Label column", ["(none)", *columns], index=min(2, len(columns)))
                label_column = None if label == "(none)" else label

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
                if data_source in ("Text demo", "Image demo"):
                    kind = "text" if data_source == "Text demo" else "image"
                    ensure_demo(kind)
                    dataset_spec = demo_specs(kind)[1]
                elif not data_path:
                    raise ValueError("give a dataset path or upload a file first")
                else:
                    labels = tuple(model_for(model_spec).label_names)
                    dataset_spec = DatasetSpec(source=data_path, text_columns=text_columns,
                                               label_column=label_column, label_names=labels)
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
st.markdown(f"**Architecture:** {escape_markdown(summary.architecture)} · "
            f"**classes:** {escape_markdown(', '.join(summary.label_names))} · "
            f"**scope:** {escape_markdown(summary.scope)} · **content hash:** `{summary.content_hash[:16]}`")
with st.expander("Parameters in scope"):
    params = dict(model.named_parameters())
    st.dataframe(pd.DataFrame([{"name": n, "shape": tuple(params[n].shape), "count": params[n].numel()}
                               for n in model.param_names_in_scope()]), hide_index=True)
left, right = st.columns([3, 2])
with right:
    st.plotly_chart(label_counts(dataset.labels, dataset.label_names), key="label_counts")
with left:
    st.markdown(f"**Dataset:** {escape_markdown(dataset.name)} · source: {escape_markdown(dataset.source)}")
    texts = model.adapter.display_texts(dataset)
    n = PREVIEW_TEXTS if texts is not None else PREVIEW_IMAGES
    preview = pd.DataFrame({"idx": range(min(n, len(dataset))),
                            "gold": [dataset.label_names[i] if i >= 0 else "" for i in dataset.labels[:n]]})
    if texts is not None:
        preview["text"] = texts[:n]
    show_examples(preview, key="load_preview", images=dataset_images(model, dataset), table=True, height=300,
                  name="dataset_preview", captions=preview["gold"].tolist())
