"""A batch's export: its finished jobs as JSONL or CSV lines.

The export puts each job's input metadata beside its result, so a CSV of prompts comes back
as the same rows with answers.

A CSV is opened in spreadsheets, which run a cell that starts with `=`, `+`, `-` or `@` (or
with a tab or CR before one) as a formula: a prompt or an answer could then fetch a URL with
the sheet's data or run a command. Such text cells are written as OWASP recommends: a single
quote first, and the cell quoted. Numbers are left alone (`-3` is not a formula).
"""

from __future__ import annotations

import json
from collections.abc import Iterator


def export_record(job: dict) -> dict:
    """One line of the export: what went in, what came out, and why it failed if it did. A
    row that was a duplicate of an existing job (state "duplicate") shows that job: its id in
    `duplicate_of`, and its input and answer, once it has one."""
    result = job["result"] or {}
    payload = job["payload"] or {}
    error = job["last_error"] or {}
    return {
        "id": job["id"],
        "state": job["state"],
        "duplicate_of": job.get("duplicate_of"),
        "metadata": job["metadata"],
        "messages": payload.get("messages") or ([{"role": "user", "content": payload["prompt"]}]
                                                 if "prompt" in payload else None),
        "answer": result.get("text") if isinstance(result, dict) else result,
        "model": result.get("model") if isinstance(result, dict) else None,
        "fallback": result.get("fallback") if isinstance(result, dict) else None,
        "cached": result.get("cached") if isinstance(result, dict) else None,
        "usage": result.get("usage") if isinstance(result, dict) else None,
        "attempts": job["attempts"],
        "error": f"{error.get('type')}: {error.get('message')}" if error else None,
        "result": result,
    }


# duplicate_of last: columns existing readers know keep their places.
CSV_COLUMNS = ("id", "state", "prompt", "answer", "model", "fallback", "cached",
               "total_tokens", "attempts", "error", "duplicate_of")


def export_lines(client, batch_id: int, fmt: str) -> Iterator[str]:
    """The whole export of a batch as text, a page of jobs at a time (constant memory): JSONL,
    or CSV with the input metadata's columns first (a first pass collects their names)."""
    records = (export_record(j) for j in pages(client, batch_id))
    if fmt == "jsonl":
        for record in records:
            yield json.dumps(record, ensure_ascii=False, default=str) + "\n"
        return
    keys: dict[str, None] = {}
    for job in pages(client, batch_id):
        keys.update(dict.fromkeys(job["metadata"]))
    yield _csv_row([*keys, *CSV_COLUMNS])
    for r in records:
        messages = r["messages"] or []
        prompt = next((m.get("content") for m in reversed(messages) if m.get("role") == "user"),
                      None)
        usage = r["usage"] or {}
        values = {"prompt": prompt, "total_tokens": usage.get("total_tokens")}
        yield _csv_row([r["metadata"].get(k) for k in keys]
                       + [values.get(c, r.get(c)) for c in CSV_COLUMNS])


# What a spreadsheet may take for the start of a formula (OWASP "CSV Injection").
FORMULA_START = ("=", "+", "-", "@", "\t", "\r", "\n")


def _csv_row(values) -> str:
    """One CSV line as csv.writer writes it (minimal quoting, CRLF), except that a text cell a
    spreadsheet would run as a formula gets a leading single quote and is always quoted."""
    return ",".join(_csv_field(v) for v in values) + "\r\n"


def _csv_field(value) -> str:
    if value is None:
        return ""
    if isinstance(value, bool) or not isinstance(value, int | float | str):
        text = json.dumps(value, ensure_ascii=False, default=str)
    else:
        text = value if isinstance(value, str) else json.dumps(value)
    formula = isinstance(value, str) and text.startswith(FORMULA_START)
    if formula:
        text = "'" + text
    if formula or any(c in text for c in ',"\r\n'):
        return '"' + text.replace('"', '""') + '"'
    return text


def pages(client, batch_id: int, page: int = 1000) -> Iterator[dict]:
    """Every row of a batch (its jobs, and duplicates pointing at existing jobs), in input
    order, a page at a time (constant memory)."""
    after = 0
    while True:
        rows = client.batch_jobs(batch_id, after=after, limit=page)
        if not rows:
            return
        yield from rows
        after = rows[-1]["place"]
