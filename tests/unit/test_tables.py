"""CSV exports: text that starts a spreadsheet formula is quoted; numbers stay numbers."""
import io

import numpy as np
import pandas as pd

from analysis.tables import csv_bytes, spreadsheet_safe

FORMULAS = ["=HYPERLINK(\"http://x\",\"y\")", "+1+2", "-2+3", "@SUM(A1)", "\tlabel", "\rlabel"]


def test_text_cells_that_start_a_formula_get_a_quote():
    frame = pd.DataFrame({"gold": [*FORMULAS, "fresh", "a=b"]})
    safe = spreadsheet_safe(frame)
    assert safe["gold"].tolist() == [*("'" + f for f in FORMULAS), "fresh", "a=b"]
    assert frame["gold"].tolist()[0] == FORMULAS[0]  # the input is not changed


def test_numbers_stay_numbers_and_column_names_are_defused():
    frame = pd.DataFrame({"idx": np.arange(3), "w0": [-1.5, 0.25, -3e-5], "flipped": [True, False, True],
                          "=cmd|' /C calc'!A0": ["-x", "y", None]})
    text = csv_bytes(frame).decode()
    assert text.splitlines()[0] == "idx,w0,flipped,'=cmd|' /C calc'!A0"
    back = pd.read_csv(io.StringIO(text))
    assert back["w0"].tolist() == [-1.5, 0.25, -3e-5]
    assert back["idx"].tolist() == [0, 1, 2] and back["flipped"].tolist() == [True, False, True]
    assert back.iloc[:, 3].tolist()[:2] == ["'-x", "y"]


def test_mixed_object_columns_quote_only_strings():
    frame = pd.DataFrame({"mixed": pd.Series([-1, "-1", "=1", 2.5], dtype=object)})
    assert spreadsheet_safe(frame)["mixed"].tolist() == [-1, "'-1", "'=1", 2.5]
    assert csv_bytes(frame).decode().splitlines()[1:] == ["-1", "'-1", "'=1", "2.5"]
