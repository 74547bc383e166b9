"""Tables exported for spreadsheets: CSV whose text cells cannot run as formulas.

A label or text starting with `=`, `+`, `-` or `@` (or a tab or carriage return) is a formula to Excel and
LibreOffice (`=HYPERLINK(...)`, `=cmd|...`); such cells get a leading single quote (OWASP's advice).
Numeric columns are written unchanged: a negative number is not a formula.
"""
from __future__ import annotations

import pandas as pd

FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")


def _defused(value: object) -> object:
    return "'" + value if isinstance(value, str) and value.startswith(FORMULA_STARTS) else value


def spreadsheet_safe(frame: pd.DataFrame) -> pd.DataFrame:
    """A copy of `frame` whose text cells and column names that start a formula are prefixed with `'`."""
    safe = frame.copy()
    safe.columns = [_defused(c) for c in frame.columns]
    for i, dtype in enumerate(frame.dtypes):
        if not (pd.api.types.is_numeric_dtype(dtype) or pd.api.types.is_datetime64_any_dtype(dtype)):
            safe.isetitem(i, frame.iloc[:, i].map(_defused))
    return safe


def csv_bytes(frame: pd.DataFrame, *, float_format: str | None = None) -> bytes:
    """`frame` as UTF-8 CSV for a download button, without its index and with formulas defused; float columns
    written with `float_format` ('%.6g') when given, else in full (shortest round-trip repr)."""
    return spreadsheet_safe(frame).to_csv(index=False, float_format=float_format).encode()
