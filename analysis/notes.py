"""A researcher's names, tags and notes on the components of a decomposition, kept in the workspace.

Notes are keyed by (decomposition run id, component), so they travel with the decomposition: the overview,
the component view, a permalink to the component and every export read the same row. Validated here once;
the workspace stores what it is given.
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Iterable

from analysis.store import Workspace

MAX_NAME = 80  # characters of a component's name (it heads the overview row and the LaTeX subsection)
MAX_TAG = 40  # characters of one tag
MAX_NOTE = 10_000  # characters of the free text


@dataclass(frozen=True)
class ComponentNote:
    """What a researcher wrote about one component; all empty when nothing was written."""

    component: int
    name: str = ""
    tags: tuple[str, ...] = ()
    note: str = ""
    updated: datetime | None = None  # UTC time of the last save; None when never saved

    @property
    def is_empty(self) -> bool:
        return not (self.name or self.tags or self.note)

    @property
    def tags_text(self) -> str:
        """The tags as typed back into the form: 'a, b'."""
        return ", ".join(self.tags)


def parse_tags(text: str | Iterable[str]) -> tuple[str, ...]:
    """Tags from comma-separated text (or a list): stripped, empty ones dropped, repeats kept once, in order."""
    parts = text.split(",") if isinstance(text, str) else list(text)
    tags = tuple(dict.fromkeys(t.strip() for t in parts if t.strip()))
    for tag in tags:
        if len(tag) > MAX_TAG or "\n" in tag:
            raise ValueError(f"tags: each tag must be one line of at most {MAX_TAG} characters, got {tag[:60]!r} "
                             f"({len(tag)} characters); separate tags with commas")
    return tags


def validated(component: int, name: str, tags: str | Iterable[str], note: str,
              n_components: int | None = None) -> ComponentNote:
    """A ComponentNote from form values, or a ValueError naming the field, the bad value and the fix."""
    if component < 0 or (n_components is not None and component >= n_components):
        allowed = f"[0, {n_components})" if n_components is not None else ">= 0"
        raise ValueError(f"component must be in {allowed}, got {component}")
    name = name.strip()
    if len(name) > MAX_NAME:
        raise ValueError(f"name must be at most {MAX_NAME} characters, got {len(name)} ({name[:40]!r}…); "
                         "shorten it and put details in the note")
    if "\n" in name:
        raise ValueError(f"name must be one line, got {name[:40]!r}; put details in the note")
    note = note.strip()
    if len(note) > MAX_NOTE:
        raise ValueError(f"note must be at most {MAX_NOTE:,} characters, got {len(note):,}; shorten it")
    return ComponentNote(component=int(component), name=name, tags=parse_tags(tags), note=note)


def set_note(ws: Workspace, run_id: str, component: int, *, name: str = "", tags: str | Iterable[str] = "",
             note: str = "", n_components: int | None = None) -> ComponentNote:
    """Validate and store the note of a component (replacing the previous one); all empty deletes it."""
    found = validated(component, name, tags, note, n_components)
    now = datetime.now(timezone.utc)
    ws.set_component_note(run_id, found.component, name=found.name, tags=list(found.tags), note=found.note,
                          updated=now.replace(tzinfo=None))
    return ComponentNote(found.component, found.name, found.tags, found.note, None if found.is_empty else now)


def get_notes(ws: Workspace, run_id: str) -> dict[int, ComponentNote]:
    """{component: note} of the components of a decomposition run that have one."""
    return {c: ComponentNote(c, name, tuple(tags), note, updated.replace(tzinfo=timezone.utc))
            for c, name, tags, note, updated in ws.component_notes(run_id)}


def get_note(ws: Workspace, run_id: str, component: int) -> ComponentNote:
    """The note of one component; an empty one when nothing was written."""
    return get_notes(ws, run_id).get(component, ComponentNote(component))


def notes_json(notes: dict[int, ComponentNote]) -> str:
    """The notes as JSON for file metadata: {"<component>": {"name", "tags", "note", "updated"}}."""
    return json.dumps({str(c): {"name": n.name, "tags": list(n.tags), "note": n.note,
                                "updated": None if n.updated is None else n.updated.isoformat()}
                       for c, n in sorted(notes.items())})


def all_tags(notes: dict[int, ComponentNote]) -> list[str]:
    """Every tag used on some component, sorted."""
    return sorted({t for n in notes.values() for t in n.tags})


def tagged(notes: dict[int, ComponentNote], wanted: Iterable[str]) -> list[int]:
    """The components carrying at least one of the wanted tags, ascending."""
    wanted = set(wanted)
    return sorted(c for c, n in notes.items() if wanted & set(n.tags))
