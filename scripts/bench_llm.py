#!/usr/bin/env python
"""Benchmark jobqueue's LLM platform (shared Postgres rate limiter) against a plain-SDK
baseline, both against the OpenAI-compatible simulator on 127.0.0.1.

    python scripts/bench_llm.py              # the spec: 4,000 calls
    /tmp/venv/bin/python scripts/bench_llm.py --jobs 400 --warmup 3 --tail 3  # a quick look

Setup (the defaults): the simulator (`python -m jobqueue.sim`, its own process) with 2
keys of 600 RPM and 60,000 TPM each, 0.3 s latency +/- 0.1 s jitter; its buckets start full
and refill continuously, as OpenAI's do. Every request costs ceil(prompt chars / 4) +
max_tokens tokens against TPM, both at the simulator and in jobqueue's limiter: 240 characters
+ max_tokens 40 = 100 tokens, so RPM (20 req/s over both keys) and TPM (2,000 tokens/s) bind at
the same rate; the answers use about 37 of the 40 completion tokens. Each system starts from a
fresh simulator process with identical settings.

- jobqueue: a fresh database (--db-name, dropped and recreated), a generated jobqueue.toml
  (platform `sim`, keys from BENCH_LLM_KEY_n variables), 2 worker processes
  `python -m jobqueue --log-level WARNING worker --platform sim --concurrency 200`. Once both
  are registered, 4,000 chat jobs (temperature 1, so the cache never answers) are enqueued
  with one `Client.enqueue_many`; done when every job is in jobqueue.finished.
- baseline: 2 processes of scripts/bench_llm_baseline.py, each making half of the same calls
  with `AsyncOpenAI(max_retries=2)` (the SDK default; --baseline-max-retries), an
  asyncio.Semaphore(200), call i on key i % 2; a call the SDK gives up on is made again (see
  that file), so all of them complete. Both processes start on one go signal.
- in-flight probe (--no-probe to skip), after both runs: each system again with a fresh
  simulator without limits, 2 s answers and 2 x workers x concurrency calls (limits in
  jobqueue.toml raised out of the way), so that each process really has about --concurrency
  HTTP calls in flight (in the rate-limited run most of jobqueue's 200 jobs per process wait
  in the limiter); it reports the simulator's max in flight and each process's peak RSS.

Figures, from the simulator's per-second timeline of accepted requests and its counters:
steady state = the seconds from the first accepted request + --warmup (and 5 s after the
provider's initial burst, every key's full bucket, is spent) to the last one - --tail;
achieved fraction = accepted in the steady state / (its seconds x the limit of all keys);
429 share = 429s / all requests the simulator saw; worst 10 s = the most accepted in any 10
consecutive seconds on one key / the limit's 10 s share (rpm / 6); job latency = submitted ->
done (jobqueue: created_at -> finished_at; baseline: go signal -> call returned); peak RSS =
max of VmHWM at the end and VmRSS polled every 0.25 s. Progress goes to stderr, the report
(Markdown) to stdout. Every process started here is stopped whatever happens (SIGTERM, a
second SIGTERM after 3 s, then SIGKILL of its own process group; children also get SIGTERM if
this script dies); nothing but 127.0.0.1 is contacted. Exit codes: 0, 1 (a run failed: the
message says why and the logs are kept), 2 (usage), 130 (interrupted).
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import json
import math
import os
import platform
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import psycopg
from bench_llm_baseline import make_prompt, vm_kib
from benchkit import BenchError, Processes, log
from psycopg import sql

REPO = Path(__file__).resolve().parent.parent
BASELINE = Path(__file__).resolve().parent / "bench_llm_baseline.py"
PLATFORM = "sim"
LOCAL_HOSTS = ("127.0.0.1", "localhost", "::1")


def tail(path: Path, lines: int = 20) -> str:
    try:
        text = path.read_text(errors="replace").splitlines()
    except OSError:
        return "    (no log)"
    return "\n".join("    " + line[:300] for line in text[-lines:]) or "    (empty log)"


def check_alive(procs: list[subprocess.Popen], what: str) -> None:
    for p in procs:
        code = p.poll()
        if code is not None:
            raise BenchError(f"{what} (pid {p.pid}) exited with {code}; its log "
                             f"{p.log_path}:\n{tail(p.log_path)}")  # type: ignore[attr-defined]


class RssPoller:
    """Polls VmRSS of some pids in a thread; keeps each one's peak (KiB)."""

    def __init__(self, interval: float = 0.25) -> None:
        self.interval = interval
        self.peak: dict[int, int] = {}
        self._pids: list[int] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True, name="rss")

    def watch(self, pids: list[int]) -> RssPoller:
        self._pids = list(pids)
        self._thread.start()
        return self

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            for pid in self._pids:
                rss = vm_kib("VmRSS", pid)
                if rss is not None:
                    self.peak[pid] = max(self.peak.get(pid, 0), rss)

    def stop(self) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(2)


def child_env(extra: dict[str, str]) -> dict[str, str]:
    """The environment of children: no proxies (everything is on 127.0.0.1)."""
    env = {k: v for k, v in os.environ.items()
           if k.lower() not in ("http_proxy", "https_proxy", "all_proxy")}
    env["NO_PROXY"] = env["no_proxy"] = "127.0.0.1,localhost"
    env.setdefault("PYTHONUNBUFFERED", "1")
    return env | extra


# -- the simulator --------------------------------------------------------------------------

_OPENER = urllib.request.build_opener(urllib.request.ProxyHandler({}))  # never a proxy


class Simulator:
    """`python -m jobqueue.sim` in a process of its own, on a port the OS picks."""

    def __init__(self, procs: Processes, args: argparse.Namespace, workdir: Path, tag: str):
        self.procs, self.args = procs, args
        self.log_path = workdir / f"sim-{tag}.log"
        self.proc: subprocess.Popen | None = None
        self.base_url = self.root = ""

    def start(self) -> Simulator:
        a = self.args
        cmd = [sys.executable, "-m", "jobqueue.sim", "--host", "127.0.0.1",
               "--port", "0", "--latency", str(a.latency), "--jitter", str(a.jitter),
               "--seed", str(a.seed), "--limit-scope", a.sim_limit_scope,
               "--refused-spend" if a.refused_spend else "--no-refused-spend"]
        for secret in secrets(a.keys):
            cmd += ["--key", secret if a.tag and "probe" in a.tag else f"{secret}:{a.rpm}:{a.tpm}"]
        self.proc = self.procs.spawn(cmd, child_env({}), self.log_path)
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            check_alive([self.proc], "the simulator")
            text = self.log_path.read_text(errors="replace")
            if "listening on " in text:
                self.base_url = text.split("listening on ", 1)[1].split()[0]
                self.root = self.base_url.removesuffix("/v1")
                host = urlsplit(self.root).hostname
                if host not in LOCAL_HOSTS:
                    raise BenchError(f"the simulator listens on {host}, not loopback")
                self.stats()  # answers
                return self
            time.sleep(0.05)
        raise BenchError(f"the simulator did not start in 30 s:\n{tail(self.log_path)}")

    def stats(self) -> dict:
        try:
            with _OPENER.open(self.root + "/_control/stats", timeout=30) as resp:
                return json.loads(resp.read())
        except (urllib.error.URLError, OSError, json.JSONDecodeError) as exc:
            raise BenchError(f"simulator stats: {exc}") from exc

    def stop(self) -> None:
        if self.proc is not None:
            self.procs.stop([self.proc], timeout=10)


def secrets(n: int) -> list[str]:
    return [f"sk-bench-{i + 1}" for i in range(n)]


def key_envs(n: int) -> list[str]:
    return [f"BENCH_LLM_KEY_{i + 1}" for i in range(n)]


# -- figures --------------------------------------------------------------------------------

def pct(values: list[float], q: float) -> float | None:
    if not values:
        return None
    values = sorted(values)
    pos = (len(values) - 1) * q
    lo, hi = math.floor(pos), math.ceil(pos)
    return values[lo] + (values[hi] - values[lo]) * (pos - lo)


def sim_figures(stats: dict, args: argparse.Namespace) -> dict:
    """Achieved fraction, 429 share, 10 s windows and key balance from simulator stats."""
    keys = secrets(args.keys)
    rows = {k: {r[0]: (r[1], r[2]) for r in stats["timeline"].get(k, [])} for k in keys}
    seconds = sorted({s for per_key in rows.values() for s in per_key})
    totals = stats["totals"]
    out: dict = {
        "requests_seen": totals["requests"], "accepted": totals["accepted"],
        "rejected_429": totals["rejected_429"], "errors_500": totals["errors_500"],
        "share_429": totals["rejected_429"] / totals["requests"] if totals["requests"] else 0.0,
        "by_key": {k: stats["keys"].get(k, {}).get("accepted", 0) for k in keys},
        "by_key_429": {k: stats["keys"].get(k, {}).get("rejected_429", 0) for k in keys},
        "max_in_flight": stats["max_in_flight"],
        "completion_tokens": totals["completion_tokens"], "ok": totals["ok"],
    }
    if not seconds:
        return out
    first, last = seconds[0], seconds[-1]
    span = range(first, last + 1)
    req = {k: [rows[k].get(s, (0, 0))[0] for s in span] for k in keys}
    tok = {k: [rows[k].get(s, (0, 0))[1] for s in span] for k in keys}
    total_req = [sum(req[k][i] for k in keys) for i in range(len(span))]
    total_tok = [sum(tok[k][i] for k in keys) for i in range(len(span))]
    # Steady state: [lo, hi). It starts --warmup seconds in, and not before the provider's
    # initial burst (every key's full bucket, a minute of budget) is spent plus 5 s: a
    # limiter that believes the provider's headers spends that burst first, which is budget
    # the provider gave, not a rate above its limit.
    burst, spent, spent_at = len(keys) * args.rpm, 0, len(span)
    for i, n in enumerate(total_req):
        spent += n
        if spent >= burst:
            spent_at = i
            break
    lo, hi = max(args.warmup, spent_at + 5), len(span) - args.tail
    rps_limit, tps_limit = len(keys) * args.rpm / 60, len(keys) * args.tpm / 60
    out |= {"first_second": first, "span_seconds": last - first + 1,
            "timeline_requests": total_req, "timeline_tokens": total_tok,
            "timeline_by_key": {k: req[k] for k in keys}}
    if hi - lo >= 5:
        n = hi - lo
        # The whole budget the provider allowed from the first accepted request to the last:
        # every key's full bucket at the start (its per-minute limit) plus the refill since.
        whole = len(keys) * args.rpm + rps_limit * (last - first + 1)
        out |= {
            "achieved_whole": sum(total_req) / whole,
            "steady_seconds": n,
            "achieved_requests": sum(total_req[lo:hi]) / (n * rps_limit),
            "achieved_tokens": sum(total_tok[lo:hi]) / (n * tps_limit),
            "steady_rps": sum(total_req[lo:hi]) / n,
            "steady_rps_min": min(total_req[lo:hi]), "steady_rps_max": max(total_req[lo:hi]),
        }

    def worst(series: dict[str, list[int]], start: int, end: int) -> tuple[int, str]:
        best = (0, "")
        for k, values in series.items():
            part = values[start:end]
            for i in range(max(1, len(part) - 9)):
                best = max(best, (sum(part[i:i + 10]), k))
        return best

    share_req, share_tok = args.rpm / 6, args.tpm / 6
    w_req, w_req_key = worst(req, 0, len(span))
    w_tok, w_tok_key = worst(tok, 0, len(span))
    out |= {"worst10_requests": w_req, "worst10_requests_x": w_req / share_req,
            "worst10_requests_key": w_req_key,
            "worst10_tokens": w_tok, "worst10_tokens_x": w_tok / share_tok,
            "worst10_tokens_key": w_tok_key}
    if hi - lo >= 10:
        s_req, _ = worst(req, lo, hi)
        s_tok, _ = worst(tok, lo, hi)
        out |= {"steady_worst10_requests": s_req, "steady_worst10_requests_x": s_req / share_req,
                "steady_worst10_tokens": s_tok, "steady_worst10_tokens_x": s_tok / share_tok}
    return out


# -- jobqueue -------------------------------------------------------------------------------

def admin_url(args: argparse.Namespace) -> str:
    return args.database_url


def db_url(args: argparse.Namespace) -> str:
    parts = urlsplit(args.database_url)
    return urlunsplit(parts._replace(path="/" + args.db_name))


def recreate_database(args: argparse.Namespace) -> str:
    with psycopg.connect(admin_url(args), autocommit=True, connect_timeout=10) as conn:
        conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(
            sql.Identifier(args.db_name)))
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(args.db_name)))
    from jobqueue import db
    from jobqueue.db import migrate

    url = db_url(args)
    with db.connect(url, connect_timeout=10) as conn:
        migrate.migrate(conn)
    return url


def drop_database(args: argparse.Namespace) -> None:
    with contextlib.suppress(psycopg.Error), psycopg.connect(
            admin_url(args), autocommit=True, connect_timeout=10) as conn:
        conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(
            sql.Identifier(args.db_name)))


def write_config(path: Path, base_url: str, args: argparse.Namespace) -> None:
    envs = ", ".join(f'"{e}"' for e in key_envs(args.keys))
    path.write_text(
        f"[platforms.{PLATFORM}]\n"
        f'base_url = "{base_url}"\n'
        f'model = "{args.model}"\n'
        f"api_key_env = [{envs}]\n"
        f"rpm = {args.rpm}\n"
        f"tpm = {args.tpm}\n"
        f"concurrency = {args.concurrency}\n"
        f"max_tokens = {args.max_tokens}\n"
        f"timeout = {args.call_timeout}\n"
        f"burst_seconds = {args.burst_seconds}\n"
        f'limit_scope = "{args.limit_scope}"\n'
        + (f'fallback_model = "{args.fallback_model}"\n' if args.fallback_model else ""))


def run_jobqueue(args: argparse.Namespace, procs: Processes, workdir: Path) -> dict:
    from jobqueue import Client, JobSpec

    tag = args.tag or "jobqueue"
    log(f"{tag}: fresh database and simulator")
    url = recreate_database(args)
    sim = Simulator(procs, args, workdir, tag.replace(" ", "-")).start()
    config = workdir / "jobqueue.toml"
    write_config(config, sim.base_url, args)
    env = child_env({"DATABASE_URL": url, "JOBQUEUE_CONFIG": str(config), "LOG_FORMAT": "json"}
                    | dict(zip(key_envs(args.keys), secrets(args.keys), strict=True)))
    workers = []
    poller = RssPoller()
    try:
        for i in range(args.workers):
            cmd = [sys.executable, "-m", "jobqueue", "--log-level", "WARNING", "worker",
                   "--platform", PLATFORM, "--concurrency", str(args.concurrency)]
            workers.append(procs.spawn(cmd, env, workdir / f"{tag.replace(' ', '-')}-{i}.log"))
        poller.watch([w.pid for w in workers])
        with Client(url, max_size=2) as jq, psycopg.connect(url, autocommit=True) as conn:
            deadline = time.monotonic() + 60
            while True:
                check_alive(workers, "a jobqueue worker")
                n = conn.execute("SELECT count(*) FROM jobqueue.workers WHERE queue = %s",
                                 (PLATFORM,)).fetchone()[0]
                if n >= args.workers:
                    break
                if time.monotonic() > deadline:
                    raise BenchError(f"only {n} of {args.workers} workers registered in 60 s")
                time.sleep(0.1)
            specs = [JobSpec("chat", {"prompt": make_prompt(i, args.prompt_chars),
                                      "max_tokens": args.max_tokens, "temperature": 1},
                             queue=PLATFORM) for i in range(args.jobs)]
            log(f"{tag}: {args.workers} workers up; enqueueing {args.jobs} chat jobs")
            t0 = time.time()
            jq.enqueue_many(specs)
            in_flight_max: dict[str, int] = {}
            timeout = args.timeout or default_timeout(args)
            deadline, next_log = time.monotonic() + timeout, time.monotonic() + 10
            while True:
                check_alive(workers, "a jobqueue worker")
                done = conn.execute("SELECT count(*) FROM jobqueue.finished WHERE queue = %s",
                                    (PLATFORM,)).fetchone()[0]
                for owner, count in conn.execute(
                        "SELECT lease_owner::text, count(*) FROM jobqueue.jobs "
                        "WHERE lease_owner IS NOT NULL GROUP BY 1").fetchall():
                    in_flight_max[owner] = max(in_flight_max.get(owner, 0), count)
                if done >= args.jobs:
                    break
                if time.monotonic() > deadline:
                    raise BenchError(f"{tag}: {done} of {args.jobs} jobs finished after "
                                     f"{timeout:.0f}s (--timeout)")
                if time.monotonic() >= next_log:
                    log(f"{tag}: {done}/{args.jobs} finished, {time.time() - t0:.0f}s")
                    next_log += 10
                time.sleep(0.5)
            log(f"{tag}: all {args.jobs} finished in {time.time() - t0:.1f}s")
            hwm = {w.pid: vm_kib("VmHWM", w.pid) for w in workers}
            stats = sim.stats()
            rows = conn.execute(
                "SELECT state, attempts, extract(epoch FROM finished_at - created_at)::float8, "
                "(result->>'latency_ms')::float8, (result->>'waited_ms')::float8, "
                "(result->>'throttled')::int, jsonb_array_length(errors), "
                "extract(epoch FROM finished_at)::float8, "
                "coalesce((result->>'fallback')::bool, false) "
                "FROM jobqueue.finished WHERE queue = %s",
                (PLATFORM,)).fetchall()
            buckets = conn.execute(
                "SELECT key_id, rpm, tpm, burst_seconds, requests_total, tokens_total, "
                "throttled_total, blocked_until IS NOT NULL FROM jobqueue.rate_buckets "
                "ORDER BY key_id").fetchall()
        poller.stop()
        procs.stop(workers)
    finally:
        poller.stop()
        procs.stop(workers)
        sim.stop()
    limited = rate_limited_times(workers)
    ok = [r for r in rows if r[0] == "succeeded"]
    rss = [max(hwm.get(w.pid) or 0, poller.peak.get(w.pid, 0)) / 1024 for w in workers]
    return {
        "system": "jobqueue", "t0": t0, "wall_s": max(r[7] for r in rows) - t0,
        "succeeded": len(ok), "failed": len(rows) - len(ok),
        "job_s": [r[2] for r in rows], "call_ms": [r[3] for r in ok],
        "wait_ms": [r[4] for r in ok],
        "failed_attempts": sum(r[6] for r in rows), "throttled_in_results": sum(
            r[5] or 0 for r in ok),
        "fallback_answers": sum(1 for r in ok if r[8]),
        "rss_mb": rss, "in_flight_max": sorted(in_flight_max.values(), reverse=True),
        "rate_limited_warnings": len(limited),
        "first_429_s": min(limited) - t0 if limited else None,
        "last_429_s": max(limited) - t0 if limited else None,
        "buckets": [{"key_id": b[0], "rpm": b[1], "tpm": b[2], "burst_seconds": b[3],
                     "requests_total": b[4], "tokens_total": b[5], "throttled_total": b[6],
                     "blocked": b[7]} for b in buckets],
        "sim": sim_figures(stats, args), "sim_raw_totals": stats["totals"],
    }


# -- baseline -------------------------------------------------------------------------------

def run_baseline(args: argparse.Namespace, procs: Processes, workdir: Path) -> dict:
    tag = args.tag or "baseline"
    file_tag = tag.replace(" ", "-")
    log(f"{tag}: fresh simulator")
    sim = Simulator(procs, args, workdir, file_tag).start()
    env = child_env(dict(zip(key_envs(args.keys), secrets(args.keys), strict=True)))
    timeout = args.timeout or default_timeout(args)
    agents = []
    poller = RssPoller()
    shares = [args.jobs // args.workers + (1 if i < args.jobs % args.workers else 0)
              for i in range(args.workers)]
    try:
        first = 0
        for i, count in enumerate(shares):
            cmd = [sys.executable, str(BASELINE), "--base-url", sim.base_url,
                   "--first", str(first), "--count", str(count),
                   "--concurrency", str(args.concurrency),
                   "--max-retries", str(args.baseline_max_retries),
                   "--prompt-chars", str(args.prompt_chars), "--max-tokens", str(args.max_tokens),
                   "--model", args.model, "--timeout", str(args.call_timeout),
                   "--deadline", str(timeout), "--out", str(workdir / f"{file_tag}-{i}.json")]
            for name in key_envs(args.keys):
                cmd += ["--key-env", name]
            agents.append(procs.spawn(cmd, env, workdir / f"{file_tag}-{i}.log",
                                      stdin=subprocess.PIPE, stdout=subprocess.PIPE))
            first += count
        poller.watch([a.pid for a in agents])
        for agent in agents:  # READY once its clients and prompts exist
            line = _readline(agent, 60)
            if line.strip() != b"READY":
                check_alive(agents, "a baseline process")
                raise BenchError(f"baseline process {agent.pid} said {line!r}, not READY:\n"
                                 f"{tail(agent.log_path)}")  # type: ignore[attr-defined]
        log(f"{tag}: {args.workers} processes ready; go ({args.jobs} calls)")
        for agent in agents:
            agent.stdin.write(b"go\n")
            agent.stdin.flush()
        started = time.monotonic()
        deadline, next_log = started + timeout + 30, started + 10
        while any(a.poll() is None for a in agents):
            if time.monotonic() > deadline:
                raise BenchError(f"{tag}: not done after {timeout:.0f}s (--timeout)")
            if time.monotonic() >= next_log:
                t = sim.stats()["totals"]
                log(f"{tag}: {t['accepted']} accepted, {t['rejected_429']} 429s, "
                    f"{time.monotonic() - started:.0f}s")
                next_log += 10
            time.sleep(0.2)
        for agent in agents:
            if agent.returncode != 0:
                raise BenchError(f"baseline process {agent.pid} exited {agent.returncode}:\n"
                                 f"{tail(agent.log_path)}")  # type: ignore[attr-defined]
        stats = sim.stats()
        poller.stop()
    finally:
        poller.stop()
        procs.stop(agents)
        sim.stop()
    results = [json.loads((workdir / f"{file_tag}-{i}.json").read_text())
               for i in range(len(agents))]
    t0 = min(r["t0"] for r in results)
    calls = [c for r in results for c in r["calls"]]
    errors: dict[str, int] = {}
    for r in results:
        for name, n in r["errors"].items():
            errors[name] = errors.get(name, 0) + n
    rss = [max(r["vm_hwm_kib"] or 0, poller.peak.get(a.pid, 0)) / 1024
           for r, a in zip(results, agents, strict=True)]
    log(f"{tag}: {len(calls)} calls done in {max(c['done'] for c in calls) - t0:.1f}s")
    return {
        "system": "baseline", "t0": t0,
        "wall_s": max(c["done"] for c in calls) - t0 if calls else None,
        "succeeded": len(calls), "failed": args.jobs - len(calls),
        "job_s": [c["job_s"] for c in calls], "call_ms": [c["call_s"] * 1000 for c in calls],
        "wait_ms": [c["wait_s"] * 1000 for c in calls],
        "give_ups": sum(c["give_ups"] for c in calls), "errors": errors,
        "go_skew_s": max(r["t0"] for r in results) - t0,
        "rss_mb": rss, "sim": sim_figures(stats, args), "sim_raw_totals": stats["totals"],
    }


def rate_limited_times(workers: list[subprocess.Popen]) -> list[float]:
    """Unix times of the workers' llm_rate_limited warnings (one per 429 received)."""
    times = []
    for w in workers:
        path = Path(w.log_path)  # type: ignore[attr-defined]
        for line in path.read_text(errors="replace").splitlines():
            if "llm_rate_limited" not in line:
                continue
            with contextlib.suppress(ValueError, KeyError, TypeError):
                stamp = json.loads(line)["timestamp"].replace("Z", "+00:00")
                times.append(dt.datetime.fromisoformat(stamp).timestamp())
    return times


def _readline(proc: subprocess.Popen, timeout: float) -> bytes:
    box: list[bytes] = []
    reader = threading.Thread(target=lambda: box.append(proc.stdout.readline()), daemon=True)
    reader.start()
    reader.join(timeout)
    if not box:
        raise BenchError(f"process {proc.pid} said nothing in {timeout:.0f}s:\n"
                         f"{tail(proc.log_path)}")  # type: ignore[attr-defined]
    return box[0]


def probe_args(args: argparse.Namespace, system: str) -> argparse.Namespace:
    """The in-flight probe: no limits anywhere, slow answers, every process full."""
    probe = argparse.Namespace(**vars(args))
    probe.tag = f"{system} probe"
    probe.jobs = 2 * args.workers * args.concurrency
    probe.latency, probe.jitter = args.probe_latency, 0.0
    probe.rpm, probe.tpm = 10_000_000, 1_000_000_000  # jobqueue.toml; the simulator: none
    probe.timeout = 120.0
    return probe


def default_timeout(args: argparse.Namespace) -> float:
    ideal = args.jobs / (args.keys * min(args.rpm / 60, args.tpm / 60 / cost(args)))
    return max(120.0, 3 * ideal + 60)


def cost(args: argparse.Namespace) -> int:
    return math.ceil(args.prompt_chars / 4) + args.max_tokens


# -- report ---------------------------------------------------------------------------------

def cpu_model() -> str:
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return platform.processor() or "unknown"


def f_pct(x: float | None, digits: int = 1) -> str:
    return "n/a" if x is None else f"{100 * x:.{digits}f}%"


def f_num(x: float | None, fmt: str = ".0f") -> str:
    return "n/a" if x is None else format(x, fmt)


def f_p(values: list[float], scale: float = 1.0, fmt: str = ".0f") -> str:
    if not values:
        return "n/a"
    return f"{f_num(pct(values, 0.5) * scale, fmt)} / {f_num(pct(values, 0.95) * scale, fmt)}"


def column(r: dict | None, args: argparse.Namespace) -> dict[str, str]:
    if r is None:
        return {}
    s = r["sim"]
    share_req, share_tok = args.rpm / 6, args.tpm / 6
    c = {
        "calls": f"{r['succeeded']} / {args.jobs}" + (f" ({r['failed']} failed)"
                                                     if r["failed"] else ""),
        "wall": f_num(r["wall_s"], ".1f"),
        "span": f_num(s.get("span_seconds")),
        "steady": f_num(s.get("steady_seconds")),
        "ach_req": f_pct(s.get("achieved_requests")),
        "ach_tok": f_pct(s.get("achieved_tokens")),
        "ach_whole": f_pct(s.get("achieved_whole")),
        "rps": (f"{s['steady_rps']:.2f} ({s['steady_rps_min']}-{s['steady_rps_max']})"
                if "steady_rps" in s else "n/a"),
        "share429": f"{f_pct(s['share_429'], 2)} ({s['rejected_429']} of {s['requests_seen']})",
        "w10_req": (f"{s['worst10_requests']} vs {share_req:.0f} = "
                    f"{s['worst10_requests_x']:.2f}x" if "worst10_requests" in s else "n/a"),
        "w10_tok": (f"{s['worst10_tokens']} vs {share_tok:.0f} = {s['worst10_tokens_x']:.2f}x"
                    if "worst10_tokens" in s else "n/a"),
        "w10_steady": (f"{s['steady_worst10_requests_x']:.2f}x / "
                       f"{s['steady_worst10_tokens_x']:.2f}x"
                       if "steady_worst10_requests_x" in s else "n/a"),
        "balance": " / ".join(str(v) for v in s["by_key"].values()),
        "job": f_p(r["job_s"], 1, ".1f"),
        "call": f_p(r["call_ms"]),
        "wait": f_p(r["wait_ms"]),
        "rss": " / ".join(f"{m:.0f}" for m in r["rss_mb"]),
        "inflight": str(s["max_in_flight"]),
    }
    if r["system"] == "jobqueue":
        c["retries"] = (f"{r['failed_attempts']} failed attempts; "
                        f"{r['throttled_in_results']} 429s absorbed in calls")
        c["worker_inflight"] = " / ".join(str(n) for n in r["in_flight_max"]) or "n/a"
        c["fallback"] = f"{r['fallback_answers']} of {r['succeeded']}"
    else:
        errs = ", ".join(f"{k}: {v}" for k, v in r["errors"].items())
        c["retries"] = f"{r['give_ups']} SDK give-ups (call made again)" + (
            f"; {errs}" if errs else "")
        c["worker_inflight"] = f"{args.concurrency} (semaphore)"
    return c


ROWS = [
    ("calls", "Calls succeeded"),
    ("wall", "Wall time, submit -> last call done (s)"),
    ("span", "First -> last accepted request at the simulator (s)"),
    ("steady", "Steady-state window (s)"),
    ("ach_req", "**Achieved fraction of RPM limit (steady)**"),
    ("ach_tok", "**Achieved fraction of TPM limit (steady)**"),
    ("ach_whole", "**Achieved fraction of the whole budget (initial burst + refill)**"),
    ("rps", "Accepted req/s in steady state: mean (min-max per second)"),
    ("share429", "**429s / requests sent**"),
    ("w10_req", "Worst 10 s window on one key, requests (whole run)"),
    ("w10_tok", "Worst 10 s window on one key, tokens (whole run)"),
    ("w10_steady", "Worst 10 s window in steady state, requests / tokens"),
    ("balance", "Accepted per key"),
    ("job", "Job latency p50 / p95, submit -> done (s)"),
    ("call", "Per-call latency p50 / p95 (ms)"),
    ("wait", "Wait before the call p50 / p95 (ms)"),
    ("retries", "Retries"),
    ("fallback", "Answered by the fallback model"),
    ("rss", "Peak RSS per process (MB)"),
    ("inflight", "Max calls in flight at the simulator"),
    ("worker_inflight", "Max jobs in flight per process"),
    ("probe_inflight", "In-flight probe: max calls in flight at the simulator"),
    ("probe_rss", "In-flight probe: peak RSS per process (MB)"),
]


def probe_column(r: dict | None) -> dict[str, str]:
    if r is None:
        return {}
    return {"probe_inflight": f"{r['sim']['max_in_flight']} ({r['succeeded']} calls, "
                              f"{r['wall_s']:.1f} s)",
            "probe_rss": " / ".join(f"{m:.0f}" for m in r["rss_mb"])}


def report(args: argparse.Namespace, results: dict[str, dict], info: dict) -> str:
    jq, base = results.get("jobqueue"), results.get("baseline")
    cj = column(jq, args) | probe_column(results.get("jobqueue probe"))
    cb = column(base, args) | probe_column(results.get("baseline probe"))
    c = cost(args)
    lines = [
        f"## LLM rate-limit benchmark: jobqueue vs plain SDK ({info['date']})",
        "",
        f"- machine: {info['nproc']} cores ({info['cpu']}), load average at start "
        f"{info['load']}, at the end {' '.join(f'{x:.2f}' for x in os.getloadavg())}, "
        f"Python {platform.python_version()}, PostgreSQL at "
        f"{urlsplit(args.database_url).hostname}:{urlsplit(args.database_url).port}",
        f"- simulator: {args.keys} keys x {args.rpm} RPM / {args.tpm} TPM (buckets start full, "
        f"refill continuously), latency {args.latency} s +/- {args.jitter} s; a fresh simulator "
        "process per system",
        f"- {args.jobs} chat calls, prompt {args.prompt_chars} chars + max_tokens "
        f"{args.max_tokens} = {c} tokens each for TPM; limits of all keys: "
        f"{args.keys * args.rpm / 60:.1f} req/s and {args.keys * args.tpm / 60:.0f} tokens/s "
        f"= {args.keys * args.tpm / 60 / c:.1f} req/s of these calls -> binding: "
        + binding(args) + completion_note(results, args),
        f"- jobqueue: {args.workers} x `python -m jobqueue --log-level WARNING worker "
        f"--platform sim --concurrency {args.concurrency}`, burst_seconds {args.burst_seconds}, "
        f"call timeout {args.call_timeout} s, temperature 1 (no cache)",
        f"- baseline: {args.workers} processes x AsyncOpenAI(max_retries="
        f"{args.baseline_max_retries}) + asyncio.Semaphore({args.concurrency}), call i on key "
        "i % keys, a call the SDK gives up on is made again",
        f"- steady state: accepted-traffic seconds minus the first {args.warmup} s and the last "
        f"{args.tail} s; worst 10 s share = limit / 6",
        *([f"- in-flight probe (after the runs, per system): a fresh simulator without limits, "
           f"{args.probe_latency} s answers, {2 * args.workers * args.concurrency} calls, limits "
           "in jobqueue.toml raised out of the way"] if args.probe else []),
        "",
        "| Metric | jobqueue | baseline (no shared limiter) |",
        "|---|---|---|",
    ]
    for key, label in ROWS:
        if key not in cj and key not in cb:
            continue
        lines.append(f"| {label} | {cj.get(key, '-')} | {cb.get(key, '-')} |")
    if jq is not None:
        lines += ["", "jobqueue rate_buckets at the end: " + "; ".join(
            f"{b['key_id']}: {b['requests_total']} reserved, {b['throttled_total']} throttled, "
            f"burst_seconds {b['burst_seconds']:g}" for b in jq["buckets"])
            + f"; llm_rate_limited warnings in worker logs: {jq['rate_limited_warnings']}"
            + (f" (first {jq['first_429_s']:.0f} s, last {jq['last_429_s']:.0f} s after the "
               "enqueue)" if jq["first_429_s"] is not None else "")]
    if args.show_timeline:
        for name, r in results.items():
            if "probe" in name:
                continue
            tl = r["sim"].get("timeline_requests", [])
            lines += ["", f"{name}: accepted requests per second (both keys), from the first:"]
            lines += ["    " + " ".join(f"{v:3d}" for v in tl[i:i + 20])
                      for i in range(0, len(tl), 20)]
    return "\n".join(lines)


def completion_note(results: dict[str, dict], args: argparse.Namespace) -> str:
    for name in ("jobqueue", "baseline"):
        s = results.get(name, {}).get("sim")
        if s and s["ok"]:
            used = s["completion_tokens"] / s["ok"]
            return (f"; the answers used {used:.1f} of the {args.max_tokens} completion tokens "
                    f"on average ({math.ceil(args.prompt_chars / 4) + used:.1f} tokens of usage "
                    f"per call, while the simulator charges {cost(args)} at admission and "
                    "refunds nothing)")
    return ""


def binding(args: argparse.Namespace) -> str:
    by_rpm, by_tpm = args.rpm / 60, args.tpm / 60 / cost(args)
    if math.isclose(by_rpm, by_tpm):
        return "both (RPM and TPM at the same rate)"
    return "RPM" if by_rpm < by_tpm else "TPM"


# -- main -----------------------------------------------------------------------------------

def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--jobs", type=int, default=4000, help="chat calls per system")
    p.add_argument("--systems", default="jobqueue,baseline",
                   help="comma-separated: jobqueue, baseline")
    p.add_argument("--keys", type=int, default=2, help="API keys at the simulator")
    p.add_argument("--rpm", type=int, default=600, help="per key")
    p.add_argument("--tpm", type=int, default=60_000, help="per key")
    p.add_argument("--latency", type=float, default=0.3, help="simulator mean seconds")
    p.add_argument("--jitter", type=float, default=0.1, help="simulator +/- seconds")
    p.add_argument("--seed", type=int, default=0, help="simulator random seed")
    p.add_argument("--prompt-chars", type=int, default=240, help="prompt tokens = chars / 4")
    p.add_argument("--max-tokens", type=int, default=40)
    p.add_argument("--model", default="gpt-4o-mini")
    p.add_argument("--fallback-model", default=None,
                   help="jobqueue.toml fallback_model (e.g. gpt-4.1-mini)")
    p.add_argument("--limit-scope", choices=("model", "key"), default="model",
                   help="jobqueue.toml limit_scope (what jobqueue is told)")
    p.add_argument("--sim-limit-scope", choices=("model", "key"), default="model",
                   help="how the simulator counts: per (key, model), or every model per key")
    p.add_argument("--refused-spend", action=argparse.BooleanOptionalAction, default=True,
                   help="the simulator counts refused requests against the limit")
    p.add_argument("--workers", type=int, default=2, help="processes per system")
    p.add_argument("--concurrency", type=int, default=200, help="calls in flight per process")
    p.add_argument("--burst-seconds", type=float, default=3.0,
                   help="jobqueue.toml burst_seconds (the platform default is 3)")
    p.add_argument("--call-timeout", type=float, default=20.0, help="seconds per HTTP call")
    p.add_argument("--baseline-max-retries", type=int, default=2,
                   help="AsyncOpenAI max_retries in the baseline")
    p.add_argument("--warmup", type=int, default=10, help="seconds left out at the start")
    p.add_argument("--tail", type=int, default=10, help="seconds left out at the end")
    p.add_argument("--timeout", type=float, default=None,
                   help="seconds per system (default: 3x the ideal duration + 60, >= 120)")
    p.add_argument("--database-url", default="postgresql://postgres@127.0.0.1:5432/postgres",
                   help="an admin connection (the bench database is created from it)")
    p.add_argument("--db-name", default="bench_llm", help="dropped and recreated")
    p.add_argument("--keep-db", action="store_true", help="leave the bench database behind")
    p.add_argument("--show-timeline", action="store_true",
                   help="also print the per-second accepted requests of each system")
    p.add_argument("--json", type=Path, default=None, help="write all figures here")
    p.add_argument("--workdir", type=Path, default=None,
                   help="logs and config here (default: a temporary directory, removed)")
    p.add_argument("--probe", action=argparse.BooleanOptionalAction, default=True,
                   help="after the runs, an in-flight probe per system: no rate limits, "
                        "--probe-latency s answers, 2 x workers x concurrency calls, so every "
                        "process has --concurrency calls in flight; gives RSS at that load")
    p.add_argument("--probe-latency", type=float, default=2.0)
    args = p.parse_args(argv)
    args.tag = None
    args.systems = [s.strip() for s in args.systems.split(",") if s.strip()]
    unknown = set(args.systems) - {"jobqueue", "baseline"}
    if unknown or not args.systems:
        p.error(f"--systems: unknown {', '.join(sorted(unknown)) or '(none)'}")
    if urlsplit(args.database_url).hostname not in LOCAL_HOSTS:
        p.error("--database-url: only a loopback server (127.0.0.1) is allowed")
    for name in ("jobs", "keys", "rpm", "tpm", "workers", "concurrency", "prompt_chars",
                 "max_tokens"):
        if getattr(args, name) < 1:
            p.error(f"--{name.replace('_', '-')} must be at least 1")
    if args.warmup < 0 or args.tail < 0 or args.baseline_max_retries < 0:
        p.error("--warmup, --tail and --baseline-max-retries must not be negative")
    if args.call_timeout >= 25:
        p.error("--call-timeout must be under the worker's 25 s grace period")
    if cost(args) > args.tpm:
        p.error("one call costs more tokens than --tpm: every call would be rejected")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    from jobqueue import logs

    logs.configure("WARNING", "console")  # jobqueue's own log lines: stderr, warnings only
    info = {"date": dt.datetime.now().astimezone().strftime("%Y-%m-%d %H:%M %Z"),
            "nproc": os.cpu_count(), "cpu": cpu_model(),
            "load": " ".join(f"{x:.2f}" for x in os.getloadavg())}
    procs = Processes()

    def on_signal(signum, frame):
        raise KeyboardInterrupt(f"signal {signum}")

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    temporary = args.workdir is None
    workdir = Path(tempfile.mkdtemp(prefix="bench_llm_")) if temporary else args.workdir
    workdir.mkdir(parents=True, exist_ok=True)
    results: dict[str, dict] = {}
    failed = True
    try:
        for system in args.systems:
            runner = run_jobqueue if system == "jobqueue" else run_baseline
            results[system] = runner(args, procs, workdir)
        if args.probe:
            for system in args.systems:
                runner = run_jobqueue if system == "jobqueue" else run_baseline
                results[system + " probe"] = runner(probe_args(args, system), procs, workdir)
        failed = False
    except BenchError as exc:
        log(f"error: {exc}")
        return 1
    except psycopg.OperationalError as exc:
        log(f"error: cannot use PostgreSQL at {args.database_url}: {str(exc).strip()}")
        return 1
    except KeyboardInterrupt:
        log("interrupted: stopping every process started here")
        return 130
    finally:
        procs.stop_all()
        if "jobqueue" in args.systems and not args.keep_db:
            drop_database(args)
        if temporary and not failed:
            shutil.rmtree(workdir, ignore_errors=True)
        else:
            log(f"logs and config in {workdir}")
    print(report(args, results, info))
    if args.json:
        for r in results.values():
            for name in ("job_s", "call_ms", "wait_ms"):
                r[name] = {"p50": pct(r[name], 0.5), "p95": pct(r[name], 0.95),
                           "mean": statistics.fmean(r[name]) if r[name] else None}
        args.json.write_text(json.dumps({"args": {k: str(v) for k, v in vars(args).items()},
                                         "info": info, "results": results}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
