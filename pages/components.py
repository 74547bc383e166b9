"""Components page: browse an NPEFF decomposition — overview, component view, search, map, inspect a new input,
attributions, export.

Reads the decomposition, its PEF run's logits and labels, and stored derived tables from the workspace;
never recomputes Fishers. The selected run, component and tab (and the component view's section, top-N and
example) live in st.query_params, so a URL reopens a view. The panels (pages/panels/) each receive the page's
BrowseContext; TABS is the one list of tabs, each a label and the panel that fills it.
"""
from __future__ import annotations

import streamlit as st

from analysis import components as cs
from pages.common import active, active_decomposition, escape_markdown, in_app_shell, workspace
from pages.panels.browse import BROWSE_TAB, TAB_KEY, BrowseContext, browse_context, restore_component, run_picker
from pages.panels.component import component_view
from pages.panels.example_map import map_panel
from pages.panels.export import export_panel
from pages.panels.inspect import inspect_panel
from pages.panels.overview import overview_panel
from pages.panels.search import search_panel


def browse_panel(ctx: BrowseContext) -> None:
    """The overview of all components, then the selected one in depth."""
    overview_panel(ctx)
    component_view(ctx)


TABS = {BROWSE_TAB: browse_panel, "Search": search_panel, "Map": map_panel, "Inspect": inspect_panel,
        "Export": export_panel}

in_app_shell()

st.title("Components")
model, dataset = active()
run = active_decomposition(model, dataset)
if run is None:
    st.info(f"No complete NPEFF decomposition of **{escape_markdown(model.name)}** on "
            f"**{escape_markdown(dataset.name)}** yet. "
            "Fit one on the Compute page; it is stored in the workspace and browsed here.")
    st.page_link("pages/compute.py", label="Compute a decomposition", icon=":material/calculate:")
    st.stop()
run_picker(model, dataset, run.id)
ctx = browse_context(model, dataset, workspace(), run.id)
restore_component(ctx.n_components)

st.caption(f"{ctx.n_components} components of {ctx.data.n_examples:,} examples · "
           f"model **{escape_markdown(model.name)}** · dataset **{escape_markdown(dataset.name)}** · "
           f"scope {escape_markdown(cs.decomposition_scope(ctx.ws, ctx.run).describe())} · "
           f"notable = coefficient > {cs.NOTABLE_FRACTION:.0%} of the largest ({ctx.threshold:.3g})")

for tab, panel in zip(st.tabs(list(TABS), key=TAB_KEY, bind="query-params"), TABS.values()):
    with tab:
        panel(ctx)
