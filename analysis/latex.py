"""LaTeX tables of the top examples of components (spec §5: example index, label, prediction, coefficient, text).

One `\\subsection*{Component k}` with a booktabs longtable per component. Text is escaped in a single
pass so that the escapes themselves are never escaped again; compile with pdflatex or XeLaTeX.
"""
from __future__ import annotations

import re
from typing import TYPE_CHECKING, Mapping

import pandas as pd

if TYPE_CHECKING:
    from analysis.notes import ComponentNote

# every character that is special in LaTeX text mode, with its escape
ESCAPES = {
    "\\": r"\textbackslash{}", "&": r"\&", "%": r"\%", "$": r"\$", "#": r"\#", "_": r"\_", "{": r"\{",
    "}": r"\}", "~": r"\textasciitilde{}", "^": r"\textasciicircum{}", "<": r"\textless{}",
    ">": r"\textgreater{}", "|": r"\textbar{}",
}
_SPECIAL = re.compile("|".join(re.escape(c) for c in ESCAPES))
_WHITESPACE = re.compile(r"\s+")
PREAMBLE = "\n".join([
    r"\documentclass[10pt]{article}",
    r"\usepackage[T1]{fontenc}",
    r"\usepackage[utf8]{inputenc}",
    r"\usepackage[margin=2cm]{geometry}",
    r"\usepackage{booktabs,longtable,array}",
    r"\begin{document}",
])
COLUMNS = r"@{}rllr>{\raggedright\arraybackslash}p{0.56\linewidth}@{}"  # index, label, prediction, coef., text


def latex_escape(text: str) -> str:
    """Text with & % $ # _ { } ~ ^ \\ < > | escaped and runs of whitespace (newlines too) made one space."""
    return _SPECIAL.sub(lambda m: ESCAPES[m.group(0)], _WHITESPACE.sub(" ", str(text)).strip())


def _row(example: pd.Series) -> str:
    """One example: its index in the dataset (the Components page's #idx), label, prediction, coefficient, text."""
    text = example.get("text")
    shown = latex_escape(text) if isinstance(text, str) else r"\textit{no text}"
    return (f"{int(example['idx'])} & {latex_escape(example['gold'])} & {latex_escape(example['prediction'])} & "
            f"{float(example['coefficient']):.4f} & {shown} \\\\")


def _note_lines(note: ComponentNote | None) -> list[str]:
    """The researcher's tags and note as a paragraph under the subsection (none when there are neither)."""
    if note is None or not (note.tags or note.note):
        return []
    tags = rf"\textit{{Tags: {latex_escape(', '.join(note.tags))}.}} " if note.tags else ""
    return [rf"\noindent {tags}{latex_escape(note.note)}\par"]


def component_table(k: int, examples: pd.DataFrame, *, font_size: str = "footnotesize",
                    note: ComponentNote | None = None) -> str:
    """The subsection (titled with the component's name when it has one, its tags and note below) and
    longtable for one component; examples need gold, prediction, coefficient, idx and optionally text (rows
    in the order given)."""
    missing = {"gold", "prediction", "coefficient", "idx"} - set(examples.columns)
    if missing:
        raise ValueError(f"examples must have columns gold, prediction, coefficient, idx; missing {sorted(missing)}")
    name = f": {latex_escape(note.name)}" if note is not None and note.name else ""
    lines = [rf"\subsection*{{Component {int(k)}{name}}}", *_note_lines(note), rf"\begin{{{font_size}}}",
             rf"\begin{{longtable}}{{{COLUMNS}}}", r"\toprule",
             r"Example & Label & Prediction & Coefficient & Text \\", r"\midrule", r"\endhead"]
    lines += [_row(row) for _, row in examples.iterrows()]
    lines += [r"\bottomrule", r"\end{longtable}", rf"\end{{{font_size}}}"]
    return "\n".join(lines)


def top_examples_latex(tables: Mapping[int, pd.DataFrame], *, standalone: bool = True,
                       title: str | None = None, notes: Mapping[int, ComponentNote] | None = None) -> str:
    """LaTeX for several components' top examples, with each component's name, tags and note (notes, by
    component): a full document when standalone, else the body only."""
    body = [rf"\section*{{{latex_escape(title)}}}"] if title else []
    body += [component_table(k, frame, note=(notes or {}).get(k)) for k, frame in tables.items()]
    text = "\n\n".join(body)
    return f"{PREAMBLE}\n\n{text}\n\n\\end{{document}}\n" if standalone else text + "\n"
