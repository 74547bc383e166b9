"""NPEFF Explorer entry point: navigation over pages/ and the global sidebar (workspace, active pair).

Streamlit treats *.py directly in pages/ as legacy auto-discovered pages: a deep link to a fresh server runs
one without this shell (pages.common.in_app_shell handles that), and the first paint would list them in the
sidebar, so .streamlit/config.toml hides Streamlit's sidebar navigation and this file draws its own links.
"""
import streamlit as st

from pages.common import (WORKSPACE_KEY, active, app_shell, escape_markdown, freeze_startup_heap, switch_workspace,
                          workspace_root)
from pages.panels.jobs_sidebar import jobs_sidebar

st.set_page_config(page_title="NPEFF Explorer", page_icon=":material/biotech:", layout="wide")

# Material icons, not emoji: they come with Streamlit's own font, emoji need a system font that may be missing
pages = {
    "Data": [st.Page("pages/load.py", title="Load model & data", icon=":material/folder_open:", default=True)],
    "NPEFF": [st.Page("pages/compute.py", title="Compute", icon=":material/calculate:"),
              st.Page("pages/components.py", title="Components", icon=":material/extension:"),
              st.Page("pages/compare.py", title="Compare", icon=":material/compare_arrows:"),
              st.Page("pages/perturb.py", title="Perturb", icon=":material/tune:"),
              st.Page("pages/merge.py", title="Merge", icon=":material/merge:"),
              st.Page("pages/jobs.py", title="Jobs", icon=":material/timer:")],
    "ReLU training": [st.Page("pages/zonotope.py", title="Zonotope explorer", icon=":material/hexagon:")],
}
page = st.navigation(pages, position="hidden")

with st.sidebar:
    # drawn here, not by st.navigation: .streamlit/config.toml hides the sidebar navigation so that a fresh
    # server's first paint does not list the raw files of pages/ (app, common, components, ...)
    for section, entries in pages.items():
        st.caption(section)
        for entry in entries:
            st.page_link(entry)
    st.markdown("### Workspace")
    st.session_state.setdefault(WORKSPACE_KEY, workspace_root())
    st.text_input("Folder", key=WORKSPACE_KEY, on_change=switch_workspace,
                  help="DuckDB database and arrays live here (env `NPEFF_WORKSPACE` sets the default; folders "
                       "outside `NPEFF_ALLOWED_ROOTS` are refused). Results survive restarts.")
    if refused := st.session_state.pop("workspace_refused", None):
        st.error(escape_markdown(refused))
    try:
        pair = active()
    except Exception as e:  # a broken workspace or demo build must not take the whole app down
        st.error(f"Could not open the active model/dataset: {escape_markdown(e)}")
        pair = None
    if pair:
        model, dataset = pair
        st.markdown(f"**Model:** {escape_markdown(model.name)}  \n**Dataset:** {escape_markdown(dataset.name)} "
                    f"({len(dataset):,} examples)")
        st.caption(f"Classes: {escape_markdown(', '.join(model.label_names))} · "
                   f"scope: {escape_markdown(model.scope.describe())}")
    jobs_sidebar()

with app_shell():
    page.run()
freeze_startup_heap()  # after the first run: its objects leave the garbage collector's full passes
