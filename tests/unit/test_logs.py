"""Log lines held back behind a progress bar (jobqueue/logs.py held_back)."""

from __future__ import annotations

from jobqueue import logs


def test_held_back_keeps_at_most_limit_lines_in_memory_and_counts_the_rest(capsys):
    with logs.held_back(limit=3):
        for i in range(1000):
            logs._Stderr().write(f"line {i}\n")
        assert len(logs._held.lines) == 3 and logs._held.dropped == 997  # bounded meanwhile
    err = capsys.readouterr().err
    assert err == "line 0\nline 1\nline 2\n(997 more log lines dropped)\n"
    logs._Stderr().write("after\n")
    assert capsys.readouterr().err == "after\n"
