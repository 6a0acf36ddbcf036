"""Read a batch file (JSONL or CSV) into validated rows for `jobqueue batch submit`.

No database here. The CLI runs validate() over the whole file first, so that a typo on line
90,000 stops the batch before anything is enqueued, then streams iter_rows() into the enqueue.
Both passes read the file line by line, so memory does not grow with the file.
"""

from __future__ import annotations

import csv
import difflib
import json
import os
import re
import string
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

from jobqueue.errors import BatchFileError as BatchFileError
from jobqueue.errors import format_location
from jobqueue.jobs import (
    MAX_NAME_LENGTH,
    MAX_PARENTS,
    PARENT_FAILURE_POLICIES,
    PRIORITIES,
    PRIORITY_RANGE,
)

# Workflows: `ref` names a row; `depends_on` lists the refs of earlier rows (or ids of
# existing jobs) the row's job waits for; `on_parent_failure` is cancel (default) or run.
DEPENDENCY_FIELDS = ("ref", "depends_on", "on_parent_failure")
FIELDS = ("prompt", "messages", "model", "max_tokens", "temperature", "priority",
          "idempotency_key", "metadata", *DEPENDENCY_FIELDS)
ROLES = ("system", "user", "assistant", "tool", "developer")
# Reserved CSV columns, parsed into fields with or without a template; `metadata.NAME` columns
# give metadata key NAME, and any other column (not used by the template) becomes metadata.
CSV_FIELDS = ("prompt", "messages", "model", "max_tokens", "temperature", "priority",
              "idempotency_key", *DEPENDENCY_FIELDS)
EXTENSIONS = {".jsonl": "jsonl", ".ndjson": "jsonl", ".csv": "csv"}
PROGRESS_EVERY = 1000  # rows between on_progress calls
# max_tokens as providers take it (a 32-bit integer); temperature as OpenAI's API bounds it.
MAX_TOKENS_RANGE = (1, 2**31 - 1)
TEMPERATURE_RANGE = (0, 2)

_FIELD_SET = frozenset(FIELDS)
_ROLE_SET = frozenset(ROLES)
_BOM = b"\xef\xbb\xbf"
_ROLES_TEXT = ", ".join(ROLES)
_PRIORITY_TEXT = "an integer or one of " + ", ".join(PRIORITIES)

Progress = Callable[[int], None]


@dataclass(slots=True)
class BatchRow:
    """One validated row, already in chat form so the enqueue needs no further checks."""

    line: int
    messages: list[dict[str, Any]]
    model: str | None = None
    max_tokens: int | None = None
    temperature: float | None = None
    priority: int | str | None = None
    idempotency_key: str | None = None
    metadata: dict[str, Any] = field(default_factory=dict)
    ref: str | None = None
    depends_on: list[str | int] | None = None
    on_parent_failure: str | None = None


@dataclass
class Report:
    """What validate() found; `errors` keeps the first max_errors, `more_errors` counts the rest."""

    path: str
    rows: int = 0
    errors: list[str] = field(default_factory=list)
    more_errors: int = 0

    @property
    def ok(self) -> bool:
        return not self.errors and not self.more_errors

    @property
    def error_count(self) -> int:
        return len(self.errors) + self.more_errors

    def lines(self) -> list[str]:
        """The errors as printed, with a note of how many were not listed."""
        out = list(self.errors)
        if self.more_errors:
            s = "" if self.more_errors == 1 else "s"
            out.append(f"{self.path}: ... and {self.more_errors} more error{s}")
        return out

    def __str__(self) -> str:
        if self.ok:
            return f"{self.path}: {self.rows} rows, no errors"
        return "\n".join(self.lines())


def validate(path: str | os.PathLike[str], template: str | None = None,
             fmt: str | None = None, max_errors: int = 20,
             on_progress: Progress | None = None) -> Report:
    """Check the whole file in one streaming pass, collecting errors instead of stopping."""
    name = os.fspath(path)
    report = Report(name)
    counts = _Counts()
    for item in _scan(name, template, fmt, on_progress, counts):
        if type(item) is BatchRow:
            continue
        if len(report.errors) < max_errors:
            report.errors.append(_format(name, *item))
        else:
            report.more_errors += 1
    report.rows = counts.rows
    return report


def iter_rows(path: str | os.PathLike[str], template: str | None = None,
              fmt: str | None = None,
              on_progress: Progress | None = None) -> Iterator[BatchRow]:
    """Stream the rows; raise BatchFileError at the first problem (run validate() first)."""
    name = os.fspath(path)
    for item in _scan(name, template, fmt, on_progress):
        if type(item) is BatchRow:
            yield item
        else:
            raise BatchFileError(name, *item)


class RefCheck:
    """A batch's `ref` names: each unique, and `depends_on` naming only earlier rows (so the
    rows stream into the enqueue in one pass)."""

    def __init__(self):
        self.seen: set[str] = set()

    def problems(self, row: BatchRow) -> list[tuple[str | None, str]]:
        errs: list[tuple[str | None, str]] = []
        for i, name in enumerate(row.depends_on or ()):
            if isinstance(name, str) and name not in self.seen:
                errs.append((f"depends_on[{i}]", f"no earlier row has the ref {_show(name)} "
                                                 "(a row can only wait for rows above it)"))
        if row.ref is not None:
            if row.ref in self.seen:
                errs.append(("ref", f"{_show(row.ref)} is the ref of an earlier row already"))
            self.seen.add(row.ref)
        return errs


def check_object(obj: Any, line: int = 0) -> tuple[BatchRow | None, list[tuple[str | None, str]]]:
    """Check one JSON object as a JSONL line would be checked (the API's JSON batches):
    returns the row, or None and the problems as (field, what is wrong)."""
    if not isinstance(obj, dict):
        return None, [(None, f"must be a JSON object, got {_show(obj)}")]
    errs: list[tuple[str | None, str]] = []
    row = _row_from_object(obj, line, errs)
    return (None if errs else row), errs


# --- internals --------------------------------------------------------------------------------

# A problem is (line | None, field | None, text): tuples keep the clean path cheap.
_Problem = tuple[int | None, str | None, str]


class _Counts:
    rows = 0  # non-blank records after any header, good or bad


_format = format_location


def _show(value: Any, limit: int = 60) -> str:
    """A value as JSON, shortened: people see what the file says, not Python's repr."""
    try:
        text = json.dumps(value, ensure_ascii=False)
    except (TypeError, ValueError):
        text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _reject_constant(name: str) -> Any:
    # Python's json accepts NaN and Infinity; Postgres jsonb does not.
    raise ValueError(f"{name} is not allowed")


_decode_json = json.JSONDecoder(parse_constant=_reject_constant).decode
# Only these escapes can put text Postgres refuses (NUL, lone surrogates) into a decoded string.
_RISKY_ESCAPE = re.compile(r"\\u(?:0000|[dD][89a-fA-F])")


def _not_utf8(err: UnicodeDecodeError, line_start: int) -> str:
    byte = err.object[err.start]
    text = f"not UTF-8 text (byte 0x{byte:02x} at offset {line_start + err.start})"
    if line_start == 0 and err.object[:2] in (b"\xff\xfe", b"\xfe\xff"):
        text += "; it looks like UTF-16: save the file as UTF-8"
    return text


def _scan(path: str, template: str | None, fmt: str | None, on_progress: Progress | None,
          counts: _Counts | None = None) -> Iterator[BatchRow | _Problem]:
    """Yield rows and problems in file order; the one pass both public functions share."""
    kind = _kind(path, fmt)
    if isinstance(kind, tuple):
        yield kind
        return
    plan = None
    if template is not None:
        if kind != "csv":
            yield (None, "template", "only applies to CSV files")
            return
        plan = _parse_template(template)
        if isinstance(plan, tuple):
            yield plan
            return
    try:
        f = open(path, "rb", buffering=1 << 16)  # noqa: SIM115 - closed in the finally below
    except FileNotFoundError:
        yield (None, None, "no such file")
        return
    except IsADirectoryError:
        yield (None, None, "is a directory, not a file")
        return
    except OSError as e:
        yield (None, None, f"cannot read ({e.strerror or e})")
        return
    try:
        if kind == "jsonl":
            scanned = _scan_jsonl(f, on_progress, counts or _Counts())
        else:
            scanned = _scan_csv(f, plan, on_progress, counts or _Counts())
        refs = RefCheck()
        for item in scanned:
            if type(item) is BatchRow and (item.ref is not None or item.depends_on):
                problems = refs.problems(item)
                if problems:
                    for fld, msg in problems:
                        yield (item.line, fld, msg)
                    continue
            yield item
    finally:
        f.close()


def _kind(path: str, fmt: str | None) -> str | _Problem:
    if fmt is None:
        ext = os.path.splitext(path)[1].lower()
        kind = EXTENSIONS.get(ext)
        if kind is None:
            what = f'the extension "{ext}"' if ext else "a name without an extension"
            return (None, None, f"cannot tell the format from {what}: name it .jsonl, .ndjson "
                                "or .csv, or give the format (jsonl or csv)")
        return kind
    kind = {"jsonl": "jsonl", "ndjson": "jsonl", "csv": "csv"}.get(fmt.lower())
    if kind is None:
        return (None, "format", f"expected jsonl or csv, got {fmt!r}")
    return kind


# --- JSONL ------------------------------------------------------------------------------------

def _byte_lines(f) -> Iterator[tuple[int, int, bytes]]:
    """(line number, byte offset where it starts, its bytes) of a binary file, the UTF-8 BOM
    left out of line 1. Both scanners read through it."""
    start = 0
    for line, raw in enumerate(f, 1):
        if line == 1 and raw.startswith(_BOM):
            raw, start = raw[3:], 3
        yield line, start, raw
        start += len(raw)


def _scan_jsonl(f, on_progress: Progress | None,
                counts: _Counts) -> Iterator[BatchRow | _Problem]:
    line = offset = rows = 0
    decode = _decode_json
    for line, start, raw in _byte_lines(f):
        offset = start + len(raw)
        try:
            text = raw.decode()
        except UnicodeDecodeError as e:
            rows += 1
            yield (line, None, _not_utf8(e, start))
            continue
        if not text or text.isspace():
            continue
        rows += 1
        if on_progress is not None and rows % PROGRESS_EVERY == 0:
            on_progress(offset)
        try:
            obj = decode(text)
        except json.JSONDecodeError as e:
            yield (line, None, f"not valid JSON ({e.msg} at column {e.colno})")
            continue
        except ValueError as e:  # NaN, or an integer too long to convert
            yield (line, None, f"not valid JSON ({e})")
            continue
        except RecursionError:  # deeper than the decoder goes
            yield (line, None, "not valid JSON (nested too deeply)")
            continue
        if type(obj) is not dict:
            yield (line, None, f'expected a JSON object like {{"prompt": "..."}}, got {_show(obj)}')
            continue
        errs: list[tuple[str | None, str]] = []
        row = _row_from_object(obj, line, errs)
        if "\\u" in text and _RISKY_ESCAPE.search(text):
            _check_strings(obj, "", errs)
            if errs:
                row = None
        if row is None:
            for fld, msg in errs:
                yield (line, fld, msg)
        else:
            yield row
    counts.rows = rows
    if line == 0:
        yield (None, None, "empty file")
    elif rows == 0:
        yield (None, None, "no rows (only blank lines)")
    if on_progress is not None:
        on_progress(offset)


def _unknown_field(key: str) -> str:
    close = difflib.get_close_matches(key, FIELDS, n=1)
    hint = f' (did you mean "{close[0]}"?)' if close else f" (allowed: {', '.join(FIELDS)})"
    return "unknown field" + hint


def _row_from_object(obj: dict[str, Any], line: int,
                     errs: list[tuple[str | None, str]]) -> BatchRow | None:
    """Check one JSONL object; JSON null counts as absent, as exporters often write it."""
    if not _FIELD_SET.issuperset(obj):
        for key in obj:
            if key not in _FIELD_SET:
                errs.append((key, _unknown_field(key)))
    get = obj.get
    prompt = get("prompt")
    messages = get("messages")
    if prompt is not None:
        if messages is not None:
            errs.append((None, 'give "prompt" or "messages", not both'))
        elif type(prompt) is not str:
            errs.append(("prompt", f"must be a string, got {_show(prompt)}"))
        elif not prompt or prompt.isspace():
            errs.append(("prompt", "must not be empty or only whitespace"))
        else:
            messages = [{"role": "user", "content": prompt}]
    elif messages is not None:
        _check_messages(messages, errs)
    elif not errs:  # with a misspelt field, "did you mean" already says it
        errs.append((None, 'needs "prompt" or "messages"'))

    model = get("model")
    if model is not None and (type(model) is not str or not model or model.isspace()):
        errs.append(("model", f"must be a non-empty string, got {_show(model)}"))
    max_tokens = get("max_tokens")
    if max_tokens is not None and (type(max_tokens) is not int or max_tokens < 1):
        errs.append(("max_tokens", f"must be a positive integer, got {_show(max_tokens)}"))
    elif max_tokens is not None and max_tokens > MAX_TOKENS_RANGE[1]:
        errs.append(("max_tokens", f"must be at most {MAX_TOKENS_RANGE[1]}, got {max_tokens}"))
    temperature = get("temperature")
    if temperature is not None:
        lo, hi = TEMPERATURE_RANGE
        if type(temperature) in (int, float) and lo <= temperature <= hi:
            temperature = float(temperature)
        else:
            errs.append(("temperature", f"must be a number from {lo} to {hi}, "
                                        f"got {_show(temperature)}"))
    priority = get("priority")
    if priority is not None:
        problem = _priority_problem(priority)
        if problem:
            errs.append(("priority", problem))
    key = get("idempotency_key")
    if key is not None and (type(key) is not str or not key):
        errs.append(("idempotency_key", f"must be a non-empty string, got {_show(key)}"))
    elif key is not None and len(key) > MAX_NAME_LENGTH:
        errs.append(("idempotency_key", f"longer than {MAX_NAME_LENGTH} characters"))
    metadata = get("metadata")
    if metadata is None:
        metadata = {}
    elif type(metadata) is not dict:
        errs.append(("metadata", f"must be an object, got {_show(metadata)}"))
    ref, depends_on, policy = get("ref"), get("depends_on"), get("on_parent_failure")
    if ref is not None or depends_on is not None or policy is not None:
        _check_dependencies(ref, depends_on, policy, errs)
    if errs:
        return None
    return BatchRow(line, messages, model, max_tokens, temperature, priority, key, metadata,
                    ref, depends_on, policy)


def _check_dependencies(ref: Any, depends_on: Any, policy: Any,
                        errs: list[tuple[str | None, str]]) -> None:
    if ref is not None and (type(ref) is not str or not ref or ref.isspace()):
        errs.append(("ref", f"must be a non-empty string, got {_show(ref)}"))
    if depends_on is not None:
        if type(depends_on) is not list:
            errs.append(("depends_on", "must be a list of refs of earlier rows (or job ids), "
                                       f"got {_show(depends_on)}"))
        elif len(depends_on) > MAX_PARENTS:
            errs.append(("depends_on", f"at most {MAX_PARENTS} entries, got {len(depends_on)}"))
        else:
            for i, parent in enumerate(depends_on):
                if not ((type(parent) is str and parent and not parent.isspace())
                        or (type(parent) is int and parent > 0)):
                    errs.append((f"depends_on[{i}]", "must be the ref of an earlier row or a "
                                                     f"job id, got {_show(parent)}"))
    if policy is not None and policy not in PARENT_FAILURE_POLICIES:
        errs.append(("on_parent_failure", f"must be one of "
                                          f"{', '.join(PARENT_FAILURE_POLICIES)}, got "
                                          f"{_show(policy)}"))


def _priority_problem(value: Any) -> str | None:
    if type(value) is int:
        lo, hi = PRIORITY_RANGE
        if lo <= value <= hi:
            return None
        return f"must be from {lo} to {hi}, got {value}"
    if type(value) is str and value in PRIORITIES:
        return None
    return f"must be {_PRIORITY_TEXT}, got {_show(value)}"


def _check_messages(messages: Any, errs: list[tuple[str | None, str]]) -> None:
    """OpenAI chat shape: say which element is wrong and how, so people can fix it at once."""
    if type(messages) is not list:
        errs.append(("messages", f"must be a list of chat messages, got {_show(messages)}"))
        return
    if not messages:
        errs.append(("messages", "must not be an empty list"))
        return
    for i, msg in enumerate(messages):
        where = f"messages[{i}]"
        if type(msg) is not dict:
            errs.append((where, f'must be an object with "role" and "content", got {_show(msg)}'))
            continue
        role = msg.get("role")
        if role is None:
            errs.append((where, 'missing "role"'))
        elif type(role) is not str or role not in _ROLE_SET:
            errs.append((where + ".role", f"must be one of {_ROLES_TEXT}, got {_show(role)}"))
        content = msg.get("content")
        if type(content) is str:
            continue
        if content is None:
            # An assistant turn that only calls tools has no content.
            if not (role == "assistant" and msg.get("tool_calls")):
                errs.append((where, 'missing "content"'))
        elif type(content) is list:
            if not content:
                errs.append((where + ".content", "must not be an empty list"))
            for j, part in enumerate(content):
                if type(part) is not dict or type(part.get("type")) is not str:
                    errs.append((f"{where}.content[{j}]",
                                 f'must be an object with a "type", got {_show(part)}'))
        else:
            errs.append((where + ".content",
                         f"must be a string or a list of content parts, got {_show(content)}"))


def _check_strings(value: Any, where: str, errs: list[tuple[str | None, str]]) -> None:
    """Find text Postgres would refuse (NUL, lone surrogates), naming the field it is in."""
    if type(value) is str:
        if "\x00" in value:
            errs.append((where or None, "contains a NUL character (\\u0000), "
                                        "which Postgres cannot store"))
        else:
            try:
                value.encode()
            except UnicodeEncodeError:
                errs.append((where or None, "contains a lone surrogate escape (\\ud800-\\udfff), "
                                            "which is not valid Unicode"))
    elif type(value) is dict:
        for k, v in value.items():
            path = f"{where}.{k}" if where else k
            _check_strings(k, path, errs)
            _check_strings(v, path, errs)
    elif type(value) is list:
        for i, v in enumerate(value):
            _check_strings(v, f"{where}[{i}]", errs)


# --- CSV --------------------------------------------------------------------------------------

class _Lines:
    """Feeds csv.reader decoded lines while keeping the byte offset and any decoding errors.

    A bad byte does not end the pass: the line is decoded with replacement and the error is
    kept for the scanner to report against the record, so validate() can go on.
    """

    def __init__(self, f):
        self.f = f
        self.offset = 0
        self.problems: list[_Problem] = []
        self.nul = False

    def __iter__(self) -> Iterator[str]:
        for line, start, raw in _byte_lines(self.f):
            self.offset = start + len(raw)
            try:
                text = raw.decode()
            except UnicodeDecodeError as e:
                self.problems.append((line, None, _not_utf8(e, start)))
                text = raw.decode(errors="replace")
            if "\x00" in text:
                self.nul = True
            yield text


_CSV_HINTS = {
    "unexpected end of data": " (a quoted cell is never closed)",
    "field larger than field limit": " (a cell that long, or a quoted cell never closed)",
}


def _parse_template(template: str) -> list[tuple[str, str | None]] | _Problem:
    """Split the template into (literal, column) pieces; only plain {column} fields."""
    try:
        parsed = list(string.Formatter().parse(template))
    except ValueError as e:
        return (None, "template", str(e))
    pieces: list[tuple[str, str | None]] = []
    for literal, name, spec, conversion in parsed:
        if name is not None:
            if (not name.strip() or name.strip().isdigit() or spec or conversion
                    or "." in name or "[" in name):
                text = "{" + name + (f"!{conversion}" if conversion else "")
                text += (f":{spec}" if spec else "") + "}"
                return (None, "template", f"only plain {{column}} placeholders are allowed, got "
                                          f"{text} (write {{{{ and }}}} for literal braces)")
            name = name.strip()
        pieces.append((literal, name))
    return pieces


def _scan_csv(f, template: list[tuple[str, str | None]] | None, on_progress: Progress | None,
              counts: _Counts) -> Iterator[BatchRow | _Problem]:
    src = _Lines(f)
    reader = csv.reader(src, strict=True)
    header: list[str] | None = None
    header_line = 0
    row_fn = None
    width = rows = 0
    while True:
        start = reader.line_num + 1
        try:
            cells = next(reader)
        except StopIteration:
            break
        except csv.Error as e:
            if src.problems:
                yield from src.problems
                src.problems.clear()
            else:
                msg = str(e)
                yield (start, None, f"bad CSV: {msg}{_CSV_HINTS.get(msg.split(' (')[0], '')}")
            if header is None:
                return
            rows += 1
            continue
        if src.problems:
            yield from src.problems
            src.problems.clear()
            if header is None:
                return
            rows += 1
            continue
        if not any(cells):  # a blank line, or a spreadsheet's row of empty cells
            continue
        if header is None:
            header = [c.strip() for c in cells]
            header_line = start
            width = len(header)
            built = _csv_plan(header, start, template)
            if isinstance(built, list):
                yield from built
                return
            row_fn = built
            continue
        rows += 1
        if on_progress is not None and rows % PROGRESS_EVERY == 0:
            on_progress(src.offset)
        if len(cells) != width:
            yield (start, None, f"expected {width} cells as in the header (line {header_line}), "
                                f"got {len(cells)}")
            continue
        errs: list[tuple[str | None, str]] = []
        if src.nul:
            src.nul = False
            for name, cell in zip(header, cells, strict=True):
                if "\x00" in cell:
                    errs.append((name, "contains a NUL character, which Postgres cannot store"))
        row = row_fn(cells, start, errs)
        if row is None or errs:
            for fld, msg in errs:
                yield (start, fld, msg)
        else:
            yield row
    counts.rows = rows
    if header is None:
        yield (None, None, "empty file" if reader.line_num == 0 and not src.offset
               else "no header row (the file has only blank lines)")
    elif rows == 0:
        yield (header_line, None, "no rows after the header")
    if on_progress is not None:
        on_progress(src.offset)


def _csv_plan(header: list[str], line: int, template: list[tuple[str, str | None]] | None):
    """Check the header once and return the function that turns a record into a row.

    Problems come back as a list: they are reported at the header line, before any row.
    The reserved columns (CSV_FIELDS, and `metadata.NAME` for the metadata key NAME) mean the
    same with or without a template: a template fills the prompt, it never turns a reserved
    column into metadata. A `prompt` or `messages` column the template does not use is
    refused, since the template's prompt would silently replace it.
    """
    problems: list[_Problem] = []
    seen: set[str] = set()
    for i, name in enumerate(header):
        if not name:
            problems.append((line, None, f"header: column {i + 1} has no name"))
        elif name in seen:
            problems.append((line, None, f'header: column "{name}" appears more than once'))
        seen.add(name)
    columns = ", ".join(header)
    meta_keys: dict[str, str] = {}
    for name in header:
        key = name[len(METADATA_PREFIX):] if name.startswith(METADATA_PREFIX) else name
        if name in CSV_FIELDS or not name:
            continue
        if not key:
            problems.append((line, name, f'header: column "{name}" names no metadata key '
                                         f'(write "{METADATA_PREFIX}NAME")'))
        elif key in meta_keys:
            problems.append((line, name, f'header: columns "{meta_keys[key]}" and "{name}" '
                                         f'both give the metadata key "{key}"'))
        else:
            meta_keys[key] = name
    if template is not None:
        used: set[str] = set()
        for _, name in template:
            if name is not None and name not in used:
                used.add(name)
                if name not in seen:
                    problems.append((line, "template", f'placeholder {{{name}}} names no column '
                                                      f"in the header (columns: {columns})"))
        for name in ("prompt", "messages"):
            if name in seen and name not in used:
                problems.append((line, name, f'column "{name}" conflicts with the template, '
                                             f"which makes the prompt; use {{{name}}} in the "
                                             "template, or rename the column"))
        if problems:
            return problems
        return _template_row(header, template, used)
    if "prompt" not in seen and "messages" not in seen:
        problems.append((line, None, f'header has no "prompt" or "messages" column (columns: '
                                     f"{columns}); is the first line a header? Or give a "
                                     "template"))
    if problems:
        return problems
    return _plain_row(header)


METADATA_PREFIX = "metadata."


def _metadata_columns(header: list[str], used: set[str]) -> list[tuple[str, int]]:
    """(metadata key, cell index) of the columns that are metadata: every column that is not
    a reserved field nor used by the template; `metadata.NAME` gives the key NAME."""
    out = []
    for i, name in enumerate(header):
        if name in CSV_FIELDS:
            continue
        if name.startswith(METADATA_PREFIX):
            out.append((name[len(METADATA_PREFIX):], i))
        elif name not in used:
            out.append((name, i))
    return out


def _template_row(header: list[str], template: list[tuple[str, str | None]], used: set[str]):
    index = {name: i for i, name in enumerate(header)}
    # Renumber placeholders to cell positions so str.format does the filling in C.
    fmt = "".join(lit.replace("{", "{{").replace("}", "}}")
                  + ("" if name is None else f"{{{index[name]}}}")
                  for lit, name in template)
    fill = fmt.format
    meta = _metadata_columns(header, used)
    fields = _field_reader(index)
    dependencies = _dependency_cells(header)

    def row(cells: list[str], line: int, errs: list[tuple[str | None, str]]) -> BatchRow | None:
        prompt = fill(*cells)
        if not prompt or prompt.isspace():
            errs.append(("prompt", "must not be empty or only whitespace (after filling the "
                                   "template)"))
            return None
        row = BatchRow(line, [{"role": "user", "content": prompt}],
                       metadata={name: cells[i] for name, i in meta})
        fields(cells, row, errs)
        row.ref, row.depends_on, row.on_parent_failure = dependencies(cells, errs)
        return None if errs else row

    return row


def _plain_row(header: list[str]):
    index = {name: i for i, name in enumerate(header)}
    pi = index.get("prompt")
    mi = index.get("messages")
    meta = _metadata_columns(header, set())
    fields = _field_reader(index)
    dependencies = _dependency_cells(header)

    def row(cells: list[str], line: int, errs: list[tuple[str | None, str]]) -> BatchRow | None:
        prompt = cells[pi] if pi is not None else ""
        has_prompt = bool(prompt) and not prompt.isspace()
        raw_messages = cells[mi].strip() if mi is not None else ""
        messages: Any = None
        if has_prompt and raw_messages:
            errs.append((None, 'give "prompt" or "messages", not both'))
        elif has_prompt:
            messages = [{"role": "user", "content": prompt}]
        elif raw_messages:
            try:
                messages = _decode_json(raw_messages)
            except json.JSONDecodeError as e:
                errs.append(("messages", f"not valid JSON ({e.msg} at column {e.colno})"))
            except ValueError as e:
                errs.append(("messages", f"not valid JSON ({e})"))
            except RecursionError:
                errs.append(("messages", "not valid JSON (nested too deeply)"))
            else:
                _check_messages(messages, errs)
                _check_strings(messages, "messages", errs)
        elif pi is not None and mi is None:
            errs.append(("prompt", "must not be empty or only whitespace"))
        elif mi is not None and pi is None:
            errs.append(("messages", "is empty"))
        else:
            errs.append((None, 'needs "prompt" or "messages"'))
        row = BatchRow(line, messages, metadata={name: cells[i] for name, i in meta})
        fields(cells, row, errs)
        row.ref, row.depends_on, row.on_parent_failure = dependencies(cells, errs)
        return None if errs else row

    return row


def _field_reader(index: dict[str, int]):
    """The function that reads the reserved option columns (model, max_tokens, temperature,
    priority, idempotency_key) of a record into a row, appending problems to errs."""
    mo = index.get("model")
    mt = index.get("max_tokens")
    te = index.get("temperature")
    pr = index.get("priority")
    ik = index.get("idempotency_key")

    def read(cells: list[str], row: BatchRow, errs: list[tuple[str | None, str]]) -> None:
        if mo is not None:
            row.model = cells[mo].strip() or None
        if mt is not None and (text := cells[mt].strip()):
            try:
                max_tokens = int(text)
            except ValueError:
                errs.append(("max_tokens", f"must be a positive integer, got {_show(text)}"))
            else:
                if max_tokens < 1:
                    errs.append(("max_tokens", f"must be a positive integer, got {text}"))
                elif max_tokens > MAX_TOKENS_RANGE[1]:  # as the JSONL check: a 32-bit integer
                    errs.append(("max_tokens",
                                 f"must be at most {MAX_TOKENS_RANGE[1]}, got {max_tokens}"))
                row.max_tokens = max_tokens
        if te is not None and (text := cells[te].strip()):
            try:
                temperature = float(text)
            except ValueError:
                temperature = None
            if temperature is None or not 0 <= temperature <= 2:
                errs.append(("temperature", f"must be a number from 0 to 2, got {_show(text)}"))
            row.temperature = temperature
        if pr is not None and (text := cells[pr].strip()):
            priority: int | str
            if text in PRIORITIES:
                priority = text
            else:
                try:
                    priority = int(text)
                except ValueError:
                    priority = text
                problem = _priority_problem(priority)
                if problem:
                    errs.append(("priority", problem))
            row.priority = priority
        if ik is not None:
            row.idempotency_key = cells[ik].strip() or None

    return read


def _dependency_cells(header: list[str]):
    """The CSV columns ref, depends_on (refs or job ids, separated by spaces or commas) and
    on_parent_failure, parsed and checked as the JSONL fields; empty cells mean absent."""
    index = {name: header.index(name) for name in DEPENDENCY_FIELDS if name in header}
    if not index:
        return lambda cells, errs: (None, None, None)

    def parse(cells: list[str], errs: list[tuple[str | None, str]]):
        values = {name: cells[i].strip() or None for name, i in index.items()}
        depends_on = None
        if values.get("depends_on"):
            depends_on = [int(t) if t.isascii() and t.isdigit() else t
                          for t in re.split(r"[\s,]+", values["depends_on"]) if t]
        _check_dependencies(values.get("ref"), depends_on, values.get("on_parent_failure"),
                            errs)
        return values.get("ref"), depends_on, values.get("on_parent_failure")

    return parse
