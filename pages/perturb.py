"""Perturb page: move the model along a component's parameter direction and see which examples change."""
from __future__ import annotations

import numpy as np
import pandas as pd
import streamlit as st

from analysis.datasets import TextDataset
from analysis.figures.components import example_grid
from analysis.figures.perturb import flipped_probability_figure, kl_ratio_histogram, kl_sweep_figure
from analysis.perturb import DEFAULT_BASELINE_N, DEFAULT_LAM, DEFAULT_TOP_N, perturb_component
from analysis.perturb_runs import load_perturb_all, load_sweep, perturb_all_run, sweep_run
from analysis.runs import load_decomposition
from pages.common import active, active_decomposition, export_buttons, in_app_shell, workspace

in_app_shell()

st.title("Perturb components")
st.caption("θ' = θ + sign·ε·ĝ_k (LRM; optionally semi-orthogonalized) or the Fisher-weighted merge (D-NPEFF). "
           "A selective component changes its top examples far more than a random disjoint baseline: "
           "KL ratio ≫ 1. Weights are restored after every perturbation.")
model, dataset = active()
run = active_decomposition(model, dataset)
if run is None:
    st.info("No decomposition of this model and dataset yet.")
    st.page_link("pages/compute.py", label="Compute one", icon="⚙️")
    st.stop()
ws = workspace()
dec = load_decomposition(ws, run)
is_lrm = run.summary["kind"] == "lrm"
r = dec.W.shape[1]
st.caption(f"Decomposition **{run.id}** ({'LRM' if is_lrm else 'D'}-NPEFF, {r} components) of "
           f"{model.name} on {dataset.name}")

c1, c2, c3 = st.columns(3)
k = int(c1.selectbox("Component", range(r), index=min(int(st.query_params.get("component", 0)), r - 1),
                     key="pt_component"))
st.query_params["component"] = str(k)
sign = 1 if c2.radio("Sign", ["+", "−"], horizontal=True, key="pt_sign") == "+" else -1
grid = np.logspace(-3, 1.5, 28) if is_lrm else np.logspace(-4, 0, 25)
magnitude = float(c3.select_slider("Magnitude ε" if is_lrm else "Merge step δ", options=[float(f"{v:.3g}") for v in grid],
                                   value=float(f"{grid[len(grid) // 2]:.3g}"), key="pt_magnitude"))
with st.expander("Advanced"):
    a1, a2, a3, a4 = st.columns(4)
    top_n = int(a1.number_input("Top examples", 1, 1000, DEFAULT_TOP_N))
    baseline_n = int(a2.number_input("Baseline examples", 1, 5000, DEFAULT_BASELINE_N))
    seed = int(a3.number_input("Seed", 0, 10_000, 0, key="pt_seed"))
    if is_lrm:
        sim = a4.number_input("Semi-orthogonalize: max |cos| (0 = off)", 0.0, 1.0, 0.0)
        options = {"max_sim": float(sim) or None}
    else:
        options = {"lam": float(a4.slider("Merge weight λ", 0.035, 0.965, DEFAULT_LAM))}
common = dict(top_n=min(top_n, len(dataset) - 1), baseline_n=min(baseline_n, len(dataset) - min(top_n, len(dataset) - 1)),
              seed=seed, **options)


def show_flips(result) -> None:
    flipped = result.examples[result.examples["flipped"]]
    names = model.label_names
    st.markdown(f"**{len(flipped)} prediction(s) flipped** ({result.n_flipped_top} top, "
                f"{result.n_flipped_baseline} baseline)")
    if flipped.empty:
        return
    table = pd.DataFrame({"example": flipped["index"], "set": flipped["set"],
                          "before": [names[i] for i in flipped["original_prediction"]],
                          "after": [names[i] for i in flipped["new_prediction"]],
                          "p(before) → p'(before)": [f"{a:.3f} → {b:.3f}" for a, b in
                                                     zip(flipped["p_original_before"], flipped["p_original_after"])]})
    if isinstance(dataset, TextDataset):
        texts = dataset.display_texts()
        table["text"] = [texts[i] for i in flipped["index"]]
        st.dataframe(table, hide_index=True)
    else:
        st.dataframe(table, hide_index=True)
        shown = flipped.head(24)
        st.plotly_chart(example_grid(dataset.images[shown["index"].to_numpy()],
                                   [f"{names[a]}→{names[b]}" for a, b in zip(shown["original_prediction"],
                                                                              shown["new_prediction"])]),
                        key="pt_flipped_images")
    fig = flipped_probability_figure(result, label_names=names)
    st.plotly_chart(fig, key="pt_flip_prob")
    export_buttons(fig, f"component{k}_flips", key="pt_flip_prob")


single, sweep, everything = st.tabs(["One perturbation", "Sweep", "Perturb all components"])
with single:
    if st.button("Perturb", type="primary", key="pt_one"):
        try:
            with st.spinner("Evaluating the perturbed model on the top and baseline examples…"):
                result = perturb_component(model, dataset, dec, k, magnitude=magnitude, sign=sign, **common)
            m1, m2, m3, m4 = st.columns(4)
            m1.metric("KL on top examples", f"{result.kl_top:.3g}")
            m2.metric("KL on baseline", f"{result.kl_baseline:.3g}")
            m3.metric("KL ratio", f"{result.kl_ratio:.3g}")
            m4.metric("Top accuracy", f"{result.acc_top_after:.0%}", f"{result.acc_top_after - result.acc_top_before:+.0%}")
            show_flips(result)
        except ValueError as e:
            st.error(str(e))
with sweep:
    s1, s2, s3 = st.columns(3)
    low = float(s1.select_slider("From", options=[float(f"{v:.3g}") for v in grid], value=float(f"{grid[4]:.3g}")))
    high = float(s2.select_slider("To", options=[float(f"{v:.3g}") for v in grid], value=float(f"{grid[-4]:.3g}")))
    points = int(s3.number_input("Points", 2, 30, 8, key="pt_points"))
    if st.button("Run sweep", key="pt_sweep"):
        try:
            bar = st.progress(0.0, text="sweep…")
            sweep_result = sweep_run(ws, model, dataset, run, k, list(np.geomspace(min(low, high), max(low, high), points)),
                                     sign, progress=lambda d, t: bar.progress(d / t, text=f"magnitude {d}/{t}"),
                                     **common)
            bar.empty()
            results = load_sweep(ws, sweep_result)
            fig = kl_sweep_figure(results)
            st.plotly_chart(fig, key="pt_sweep_fig")
            export_buttons(fig, f"component{k}_sweep", key="pt_sweep_fig")
            summary = pd.DataFrame([r.scalars() for r in results])
            st.dataframe(summary, hide_index=True)
            st.download_button("CSV", summary.to_csv(index=False), f"component{k}_sweep.csv", "text/csv",
                               key="pt_sweep_csv")
            show_flips(results[-1])
        except ValueError as e:
            st.error(str(e))
with everything:
    st.write(f"Perturb each of the {r} components at the magnitude above (both signs for LRM; the larger KL "
             "ratio is kept) and compare their selectivity.")
    if st.button("Perturb all", key="pt_all"):
        try:
            bar = st.progress(0.0, text="components…")
            all_run = perturb_all_run(ws, model, dataset, run, magnitude,
                                      progress=lambda d, t: bar.progress(d / t, text=f"component {d}/{t}"), **common)
            bar.empty()
            table = load_perturb_all(ws, all_run)
            fig = kl_ratio_histogram(table)
            st.plotly_chart(fig, key="pt_hist")
            export_buttons(fig, "kl_ratio_histogram", key="pt_hist")
            st.caption(f"median KL ratio {all_run.summary['median_kl_ratio']:.3g} over {len(table)} components")
            st.dataframe(table, hide_index=True)
            st.download_button("CSV", table.to_csv(index=False), "perturb_all.csv", "text/csv", key="pt_all_csv")
        except ValueError as e:
            st.error(str(e))
