"""Compute page: per-example Fishers and an NPEFF fit for the active model and dataset, cached in the workspace."""
from __future__ import annotations

import time

import pandas as pd
import streamlit as st

from analysis.components import NOTABLE_FRACTION, notable_threshold
from analysis.estimates import estimate_pefs, seconds_per_example
from analysis.figures.npeff import loss_curve
from analysis.npeff import DEFAULT_N_ITERS_G_ONLY
from analysis.runs import fit_run, load_decomposition, pefs_run, pefs_settings
from pages.common import active, in_app_shell, workspace

in_app_shell()


@st.cache_data(show_spinner="Timing a few examples for the estimate…")
def _seconds_each(_model, _dataset, model_key: str, dataset_key: str, scope: str, kind: str,
                  top_k: int | None) -> float:
    return seconds_per_example(_model, _dataset, kind=kind, top_k_classes=top_k)


st.title("Compute per-example Fishers & NPEFF")
model, dataset = active()
ws = workspace()
summary = model.summary()
n_classes = len(model.label_names)
st.caption(f"Model **{model.name}** · dataset **{dataset.name}** ({len(dataset):,} examples) · scope "
           f"{summary.scope} = {summary.n_parameters_in_scope:,} parameters (change on the Load page)")

kind_label = st.radio("Factorization", ["LRM-NPEFF (low-rank PEFs, rank-1 PSD components)",
                                        "D-NPEFF (diagonal PEFs, non-negative components)"], horizontal=True)
kind = "lrm" if kind_label.startswith("LRM") else "diag"
c1, c2, c3, c4 = st.columns(4)
n_components = int(c1.number_input("Components", 1, 512, 16 if kind == "lrm" else 10))
values = int(c2.number_input("Values kept per example (0 = all)", 0, 10_000_000,
                             min(2048, summary.n_parameters_in_scope * n_classes)))
top_k_label = c3.selectbox("Classes per example", ["all"] + [str(k) for k in range(1, n_classes)],
                           help="LRM: keep the k most probable classes (probabilities not renormalized)")
n_iters = int(c4.number_input("Iterations", 10, 20_000, 300))
with st.expander("Advanced"):
    a1, a2, a3, a4 = st.columns(4)
    n_iters_g_only = int(a1.number_input("G-only warm-up iterations", 0, 10_000, DEFAULT_N_ITERS_G_ONLY,
                                         disabled=kind == "diag"))
    ortho_reg = float(a2.number_input("Orthogonal regularization λ", 0.0, 100.0, 0.0, disabled=kind == "diag"))
    seed = int(a3.number_input("Seed", 0, 2**31 - 1, 0))
    batch_size = int(a4.number_input("Batch size", 1, 512, 16))

k = values or None
top_k = None if top_k_label == "all" else int(top_k_label)
settings = pefs_settings(model, dataset, kind=kind, n_values_per_example=k, top_k_classes=top_k)
cached = ws.find_run("pefs", settings)
estimate = estimate_pefs(model, dataset, kind=kind, n_values_per_example=k, top_k_classes=top_k,
                         n_components=n_components, batch_size=batch_size,
                         seconds_each=_seconds_each(model, dataset, model.content_hash, dataset.content_hash,
                                                    settings["scope"], kind, top_k))
e1, e2, e3 = st.columns(3)
e1.metric("PEFs on disk", f"{estimate.pef_bytes / 2**20:,.1f} MiB")
e2.metric("Peak memory (estimate)", f"{estimate.peak_bytes / 2**20:,.0f} MiB")
e3.metric("PEF time (estimate)", "cached" if cached and cached.status == "complete"
          else f"{estimate.pef_seconds:,.0f} s")

fit_options = {"n_iters_g_only": n_iters_g_only, "ortho_reg": ortho_reg} if kind == "lrm" else {}
if st.button("Compute", type="primary"):
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

        fit = fit_run(ws, pefs, n_components=n_components, n_iters=n_iters, seed=seed, progress=on_fit,
                      **fit_options)
        fit_bar.progress(1.0, text="NPEFF done")
        st.session_state["decomposition_run"] = fit.id
        st.query_params["run"] = fit.id
        st.success(f"Decomposition {fit.id}: {n_components} components, relative error "
                   f"{fit.summary['relative_error']:.3f} ({time.perf_counter() - started:.1f} s; "
                   "identical settings are reused from the workspace)")
    except Exception as e:  # shown as a message; failed runs are marked failed, never complete
        st.error(f"Computation stopped: {e}")

st.divider()
st.subheader("Decompositions of this model and dataset")
table = ws.query("SELECT id, kind, status, params, summary, updated FROM runs WHERE model_id = ? AND dataset_id = ? "
                 "AND kind LIKE 'npeff-%' ORDER BY updated DESC", [model.content_hash, dataset.content_hash])
if table.empty:
    st.info("No decomposition yet: choose settings above and press Compute.")
else:
    st.dataframe(table, hide_index=True)
    complete = table[table.status == "complete"]
    if not complete.empty:
        chosen = st.selectbox("Active decomposition", complete["id"].tolist(),
                              index=complete["id"].tolist().index(st.session_state["decomposition_run"])
                              if st.session_state.get("decomposition_run") in complete["id"].tolist() else 0)
        st.session_state["decomposition_run"] = chosen
        run = ws.get_run(chosen)
        dec = load_decomposition(ws, run)
        st.plotly_chart(loss_curve(dec.losses, n_iters_g_only=run.params.get("n_iters_g_only", 0)),
                        key="stored_loss")
        threshold = notable_threshold(dec.W)
        st.dataframe(pd.DataFrame({"component": range(dec.W.shape[1]),
                                   f"notable examples (coefficient > {NOTABLE_FRACTION:.0%} of max)":
                                       (dec.W > threshold).sum(0),
                                   "top coefficient": dec.W.max(0)}), hide_index=True)
