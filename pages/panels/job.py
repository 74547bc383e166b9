"""One background job as a card: status, progress bar, elapsed time, ETA, error, Cancel / Start again."""
from __future__ import annotations

import streamlit as st

from analysis.errors import describe_error
from analysis.estimates import duration
from analysis.jobs import Job, cancel_job, restart_job
from analysis.store import Workspace
from pages.common import escape_markdown

TITLES = {"compute": "PEFs + NPEFF fit", "pefs": "PEFs (command line)", "fit": "NPEFF fit (command line)"}
ICONS = {"queued": "⏳", "running": "🔄", "complete": "✅", "failed": "❌", "cancelled": "⏹️"}


def job_title(job: Job) -> str:
    """'🔄 PEFs + NPEFF fit · image-demo (job 1a2b...)'."""
    source = job.spec.get("model", {}).get("source") or job.spec.get("pefs_run", "")
    return f"{ICONS.get(job.status, '')} {TITLES.get(job.kind, job.kind)} · {source} (job {job.id})"


def job_card(ws: Workspace, job: Job, *, key: str) -> None:
    """The job's state; Cancel while it is queued or running, Start again when it failed or was cancelled."""
    st.markdown(f"**{escape_markdown(job_title(job))}** — {job.status}")
    if job.active:
        text = escape_markdown(job.message or job.status)
        st.progress(job.fraction, text=text if not job.total else f"{text} ({job.fraction:.0%})")
    facts = []
    if job.elapsed is not None:
        facts.append(f"elapsed {duration(job.elapsed)}")
    if job.eta is not None:
        facts.append(f"ETA {duration(job.eta)} ({escape_markdown(job.stage or '')})")
    if job.cancel_requested and job.active:
        facts.append("cancel requested")
    if job.result:
        facts.append(f"run {job.result}")
    if facts:
        st.caption(" · ".join(facts))
    if job.error:
        (st.warning if job.status == "cancelled" else st.error)(escape_markdown(job.error))
    if job.active and not job.cancel_requested:
        if st.button("Cancel", key=f"{key}_cancel_{job.id}"):
            cancel_job(ws, job.id)
            st.rerun(scope="fragment")
    elif job.status in ("failed", "cancelled") and job.kind in ("compute", "pefs", "fit"):
        if st.button("Start again", key=f"{key}_restart_{job.id}", help="Resumes from the last stored chunk"):
            try:
                restart_job(ws, job.id)
            except Exception as e:  # shown as a message
                st.error(escape_markdown(describe_error(e)))
            else:
                st.rerun(scope="fragment")
