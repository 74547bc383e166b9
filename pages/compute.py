"""Compute page: per-example Fishers and an NPEFF fit for the active model and dataset, cached in the workspace.

Compute starts a background job (analysis/jobs.py), so the work goes on when the tab is reloaded or closed; the
job id and the page's settings live in the URL, so a reload shows the same job and settings again.
"""
from __future__ import annotations

from dataclasses import fields, replace

import pandas as pd
import streamlit as st

from analysis.components import NOTABLE_FRACTION, notable_threshold
from analysis.errors import describe_error
from analysis.estimates import (RUN_MEMORY_GROWTH, class_options, describe_record, duration, fit_seconds_from_size,
                                gib, machine_resources, measure_fit, measure_pefs, resource_problems, run_record,
                                workspace_estimate)
from analysis.figures.npeff import loss_curve
from analysis.job_points import live_fit
from analysis.jobs import compute_spec, dataset_spec_from, get_job, model_spec_from, start_job
from analysis.runs import (DecompositionSummary, decomposition_table, fit_config, load_decomposition, load_pefs,
                           pefs_settings)
from analysis.variants import VARIANTS
from pages.common import activate, active, escape_markdown, in_app_shell, workspace
from pages.panels.job import job_card

in_app_shell()


def url_value(key: str, default, cast=None):
    """A setting's value from the URL (?key=...) when present and readable, else the default."""
    text = st.query_params.get(key)
    if text is None:
        return default
    try:
        return (cast or type(default))(text)
    except ValueError:
        return default


def url_index(key: str, options: list[str], default: int = 0) -> int:
    """Index of the URL's choice among options (`default` when absent or unknown)."""
    return options.index(st.query_params[key]) if st.query_params.get(key) in options else default


def keep_in_url(values: dict[str, object]) -> None:
    """Write the page's settings into the URL (only those that changed), so a reload restores them."""
    for key, value in values.items():
        if st.query_params.get(key) != str(value):
            st.query_params[key] = str(value)


def the_job():
    """The job of this page (?job=), or None; a fresh session (a reload) opens the job's model and dataset."""
    job_id = st.query_params.get("job") or st.session_state.get("cp_job")
    if not job_id:
        return None
    try:
        job = get_job(workspace(), job_id)
    except KeyError:
        return None
    if st.session_state.get("cp_job_opened") != job.id and job.kind in ("compute", "pefs"):
        st.session_state["cp_job_opened"] = job.id
        pair = model_spec_from(job.spec["model"]), dataset_spec_from(job.spec["dataset"])
        if pair != (st.session_state.get("model_spec"), st.session_state.get("dataset_spec")):
            activate(*pair)
            st.rerun()  # the sidebar, drawn before the page, shows the job's pair
    st.query_params["job"] = job.id
    return job


st.title("Compute per-example Fishers & NPEFF")
model, dataset = active()
ws = workspace()
summary = model.summary()
n_classes = len(model.label_names)
st.caption(f"Model **{escape_markdown(model.name)}** · dataset **{escape_markdown(dataset.name)}** "
           f"({len(dataset):,} examples) · scope {escape_markdown(summary.scope)} = "
           f"{summary.n_parameters_in_scope:,} parameters (change on the Load page)")

job = the_job()
kind = st.radio("Factorization", list(VARIANTS), horizontal=True, key="cp_variant",
                index=url_index("cp_variant", list(VARIANTS)),
                format_func=lambda name: f"{VARIANTS[name].title} ({VARIANTS[name].description})")
variant = VARIANTS[kind]
defaults = {f.name: f.default for f in fields(variant.config)}
c1, c2, c3, c4 = st.columns(4)
n_components = int(c1.number_input("Components", 1, 512, url_value(f"cp_components_{kind}",
                                                                   variant.default_components),
                                   key=f"cp_components_{kind}"))
values = int(c2.number_input("Values kept per example (0 = all)", 0, 10_000_000,
                             url_value("cp_values", min(2048, summary.n_parameters_in_scope * n_classes)),
                             key="cp_values"))
class_choices = class_options(n_classes)
suggested = str(model.adapter.default_top_k_classes or "all")
top_k_label = c3.selectbox("Classes per example", class_choices,
                           index=url_index("cp_classes", class_choices,
                                           class_choices.index(suggested) if suggested in class_choices else 0),
                           key="cp_classes", help="keep the k most probable classes (probabilities not renormalized)")
n_iters = int(c4.number_input("Iterations", 10, 20_000, url_value("cp_iters", 300), key="cp_iters"))
with st.expander("Advanced"):
    columns = st.columns(len(variant.config.ui) + 2)
    own = {spec.name: type(defaults[spec.name])(col.number_input(
               spec.label, type(defaults[spec.name])(spec.low), type(defaults[spec.name])(spec.high),
               url_value(f"cp_{kind}_{spec.name}", defaults[spec.name]), help=spec.help or None,
               key=f"cp_{kind}_{spec.name}"))
           for col, spec in zip(columns, variant.config.ui)}
    seed = int(columns[-2].number_input("Seed", 0, 2**31 - 1, url_value("cp_seed", 0), key="cp_seed"))
    batch_size = int(columns[-1].number_input("Batch size", 1, 512, url_value("cp_batch_size", 16),
                                              key="cp_batch_size"))
keep_in_url({"cp_variant": kind, f"cp_components_{kind}": n_components, "cp_values": values,
             "cp_classes": top_k_label, "cp_iters": n_iters, "cp_seed": seed, "cp_batch_size": batch_size,
             **{f"cp_{kind}_{name}": value for name, value in own.items()}})

k = values or None
top_k = None if top_k_label == "all" else int(top_k_label)
settings = pefs_settings(model, dataset, kind=kind, n_values_per_example=k, top_k_classes=top_k)
cached = ws.find_run("pefs", settings)
pefs_stored = cached is not None and cached.status == "complete"
# the PEF and fit measures (calibrations, then each run's own numbers) are kept in the workspace
sourced = workspace_estimate(ws.root, model, dataset, kind=kind, n_values_per_example=k, top_k_classes=top_k,
                             n_components=n_components, batch_size=batch_size)
estimate = sourced.estimate
fit_settings = {"n_components": n_components, "n_iters": n_iters, "seed": seed, **own}
config = fit_config(variant, fit_settings)
fit_calibrated = st.session_state.get(f"cp_fit_time_{cached.id}_{fit_settings}") if pefs_stored else None
if fit_calibrated is not None:
    fit_time, fit_memory = fit_calibrated
    estimate = replace(estimate, fit_memory_bytes=fit_memory or estimate.fit_memory_bytes)
    fit_how = "calibrated on the stored PEFs (the real fit, a few iterations)"
else:
    fit_time = fit_seconds_from_size(ws.root, config, len(dataset) * estimate.values_per_example)
    fit_how = f"{sourced.fit_source}, scaled to this size (stored values × components × iterations)"
e1, e2, e3 = st.columns(3)
e1.metric("PEFs on disk", gib(estimate.pef_bytes))
e2.metric("Peak memory (estimate)", gib(estimate.fit_memory_bytes if pefs_stored else estimate.peak_bytes))
e3.metric("PEF time (estimate)", "cached" if pefs_stored
          else "not measured" if estimate.pef_seconds is None else duration(estimate.pef_seconds))
pef_how = ("stored" if pefs_stored else f"not measured (press Estimate time); memory {gib(estimate.pef_memory_bytes)} "
           "from the shapes" if estimate.pef_seconds is None
           else f"{duration(estimate.pef_seconds)}, memory {gib(estimate.pef_memory_bytes)}, {sourced.pef_source}")
st.caption(f"PEFs: {pef_how} · NPEFF fit: "
           + (f"not measured (press Estimate time); memory {gib(estimate.fit_memory_bytes)} from the shapes"
              if fit_time is None else f"{duration(fit_time)} for {config.total_iters:,} iterations, memory "
                                       f"{gib(estimate.fit_memory_bytes)}, {fit_how}"))
problems = resource_problems(estimate, machine_resources(ws.root), pefs_stored=pefs_stored)
if problems:
    st.warning(f"This computation may not fit in workspace {escape_markdown(ws.root)}: {'; '.join(problems)}. "
               "Keep fewer values per example or use fewer examples.")
confirmed = not problems or st.checkbox("Start anyway, although the estimate exceeds what is free",
                                        key="compute_over_estimate")

b1, b2 = st.columns([1, 5])
compute = b1.button("Compute", type="primary", disabled=not confirmed, key="cp_compute")
if b2.button("Estimate time", key="cp_estimate",
             help="PEFs: times a warm-up batch, then 3 batches of this size (median per example) and measures "
                  f"their peak memory (a whole run takes about {RUN_MEMORY_GROWTH}x that); the fit: a few "
                  "iterations of the real fit on the stored PEFs. The numbers are kept in the workspace, and each "
                  "complete run replaces them with its own"):
    try:
        with st.spinner("Timing batches of examples and iterations of the fit…"):
            if not pefs_stored:
                measure_pefs(ws.root, model, dataset, kind=kind, top_k_classes=top_k, n_values_per_example=k,
                             batch_size=batch_size)
            else:
                st.session_state[f"cp_fit_time_{cached.id}_{fit_settings}"] = measure_fit(
                    ws.root, load_pefs(ws, cached), config)
    except Exception as e:  # shown as a message
        st.error(f"Timing stopped: {escape_markdown(describe_error(e, source=model.name))}")
    else:
        st.rerun()
if compute:
    try:
        job = start_job(ws, "compute", compute_spec(
            st.session_state["model_spec"], st.session_state["dataset_spec"],
            pefs={"kind": kind, "n_values_per_example": k, "top_k_classes": top_k, "batch_size": batch_size},
            fit=fit_settings))
    except Exception as e:  # shown as a message
        st.error(f"Could not start the computation: {escape_markdown(describe_error(e, source=model.name))}")
    else:
        st.session_state["cp_job"] = st.session_state["cp_job_opened"] = job.id
        st.query_params["job"] = job.id
        st.rerun()  # the sidebar, drawn before the page, lists the new job


@st.fragment(run_every=2 if job is not None and job.active else None)
def job_panel(job_id: str) -> None:
    """The page's job, live: its progress while it runs; the decomposition once it is complete."""
    current = get_job(ws, job_id)
    if current.active:
        with st.container(border=True):
            job_card(ws, current, key="cp_job")
            live = live_fit(ws, current)
            if live is not None:
                warm_up = (f" · G-only warm-up: iterations 0–{live.n_warm_up} (W frozen), then joint updates"
                           if live.n_warm_up else "")
                phase = "G-only warm-up" if live.phase == "warm-up" else "joint updates"
                st.caption(f"iteration {live.step:,}/{live.total:,} ({phase}){warm_up}")
                st.plotly_chart(loss_curve(live.losses, iterations=live.iterations, total=live.total,
                                           n_iters_g_only=live.n_warm_up, title="NPEFF loss (live)"),
                                key="cp_live_loss")
        return
    if job is not None and job.active:  # it has just ended: redraw the page (decomposition table, active run)
        st.rerun()
    if current.status == "complete" and current.kind == "compute":
        fit = ws.get_run(current.result)
        st.session_state["decomposition_run"] = fit.id
        if st.session_state.get("cp_activated_job") != current.id:  # once: the user may pick another run after
            st.session_state["cp_activated_job"], st.session_state["cp_active"] = current.id, fit.id
        st.success(f"Decomposition {fit.id}: {current.spec['fit']['n_components']} components, relative error "
                   f"{fit.summary['relative_error']:.3f} ({current.elapsed:.1f} s; "
                   "identical settings are reused from the workspace)")
    else:
        with st.container(border=True):
            job_card(ws, current, key="cp_job")


if job is not None:
    job_panel(job.id)

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
        for what, run_id in (("PEFs", DecompositionSummary.of(run).pefs_run), ("NPEFF fit", run.id)):
            record = run_record(ws, run_id)
            if record is not None:
                st.caption(describe_record(what, record))
        st.plotly_chart(loss_curve(dec.losses, n_iters_g_only=run.params.get("n_iters_g_only", 0)),
                        key="stored_loss")
        threshold = notable_threshold(dec.W)
        st.dataframe(pd.DataFrame({"component": range(dec.n_components),
                                   f"notable examples (coefficient > {NOTABLE_FRACTION:.0%} of max)":
                                       (dec.W > threshold).sum(0),
                                   "top coefficient": dec.W.max(0)}), hide_index=True)
