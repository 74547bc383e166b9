"""Compare page: match the components of a reference decomposition with those of other runs of the same model and
dataset (other seeds, sizes or variant), score each component's stability, and fit more seeds as a job."""
from __future__ import annotations

import streamlit as st

from analysis import compare as cmp
from analysis.notes import get_notes
from analysis.runs import decomposition_table
from pages.common import active, active_decomposition, decomposition_runs, escape_markdown, in_app_shell, workspace
from pages.panels.compare import figures_panel, pick_runs, run_label, seeds_panel, stability_of, stability_panel
from pages.panels.compare_pair import pair_panel

in_app_shell()

st.title("Compare decompositions")
st.caption("LRM-NPEFF is non-convex: another seed can land elsewhere, and a component is worth reading when other "
           "runs find it too. Components are matched one-to-one (Hungarian algorithm) on the cosine of their "
           "pseudo-Fisher matrices or on the overlap of their top examples; a component's stability is its mean "
           "matched score over the other runs.")
model, dataset = active()
reference = active_decomposition(model, dataset)
if reference is None:
    st.info(f"No complete NPEFF decomposition of **{escape_markdown(model.name)}** on "
            f"**{escape_markdown(dataset.name)}** yet. Fit one on the Compute page, then compare it here.")
    st.page_link("pages/compute.py", label="Compute a decomposition", icon=":material/calculate:")
    st.stop()
ws = workspace()
labels = run_label(decomposition_table(decomposition_runs(model, dataset)))
others = pick_runs(ws, reference, labels)
with st.expander("Fit more seeds", expanded=not others):
    seeds_panel(ws, reference)
if not others:
    st.info("Pick one or more runs to compare with, or fit more seeds of the reference above.")
    st.stop()

by = st.radio("Match on", list(cmp.MATCH_BY), format_func=lambda b: cmp.MATCH_BY[b].title, horizontal=True,
              key="compare_by", help=" · ".join(f"{c.title}: {c.help}" for c in cmp.MATCH_BY.values()))
try:
    result = stability_of(ws, str(ws.root), reference.id, tuple(others), by)
except ValueError as e:  # runs over another parameter scope
    st.error(escape_markdown(e))
    st.stop()
names = {k: n.name for k, n in get_notes(ws, reference.id).items() if n.name}

stability_panel(result, others, names, by)
if st.session_state.get("compare_pair_run") not in others:  # that run was taken out of the comparison
    st.session_state.pop("compare_pair_run", None)
other = st.selectbox("Matched against", others, format_func=labels.get, key="compare_pair_run")
matching = result.matchings[others.index(other)]
tab_pair, tab_figures = st.tabs(["Side by side", "Figures"])
with tab_pair:
    pair_panel(ws, model, dataset, reference.id, other, matching, result.mean, names)
with tab_figures:
    figures_panel(result, matching, reference.id, other, names, by)
