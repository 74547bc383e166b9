"""Downloads of a decomposition: top examples as LaTeX, the components table (names, tags, notes, summaries),
coefficients (CSV, Parquet), components (safetensors); the researcher's names and notes go into each."""
from __future__ import annotations

import streamlit as st

from analysis import components as cs
from analysis.latex import top_examples_latex
from analysis.notes import notes_json
from analysis.perturb.runs import latest_selectivity
from analysis.tables import csv_bytes
from pages.panels.browse import COMPONENT_KEY, BrowseContext
from pages.panels.notes import component_summaries, notes


def export_panel(ctx: BrowseContext) -> None:
    """LaTeX tables of the chosen components' top examples, then the coefficient and component files."""
    data, run_id, found = ctx.data, ctx.run_id, notes(ctx)
    st.markdown("**Top examples as a LaTeX table** (example index, label, prediction, coefficient, escaped "
                "text; each component's name, tags and note)")
    e1, e2 = st.columns([3, 1])
    chosen = e1.multiselect("Components", list(range(ctx.n_components)), default=[st.session_state[COMPONENT_KEY]],
                            key="cmp_export_components")
    per_component = int(e2.number_input("Examples each", 1, 100, 10, key="cmp_export_n"))
    tables = {c: ctx.examples(cs.top_examples(data.W, c, per_component, ctx.index["top_indices"]), c)
              for c in chosen}
    latex = top_examples_latex(tables, title=f"NPEFF run {run_id}: top examples", notes=found)
    st.download_button("LaTeX (.tex)", latex, file_name=f"npeff_{run_id}_top_examples.tex", mime="text/x-tex",
                       key="cmp_export_tex", on_click="ignore", disabled=not chosen)
    with st.expander("Preview"):
        st.code(latex, language="latex")
    st.markdown("**Components, coefficients and component vectors**")
    x0, x1, x2, x3 = st.columns(4)
    table = cs.with_selectivity(ctx.overview, latest_selectivity(ctx.ws, ctx.run))
    summaries = [s.text for s in component_summaries(ctx)]
    x0.download_button("Components table (CSV)", lambda: csv_bytes(cs.components_frame(table, found, summaries)),
                       file_name=f"npeff_{run_id}_components.csv", mime="text/csv", key="cmp_export_table_csv",
                       on_click="ignore", help="one row per component: name, tags, note, summary and the "
                                               "overview's statistics")
    x1.download_button("Coefficients (CSV)", lambda: cs.coefficients_csv(data, ctx.texts),
                       file_name=f"npeff_{run_id}_coefficients.csv", mime="text/csv", key="cmp_export_csv",
                       on_click="ignore", help="idx, gold, prediction, w0… and the text; coefficients with 6 "
                                               "significant digits, those below float32 resolution of the "
                                               "example's largest written as 0")
    x2.download_button("Coefficients (Parquet)",
                       lambda: cs.coefficients_frame(data, ctx.texts).to_parquet(index=False),
                       file_name=f"npeff_{run_id}_coefficients.parquet",
                       mime="application/vnd.apache.parquet", key="cmp_export_parquet", on_click="ignore",
                       help="the same columns with the coefficients' float32 values unchanged")
    x3.download_button("Components (safetensors)",
                       lambda: cs.components_safetensors(ctx.decomposition, {
                           "run": run_id, "model": ctx.run.model_id, "dataset": ctx.run.dataset_id,
                           "notes": notes_json(found)}),
                       file_name=f"npeff_{run_id}_components.safetensors", mime="application/octet-stream",
                       key="cmp_export_safetensors", on_click="ignore")
    st.caption("Components are stored over the kept parameters: `components` [r, m] and `kept` [m] (their flat "
               "index among the parameters in scope, row-major in named_parameters() order); the names, tags "
               "and notes are in its metadata under `notes` (JSON by component).")
