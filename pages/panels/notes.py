"""Component names, tags and notes (read from the workspace on every run) and the cached automatic summaries."""
from __future__ import annotations

import pandas as pd
import streamlit as st

from analysis import components as cs
from analysis import notes as nt
from analysis import summaries as sm
from pages.common import escape_markdown
from pages.panels.browse import BrowseContext


@st.cache_data(show_spinner="Summarizing the components (once per decomposition)…", max_entries=4)
def _summaries(_ctx: BrowseContext, root: str, run_id: str, dataset_key: str, n_top: int,
               has_profiles: bool) -> list[sm.ComponentSummary]:
    counts = sm.term_counts(_ctx.texts) if _ctx.texts is not None else None
    layers = cs.group_profiles(*_ctx.profiles, by="layer") if _ctx.profiles is not None else None
    return sm.summarize(_ctx.data, _ctx.index["top_indices"][:, :n_top], counts, layers)


def component_summaries(ctx: BrowseContext) -> list[sm.ComponentSummary]:
    """One summary per component, over the overview's top examples (computed once per decomposition)."""
    return _summaries(ctx, ctx.root, ctx.run_id, ctx.dataset.content_hash, ctx.n_top_overview,
                      ctx.profiles is not None)


def notes(ctx: BrowseContext) -> dict[int, nt.ComponentNote]:
    """The researcher's notes on this decomposition's components (read fresh: they change while browsing)."""
    return nt.get_notes(ctx.ws, ctx.run_id)


def overview_with_notes(ctx: BrowseContext, table: pd.DataFrame,
                        found: dict[int, nt.ComponentNote]) -> pd.DataFrame:
    """The overview table with each component's name, tags (from found, the notes) and automatic summary."""
    return cs.with_notes(table, found, [s.text for s in component_summaries(ctx)])


def note_panel(ctx: BrowseContext, k: int, note: nt.ComponentNote) -> None:
    """The component's tags, note and automatic summary, and a form that edits the name, tags and note."""
    summary = component_summaries(ctx)[k]
    st.caption(f"Summary of the top {summary.n_top} examples against the rest: {escape_markdown(summary.text)}")
    if note.tags:
        st.caption("Tags: " + escape_markdown(note.tags_text))
    if note.note:
        st.markdown(escape_markdown(note.note))
    label = "Edit name, tags and note" if not note.is_empty else "Name this component, tag it, add a note"
    with st.expander(label):
        with st.form(f"cmp_note_form_{ctx.run_id}_{k}", border=False):
            name = st.text_input("Name", note.name, max_chars=nt.MAX_NAME, key=f"cmp_note_name_{ctx.run_id}_{k}")
            tags = st.text_input("Tags (comma-separated)", note.tags_text, key=f"cmp_note_tags_{ctx.run_id}_{k}")
            text = st.text_area("Note", note.note, max_chars=nt.MAX_NOTE, key=f"cmp_note_text_{ctx.run_id}_{k}")
            saved = st.form_submit_button("Save", key=f"cmp_note_save_{ctx.run_id}_{k}")
        if note.updated is not None:
            st.caption(f"Last saved {note.updated:%Y-%m-%d %H:%M} UTC · stored in the workspace with run "
                       f"{ctx.run_id}; an empty name, tags and note removes it.")
    if saved:
        try:
            nt.set_note(ctx.ws, ctx.run_id, k, name=name, tags=tags, note=text, n_components=ctx.n_components)
        except ValueError as e:
            st.error(escape_markdown(e))
            return
        st.rerun()  # the whole page: the overview shows the new name
