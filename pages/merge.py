"""Merge page: merge 2+ checkpoints of one architecture by isotropic averaging and Fisher merging over λ."""
from __future__ import annotations

import streamlit as st

from analysis.errors import describe_error
from analysis.figures.merge import lambda_accuracy_figure, task_accuracy_figure
from analysis.jobs import find_job, start_or_reuse_job
from analysis.loading import DatasetSpec, ModelSpec, paired_dataset_spec
from analysis.merge import METHODS, MergeSettings, SweepSettings
from analysis.merge.runs import load_merge, merge_survival
from analysis.merge.specs import MERGE_DEMO, ParentSpec, demo_parents, merge_spec
from analysis.merge.sweep import PAPER_N_LAMBDAS, Parent, best_by_method
from analysis.models import ParamScope
from analysis.perturb.diag import FISHER_FLOOR
from analysis.runs import load_decomposition
from analysis.tables import csv_bytes
from pages.common import (allowed_path, dataset_for, decomposition_runs, escape_markdown, export_buttons,
                          in_app_shell, model_for, workspace, workspace_root)
from pages.panels.job import live_job

in_app_shell()

DEMO, CHECKPOINTS = "Merge-pair demo (digits CNNs)", "Checkpoints"


def checkpoint_parents(n_models: int) -> list[ParentSpec] | None:
    """One row of inputs per model; None until every path is given and allowed."""
    text_columns = tuple(c.strip() for c in st.text_input(
        "Text column(s) of text datasets", key="mg_text_columns", help="comma separated").split(",") if c.strip())
    label_column = st.text_input("Label column of text datasets", key="mg_label_column") or None
    parents = []
    for i in range(n_models):
        c0, c1, c2, c3 = st.columns([1, 3, 3, 3])
        name = c0.text_input("Task", chr(ord("A") + i), key=f"mg_name_{i}")
        paths = [allowed_path(col.text_input(label, key=f"mg_{field}_{i}")) for col, label, field in (
            (c1, "Checkpoint", "model"), (c2, "Fisher data", "fisher"), (c3, "Validation data", "eval"))]
        if not all(paths):
            return None
        spec = ModelSpec(source=paths[0], scope=ParamScope("all"))
        model = model_for(spec)
        data = [paired_dataset_spec(model, DatasetSpec(source=p, text_columns=text_columns, label_column=label_column))
                for p in paths[1:]]
        parents.append(ParentSpec(name, spec, *data))
    return parents


st.title("Merge models")
st.caption("Fisher merging (Matena & Raffel) weighs each parameter by each model's diagonal Fisher on its own data: "
           "θ* = Σⱼ λⱼ Fⱼ θⱼ / Σⱼ λⱼ Fⱼ, with Fⱼ the mean over examples of Σ_y p_y (∇ log p_y)². Isotropic averaging "
           "(Fⱼ = 1) is the baseline. Every merged model is scored on each model's validation data.")
source = st.radio("Models", [DEMO, CHECKPOINTS], horizontal=True, key="mg_source")
if source == DEMO:
    st.caption("Two digits CNNs from one initialization: A trained on digits 0-4, B on 5-9 (built once, seconds).")
    parents, demo = demo_parents(workspace_root()), MERGE_DEMO
else:
    try:
        parents = checkpoint_parents(int(st.number_input("Models", 2, 6, 2, key="mg_n_models")))
    except Exception as e:  # a checkpoint or dataset that does not load
        st.error(escape_markdown(describe_error(e)))
        parents = None
    demo = None

c1, c2, c3, c4 = st.columns([3, 2, 2, 2])
methods = c1.multiselect("Methods", list(METHODS), default=list(METHODS), key="mg_methods",
                         format_func=lambda m: METHODS[m].title)
n_lambdas = int(c2.number_input("Values of λ", 2, 201, PAPER_N_LAMBDAS, key="mg_lambdas",
                                help="λ ∈ [0, 1] weighs the first model, 1 − λ the others (the paper used 51)"))
floor = float(c3.number_input("Fisher floor", 1e-12, 1.0, FISHER_FLOOR, format="%.0e", key="mg_floor"))
with c4:
    empirical = st.checkbox("Empirical Fisher", key="mg_empirical", help="(∇ log p_gold)² instead of Σ_y p_y(∇ log p_y)²")
    normalize = st.checkbox("Normalize Fishers", key="mg_normalize", help="divide each Fⱼ by ‖Fⱼ‖₂ first")
if not methods or parents is None:
    st.info("Pick at least one method and give every model's checkpoint and datasets.")
    st.stop()

ws = workspace()
settings = SweepSettings(methods=tuple(methods), n_lambdas=n_lambdas, empirical=empirical,
                         merge=MergeSettings(fisher_floor=floor, normalize=normalize))
spec = merge_spec(parents, settings, demo=demo)
job = find_job(ws, "merge", spec)
done = job is not None and job.status == "complete" and ws.get_run(job.result).status == "complete"
if not done:
    if st.button("Run merge sweep", type="primary", key="mg_run", disabled=job is not None and job.active):
        try:
            start_or_reuse_job(ws, "merge", spec)
        except Exception as e:  # shown as a message
            st.error(f"Could not start: {escape_markdown(describe_error(e))}")
        else:
            st.rerun()
    if job is not None:
        live_job(ws, job, key="mg_job")
    st.stop()

run = ws.get_run(job.result)
sweep = load_merge(ws, run)
st.caption(f"Merge run **{escape_markdown(run.id)}**: {len(sweep.names)} models, {n_lambdas} values of λ.")
best = best_by_method(sweep)
st.markdown("**Best λ per method** (highest mean accuracy over the tasks)")
st.dataframe(best, hide_index=True)
tasks, over_lambda, table = st.tabs(["Task vs task", "Accuracy over λ", "Table"])
with tasks:
    x_task, y_task = sweep.names[0], sweep.names[1]
    if len(sweep.names) > 2:
        t1, t2 = st.columns(2)
        x_task = t1.selectbox("x axis task", sweep.names, index=0, key="mg_x_task")
        y_task = t2.selectbox("y axis task", sweep.names, index=1, key="mg_y_task")
    fig = task_accuracy_figure(sweep, x_task, y_task)
    st.plotly_chart(fig, key="mg_tasks_fig")
    export_buttons(fig, "merge_tasks", key="mg_tasks_fig")
with over_lambda:
    fig = lambda_accuracy_figure(sweep)
    st.plotly_chart(fig, key="mg_lambda_fig")
    export_buttons(fig, "merge_lambda", key="mg_lambda_fig")
with table:
    st.markdown("**Parents** on each task's validation data")
    st.dataframe(sweep.parents, hide_index=True)
    st.dataframe(sweep.table, hide_index=True)
    st.download_button("CSV", csv_bytes(sweep.table), "merge_sweep.csv", "text/csv", key="mg_csv")

with st.expander("NPEFF components through the merge"):
    st.caption("For a decomposition of a parent on its validation data: the mean KL(parent ‖ merged) on each "
               "component's top examples over the mean on all examples. Below 1 the component survives the merge "
               "better than the average example; above 1 the merge drops it first.")
    n1, n2, n3, n4 = st.columns(4)
    index = sweep.names.index(n1.selectbox("Parent", sweep.names, key="mg_np_parent"))
    loaded = [Parent(p.name, model_for(p.model), dataset_for(p.model, p.fisher_data), dataset_for(p.model, p.eval_data))
              for p in parents]
    runs = decomposition_runs(loaded[index].model, loaded[index].eval_data)
    if runs.empty:
        st.info(f"No NPEFF decomposition of model {escape_markdown(sweep.names[index])} on its validation data yet: "
                "load that pair on the Load page (the Merge-pair demo loads model A with its held-out digits) and "
                "compute one.")
    else:
        run_id = n2.selectbox("Decomposition", list(runs["id"]), key="mg_np_run")
        method = n3.selectbox("Method", methods, key="mg_np_method", format_func=lambda m: METHODS[m].title)
        lams = sorted(sweep.table["lambda"].unique())
        lam = float(n4.select_slider("λ", lams, value=lams[len(lams) // 2], key="mg_np_lam",
                                     format_func=lambda v: f"{v:.2f}"))
        top_n = int(st.number_input("Top examples per component", 1, len(loaded[index].eval_data), 20, key="mg_np_top"))
        if st.button("Measure", key="mg_np_measure"):
            with st.spinner("Evaluating the merged model on the parent's validation data…"):
                survival = merge_survival(ws, loaded, settings, method=method, lam=lam, parent=index,
                                          W=load_decomposition(ws, ws.get_run(run_id)).W, top_n=top_n)
            st.dataframe(survival, hide_index=True)
            st.download_button("CSV", csv_bytes(survival), "merge_component_survival.csv", "text/csv",
                               key="mg_np_csv")
