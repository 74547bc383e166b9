"""Jobs page: the workspace's background jobs (started here, on other tabs or from the command line)."""
from __future__ import annotations

import streamlit as st

from analysis.jobs import list_jobs
from pages.common import in_app_shell, workspace
from pages.panels.job import job_card

in_app_shell()

GROUPS = {"Running": ("running",), "Queued": ("queued",), "Failed or cancelled": ("failed", "cancelled"),
          "Finished": ("complete",)}

st.title("Jobs")
st.caption("Long computations run as background processes: they go on when this tab is closed or reloaded. "
           "The command line's `pefs` and `fit` appear here too. A job whose process died is marked failed; "
           "start it again to resume from its last stored chunk.")


@st.fragment(run_every=2)
def jobs_panel() -> None:
    ws = workspace()
    jobs = list_jobs(ws)
    if not jobs:
        st.info("No jobs yet: press Compute on the Compute page, or run `python -m analysis.cli pefs ...`.")
        return
    for group, statuses in GROUPS.items():
        shown = [job for job in jobs if job.status in statuses]
        if not shown:
            continue
        st.subheader(f"{group} ({len(shown)})")
        for job in shown[:50]:
            with st.container(border=True):
                job_card(ws, job, key="jobs")


jobs_panel()
