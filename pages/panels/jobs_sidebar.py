"""The sidebar's jobs panel on every page: the active jobs, compact, live while any is active."""
from __future__ import annotations

import streamlit as st

from analysis.estimates import duration
from analysis.jobs import active_jobs
from pages.common import escape_markdown, read_first_then_afresh, workspace
from pages.panels.job import job_title

REFRESH_S = 3  # seconds between redraws while a job is active
SHOWN = 5  # active jobs listed; the Jobs page has the rest


def _draw(jobs) -> None:
    st.markdown(f"### Jobs ({len(jobs)} active)")
    for job in jobs[:SHOWN]:
        eta = f" · ETA {duration(job.eta)}" if job.eta is not None else ""
        st.progress(job.fraction, text=f"{escape_markdown(job_title(job))}{eta}")
    st.page_link("pages/jobs.py", label="All jobs", icon=":material/timer:")


def jobs_sidebar() -> None:
    """Nothing when no job is active; else each active job's progress and ETA, redrawn every REFRESH_S
    seconds (one query each time) until none is left, and a link to the Jobs page."""
    jobs = active_jobs(workspace())
    if not jobs:
        return
    latest = read_first_then_afresh(jobs, lambda: active_jobs(workspace()))

    @st.fragment(run_every=REFRESH_S)
    def live() -> None:
        current = latest()
        if not current:
            st.rerun()  # the page may show what the job produced; the panel stops refreshing
        _draw(current)

    live()
