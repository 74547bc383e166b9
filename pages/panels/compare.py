"""The Compare page's panels: the runs compared, the seeds job, the stability table and the matched heat map."""
from __future__ import annotations

import pandas as pd
import streamlit as st

from analysis import compare as cmp
from analysis.figures.compare import matched_heatmap, stability_figure
from analysis.jobs import list_jobs, seeds_spec, start_or_reuse_job
from analysis.store import Run, Workspace
from analysis.tables import csv_bytes
from pages.common import escape_markdown, export_buttons
from pages.panels.job import live_job

REFERENCE_KEY, OTHERS_KEY = "compare_reference", "compare_others"
MAX_NEW_SEEDS = 8


def run_label(table: pd.DataFrame) -> dict[str, str]:
    """{run id: 'id · LRM-NPEFF · 6 components · seed 1 · rel. error 0.412'} of decomposition_table rows."""
    return {row["run"]: f"{row['run']} · {row['variant']} · {row['components']} components · seed {row['seed']} · "
                        f"rel. error {float(row['relative error']):.3f}" for _, row in table.iterrows()}


def _on_reference_change() -> None:
    """The picked reference becomes the active decomposition (and the URL's ?run=), as on the Components page."""
    st.query_params["run"] = st.session_state["decomposition_run"] = st.session_state[REFERENCE_KEY]


def pick_runs(ws: Workspace, reference: Run, labels: dict[str, str]) -> list[str]:
    """The reference picker and the other runs to compare it with; returns the other run ids. The others start as
    the reference's seed siblings (again whenever they change, e.g. after "Fit more seeds") or the URL's ?others=."""
    st.session_state[REFERENCE_KEY] = reference.id
    st.selectbox("Reference decomposition", list(labels), format_func=labels.get, key=REFERENCE_KEY,
                 on_change=_on_reference_change)
    options = [run_id for run_id in labels if run_id != reference.id]
    siblings = tuple(s.id for s in cmp.seed_siblings(ws, reference))
    if st.session_state.get("compare_defaults_for") != (reference.id, siblings):
        linked = st.query_params.get("others", "")
        first = "compare_defaults_for" not in st.session_state
        chosen = linked.split(",") if linked and first else siblings
        st.session_state[OTHERS_KEY] = [run_id for run_id in chosen if run_id in options]
        st.session_state["compare_defaults_for"] = (reference.id, siblings)
    others = st.multiselect("Compare with", options, format_func=labels.get, key=OTHERS_KEY,
                            help="other decompositions of this model and dataset: other seeds (preselected), "
                                 "other sizes, the other variant. Runs over another parameter scope are refused.")
    if others:
        st.query_params["others"] = ",".join(others)
    else:
        st.query_params.pop("others", None)
    return others


def seeds_panel(ws: Workspace, reference: Run) -> None:
    """'Fit more seeds': one job fitting the reference's PEFs with its settings and the next unused seeds."""
    settings = cmp.fit_settings(reference)
    used = [settings.get("seed", 0), *(s.params.get("seed", 0) for s in cmp.seed_siblings(ws, reference))]
    c1, c2 = st.columns([1, 3])
    n_new = int(c1.number_input("Seeds to add", 1, MAX_NEW_SEEDS, 2, key="compare_n_seeds"))
    seeds = cmp.new_seeds(used, n_new)
    shown = ", ".join(f"{k} {v}" for k, v in settings.items() if k != "seed")
    c2.caption(f"Fits seeds {', '.join(map(str, seeds))} with the settings of {escape_markdown(reference.id)} "
               f"({escape_markdown(shown)}) on its PEFs, as one background job; each fit is stored like any other "
               f"decomposition. Seeds fitted so far: {', '.join(map(str, sorted(used)))}.")
    job = next((j for j in list_jobs(ws) if j.kind == "seeds" and j.spec.get("decomposition") == reference.id), None)
    if st.button("Fit more seeds", key="compare_fit_seeds", disabled=job is not None and job.active):
        start_or_reuse_job(ws, "seeds", seeds_spec(reference.id, seeds))
        st.rerun()  # the sidebar, drawn before the page, lists the new job
    if job is not None:
        live_job(ws, job, key="compare_seeds_job")


@st.cache_data(show_spinner="Matching components…", max_entries=16)
def stability_of(_ws: Workspace, root: str, reference: str, others: tuple[str, ...], by: str) -> cmp.Stability:
    """compare_runs of stored runs (complete runs never change, so their ids key the cache)."""
    return cmp.compare_runs(_ws, _ws.get_run(reference), [_ws.get_run(o) for o in others], by=by)


def stability_panel(result: cmp.Stability, others: list[str], names: dict[int, str], by: str) -> None:
    """The stability of each reference component: mean/min matched score and its partner in each other run."""
    criterion = cmp.MATCH_BY[by]
    table = cmp.stability_table(result, others, names)
    config = {"component": st.column_config.NumberColumn("component", width="small"),
              "stability": st.column_config.ProgressColumn("stability", min_value=0.0, max_value=1.0, format="%.3f",
                                                           width="small",
                                                           help=f"mean matched {criterion.title} over the other "
                                                                "runs (0 where a smaller run has no partner)"),
              "min": st.column_config.ProgressColumn("min", min_value=0.0, max_value=1.0, format="%.3f",
                                                     width="small", help=f"the worst matched {criterion.title}")}
    for run_id in others:
        config[f"{run_id} component"] = st.column_config.NumberColumn(f"{run_id} component",
                                                                      help="matched component (−1: none)")
        config[f"{run_id} cos"] = st.column_config.NumberColumn(f"{run_id} cos", format="%.3f",
                                                                help=cmp.MATCH_BY["fisher"].help)
        config[f"{run_id} overlap"] = st.column_config.NumberColumn(f"{run_id} overlap", format="%.2f",
                                                                    help=cmp.MATCH_BY["examples"].help)
    st.dataframe(table, hide_index=True, column_config=config, key="compare_table",
                 height=min(38 + 35 * len(table), 460))
    st.download_button("Stability table (CSV)", csv_bytes(table), file_name="component_stability.csv",
                       mime="text/csv", key="compare_table_csv", on_click="ignore")


def figures_panel(result: cmp.Stability, matching: cmp.Matching, reference: str, other: str,
                  names: dict[int, str], by: str) -> None:
    """The stability bars over all other runs, then the score matrix against one of them in matched order."""
    criterion = cmp.MATCH_BY[by]
    bars = stability_figure(result.mean, result.min, score_name=criterion.title, n_others=len(result.matchings))
    st.plotly_chart(bars, key="compare_stability_fig")
    export_buttons(bars, "component_stability", key="compare_stability_export")
    heatmap_panel(matching, reference, other, names, by)


def heatmap_panel(matching: cmp.Matching, reference: str, other: str, names: dict[int, str], by: str) -> None:
    """The score matrix of the reference against one other run in matched order, and the unmatched components."""
    scores = cmp.MATCH_BY[by].scores(matching.cosines, matching.overlaps)
    labels = [f"{k} · {names[k]}" if names.get(k) else str(k) for k in range(matching.shape[0])]
    fig = matched_heatmap(matching, scores, name_a=reference, name_b=other, score_name=cmp.MATCH_BY[by].title,
                          labels_a=labels)
    st.plotly_chart(fig, key="compare_heatmap")
    export_buttons(fig, f"matched_{reference}_{other}", key="compare_heatmap_export")
    if len(matching.unmatched_a) or len(matching.unmatched_b):
        st.caption(f"Unmatched: components {', '.join(map(str, matching.unmatched_a))} of {reference}"
                   if len(matching.unmatched_a) else
                   f"Unmatched: components {', '.join(map(str, matching.unmatched_b))} of {other}")
