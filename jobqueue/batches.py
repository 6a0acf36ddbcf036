"""Batches of LLM jobs: from a file's rows to chat jobs, and from finished jobs to an export.

The export puts each job's input metadata beside its result, so a CSV of prompts comes back
as the same rows with answers.
"""

from __future__ import annotations

import csv
import json
from collections.abc import Iterable, Iterator
from typing import IO

from jobqueue.batchfiles import BatchRow
from jobqueue.jobs import JobSpec


def chat_spec(row: BatchRow, max_attempts: int) -> JobSpec:
    payload: dict = {"messages": row.messages}
    for name in ("model", "max_tokens", "temperature"):
        value = getattr(row, name)
        if value is not None:
            payload[name] = value
    return JobSpec("chat", payload, priority=row.priority, max_attempts=max_attempts,
                   idempotency_key=row.idempotency_key, metadata=row.metadata)


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


def write_jsonl(records: Iterable[dict], out: IO[str]) -> int:
    count = 0
    for record in records:
        out.write(json.dumps(record, ensure_ascii=False, default=str) + "\n")
        count += 1
    return count


CSV_COLUMNS = ("id", "state", "prompt", "answer", "model", "fallback", "cached",
               "total_tokens", "attempts", "error")


def write_csv(records: Iterable[dict], metadata_keys: list[str], out: IO[str]) -> int:
    writer = csv.writer(out)
    writer.writerow([*metadata_keys, *CSV_COLUMNS])
    count = 0
    for r in records:
        messages = r["messages"] or []
        prompt = next((m.get("content") for m in reversed(messages) if m.get("role") == "user"),
                      None)
        usage = r["usage"] or {}
        values = {"prompt": prompt, "total_tokens": usage.get("total_tokens")}
        writer.writerow([_cell(r["metadata"].get(k)) for k in metadata_keys]
                        + [_cell(values.get(c, r.get(c))) for c in CSV_COLUMNS])
        count += 1
    return count


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
