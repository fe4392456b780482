"""The read views' answers: JSON by default, CSV (one row per item, a header of column names) on request."""

from __future__ import annotations

import csv
import io
import json
from datetime import datetime

from aiohttp import web


def cell(value) -> str:
    """A value as a CSV cell; also JSON's fallback for what JSON has no type for (datetimes: ISO 8601)."""
    if value is None:
        return ""
    if isinstance(value, datetime):
        return value.isoformat()
    if isinstance(value, str) and value[:1] in ("=", "+", "-", "@", "\t", "\r"):
        return "'" + value  # a check named "=HYPERLINK(...)" stays text in a spreadsheet
    return str(value)


def respond(csv_out: bool, body: dict, rows: list[dict], columns: list[str]) -> web.Response:
    """``rows`` as CSV with ``columns`` when ``csv_out``, else ``body`` as JSON."""
    if csv_out:
        out = io.StringIO()
        writer = csv.writer(out, lineterminator="\n")
        writer.writerow(columns)
        writer.writerows([cell(r.get(c)) for c in columns] for r in rows)
        return web.Response(text=out.getvalue(), content_type="text/csv")
    return web.json_response(body, dumps=_dumps)


def _dumps(obj) -> str:
    return json.dumps(obj, default=cell)
