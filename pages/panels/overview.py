"""The overview of all components: filters and a table whose rows open a component."""
from __future__ import annotations

import streamlit as st

from pages.panels.browse import BrowseContext, open_component


def overview_panel(ctx: BrowseContext) -> None:
    """Filter the components by majority label, purity and notable examples; clicking a row opens it."""
    table, data = ctx.overview, ctx.data
    f1, f2, f3 = st.columns(3)
    majority = f1.multiselect("Majority label of top examples", data.label_names, key="cmp_filter_label")
    min_purity = f2.slider("Minimum purity", 0.0, 1.0, 0.0, 0.05, key="cmp_filter_purity")
    min_notable = f3.number_input("Minimum notable examples", 0, data.n_examples, 0, key="cmp_filter_notable")
    shown = table[(table["purity"] >= min_purity) & (table["notable"] >= min_notable)
                  & (table["majority_label"].isin(majority) if majority else True)].reset_index(drop=True)
    event = st.dataframe(
        shown, hide_index=True, height=min(38 + 35 * len(shown), 320), key="cmp_overview",
        on_select="rerun", selection_mode="single-row",
        column_config={
            "component": st.column_config.NumberColumn("component", help="click a row to open it"),
            "notable": st.column_config.NumberColumn("notable", help="examples with a notable coefficient"),
            "top_coefficient": st.column_config.NumberColumn("top coef.", format="%.4f"),
            "majority_label": "majority label",
            "purity": st.column_config.ProgressColumn("purity", min_value=0.0, max_value=1.0, format="%.2f",
                                                      help=f"share of the majority gold label in the top "
                                                           f"{ctx.n_top_overview} examples"),
            "entropy_bits": st.column_config.NumberColumn("entropy (bits)", format="%.2f"),
            "accuracy": st.column_config.NumberColumn("accuracy", format="%.2f",
                                                      help="model accuracy on the top examples"),
            "most_similar": st.column_config.NumberColumn("most similar"),
            "similar_abs_cos": st.column_config.NumberColumn("|cos|", format="%.2f"),
            "modules": st.column_config.BarChartColumn(
                "direction by module", y_min=0.0, y_max=1.0,
                help="share of ‖g‖² per module, in parameter order"),
        })
    rows = event.selection.rows if event is not None else []
    if rows and rows[0] < len(shown):
        picked = int(shown["component"].iloc[rows[0]])
        if st.session_state.get("cmp_overview_applied") != picked:
            st.session_state["cmp_overview_applied"] = picked
            open_component(picked)
    else:
        st.session_state.pop("cmp_overview_applied", None)
