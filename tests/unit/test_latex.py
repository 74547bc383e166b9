"""LaTeX escaping and the top-examples table: exact escapes, no double escaping, balanced structure.

pdflatex is not installed on the development machines, so the compile test is skipped there; the
structure tests check what a compile would catch first (environments, braces, columns per row).
"""
import re
import shutil
import subprocess

import numpy as np
import pandas as pd
import pytest

from analysis.latex import ESCAPES, component_table, latex_escape, top_examples_latex

SPECIALS = "&%$#_{}~^\\"


@pytest.mark.parametrize("char, escaped", [
    ("&", r"\&"), ("%", r"\%"), ("$", r"\$"), ("#", r"\#"), ("_", r"\_"), ("{", r"\{"), ("}", r"\}"),
    ("~", r"\textasciitilde{}"), ("^", r"\textasciicircum{}"), ("\\", r"\textbackslash{}"),
    ("<", r"\textless{}"), (">", r"\textgreater{}"), ("|", r"\textbar{}"),
])
def test_each_special_character_is_escaped(char, escaped):
    assert latex_escape(f"a{char}b") == f"a{escaped}b"


def test_escapes_are_not_escaped_again():
    assert latex_escape(r"\&") == r"\textbackslash{}\&"
    assert latex_escape(r"\textbackslash{}") == r"\textbackslash{}textbackslash\{\}"
    assert latex_escape("100% of $5 & #1_{x}~^") == r"100\% of \$5 \& \#1\_\{x\}\textasciitilde{}\textasciicircum{}"


def test_whitespace_and_unicode():
    assert latex_escape("  two\n\tlines  ") == "two lines"
    assert latex_escape("café – naïve") == "café – naïve"


def _strip_escapes(text: str) -> str:
    """Text with every escape sequence removed: what is left must hold no special character."""
    for escaped in sorted(ESCAPES.values(), key=len, reverse=True):
        text = text.replace(escaped, "")
    return text


def test_random_strings_leave_no_bare_special_character():
    rng = np.random.default_rng(0)
    alphabet = list(SPECIALS + "<>| ab\n")
    for _ in range(200):
        raw = "".join(rng.choice(alphabet, size=rng.integers(1, 30)))
        rest = _strip_escapes(latex_escape(raw))
        assert not set(rest) & set(SPECIALS + "<>|"), (raw, rest)


def _examples(n: int, texts: bool = True) -> pd.DataFrame:
    frame = pd.DataFrame({"idx": np.arange(n), "gold": ["fresh", "ro_tten"] * (n // 2) + ["fresh"] * (n % 2),
                          "prediction": ["fresh"] * n, "coefficient": np.linspace(1, 0.5, n)})
    if texts:
        frame["text"] = [f"50% & more {{#{i}}} ~ \\cite^_$" for i in range(n)]
    return frame


def _check_structure(tex: str) -> None:
    stack = []
    for kind, name in re.findall(r"\\(begin|end)\{(\w+)\}", tex):
        if kind == "begin":
            stack.append(name)
        else:
            assert stack and stack.pop() == name, f"\\end{{{name}}} closes the wrong environment"
    assert not stack, f"unclosed environments {stack}"
    bare = re.sub(r"\\[{}]", "", tex)  # escaped braces do not group
    depth = 0
    for ch in bare:
        depth += {"{": 1, "}": -1}.get(ch, 0)
        assert depth >= 0, "a closing brace without an opening one"
    assert depth == 0


def test_document_structure_and_rows():
    tables = {3: _examples(4), 7: _examples(3)}
    tex = top_examples_latex(tables, title="Run #1 top_examples")
    assert tex.startswith(r"\documentclass") and tex.rstrip().endswith(r"\end{document}")
    assert r"\section*{Run \#1 top\_examples}" in tex
    _check_structure(tex)
    assert re.findall(r"\\subsection\*\{Component (\d+)\}", tex) == ["3", "7"]
    assert tex.count(r"Example & Label & Prediction & Coefficient & Text \\") == 2
    assert all(spec == "@{}rllr>{\\raggedright\\arraybackslash}p{0.56\\linewidth}@{}"
               for spec in re.findall(r"\\begin\{longtable\}\{(.*)\}$", tex, re.M))  # five columns, as each row
    rows = [line for line in tex.splitlines() if re.match(r"^\d+ & (fresh|ro)", line)]
    assert len(rows) == 7
    for row in rows:
        assert len(re.findall(r"(?<!\\)&", row)) == 4 and row.endswith(r"\\")
    assert rows[0] == (r"0 & fresh & fresh & 1.0000 & 50\% \& more \{\#0\} \textasciitilde{} "
                       r"\textbackslash{}cite\textasciicircum{}\_\$ \\")
    assert rows[1].startswith(r"1 & ro\_tten & fresh & 0.8333 & ")


def test_each_row_starts_with_its_example_index_in_the_given_order():
    frame = _examples(3).assign(idx=[912, 7, 40])
    rows = component_table(0, frame).splitlines()
    body = rows[rows.index(r"\endhead") + 1:rows.index(r"\bottomrule")]
    assert [row.split(" & ")[0] for row in body] == ["912", "7", "40"]
    assert [row.split(" & ")[4].rsplit(" ", 1)[0] for row in body] == [latex_escape(t) for t in frame["text"]]


def test_image_examples_and_body_only():
    body = top_examples_latex({0: _examples(2, texts=False)}, standalone=False)
    assert r"\documentclass" not in body and "\n1 & ro\\_tten & fresh & 0.5000 & \\textit{no text} \\\\\n" in body
    _check_structure(body)
    with pytest.raises(ValueError, match=r"^examples must have columns gold, prediction, coefficient, idx; "
                                         r"missing \['coefficient'\]$"):
        component_table(0, _examples(2).drop(columns="coefficient"))


@pytest.mark.skipif(shutil.which("pdflatex") is None, reason="pdflatex is not installed (TeX is not installed "
                                                              "on purpose); structure is checked above")
def test_pdflatex_compiles_the_table(tmp_path):
    (tmp_path / "top.tex").write_text(top_examples_latex({1: _examples(5)}))
    done = subprocess.run(["pdflatex", "-interaction=nonstopmode", "-halt-on-error", "top.tex"], cwd=tmp_path,
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stdout[-2000:]
    assert (tmp_path / "top.pdf").read_bytes()[:5] == b"%PDF-"
