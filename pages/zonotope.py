"""Zonotope explorer: activation patterns of a shallow ReLU net as zonotope vertices; greedy vertex search vs GD."""
from __future__ import annotations

import hashlib

import numpy as np
import pandas as pd
import streamlit as st

from analysis import zonotope as zt
from analysis.figures.zonotope import (data_figure, loss_trace_figure, seed_comparison_figure, slice_figure,
                                       unit_paths, width_figure, zonotope_figure)
from analysis.jobs import find_job, start_or_reuse_job, zonotope_spec
from analysis.store import ArraysSummary
from analysis.zonotope import doubling_width
from analysis.zonotope.data import PRESETS, near_degenerate, read_points, teacher_student
from pages.common import escape_markdown, export_buttons, in_app_shell, save_upload, workspace
from pages.panels.job import live_job

in_app_shell()

METHODS = ["greedy", "GD", "GD + greedy polish", "random vertices", "doubling"]
MAX_FRAMES = 60  # search steps the players show (evenly spaced, first and last included)
SIGNIFICANT = st.column_config.NumberColumn(format="%.4g")  # losses span 1 to 1e-20: significant digits

st.title("Zonotope explorer")
st.caption("A shallow ReLU net f(x) = Σⱼ sⱼ ReLU(⟨wⱼ, (x, 1)⟩): each unit's activation pattern is a vertex of "
           "the zonotope Z = Σᵢ [0, x̃ᵢ]; with the patterns fixed, training is a convex QP. From Matena & "
           "Raffel, *A Combinatorial Perspective on the Optimization of Shallow ReLU Networks*, NeurIPS 2022, "
           "[arXiv:2210.00176](https://arxiv.org/abs/2210.00176).")


def pick_data() -> tuple[np.ndarray, np.ndarray] | None:
    source = st.selectbox("Dataset", [*PRESETS, "Near-degenerate 3 points (ε)", "Upload CSV", "Edit a table"],
                          key="zt_source")
    if source == "Teacher-student (random)":
        a, b, c, d = st.columns(4)
        return teacher_student(n=int(a.number_input("n", 4, 60, 20)), d=int(b.selectbox("d", [2, 3])),
                               teacher_width=int(c.number_input("teacher width", 1, 12, 8)),
                               seed=int(d.number_input("data seed", 0, 10_000, 0)))
    if source in PRESETS:
        return PRESETS[source]()
    if source.startswith("Near-degenerate"):
        return near_degenerate(st.slider("ε", 0.0, 0.5, 0.1, 0.01, key="zt_eps"))
    if source == "Upload CSV":
        upload = st.file_uploader("Points: 1-3 input columns and a target column 'y'",
                                  type=["csv", "jsonl", "parquet"])
        if upload is None:
            return None
        return read_points(save_upload(upload))
    X, y = PRESETS["Figure 1 (5 points)"]()
    table = st.data_editor(pd.DataFrame({"x1": X[:, 0], "x2": X[:, 1], "y": y}), num_rows="dynamic",
                           key="zt_table")
    table = table.dropna()
    return table[["x1", "x2"]].to_numpy(float), table["y"].to_numpy(float)


def _key(X: np.ndarray, y: np.ndarray) -> str:
    return hashlib.sha256(np.ascontiguousarray(X).tobytes() + np.ascontiguousarray(y).tobytes()).hexdigest()[:16]


@st.cache_data(show_spinner="Enumerating the vertices of Z…", max_entries=16)
def _zonotope(X: np.ndarray, y: np.ndarray) -> tuple[zt.Zonotope, np.ndarray]:
    Z = zt.zonotope_graph(X)
    return Z, zt.best_unit_losses(X, y, Z.patterns)


@st.cache_data(show_spinner="Searching…", max_entries=32)
def _run(X: np.ndarray, y: np.ndarray, m: int, method: str, seed: int):
    """(greedy SearchResult or None, GdResult or None, other VertexSolution or losses)."""
    if method == "greedy":
        return zt.greedy_search(X, y, m, init="random", seed=seed), None, None
    if method == "GD":
        return None, zt.gd_train(X, y, m, seed=seed), None
    if method == "GD + greedy polish":
        gd = zt.gd_train(X, y, m, seed=seed)
        return zt.greedy_search(X, y, m, init=(gd.pattern_trace[-1].patterns, gd.signs), seed=seed), gd, None
    if method == "random vertices":
        return None, None, zt.random_vertex_losses(X, y, m, 200, seed=seed)
    return None, None, zt.doubling_vertex(X, y, seed=seed)


try:
    data = pick_data()
except ValueError as e:
    st.error(escape_markdown(e))
    data = None
if data is None:
    st.stop()
X, y = data
n, d = X.shape
c1, c2, c3 = st.columns(3)
method = c1.selectbox("Method", METHODS, key="zt_method")
m = int(c2.number_input("Hidden units m", 1, 12, 2, disabled=method == "doubling", key="zt_m"))
seed = int(c3.number_input("Seed", 0, 10_000, 0, key="zt_seed"))
try:
    greedy, gd, other = _run(X, y, m, method, seed)
except ValueError as e:
    st.error(escape_markdown(e))
    st.stop()

final = greedy or gd or other
if method == "random vertices":
    st.metric(f"Random-vertex ½SSE (200 vertices, m={m})", f"median {np.median(other):.4g}",
              f"best {other.min():.4g}", delta_color="off")
else:
    st.metric(f"Final ½SSE ({method}, m={final.W.shape[0]})", f"{final.loss:.6g}",
              f"zero network: {0.5 * float(y @ y):.4g}", delta_color="off")
if n <= 8 and m <= 2 and method != "doubling":
    st.caption(f"Exhaustive global optimum for m={m}: ½SSE = {zt.global_optimum(X, y, m).loss:.6g}")


@st.cache_data(show_spinner="Solving the vertex QP of each step…", max_entries=32)
def _step_weights(X: np.ndarray, y: np.ndarray, states: list[np.ndarray], signs: list[np.ndarray]) -> list[np.ndarray]:
    """W [m, D] of the best network on each step's joint vertex: every step's unit lines can be drawn."""
    return [zt.solve_vertex(X, y, patterns, s).W for patterns, s in zip(states, signs)]


def search_steps() -> tuple[list[np.ndarray], list[np.ndarray], list[int], list[str]]:
    """The search path's joint patterns [m, n] and output signs [m], the steps the players show (at most
    MAX_FRAMES, evenly spaced, first and last included) and their labels; all empty without a path."""
    if greedy:
        states, signs, what = [s.patterns for s in greedy.path], [s.signs for s in greedy.path], "greedy move"
    elif gd:
        states, signs, what = [c.patterns for c in gd.pattern_trace], [gd.signs] * len(gd.pattern_trace), "GD step"
    elif method == "doubling":
        return [other.patterns], [other.signs], [0], ["doubling vertex"]
    else:
        return [], [], [], []
    shown = np.unique(np.linspace(0, len(states) - 1, min(len(states), MAX_FRAMES)).round().astype(int)).tolist()
    return states, signs, shown, [f"{what} {i if greedy else gd.pattern_trace[i].step}" for i in shown]


@st.fragment
def linked_views() -> None:
    """Data, slice and zonotope panels, each with a player over the search path's steps (reruns alone)."""
    Z, unit_losses = _zonotope(X, y)
    states, signs, shown, labels = search_steps()
    units = states[0].shape[0] if states else 0
    unit = int(st.selectbox("Unit", range(units), format_func=lambda j: f"unit {j + 1}")) if units else 0
    if len(shown) > 1:
        spaced = ", evenly spaced" if len(shown) < len(states) else ""
        st.caption(f"▶ Play runs the search ({len(shown)} steps{spaced}) in each panel. Red: the unit's active "
                   "set and boundary ⟨w, x̃⟩ = 0 in the best network on that step's vertex (a unit inside its "
                   "activation region when that network leaves it unused).")
    weights = _step_weights(X, y, [states[i] for i in shown], [signs[i] for i in shown])
    patterns = [np.asarray(states[i][unit], dtype=bool) for i in shown]  # the unit's pattern per shown step
    index = {row.tobytes(): v for v, row in enumerate(Z.patterns)}
    figs = {
        "data": data_figure(X, y, steps=[(W[unit], P) for W, P in zip(weights, patterns)], labels=labels),
        "slice": slice_figure(X, Z.patterns, unit_losses, steps=[index.get(P.tobytes()) for P in patterns],
                              labels=labels),
        "zonotope": zonotope_figure(Z, unit_losses, paths=unit_paths(Z, states) if states else (), steps=shown,
                                    labels=labels),
    }
    for col, (name, fig) in zip([*st.columns(2), st.container()], figs.items()):
        with col:
            st.plotly_chart(fig, key=f"zt_{name}")
            export_buttons(fig, f"zonotope_{name}", key=f"zt_{name}")


if d == 2:
    linked_views()
else:
    st.info(f"Inputs have d = {d}: Z lives in R^{d + 1}, so the linked 2-D/3-D views need 2-D inputs; "
            "the searches and experiments below work for any d.")

if greedy or gd:
    trace = loss_trace_figure(greedy, gd)
    st.plotly_chart(trace, key="zt_trace")
    export_buttons(trace, "zonotope_loss_trace", key="zt_trace")

st.divider()
st.subheader("Experiments", help="They run as background jobs and are stored in the workspace: the same data "
                                  "and settings show at once.")
ws = workspace()
data_key = _key(X, y)


def experiment(kind: str, params: dict, button: str, key: str) -> dict | None:
    """The experiment's stored arrays; else its button (a job) and, while it runs, its live card."""
    stored = ws.find_run(kind, params)
    if stored is not None and stored.status == "complete":
        return {name: ws.load_array(stored.id, name, mmap=False) for name in ArraysSummary.of(stored).arrays}
    spec = zonotope_spec(kind, X, y, params)
    job = find_job(ws, "zonotope", spec)
    if st.button(button, key=key, disabled=job is not None and job.active):
        start_or_reuse_job(ws, "zonotope", spec)
        st.rerun()  # the sidebar, drawn before the page, lists the new job
    if job is not None:
        live_job(ws, job, key=key)
    return None


left, right = st.columns(2)
with left:
    st.markdown("**Greedy vs gradient descent over seeds**")
    n_seeds = int(st.number_input("Seeds", 2, 32, 8, key="zt_seeds"))
    arrays = experiment("zonotope-greedy-vs-gd", {"data": data_key, "m": m, "seeds": n_seeds}, "Run comparison",
                        "zt_compare")
    if arrays is not None:
        table = pd.DataFrame(arrays)[["seed", "GD", "greedy", "GD + greedy polish", "greedy moves", "greedy QPs"]]
        st.dataframe(table, hide_index=True, column_config=dict.fromkeys(["GD", "greedy", "GD + greedy polish"],
                                                                         SIGNIFICANT))
        st.caption(f"mean ½SSE: GD {table['GD'].mean():.4g} · greedy {table['greedy'].mean():.4g} · "
                   f"GD + polish {table['GD + greedy polish'].mean():.4g}")
        box = seed_comparison_figure({k: table[k] for k in ("GD", "greedy", "GD + greedy polish")})
        st.plotly_chart(box, key="zt_box")
        export_buttons(box, "zonotope_greedy_vs_gd", key="zt_box")
with right:
    st.markdown("**Random vertices against width (overparameterization)**")
    max_width = int(st.number_input("Largest width", 1, 40, max(doubling_width(n, d), 4), key="zt_max_width"))
    samples = int(st.number_input("Vertices per width", 10, 500, 60, key="zt_samples"))
    widths = list(range(1, max_width + 1))
    arrays = experiment("zonotope-width-study", {"data": data_key, "widths": widths, "samples": samples},
                        "Run width study", "zt_width")
    if arrays is not None:
        fig = width_figure(widths, [arrays[str(w)] for w in widths], doubling_width(n, d), zero_loss=0.5 * float(y @ y))
        st.plotly_chart(fig, key="zt_widths")
        export_buttons(fig, "zonotope_width_study", key="zt_widths")
