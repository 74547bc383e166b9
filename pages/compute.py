"""Compute page: per-example Fishers and an NPEFF fit for the active model and dataset, cached in the workspace."""
from __future__ import annotations

import time
from dataclasses import fields

import pandas as pd
import streamlit as st

from analysis.components import NOTABLE_FRACTION, notable_threshold
from analysis.errors import describe_error
from analysis.estimates import (duration, estimate_pefs, gib, machine_resources, measure_seconds_per_example,
                                resource_problems, stored_seconds_per_example, timing_key)
from analysis.figures.npeff import loss_curve
from analysis.runs import decomposition_table, fit_run, load_decomposition, pefs_run, pefs_settings
from analysis.variants import VARIANTS
from pages.common import active, escape_markdown, in_app_shell, workspace

in_app_shell()


st.title("Compute per-example Fishers & NPEFF")
model, dataset = active()
ws = workspace()
summary = model.summary()
n_classes = len(model.label_names)
st.caption(f"Model **{escape_markdown(model.name)}** · dataset **{escape_markdown(dataset.name)}** "
           f"({len(dataset):,} examples) · scope {escape_markdown(summary.scope)} = "
           f"{summary.n_parameters_in_scope:,} parameters (change on the Load page)")

kind = st.radio("Factorization", list(VARIANTS), horizontal=True, key="cp_variant",
                format_func=lambda name: f"{VARIANTS[name].title} ({VARIANTS[name].description})")
variant = VARIANTS[kind]
defaults = {f.name: f.default for f in fields(variant.config)}
c1, c2, c3, c4 = st.columns(4)
n_components = int(c1.number_input("Components", 1, 512, variant.default_components, key=f"cp_components_{kind}"))
values = int(c2.number_input("Values kept per example (0 = all)", 0, 10_000_000,
                             min(2048, summary.n_parameters_in_scope * n_classes), key="cp_values"))
top_k_label = c3.selectbox("Classes per example", ["all"] + [str(k) for k in range(1, n_classes)], key="cp_classes",
                           help="keep the k most probable classes (probabilities not renormalized)")
n_iters = int(c4.number_input("Iterations", 10, 20_000, 300, key="cp_iters"))
with st.expander("Advanced"):
    columns = st.columns(len(variant.config.ui) + 2)
    own = {spec.name: type(defaults[spec.name])(col.number_input(
               spec.label, type(defaults[spec.name])(spec.low), type(defaults[spec.name])(spec.high),
               defaults[spec.name], help=spec.help or None, key=f"cp_{kind}_{spec.name}"))
           for col, spec in zip(columns, variant.config.ui)}
    seed = int(columns[-2].number_input("Seed", 0, 2**31 - 1, 0, key="cp_seed"))
    batch_size = int(columns[-1].number_input("Batch size", 1, 512, 16, key="cp_batch_size"))

k = values or None
top_k = None if top_k_label == "all" else int(top_k_label)
settings = pefs_settings(model, dataset, kind=kind, n_values_per_example=k, top_k_classes=top_k)
cached = ws.find_run("pefs", settings)
pefs_stored = cached is not None and cached.status == "complete"
# the time per example is measured once (Estimate time, or the command line) and kept in the workspace
estimate = estimate_pefs(model, dataset, kind=kind, n_values_per_example=k, top_k_classes=top_k,
                         n_components=n_components, batch_size=batch_size,
                         seconds_each=stored_seconds_per_example(ws.root, timing_key(
                             model, dataset, kind=kind, top_k_classes=top_k, n_values_per_example=k)))
e1, e2, e3 = st.columns(3)
e1.metric("PEFs on disk", gib(estimate.pef_bytes))
e2.metric("Peak memory (estimate)", gib(estimate.peak_bytes))
e3.metric("PEF time (estimate)", "cached" if pefs_stored
          else "not measured" if estimate.pef_seconds is None else duration(estimate.pef_seconds))
problems = resource_problems(estimate, machine_resources(ws.root), pefs_stored=pefs_stored)
if problems:
    st.warning(f"This computation may not fit in workspace {escape_markdown(ws.root)}: {'; '.join(problems)}. "
               "Keep fewer values per example or use fewer examples.")
confirmed = not problems or st.checkbox("Start anyway, although the estimate exceeds what is free",
                                        key="compute_over_estimate")

b1, b2 = st.columns([1, 5])
compute = b1.button("Compute", type="primary", disabled=not confirmed, key="cp_compute")
if not pefs_stored and estimate.pef_seconds is None and b2.button(
        "Estimate time", help="Times one batch of per-example Fishers; the number is kept in the workspace",
        key="cp_estimate"):
    try:
        with st.spinner("Timing one batch of examples…"):
            measure_seconds_per_example(ws.root, model, dataset, kind=kind, top_k_classes=top_k,
                                        n_values_per_example=k, batch_size=batch_size)
    except Exception as e:  # shown as a message
        st.error(f"Timing stopped: {escape_markdown(describe_error(e, source=model.name))}")
    else:
        st.rerun()
if compute:
    try:
        started = time.perf_counter()
        bar = st.progress(0.0, text="Per-example Fishers…")
        pefs = pefs_run(ws, model, dataset, kind=kind, n_values_per_example=k, top_k_classes=top_k,
                        batch_size=batch_size,
                        progress=lambda d, t: bar.progress(d / t, text=f"Per-example Fishers: {d:,}/{t:,} examples"))
        bar.progress(1.0, text=f"Per-example Fishers: {pefs.summary['n_examples']:,} examples "
                               f"({pefs.summary['n_parameters']:,} parameters)")
        fit_bar, chart = st.progress(0.0, text="NPEFF…"), st.empty()
        losses: list[float] = []

        def on_fit(done: int, total: int, loss: float | None) -> None:
            fit_bar.progress(done / max(total, 1), text=f"NPEFF: iteration {done:,}/{total:,}")
            if loss is not None:
                losses.append(loss)
                chart.plotly_chart(loss_curve(losses), key=f"live_loss_{len(losses)}")

        fit = fit_run(ws, pefs, n_components=n_components, n_iters=n_iters, seed=seed, progress=on_fit, **own)
        fit_bar.progress(1.0, text="NPEFF done")
        st.session_state["decomposition_run"] = fit.id
        st.query_params["run"] = fit.id
        st.success(f"Decomposition {fit.id}: {n_components} components, relative error "
                   f"{fit.summary['relative_error']:.3f} ({time.perf_counter() - started:.1f} s; "
                   "identical settings are reused from the workspace)")
    except Exception as e:  # shown as a message; failed runs are marked failed, never complete
        st.error(f"Computation stopped: {escape_markdown(describe_error(e, source=model.name))}")

st.divider()
st.subheader("Decompositions of this model and dataset")
runs = ws.decomposition_runs(model.content_hash, dataset.content_hash, complete_only=False)
if runs.empty:
    st.info("No decomposition yet: choose settings above and press Compute.")
else:
    st.dataframe(decomposition_table(runs), hide_index=True, key="cp_runs")
    complete = runs[runs.status == "complete"]["id"].tolist()
    if complete:
        chosen = st.selectbox("Active decomposition", complete, key="cp_active",
                              index=complete.index(st.session_state["decomposition_run"])
                              if st.session_state.get("decomposition_run") in complete else 0)
        st.session_state["decomposition_run"] = chosen
        run = ws.get_run(chosen)
        dec = load_decomposition(ws, run)
        st.plotly_chart(loss_curve(dec.losses, n_iters_g_only=run.params.get("n_iters_g_only", 0)),
                        key="stored_loss")
        threshold = notable_threshold(dec.W)
        st.dataframe(pd.DataFrame({"component": range(dec.n_components),
                                   f"notable examples (coefficient > {NOTABLE_FRACTION:.0%} of max)":
                                       (dec.W > threshold).sum(0),
                                   "top coefficient": dec.W.max(0)}), hide_index=True)
