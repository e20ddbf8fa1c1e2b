"""Tables the way papers print them: values with 3 decimals, p values below 0.001 as ``<0.001``,
an empty cell where there is no value; as plain text, CSV, Markdown or LaTeX (booktabs)."""

from __future__ import annotations

import csv
import io
import math
import numbers
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import pandas as pd

FORMATS = ("table", "csv", "markdown", "latex")
DECIMALS = 3


def cell(value, column: str) -> str:
    """One value as printed: integers as they are, p values (columns starting with ``p``) as
    ``<0.001`` when below, other numbers with 3 decimals, NaN empty."""
    if value is None or isinstance(value, str):
        return value or ""
    if isinstance(value, (bool, numbers.Integral)):
        return str(value)
    value = float(value)
    if math.isnan(value):
        return ""
    if column.startswith("p_") or column == "p":
        return "<0.001" if value < 0.001 else f"{value:.{DECIMALS}f}"
    return f"{value:.{DECIMALS}f}"


def cells(table: pd.DataFrame) -> list[list[str]]:
    return [[cell(v, c) for c, v in zip(table.columns, row)] for row in table.itertuples(index=False)]


def format_table(table: pd.DataFrame, fmt: str = "table") -> str:
    """``table`` rounded for a paper, as ``table`` (aligned text), ``csv``, ``markdown`` or ``latex``."""
    head, body = [str(c) for c in table.columns], cells(table)
    if fmt == "csv":
        buf = io.StringIO()
        w = csv.writer(buf, lineterminator="\n")
        w.writerow(head)
        w.writerows(body)
        return buf.getvalue()
    if fmt == "markdown":
        lines = ["| " + " | ".join(head) + " |", "|" + "|".join("---:" if i else "---" for i in range(len(head))) + "|"]
        return "\n".join(lines + ["| " + " | ".join(r) + " |" for r in body]) + "\n"
    if fmt == "latex":
        esc = lambda s: s.replace("\\", r"\textbackslash{}").replace("_", r"\_").replace("%", r"\%") \
            .replace("&", r"\&").replace("<", r"$<$")  # noqa: E731
        lines = [r"\begin{tabular}{l" + "r" * (len(head) - 1) + "}", r"\toprule",
                 " & ".join(esc(h) for h in head) + r" \\", r"\midrule"]
        lines += [" & ".join(esc(v) for v in r) + r" \\" for r in body]
        return "\n".join(lines + [r"\bottomrule", r"\end{tabular}"]) + "\n"
    widths = [max(len(h), *(len(r[i]) for r in body)) if body else len(h) for i, h in enumerate(head)]
    lines = ["  ".join(h.rjust(w) if i else h.ljust(w) for i, (h, w) in enumerate(zip(head, widths)))]
    lines += ["  ".join(v.rjust(w) if i else v.ljust(w) for i, (v, w) in enumerate(zip(r, widths))) for r in body]
    return "\n".join(lines) + "\n"
