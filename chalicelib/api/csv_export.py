"""``?format=csv`` for the tabular lists: one helper, safe against CSV (formula) injection.

A cell that starts with ``=``, ``+``, ``-``, ``@`` (or their fullwidth forms ``＝ ＋ － ＠``, which some
spreadsheet locales also evaluate, or a tab / carriage return, which spreadsheets also read as the start
of a formula, or a NUL, which ASVS 5 V1.2.10 lists with them: a reader that drops it reads what follows)
is prefixed with a single quote, so a hostname or tag a client chose is shown as text, never evaluated,
when the export is opened in a spreadsheet.
"""

from __future__ import annotations

import csv
import io
import re
from typing import Any

from chalice import Response

from chalicelib.api.common import ok
from chalicelib.errors import InvalidInputError

FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r", "\x00",
                  "\uff1d", "\uff0b", "\uff0d", "\uff20")  # fullwidth ＝ ＋ － ＠
_FILENAME = re.compile(r"[^A-Za-z0-9._-]")


def wants_csv(request) -> bool:
    """True for ``?format=csv``; ``json`` (or no format) is JSON; anything else is a 400."""
    fmt = (request.query_params or {}).get("format")
    if fmt is None or fmt == "json":
        return False
    if fmt == "csv":
        return True
    raise InvalidInputError("format must be json or csv", field="format")


def cell(value: Any) -> str:
    """One cell as text: None is empty, booleans are true/false, numbers as they are, and text that starts
    like a formula is quoted."""
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return str(value)  # a number (a negative price impact) is data, not a formula
    text = value if isinstance(value, str) else str(value)
    return "'" + text if text.startswith(FORMULA_STARTS) else text


def csv_response(rows: list[dict], columns: list[str], filename: str) -> Response:
    """``text/csv`` with a header row of ``columns`` and one line per row (missing keys are empty)."""
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\r\n")
    writer.writerow(columns)
    for row in rows:
        writer.writerow([cell(row.get(name)) for name in columns])
    safe = _FILENAME.sub("_", filename) or "export.csv"
    return Response(body=out.getvalue(), status_code=200,
                    headers={"Content-Type": "text/csv; charset=utf-8",
                             "Content-Disposition": f'attachment; filename="{safe}"'})


def listing(request, key: str, rows: list[dict], next_token: str | None, columns: list[str], filename: str):
    """A list answer: JSON ``{key: rows, next_token}``, or the same page as CSV (``?format=csv``; the next
    page's token in the ``X-Next-Token`` header)."""
    if wants_csv(request):
        response = csv_response(rows, columns, filename)
        if next_token:
            response.headers["X-Next-Token"] = next_token
        return response
    return ok({key: rows, "next_token": next_token})
