"""NPEFF Explorer entry point: navigation over pages/ and the global sidebar (workspace, active pair).

Page files live in pages/, not pages/: Streamlit treats *.py directly in pages/ as legacy
auto-discovered pages, which run without this shell on a deep link to a fresh server.
"""
import streamlit as st

from pages.common import WORKSPACE_KEY, active, app_shell, escape_markdown, switch_workspace, workspace_root
from pages.panels.jobs_sidebar import jobs_sidebar

st.set_page_config(page_title="NPEFF Explorer", page_icon="🔬", layout="wide")

pages = {
    "Data": [st.Page("pages/load.py", title="Load model & data", icon="📂", default=True)],
    "NPEFF": [st.Page("pages/compute.py", title="Compute", icon="⚙️"),
              st.Page("pages/components.py", title="Components", icon="🧩"),
              st.Page("pages/perturb.py", title="Perturb", icon="🎯"),
              st.Page("pages/jobs.py", title="Jobs", icon="⏱️")],
    "ReLU training": [st.Page("pages/zonotope.py", title="Zonotope explorer", icon="🔷")],
}
page = st.navigation(pages)

with st.sidebar:
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
