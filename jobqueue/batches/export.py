"""A batch's export: its finished jobs as JSONL or CSV lines.

The export puts each job's input metadata beside its result, so a CSV of prompts comes back
as the same rows with answers.
"""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Iterator


def export_record(job: dict) -> dict:
    """One line of the export: what went in, what came out, and why it failed if it did."""
    result = job["result"] or {}
    payload = job["payload"] or {}
    error = job["last_error"] or {}
    return {
        "id": job["id"],
        "state": job["state"],
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


CSV_COLUMNS = ("id", "state", "prompt", "answer", "model", "fallback", "cached",
               "total_tokens", "attempts", "error")


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
    buffer = io.StringIO()
    writer = csv.writer(buffer)

    def flush() -> str:
        text = buffer.getvalue()
        buffer.seek(0)
        buffer.truncate()
        return text

    writer.writerow([*keys, *CSV_COLUMNS])
    yield flush()
    for r in records:
        messages = r["messages"] or []
        prompt = next((m.get("content") for m in reversed(messages) if m.get("role") == "user"),
                      None)
        usage = r["usage"] or {}
        values = {"prompt": prompt, "total_tokens": usage.get("total_tokens")}
        writer.writerow([_cell(r["metadata"].get(k)) for k in keys]
                        + [_cell(values.get(c, r.get(c))) for c in CSV_COLUMNS])
        yield flush()


def _cell(value) -> str:
    if value is None:
        return ""
    if isinstance(value, str):
        return value
    return json.dumps(value, ensure_ascii=False, default=str)


def pages(client, batch_id: int, page: int = 1000) -> Iterator[dict]:
    """Every job of a batch, in id order, a page at a time (constant memory)."""
    after = 0
    while True:
        rows = client.batch_jobs(batch_id, after=after, limit=page)
        if not rows:
            return
        yield from rows
        after = rows[-1]["id"]
