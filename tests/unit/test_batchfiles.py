"""The batch file reader: good files become rows, every problem reads `FILE:LINE: field: ...`."""

from __future__ import annotations

import json
import time
import tracemalloc

import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from jobqueue.batches.files import BatchFileError, BatchRow, Report, iter_rows, validate


def write(tmp_path, name: str, text: str | bytes):
    path = tmp_path / name
    if isinstance(text, str):
        text = text.encode()
    path.write_bytes(text)
    return path


def jsonl(*objs) -> str:
    return "".join((o if isinstance(o, str) else json.dumps(o)) + "\n" for o in objs)


def errors_of(path, **kw) -> list[str]:
    return validate(path, **kw).errors


def first_error(path, **kw) -> BatchFileError:
    with pytest.raises(BatchFileError) as info:
        list(iter_rows(path, **kw))
    return info.value


# --- good files ------------------------------------------------------------------------------

def test_jsonl_good_rows(tmp_path):
    msgs = [{"role": "system", "content": "Be terse."},
            {"role": "user", "content": [{"type": "text", "text": "hi"}]},
            {"role": "assistant", "content": None, "tool_calls": [{"id": "1"}]},
            {"role": "tool", "content": "42", "tool_call_id": "1"}]
    path = write(tmp_path, "p.jsonl", jsonl(
        {"prompt": "Hello"},
        "",
        "   ",
        {"messages": msgs, "model": "gpt-4o-mini", "max_tokens": 50, "temperature": 1,
         "priority": "high", "idempotency_key": "k1", "metadata": {"doc": 7}},
        {"prompt": "x", "priority": -5, "model": None, "metadata": None},
    ))
    assert validate(path) == Report(str(path), rows=3)
    rows = list(iter_rows(path))
    assert rows == [
        BatchRow(1, [{"role": "user", "content": "Hello"}]),
        BatchRow(4, msgs, "gpt-4o-mini", 50, 1.0, "high", "k1", {"doc": 7}),
        BatchRow(5, [{"role": "user", "content": "x"}], priority=-5),
    ]
    assert type(rows[1].temperature) is float


def test_jsonl_bom_crlf_and_ndjson(tmp_path):
    path = write(tmp_path, "p.ndjson", b'\xef\xbb\xbf{"prompt": "a"}\r\n\r\n{"prompt": "b"}')
    assert [(r.line, r.messages[0]["content"]) for r in iter_rows(path)] == [(1, "a"), (3, "b")]
    assert validate(path).ok


def test_csv_template_metadata_multiline_bom_crlf(tmp_path):
    text = ('\ufeffname,topic,lang\r\n'
            'Ann,"cats\r\nand dogs",fr\r\n'
            '\r\n'
            'Bob,"say ""hi""",de\r\n')
    path = write(tmp_path, "p.csv", text)
    template = "Write about {topic} for {name} {{in braces}}"
    assert validate(path, template=template) == Report(str(path), rows=2)
    rows = list(iter_rows(path, template=template))
    assert rows == [
        BatchRow(2, [{"role": "user",
                      "content": "Write about cats\r\nand dogs for Ann {in braces}"}],
                 metadata={"lang": "fr"}),
        BatchRow(5, [{"role": "user", "content": 'Write about say "hi" for Bob {in braces}'}],
                 metadata={"lang": "de"}),
    ]


def test_csv_template_keeps_reserved_columns_meaning(tmp_path):
    # Issue 14: with a template, priority and idempotency_key silently became metadata.
    path = write(tmp_path, "p.csv",
                 "q,model,max_tokens,priority,idempotency_key,metadata.doc,lang\n"
                 "why?,gpt,64,high,k-1,7,fr\n")
    template = "Q: {q} ({lang})"
    assert validate(path, template=template).ok
    [row] = iter_rows(path, template=template)
    assert row.messages == [{"role": "user", "content": "Q: why? (fr)"}]
    assert (row.model, row.max_tokens, row.priority, row.idempotency_key) == (
        "gpt", 64, "high", "k-1")
    assert row.metadata == {"doc": "7"}


def test_csv_template_reserved_column_errors_name_the_column(tmp_path):
    path = write(tmp_path, "p.csv", "q,priority,max_tokens\nwhy?,urgent,0\n")
    errors = errors_of(path, template="{q}")
    assert any(":2: priority:" in e for e in errors), errors
    assert any(":2: max_tokens: must be a positive integer, got 0" in e for e in errors), errors


def test_csv_template_refuses_an_unused_prompt_column(tmp_path):
    path = write(tmp_path, "p.csv", "q,prompt\nwhy?,hello\n")
    [error] = errors_of(path, template="{q}")
    assert error.startswith(f"{path}:1: prompt: column \"prompt\" conflicts with the template")
    assert validate(path, template="{q} {prompt}").ok


def test_csv_metadata_prefix_columns_and_collisions(tmp_path):
    path = write(tmp_path, "p.csv", "prompt,metadata.doc,tag\nhi,3,x\n")
    [row] = iter_rows(path)
    assert row.metadata == {"doc": "3", "tag": "x"}
    path = write(tmp_path, "q.csv", "prompt,metadata.tag,tag\nhi,3,x\n")
    [error] = errors_of(path)
    assert ':1: tag: header: columns "metadata.tag" and "tag" both give' in error
    path = write(tmp_path, "r.csv", "prompt,metadata.\nhi,3\n")
    [error] = errors_of(path)
    assert 'column "metadata." names no metadata key' in error


def test_csv_without_template_parses_recognised_columns(tmp_path):
    text = ("prompt,model,max_tokens,temperature,priority,idempotency_key,source\n"
            "Hello,gpt-4o,100,0.7,low,key-1,web\n"
            "Again,,,,,,\n"
            '"multi\nline",m, 5 ,2,7,k2,""\n')
    path = write(tmp_path, "p.csv", text)
    assert validate(path).ok
    assert list(iter_rows(path)) == [
        BatchRow(2, [{"role": "user", "content": "Hello"}], "gpt-4o", 100, 0.7, "low", "key-1",
                 {"source": "web"}),
        BatchRow(3, [{"role": "user", "content": "Again"}], metadata={"source": ""}),
        BatchRow(4, [{"role": "user", "content": "multi\nline"}], "m", 5, 2.0, 7, "k2",
                 {"source": ""}),
    ]


def test_csv_messages_column_holds_json(tmp_path):
    msgs = [{"role": "system", "content": "S"}, {"role": "user", "content": "U"}]
    cell = json.dumps(msgs).replace('"', '""')
    path = write(tmp_path, "p.csv", f'messages,tag\n"{cell}",t\n')
    assert list(iter_rows(path)) == [BatchRow(2, msgs, metadata={"tag": "t"})]


def test_explicit_format_overrides_extension(tmp_path):
    path = write(tmp_path, "prompts.txt", jsonl({"prompt": "a"}))
    assert validate(path, fmt="jsonl").ok
    assert len(list(iter_rows(path, fmt="JSONL"))) == 1
    csv_path = write(tmp_path, "data.jsonl", "prompt\nhi\n")
    assert [r.messages for r in iter_rows(csv_path, fmt="csv")] == [
        [{"role": "user", "content": "hi"}]]


# --- JSONL errors ----------------------------------------------------------------------------

@pytest.mark.parametrize(("line", "expected"), [
    ('{"prompt": "hi", "max_tokens": -3}', "max_tokens: must be a positive integer, got -3"),
    ('{"prompt": "hi", "max_tokens": 2.5}', "max_tokens: must be a positive integer, got 2.5"),
    ('{"prompt": "hi", "max_tokens": true}', "max_tokens: must be a positive integer, got true"),
    ('{"prompt": "hi" "model": "m"}', "not valid JSON (Expecting ',' delimiter at column 17)"),
    ('{"prompt": NaN}', "not valid JSON (NaN is not allowed)"),
    ('["hi"]', 'expected a JSON object like {"prompt": "..."}, got ["hi"]'),
    ('{"promt": "hi"}', 'promt: unknown field (did you mean "prompt"?)'),
    ('{"prompt": "hi", "zzz": 1}',
     "zzz: unknown field (allowed: prompt, messages, model, max_tokens, temperature, priority, "
     "idempotency_key, metadata, ref, depends_on, on_parent_failure)"),
    ('{"model": "m"}', 'needs "prompt" or "messages"'),
    ('{"prompt": "a", "messages": []}', 'give "prompt" or "messages", not both'),
    ('{"prompt": ""}', "prompt: must not be empty or only whitespace"),
    ('{"prompt": " \\n\\t"}', "prompt: must not be empty or only whitespace"),
    ('{"prompt": 42}', "prompt: must be a string, got 42"),
    ('{"messages": []}', "messages: must not be an empty list"),
    ('{"messages": "hi"}', 'messages: must be a list of chat messages, got "hi"'),
    ('{"messages": [{"role": "user", "content": "a"}, "b"]}',
     'messages[1]: must be an object with "role" and "content", got "b"'),
    ('{"messages": [{"content": "a"}]}', 'messages[0]: missing "role"'),
    ('{"messages": [{"role": "bot", "content": "a"}]}',
     'messages[0].role: must be one of system, user, assistant, tool, developer, got "bot"'),
    ('{"messages": [{"role": "user"}]}', 'messages[0]: missing "content"'),
    ('{"messages": [{"role": "user", "content": 5}]}',
     "messages[0].content: must be a string or a list of content parts, got 5"),
    ('{"messages": [{"role": "user", "content": []}]}',
     "messages[0].content: must not be an empty list"),
    ('{"messages": [{"role": "user", "content": [{"type": "text"}, {"text": "x"}]}]}',
     'messages[0].content[1]: must be an object with a "type", got {"text": "x"}'),
    ('{"prompt": "a", "model": ""}', 'model: must be a non-empty string, got ""'),
    ('{"prompt": "a", "temperature": 2.5}', "temperature: must be a number from 0 to 2, got 2.5"),
    ('{"prompt": "a", "temperature": "hot"}',
     'temperature: must be a number from 0 to 2, got "hot"'),
    ('{"prompt": "a", "priority": "urgent"}',
     'priority: must be an integer or one of high, normal, low, got "urgent"'),
    ('{"prompt": "a", "priority": 40000}', "priority: must be from -32768 to 32767, got 40000"),
    ('{"prompt": "a", "idempotency_key": 3}', "idempotency_key: must be a non-empty string, got 3"),
    ('{"prompt": "a", "metadata": [1]}', "metadata: must be an object, got [1]"),
    ('{"prompt": "a\\u0000b"}',
     "prompt: contains a NUL character (\\u0000), which Postgres cannot store"),
    ('{"prompt": "a", "metadata": {"k": ["\\ud800"]}}',
     "metadata.k[0]: contains a lone surrogate escape (\\ud800-\\udfff), which is not valid "
     "Unicode"),
])
def test_jsonl_error_messages(tmp_path, line, expected):
    path = write(tmp_path, "prompts.jsonl", jsonl({"prompt": "fine"}, "", line))
    assert errors_of(path) == [f"{path}:3: {expected}"]
    err = first_error(path)
    assert str(err) == f"{path}:3: {expected}"
    assert err.line == 3


def test_error_message_uses_the_path_as_given(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    write(tmp_path, "prompts.jsonl", jsonl({"prompt": "a"}, {"prompt": "b", "max_tokens": -3}))
    err = first_error("prompts.jsonl")
    assert str(err) == "prompts.jsonl:2: max_tokens: must be a positive integer, got -3"
    assert (err.path, err.line, err.field) == ("prompts.jsonl", 2, "max_tokens")
    assert err.problem == "must be a positive integer, got -3"
    assert isinstance(err, ValueError)


def test_validate_reports_every_bad_field_of_a_row(tmp_path):
    path = write(tmp_path, "p.jsonl", jsonl({"prompt": "a", "max_tokens": 0, "temperature": -1}))
    assert errors_of(path) == [
        f"{path}:1: max_tokens: must be a positive integer, got 0",
        f"{path}:1: temperature: must be a number from 0 to 2, got -1",
    ]


def test_iter_rows_yields_good_rows_then_raises_at_first_bad(tmp_path):
    path = write(tmp_path, "p.jsonl", jsonl({"prompt": "a"}, {"prompt": "b"}, "{oops",
                                            {"prompt": ""}))
    seen = []
    with pytest.raises(BatchFileError) as info:
        for row in iter_rows(path):
            seen.append(row.line)
    assert seen == [1, 2]
    assert str(info.value) == (f"{path}:3: not valid JSON (Expecting property name enclosed in "
                               "double quotes at column 2)")


# --- CSV errors ------------------------------------------------------------------------------

@pytest.mark.parametrize(("text", "expected"), [
    ("prompt,max_tokens\nhi,-3\n", "2: max_tokens: must be a positive integer, got -3"),
    ("prompt,max_tokens\nhi,lots\n", '2: max_tokens: must be a positive integer, got "lots"'),
    ("prompt,max_tokens\nhi,99999999999\n",
     "2: max_tokens: must be at most 2147483647, got 99999999999"),
    ("prompt,temperature\nhi,3\n", '2: temperature: must be a number from 0 to 2, got "3"'),
    ("prompt,temperature\nhi,nan\n", '2: temperature: must be a number from 0 to 2, got "nan"'),
    ("prompt,priority\nhi,High\n",
     '2: priority: must be an integer or one of high, normal, low, got "High"'),
    ("prompt,priority\nhi,99999\n", "2: priority: must be from -32768 to 32767, got 99999"),
    ("prompt,x\n  ,a\n", "2: prompt: must not be empty or only whitespace"),
    ("prompt,x\nhi,a,b\n", "2: expected 2 cells as in the header (line 1), got 3"),
    ("prompt,x\n\nhi\n", "3: expected 2 cells as in the header (line 1), got 1"),
    ('prompt,x\nhi,"a\nb",c\n', "2: expected 2 cells as in the header (line 1), got 3"),
    ('prompt,x\nok,1\n"never closed,1\nmore\n',
     "3: bad CSV: unexpected end of data (a quoted cell is never closed)"),
    ('prompt,x\n"a" b,1\n', "2: bad CSV: ',' expected after '\"'"),
    ("messages,x\n,1\n", "2: messages: is empty"),
    ('messages\n"[{""role"": ""user""}]"\n', '2: messages[0]: missing "content"'),
    ("messages\n[oops\n", "2: messages: not valid JSON (Expecting value at column 2)"),
    ('prompt,messages\nhi,"[{""role"": ""user"", ""content"": ""x""}]"\n',
     '2: give "prompt" or "messages", not both'),
    ("prompt,messages\n,\n\n \t,\n", '4: needs "prompt" or "messages"'),
    ("prompt,note\nhi,a\x00b\n", "2: note: contains a NUL character, which Postgres cannot store"),
    ("text,other\nhi,a\n",
     '1: header has no "prompt" or "messages" column (columns: text, other); is the first '
     "line a header? Or give a template"),
    ("prompt,x,prompt\nhi,1,2\n", '1: header: column "prompt" appears more than once'),
    ("prompt,,x\nhi,1,2\n", "1: header: column 2 has no name"),
])
def test_csv_error_messages(tmp_path, text, expected):
    path = write(tmp_path, "data.csv", text)
    assert errors_of(path) == [f"{path}:{expected}"]
    assert str(first_error(path)) == f"{path}:{expected}"


def test_csv_template_missing_column_reported_once_at_header(tmp_path):
    rows = "".join(f"n{i},t{i}\n" for i in range(50))
    path = write(tmp_path, "data.csv", "\n\nname,topic\n" + rows)
    report = validate(path, template="{topic} for {nme} and {nme} in {lang}")
    assert report.errors == [
        f"{path}:3: template: placeholder {{nme}} names no column in the header "
        "(columns: name, topic)",
        f"{path}:3: template: placeholder {{lang}} names no column in the header "
        "(columns: name, topic)",
    ]
    assert report.rows == 0
    err = first_error(path, template="{nme}")
    assert (err.line, err.field) == (3, "template")


@pytest.mark.parametrize(("template", "expected"), [
    ("{a.b}", "template: only plain {column} placeholders are allowed, got {a.b} "
              "(write {{ and }} for literal braces)"),
    ("{a!r}", "template: only plain {column} placeholders are allowed, got {a!r} "
              "(write {{ and }} for literal braces)"),
    ("{0}", "template: only plain {column} placeholders are allowed, got {0} "
            "(write {{ and }} for literal braces)"),
    ("x {}", "template: only plain {column} placeholders are allowed, got {} "
             "(write {{ and }} for literal braces)"),
    ("oops }", "template: Single '}' encountered in format string"),
])
def test_bad_template(tmp_path, template, expected):
    path = write(tmp_path, "data.csv", "a\nx\n")
    assert errors_of(path, template=template) == [f"{path}: {expected}"]


def test_template_filled_prompt_must_not_be_blank(tmp_path):
    path = write(tmp_path, "data.csv", "a,b\nx,1\n  ,2\n")
    assert errors_of(path, template="{a}") == [
        f"{path}:3: prompt: must not be empty or only whitespace (after filling the template)"]


def test_template_only_for_csv(tmp_path):
    path = write(tmp_path, "p.jsonl", jsonl({"prompt": "a"}))
    assert errors_of(path, template="{a}") == [f"{path}: template: only applies to CSV files"]


# --- file-level errors -----------------------------------------------------------------------

def test_file_level_errors(tmp_path):
    missing = tmp_path / "nope.jsonl"
    assert errors_of(missing) == [f"{missing}: no such file"]
    err = first_error(missing)
    assert (err.line, err.field) == (None, None)

    folder = tmp_path / "dir.csv"
    folder.mkdir()
    assert errors_of(folder) == [f"{folder}: is a directory, not a file"]

    for name in ("e.jsonl", "e.csv"):
        empty = write(tmp_path, name, "")
        assert errors_of(empty) == [f"{empty}: empty file"]
        assert str(first_error(empty)) == f"{empty}: empty file"

    blank = write(tmp_path, "b.jsonl", "\n  \n\r\n")
    assert errors_of(blank) == [f"{blank}: no rows (only blank lines)"]
    blank_csv = write(tmp_path, "b.csv", "\ufeff\n\n")
    assert errors_of(blank_csv) == [f"{blank_csv}: no header row (the file has only blank lines)"]
    header_only = write(tmp_path, "h.csv", "prompt,x\r\n")
    assert errors_of(header_only) == [f"{header_only}:1: no rows after the header"]


def test_format_errors(tmp_path):
    path = write(tmp_path, "prompts.txt", "x")
    assert errors_of(path) == [
        f'{path}: cannot tell the format from the extension ".txt": name it .jsonl, .ndjson '
        "or .csv, or give the format (jsonl or csv)"]
    assert errors_of(path, fmt="xml") == [f"{path}: format: expected jsonl or csv, got 'xml'"]
    bare = write(tmp_path, "prompts", "x")
    assert "a name without an extension" in errors_of(bare)[0]


def test_not_utf8(tmp_path):
    path = write(tmp_path, "p.jsonl", b'{"prompt": "a"}\n{"prompt": "caf\xe9"}\n{"prompt": "b"}\n')
    assert errors_of(path) == [f"{path}:2: not UTF-8 text (byte 0xe9 at offset 31)"]
    with pytest.raises(BatchFileError, match=r":2: not UTF-8 text"):
        list(iter_rows(path))

    csv_path = write(tmp_path, "p.csv", b'prompt,x\nok,1\n"multi\nli\xffne",2\nok,3\n')
    report = validate(csv_path)
    assert report.errors == [f"{csv_path}:4: not UTF-8 text (byte 0xff at offset 23)"]
    assert report.rows == 3

    utf16 = write(tmp_path, "w.csv", "prompt\nhi\n".encode("utf-16"))
    assert errors_of(utf16) == [f"{utf16}:1: not UTF-8 text (byte 0xff at offset 0); it looks "
                                "like UTF-16: save the file as UTF-8"]


# --- validate limits, streaming, progress ----------------------------------------------------

def test_validate_stops_listing_at_max_errors(tmp_path):
    lines = [{"prompt": "ok"}] + [{"prompt": "x", "max_tokens": -i} for i in range(1, 31)]
    path = write(tmp_path, "p.jsonl", jsonl(*lines))
    report = validate(path, max_errors=5)
    assert report.rows == 31
    assert not report.ok
    assert report.errors == [
        f"{path}:{i + 1}: max_tokens: must be a positive integer, got -{i}" for i in range(1, 6)]
    assert report.more_errors == 25
    assert report.error_count == 30
    assert report.lines()[-1] == f"{path}: ... and 25 more errors"
    assert str(report).splitlines() == report.lines()
    assert len(validate(path).errors) == 20


def big_jsonl(tmp_path, n=100_000):
    path = tmp_path / "big.jsonl"
    with path.open("w") as f:
        for i in range(n):
            f.write(json.dumps({"prompt": f"Summarize item {i} in one short line.",
                                "max_tokens": 64, "metadata": {"i": i}}) + "\n")
    return path


def test_iter_rows_streams_first_row_before_reading_the_rest(tmp_path):
    path = big_jsonl(tmp_path)
    size = path.stat().st_size
    seen: list[int] = []
    rows = iter_rows(path, on_progress=seen.append)
    first = next(rows)
    assert first.line == 1 and seen == []
    for row in rows:
        if row.line == 2500:
            break
    # Two progress reports so far (rows 1000 and 2000), a small part of the file.
    assert len(seen) == 2 and seen[1] < size / 20
    rows.close()


def test_iter_rows_memory_stays_flat(tmp_path):
    path = big_jsonl(tmp_path)
    size = path.stat().st_size
    tracemalloc.start()
    try:
        count = sum(1 for _ in iter_rows(path))
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert count == 100_000
    assert peak < size / 20, (peak, size)


@pytest.mark.parametrize("kind", ["jsonl", "csv"])
def test_progress_reports_bytes_read(tmp_path, kind):
    if kind == "jsonl":
        path = write(tmp_path, "p.jsonl", jsonl(*({"prompt": f"p{i}"} for i in range(3500))))
    else:
        path = write(tmp_path, "p.csv", "prompt\n" + "".join(f"p{i}\n" for i in range(3500)))
    size = path.stat().st_size
    for run in (validate, lambda p, **kw: list(iter_rows(p, **kw))):
        seen: list[int] = []
        run(path, on_progress=seen.append)
        assert len(seen) == 4  # rows 1000, 2000, 3000, then the end
        assert seen == sorted(seen) and seen[-1] == size


def test_timing_100k_lines(tmp_path, capsys):
    """Not an assertion, a measurement: `pytest -s -k timing` prints it."""
    jsonl_path = big_jsonl(tmp_path)
    csv_path = tmp_path / "big.csv"
    with csv_path.open("w") as f:
        f.write("name,topic,lang,id\n")
        f.writelines(f'person {i},"topic, {i}",fr,{i}\n' for i in range(100_000))
    template = "Write about {topic} for {name} in {lang}."
    lines = []
    for path, tmpl in ((jsonl_path, None), (csv_path, template)):
        t0 = time.perf_counter()
        report = validate(path, template=tmpl)
        t1 = time.perf_counter()
        count = sum(1 for _ in iter_rows(path, template=tmpl))
        t2 = time.perf_counter()
        assert report.ok and report.rows == count == 100_000
        lines.append(f"{path.name}: validate {t1 - t0:.2f}s, iter_rows {t2 - t1:.2f}s")
    with capsys.disabled():
        print("\n" + "\n".join(lines))


class TestDependencies:
    """Rows that wait for earlier rows: `ref`, `depends_on`, `on_parent_failure`."""

    def test_jsonl_refs_to_earlier_rows_and_job_ids(self, tmp_path):
        path = write(tmp_path, "w.jsonl", jsonl(
            {"prompt": "a", "ref": "a"},
            {"prompt": "b", "depends_on": ["a", 42], "on_parent_failure": "run"}))
        assert validate(path).ok
        rows = list(iter_rows(path))
        assert (rows[0].ref, rows[1].depends_on, rows[1].on_parent_failure) == (
            "a", ["a", 42], "run")

    def test_a_ref_must_name_an_earlier_row_once(self, tmp_path):
        path = write(tmp_path, "w.jsonl", jsonl(
            {"prompt": "a", "depends_on": ["b"]}, {"prompt": "b", "ref": "b"},
            {"prompt": "c", "ref": "b"}))
        assert errors_of(path) == [
            f'{path}:1: depends_on[0]: no earlier row has the ref "b" (a row can only wait '
            "for rows above it)",
            f'{path}:3: ref: "b" is the ref of an earlier row already']

    def test_csv_columns_with_and_without_a_template(self, tmp_path):
        plain = write(tmp_path, "p.csv", "prompt,ref,depends_on,segment\n"
                                         "a,x,,s1\nb,,\"x, 7\",s2\n")
        rows = list(iter_rows(plain))
        assert rows[1].depends_on == ["x", 7] and rows[1].metadata == {"segment": "s2"}
        templated = write(tmp_path, "t.csv", "segment,ref,depends_on,on_parent_failure\n"
                                             "smb,q1,,\nent,,q1,run\n")
        rows = list(iter_rows(templated, template="CRM for {segment}?"))
        assert rows[1].depends_on == ["q1"] and rows[1].on_parent_failure == "run"
        assert rows[1].metadata == {}  # the template used the one other column

    def test_nesting_deeper_than_the_decoder_is_a_file_line_error(self, tmp_path):
        deep = "[" * 3000 + "]" * 3000
        jsonl_path = write(tmp_path, "d.jsonl", '{"prompt": "a"}\n' + deep + "\n")
        assert errors_of(jsonl_path) == [f"{jsonl_path}:2: not valid JSON (nested too deeply)"]
        csv_path = write(tmp_path, "d.csv", f'messages\n"{deep}"\n')
        assert errors_of(csv_path) == [
            f"{csv_path}:2: messages: not valid JSON (nested too deeply)"]

    @settings(max_examples=100, deadline=None)
    @given(cell=st.text(st.characters(blacklist_categories=("Cs",),
                                      blacklist_characters="\x00\r\n\""), max_size=8))
    @example(cell="\u00b2")
    @example(cell="1 \u00b2 x")
    def test_any_csv_depends_on_cell_is_rows_or_file_line_errors(self, tmp_path_factory, cell):
        """A CSV depends_on cell of '²' (a digit to str.isdigit, no int) raised ValueError
        out of the parser instead of a FILE:LINE error."""
        path = write(tmp_path_factory.mktemp("c"), "c.csv",
                     f'prompt,ref,depends_on\na,x,\nb,,"{cell}"\n')
        report = validate(path)
        assert all(line.startswith(f"{path}:") for line in report.errors), report.errors
        if report.ok:
            assert len(list(iter_rows(path))) == 2

    @settings(max_examples=200, deadline=None)
    @given(st.lists(st.fixed_dictionaries({"prompt": st.just("p")}, optional={
        "ref": st.one_of(st.text(max_size=3), st.integers(), st.none()),
        "depends_on": st.one_of(st.lists(st.one_of(st.text(max_size=3), st.integers(
            min_value=-3, max_value=5), st.booleans(), st.floats()), max_size=3),
            st.text(max_size=3), st.integers()),
        "on_parent_failure": st.one_of(st.sampled_from(["cancel", "run", "CANCEL", ""]),
                                       st.integers())}), min_size=1, max_size=6))
    def test_any_dependency_fields_are_rows_or_file_line_errors(self, tmp_path_factory, objs):
        """Whatever the values, validation reports FILE:LINE: field problems (never an
        exception), and a file it passes streams completely."""
        path = write(tmp_path_factory.mktemp("h"), "h.jsonl", jsonl(*objs))
        report = validate(path)
        for line in report.errors:
            assert line.startswith(f"{path}:")
            assert line[len(str(path)) + 1:].split(":")[0].isdigit(), line
        if report.ok:
            assert len(list(iter_rows(path))) == len(objs)
