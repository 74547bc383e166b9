"""Figures of a merge sweep: accuracy on task A against task B over λ for each method (Matena & Raffel's main
plot), and each task's accuracy against λ."""
from __future__ import annotations

import plotly.graph_objects as go

from analysis.figures.style import paper_layout
from analysis.merge.methods import get_method
from analysis.merge.sweep import MergeSweep, accuracy_column

METHOD_COLORS = {"average": "#4C72B0", "fisher": "#C44E52"}
PARENT_COLOR = "#222"
DASHES = ("solid", "dash", "dot", "dashdot")


def _check_names(sweep: MergeSweep, *names: str) -> None:
    unknown = [n for n in names if n not in sweep.names]
    if unknown:
        raise ValueError(f"task '{unknown[0]}' is not a parent of this merge; its parents are {list(sweep.names)}")


def task_accuracy_figure(sweep: MergeSweep, x_task: str | None = None, y_task: str | None = None, *,
                         title: str | None = None) -> go.Figure:
    """Accuracy on x_task's validation data against y_task's, one line per method through its λ values (hover
    shows λ), and the parents themselves as black markers; defaults: the first two parents."""
    x_task, y_task = x_task or sweep.names[0], y_task or sweep.names[1]
    _check_names(sweep, x_task, y_task)
    fig = go.Figure()
    for method, rows in sweep.table.groupby("method", sort=False):
        fig.add_trace(go.Scatter(
            x=rows[accuracy_column(x_task)], y=rows[accuracy_column(y_task)], mode="lines+markers",
            name=get_method(method).title, line=dict(color=METHOD_COLORS.get(method)), marker=dict(size=5),
            customdata=rows["lambda"], hovertemplate="λ = %{customdata:.2f}<br>%{x:.3f}, %{y:.3f}<extra></extra>"))
    parents = sweep.parents
    fig.add_trace(go.Scatter(x=parents[accuracy_column(x_task)], y=parents[accuracy_column(y_task)],
                             mode="markers+text", text=[f"model {m}" for m in parents["model"]],
                             textposition="top center", name="parents",
                             marker=dict(symbol="star", size=13, color=PARENT_COLOR)))
    fig.update_xaxes(range=[-0.03, 1.03])
    fig.update_yaxes(range=[-0.03, 1.08])
    # the corner of low accuracy on both tasks is where merges rarely land: the legend goes there
    fig.update_layout(legend=dict(x=0.02, y=0.02, xanchor="left", yanchor="bottom", bgcolor="rgba(255,255,255,0.8)"))
    return paper_layout(fig, title=title or f"Merged models: task {x_task} vs task {y_task} over λ", height=460,
                        xaxis_title=f"accuracy on task {x_task}", yaxis_title=f"accuracy on task {y_task}")


def lambda_accuracy_figure(sweep: MergeSweep, *, title: str | None = None) -> go.Figure:
    """Each task's accuracy against λ (the first parent's coefficient), a color per method, a dash per task."""
    fig = go.Figure()
    for method, rows in sweep.table.groupby("method", sort=False):
        for name, dash in zip(sweep.names, DASHES * len(sweep.names)):
            fig.add_trace(go.Scatter(x=rows["lambda"], y=rows[accuracy_column(name)], mode="lines",
                                     name=f"{get_method(method).title}: task {name}",
                                     line=dict(color=METHOD_COLORS.get(method), dash=dash)))
    fig.update_yaxes(range=[-0.03, 1.03])
    return paper_layout(fig, title=title or "Accuracy over λ", height=360,
                        xaxis_title=f"λ (weight of model {sweep.names[0]})", yaxis_title="accuracy")
