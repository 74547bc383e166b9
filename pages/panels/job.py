"""One background job as a card: status, progress bar, elapsed time, ETA, error, Cancel / Start again."""
from __future__ import annotations

import streamlit as st

from analysis.errors import describe_error
from analysis.estimates import duration
from analysis.jobs import KINDS, Job, cancel_job, get_job, restart_job
from analysis.store import Workspace
from pages.common import escape_markdown, read_first_then_afresh

ICONS = {"queued": "⏳", "running": "🔄", "complete": "✅", "failed": "❌", "cancelled": "⏹️"}


def job_title(job: Job) -> str:
    """'🔄 PEFs + NPEFF fit · image-demo (job 1a2b...)'."""
    spec = job.spec
    source = (spec.get("model", {}).get("source") or spec.get("pefs_run") or spec.get("demo")
              or spec.get("experiment") or spec.get("decomposition", ""))
    title = KINDS[job.kind].title if job.kind in KINDS else job.kind
    return f"{ICONS.get(job.status, '')} {title} · {source} (job {job.id})"


def job_facts(job: Job) -> list[str]:
    """Elapsed time, ETA of the current stage, a pending cancel, the resulting run."""
    facts = []
    if job.elapsed is not None:
        facts.append(f"elapsed {duration(job.elapsed)}")
    if job.eta is not None:
        facts.append(f"ETA {duration(job.eta)} ({escape_markdown(job.stage or '')})")
    if job.cancel_requested and job.active:
        facts.append("cancel requested")
    if job.result:
        facts.append(f"run {job.result}")
    return facts


def job_progress(job: Job) -> None:
    """The job's title, progress bar and facts, without buttons (also drawn in loops and the sidebar)."""
    st.markdown(f"**{escape_markdown(job_title(job))}** — {job.status}")
    if job.active:
        text = escape_markdown(job.message or job.status)
        st.progress(job.fraction, text=text if not job.total else f"{text} ({job.fraction:.0%})")
    if facts := job_facts(job):
        st.caption(" · ".join(facts))


def job_card(ws: Workspace, job: Job, *, key: str) -> None:
    """The job's state; Cancel while it is queued or running, Start again when it failed or was cancelled."""
    job_progress(job)
    if job.error:
        (st.warning if job.status == "cancelled" else st.error)(escape_markdown(job.error))
    if job.active and not job.cancel_requested:
        if st.button("Cancel", key=f"{key}_cancel_{job.id}"):
            cancel_job(ws, job.id)
            st.rerun(scope="fragment")
    elif job.status in ("failed", "cancelled") and job.kind in KINDS:
        if st.button("Start again", key=f"{key}_restart_{job.id}", help="Resumes from the last stored chunk"):
            try:
                restart_job(ws, job.id)
            except Exception as e:  # shown as a message
                st.error(escape_markdown(describe_error(e)))
            else:
                st.rerun()  # the whole page: its job panels poll again (a fragment that was idle does not)


def live_job(ws: Workspace, job: Job, *, key: str) -> None:
    """The job's card, redrawn every 2 s while it is active; the whole page reruns when it ends (to show its
    result)."""
    latest = read_first_then_afresh(job, lambda: get_job(ws, job.id))

    @st.fragment(run_every=2 if job.active else None)
    def panel(was_active: bool) -> None:
        current = latest()
        if was_active and not current.active:
            st.rerun()
        with st.container(border=True):
            job_card(ws, current, key=key)

    panel(job.active)
