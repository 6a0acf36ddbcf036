"""The CLI's tables as people read them: `jobqueue status` (alignment, humanised durations,
paused queues, keys used in the last hour and `--all`), the shared table helper, and no
colour codes unless stdout is a terminal."""

from __future__ import annotations

import os
import pty
import re
import subprocess
import sys

from jobqueue.cli.common import Column, duration, table
from tests.support.helpers import ROOT, run_cli


def add_key(sql, platform: str, key_id: str, idle_seconds: int) -> None:
    sql("""INSERT INTO jobqueue.rate_buckets
           (platform, model, key_id, rpm_configured, tpm_configured, rpm, tpm, req_level,
            tok_level, updated_at, requests_total)
           VALUES (%(p)s, 'm', %(k)s, 500, 90000, 500, 90000, 10, 1000,
                   now() - make_interval(secs => %(idle)s), 12345)""",
        {"p": platform, "k": key_id, "idle": idle_seconds})


class TestTableHelper:
    def test_numbers_and_durations_right_aligned_text_left(self):
        """Numbers and durations end in the same column; text starts in the same column."""
        rows = [{"name": "a", "n": 5, "d": 497.4}, {"name": "longer", "n": 12345, "d": 3.2}]
        out = table(rows, [("name", "NAME"), ("n", "COUNT"), Column("d", "TIME", "duration")],
                    colour=False).splitlines()
        assert out == ["NAME    COUNT   TIME",
                       "a           5  8m17s",
                       "longer  12345   3.2s"]

    def test_colour_only_when_asked(self):
        """Styles (bold header, coloured states) appear with colour on, never without."""
        rows = [{"state": "dead"}]
        cols = [Column("state", "STATE", "text", lambda v: "red")]
        assert "\x1b[" in table(rows, cols, colour=True)
        assert "\x1b[" not in table(rows, cols, colour=False)
        # Alignment is measured without the codes.
        plain = table([{"s": "dead", "n": 1}, {"s": "ok", "n": 22}],
                      [Column("s", "S", "text", lambda v: "red"), ("n", "N")], colour=True)
        import click
        assert click.unstyle(plain).splitlines() == ["S      N", "dead   1", "ok    22"]

    def test_duration_is_humanised(self):
        assert [duration(s) for s in (0.25, 59.9, 497.4, 3600 * 5 + 60 * 7, 86400 * 3.5)] == [
            "0.2s", "59.9s", "8m17s", "5h07m", "3d12h"]


class TestStatus:
    def test_paused_latency_humanised_and_aligned(self, db_url, client, sql):
        """A paused queue says so, latency reads 8m17s, and counts end in one column."""
        client.enqueue_payloads("k", [{}] * 1234, queue="big")
        client.enqueue("k", queue="held")
        sql("UPDATE jobqueue.jobs SET run_at = now() - interval '497.4 seconds' "
            "WHERE queue = 'held'")
        assert run_cli("queues", "pause", "held", url=db_url).returncode == 0
        out = run_cli("status", url=db_url)
        assert out.returncode == 0, out.stderr
        assert "\x1b[" not in out.stdout  # not a terminal: no colour codes
        lines = out.stdout.splitlines()
        header = next(x for x in lines if x.startswith("QUEUE"))
        big = next(x for x in lines if x.startswith("big "))
        held = next(x for x in lines if x.startswith("held "))
        assert held.split()[1] == "paused" and big.split()[1] == "active"
        # 8m17s (or some seconds more on a busy machine), not 497.4s
        assert re.fullmatch(r"8m[1-5]\ds", held.split()[10]), held
        # WAITING is right-aligned: both numbers end where the heading ends.
        end = header.index("WAITING") + len("WAITING")
        assert big[:end].endswith(" 1234") and held[:end].endswith(" 1")
        # ... and the latency column too
        end = header.index("LATENCY") + len("LATENCY")
        assert held[:end].rstrip().endswith("s") and held[end - 1] == "s"

    def test_only_keys_used_in_the_last_hour_unless_all(self, db_url, sql):
        """Keys idle for over an hour are hidden and counted; --all lists them."""
        add_key(sql, "openai", "OPENAI_API_KEY:fresh1", 120)
        add_key(sql, "openai", "OLD_KEY:stale01", 7200)
        add_key(sql, "gemini", "OLD_GEMINI:stale02", 86400 * 3)
        out = run_cli("status", url=db_url).stdout
        assert "OPENAI_API_KEY:fresh1" in out and "stale" not in out
        assert "2 key(s) unused for over an hour not shown; --all shows them" in out
        line = next(x for x in out.splitlines() if "fresh1" in x).split()
        # idle 2 minutes when the key was added: a second or two more by the time the CLI
        # (a process of its own) reads it on a busy machine
        assert line[3:7] == ["500", "90000", "12345", "0"] and line[8] == "ok"
        assert re.fullmatch(r"2m0[0-5]s", line[7]), line
        every = run_cli("status", "--all", url=db_url).stdout
        assert "OLD_KEY:stale01" in every and "OLD_GEMINI:stale02" in every
        assert "not shown" not in every
        assert "3d00h" in every  # last used, humanised

    def test_colour_on_a_terminal(self, db_url, client):
        """On a terminal the header is bold (ANSI codes); NO_COLOR turns it off."""
        client.enqueue("k", queue="tty")

        def run_on_tty(extra_env: dict) -> str:
            leader, follower = pty.openpty()
            env = os.environ | {"DATABASE_URL": db_url, "LOG_FORMAT": "json"} | extra_env
            env.pop("NO_COLOR", None) if "NO_COLOR" not in extra_env else None
            proc = subprocess.Popen([sys.executable, "-m", "jobqueue", "status"], cwd=ROOT,
                                    env=env, stdout=follower, stderr=subprocess.DEVNULL)
            os.close(follower)
            chunks = []
            while True:
                try:
                    data = os.read(leader, 65536)
                except OSError:  # EIO: the child closed the terminal
                    break
                if not data:
                    break
                chunks.append(data)
            proc.wait(60)
            os.close(leader)
            return b"".join(chunks).decode()

        assert "\x1b[1m" in run_on_tty({})
        assert "\x1b[" not in run_on_tty({"NO_COLOR": "1"})
