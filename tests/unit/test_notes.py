"""Component names, tags and notes: validation, storage through the workspace, and where they are shown."""
import json
from datetime import datetime, timezone

import numpy as np
import pandas as pd
import pytest

import analysis.components as cs
from analysis import notes as nt
from analysis.latex import top_examples_latex
from analysis.store import Workspace


@pytest.fixture
def ws(tmp_path):
    return Workspace(tmp_path / "ws")


def test_a_note_round_trips_through_the_workspace(ws):
    before = datetime.now(timezone.utc)
    saved = nt.set_note(ws, "r1", 2, name="  low-key praise ", tags="tone, fresh,, tone ", note="says 'low-key'\n")
    assert saved.name == "low-key praise" and saved.tags == ("tone", "fresh") and saved.note == "says 'low-key'"
    got = nt.get_note(Workspace(ws.root), "r1", 2)  # a new process reads the same note
    assert (got.component, got.name, got.tags, got.note) == (2, "low-key praise", ("tone", "fresh"), "says 'low-key'")
    assert got.updated.tzinfo is timezone.utc and abs((got.updated - before).total_seconds()) < 60
    assert got.tags_text == "tone, fresh"
    assert nt.get_note(ws, "r1", 1) == nt.ComponentNote(1) and nt.get_note(ws, "r1", 1).is_empty
    assert nt.get_notes(ws, "other-run") == {}


def test_an_empty_name_tags_and_note_deletes_it(ws):
    nt.set_note(ws, "r1", 0, name="x", note="y")
    nt.set_note(ws, "r1", 4, tags=["keep"])  # tags alone are a note
    cleared = nt.set_note(ws, "r1", 0, name=" ", tags="", note="")
    assert cleared.is_empty and cleared.updated is None
    assert list(nt.get_notes(ws, "r1")) == [4]


def test_invalid_notes_are_refused_with_the_field_and_the_fix(ws):
    with pytest.raises(ValueError, match=r"^name must be at most 80 characters, got 81 \('aaaa"):
        nt.set_note(ws, "r1", 0, name="a" * 81)
    with pytest.raises(ValueError, match=r"^name must be one line, got 'a\\nb'; put details in the note$"):
        nt.set_note(ws, "r1", 0, name="a\nb")
    with pytest.raises(ValueError, match=r"^tags: each tag must be one line of at most 40 characters, got 'tttt"):
        nt.set_note(ws, "r1", 0, tags="ok, " + "t" * 41)
    with pytest.raises(ValueError, match=r"^component must be in \[0, 4\), got 4$"):
        nt.set_note(ws, "r1", 4, name="x", n_components=4)
    with pytest.raises(ValueError, match=r"^note must be at most 10,000 characters, got 10,001; shorten it$"):
        nt.set_note(ws, "r1", 0, note="n" * 10_001)
    assert nt.get_notes(ws, "r1") == {}  # nothing was stored
    assert nt.set_note(ws, "r1", 0, name="a" * 80).name == "a" * 80  # the limit itself is allowed


def test_tags_search_and_metadata(ws):
    nt.set_note(ws, "r1", 3, name="b", tags="tone, dup")
    nt.set_note(ws, "r1", 1, name="a", tags=["dup"])
    nt.set_note(ws, "r1", 2, name="c")
    found = nt.get_notes(ws, "r1")
    assert nt.all_tags(found) == ["dup", "tone"]
    assert nt.tagged(found, ["dup"]) == [1, 3] and nt.tagged(found, ["tone", "nope"]) == [3]
    meta = json.loads(nt.notes_json(found))
    assert list(meta) == ["1", "2", "3"] and meta["3"]["tags"] == ["tone", "dup"] and meta["2"]["note"] == ""


def _notes() -> dict[int, nt.ComponentNote]:
    return {1: nt.ComponentNote(1, "too … rotten", ("tone",), "50% of them say 'too'"),
            2: nt.ComponentNote(2, tags=("x",))}


def test_overview_and_components_file_carry_names_tags_notes_and_summaries():
    table = pd.DataFrame({"component": [0, 1, 2], "purity": [0.5, 0.9, 1.0], "modules": [[1.0], [0.5, 0.5], [1.0]]})
    shown = cs.with_notes(table, _notes(), ["s0", "s1", "s2"])
    assert shown.columns.tolist() == ["component", "name", "tags", "summary", "purity", "modules"]
    assert shown["name"].tolist() == ["", "too … rotten", ""] and shown["tags"].tolist() == ["", "tone", "x"]
    assert shown["summary"].tolist() == ["s0", "s1", "s2"] and "name" not in table  # the cached table is kept
    assert cs.with_notes(table, {}, None).columns.tolist() == ["component", "name", "tags", "purity", "modules"]
    exported = cs.components_frame(table, _notes(), ["s0", "s1", "s2"])
    assert exported.columns.tolist() == ["component", "name", "tags", "note", "summary", "purity"]
    assert exported["note"].tolist() == ["", "50% of them say 'too'", ""]
    with pytest.raises(ValueError, match=r"^summaries must have one entry per component \(3\), got 2$"):
        cs.with_notes(table, {}, ["a", "b"])


def test_latex_heads_each_component_with_its_name_tags_and_note():
    frame = pd.DataFrame({"idx": [4], "gold": ["fresh"], "prediction": ["fresh"], "coefficient": [1.0],
                          "text": ["a film"]})
    tex = top_examples_latex({0: frame, 1: frame, 2: frame}, notes=_notes())
    assert r"\subsection*{Component 0}" + "\n" + r"\begin{footnotesize}" in tex  # no note: unchanged
    assert r"\subsection*{Component 1: too … rotten}" in tex
    assert r"\noindent \textit{Tags: tone.} 50\% of them say 'too'\par" in tex
    assert r"\subsection*{Component 2}" + "\n" + r"\noindent \textit{Tags: x.} \par" in tex
    assert tex == top_examples_latex({0: frame, 1: frame, 2: frame}, notes=_notes())  # deterministic
    assert np.all([line.count("{") == line.count("}") for line in tex.splitlines() if "Component" in line])
