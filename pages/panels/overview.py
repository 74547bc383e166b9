"""The overview of all components: filters and a table whose rows open a component."""
from __future__ import annotations

import pandas as pd
import streamlit as st

from analysis import components as cs
from analysis.components import SELECTIVITY_HELP, with_selectivity
from analysis.figures.components import module_shares_figure
from analysis.notes import all_tags, tagged
from analysis.perturb.runs import latest_selectivity
from analysis.summaries import MIN_Z
from pages.common import export_buttons
from pages.panels.browse import BrowseContext, open_component
from pages.panels.notes import notes, overview_with_notes

NO_SELECTIVITY = "Run Perturb → Perturb all components to fill the selectivity column."


def overview_panel(ctx: BrowseContext) -> None:
    """Filter the components by majority label, purity, notable examples and tag; clicking a row opens it."""
    selectivity = latest_selectivity(ctx.ws, ctx.run)
    found = notes(ctx)
    table, data = overview_with_notes(ctx, with_selectivity(ctx.overview, selectivity), found), ctx.data
    shares = cs.group_profiles(*ctx.profiles, by="module") if ctx.profiles is not None else None  # [r, modules]
    f1, f2, f3, f4 = st.columns(4)
    majority = f1.multiselect("Majority label of top examples", sorted(set(table["majority_label"])),
                              key="cmp_filter_label")
    min_purity = f2.slider(f"Minimum purity (top {ctx.n_top_overview})", 0.0, 1.0, 0.0, 0.05,
                           key="cmp_filter_purity",
                           disabled=not data.has_labels,
                           help=None if data.has_labels else "gold labels are not available for this dataset")
    min_notable = f3.number_input("Minimum notable examples", 0, data.n_examples, 0, key="cmp_filter_notable")
    tags = all_tags(found)
    wanted_tags = f4.multiselect("Tag", tags, key="cmp_filter_tags", disabled=not tags,
                                 help=None if tags else "tag components in the component view below")
    if not data.has_labels:
        st.caption("Gold labels are not available for this dataset: majority label, purity, entropy and accuracy "
                   "read 'not available'; the predictions are the model's.")
    shown = table[((table["purity"] >= min_purity) if min_purity > 0 else True) & (table["notable"] >= min_notable)
                  & (table["majority_label"].isin(majority) if majority else True)
                  & (table["component"].isin(tagged(found, wanted_tags)) if wanted_tags else True)
                  ].reset_index(drop=True)
    event = st.dataframe(
        shown, hide_index=True, height=min(38 + 35 * len(shown), 460), key="cmp_overview",
        column_order=_column_order(shown, ctx),
        on_select="rerun", selection_mode="single-row",
        column_config={
            "component": st.column_config.NumberColumn("component", help="click a row to open it"),
            "name": st.column_config.TextColumn("name", width="medium", help="your name for the component "
                                                                             "(component view → Name this component)"),
            "tags": st.column_config.TextColumn("tags", width="small"),
            "summary": st.column_config.TextColumn(
                "summary", width="large",
                help=f"automatic, from the top {ctx.n_top_overview} examples against the rest: the words most "
                     "enriched in them (z-scored log-odds with an informative Dirichlet prior, Monroe et al. "
                     f"2008; z > {MIN_Z}) · the majority gold label and its share · the layers holding most of "
                     "the direction's ‖g‖²"),
            "notable": st.column_config.NumberColumn("notable", help="examples with a notable coefficient"),
            "top_coefficient": st.column_config.NumberColumn("top coef.", format="%.4f"),
            "majority_label": "majority label",
            "purity": st.column_config.ProgressColumn(
                f"purity (top {ctx.n_top_overview})", min_value=0.0, max_value=1.0, format="percent",
                help=f"share of the majority gold label in the top {ctx.n_top_overview} examples (the component "
                     "view's header and picker show the same number)"),
            "entropy_bits": st.column_config.NumberColumn(f"entropy (bits, top {ctx.n_top_overview})", format="%.2f"),
            "accuracy": st.column_config.NumberColumn(f"accuracy (top {ctx.n_top_overview})", format="percent",
                                                      help=f"model accuracy on the top {ctx.n_top_overview} "
                                                           "examples"),
            "selectivity": st.column_config.NumberColumn("selectivity", format="%.3g", help=SELECTIVITY_HELP),
            "most_similar": st.column_config.NumberColumn("most similar"),
            "similar_abs_cos": st.column_config.NumberColumn("|cos|", format="%.2f"),
            "modules": st.column_config.BarChartColumn(
                "direction by module", y_min=0.0, y_max=1.0,
                help="share of ‖g‖² per module, one bar each in parameter order"
                     + (f" ({_listed(shares.columns)}); the heatmap under the table labels them"
                        if shares is not None else "")),
            **_annotation_columns(ctx),
        })
    if selectivity is None:
        st.caption(NO_SELECTIVITY)
    if shares is not None and st.toggle("Direction by module, labelled: each component's share of ‖g‖² per module",
                                        key="cmp_module_shares_show"):
        shares_fig = module_shares_figure(shares)
        st.plotly_chart(shares_fig, key="cmp_module_shares")
        export_buttons(shares_fig, "components_by_module", key="cmp_module_shares_export")
    rows = event.selection.rows if event is not None else []
    if rows and rows[0] < len(shown):
        picked = int(shown["component"].iloc[rows[0]])
        if st.session_state.get("cmp_overview_applied") != picked:
            st.session_state["cmp_overview_applied"] = picked
            open_component(picked)
    else:
        st.session_state.pop("cmp_overview_applied", None)


def _listed(names, n: int = 12) -> str:
    """The first n names, comma-separated, then how many there are in all."""
    names = list(names)
    return ", ".join(names[:n]) + (f", … ({len(names)} modules)" if len(names) > n else "")


def _column_order(table: pd.DataFrame, ctx: BrowseContext) -> list[str]:
    """The table's columns with each annotation's pair right after the gold-label purity."""
    added = [c for name in ctx.annotations for c in (f"{name}_majority", f"{name}_share")]
    rest = [c for c in table.columns if c not in added]
    at = rest.index("purity") + 1
    return [*rest[:at], *added, *rest[at:]]


def _annotation_columns(ctx: BrowseContext) -> dict:
    """Column settings of each annotation's majority value and share among the top examples."""
    columns = {}
    for name in ctx.annotations:
        columns[f"{name}_majority"] = st.column_config.TextColumn(
            name, help=f"most frequent '{name}' among the top {ctx.n_top_overview} examples")
        columns[f"{name}_share"] = st.column_config.ProgressColumn(
            f"{name} share", min_value=0.0, max_value=1.0, format="%.2f",
            help=f"share of the most frequent '{name}' among the top {ctx.n_top_overview} examples")
    return columns
