"""NPEFF Explorer entry point: navigation over pages/ and the global sidebar (workspace, active pair).

Page files live in pages/, not pages/: Streamlit treats *.py directly in pages/ as legacy
auto-discovered pages, which run without this shell on a deep link to a fresh server.
"""
import streamlit as st

from pages.common import active, app_shell, workspace_root

st.set_page_config(page_title="NPEFF Explorer", page_icon="🔬", layout="wide")

pages = {
    "Data": [st.Page("pages/load.py", title="Load model & data", icon="📂", default=True)],
    "NPEFF": [st.Page("pages/compute.py", title="Compute", icon="⚙️"),
              st.Page("pages/components.py", title="Components", icon="🧩"),
              st.Page("pages/perturb.py", title="Perturb", icon="🎯")],
    "ReLU training": [st.Page("pages/zonotope.py", title="Zonotope explorer", icon="🔷")],
}
page = st.navigation(pages)

with st.sidebar:
    st.markdown("### Workspace")
    root = st.text_input("Folder", value=workspace_root(), help="DuckDB database and arrays live here "
                         "(env NPEFF_WORKSPACE sets the default). Results survive restarts.")
    if root != workspace_root():
        st.session_state["workspace_root"] = root
        st.rerun()
    try:
        pair = active()
    except Exception as e:  # a broken workspace or demo build must not take the whole app down
        st.error(f"Could not open the active model/dataset: {e}")
        pair = None
    if pair:
        model, dataset = pair
        st.markdown(f"**Model:** {model.name}  \n**Dataset:** {dataset.name} ({len(dataset):,} examples)")
        st.caption(f"Classes: {', '.join(model.label_names)} · scope: {model.scope.describe()}")

with app_shell():
    page.run()
