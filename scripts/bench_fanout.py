#!/usr/bin/env python
"""Fan-out over three platforms with different limits, from ONE worker process (issue 14):
does each platform run at its own limit at the same time?

    python scripts/bench_fanout.py                 # 300 / 600 / 900 RPM, 2,400 rows
    python scripts/bench_fanout.py --rows 1200 --rpm 120,240,360   # a quicker look

Setup: the simulator (`python -m jobqueue.sim`, its own process on 127.0.0.1, 0.3 s +/- 0.1 s
answers) with one key per platform, each key its own RPM (--rpm) and a TPM high enough
never to bind; buckets start full (a minute of budget) and refill continuously, as OpenAI's
do. A fresh database; a jobqueue.toml with platforms a, b, c (one key each, the key's rpm);
ONE worker process `jobqueue worker --platform a:200 --platform b:200 --platform c:200`;
then `jobqueue batch submit prompts.csv --platform a,b,c --template ...` (the product's
fan-out path: one batch, one job per row and platform) of --rows distinct prompts.

Figures, per platform, from the simulator's per-second timeline of its key: the steady state
starts once the key's bucket is empty (its initial burst and the refill spent: under 2 s of
budget left) plus --warmup seconds, and ends --tail seconds before the FASTEST platform's
last accepted request (the window in which all three platforms are busy at once); achieved =
accepted in that window / (window seconds x rpm / 60). Also: 429s per platform, and the
whole-run figure (accepted / (rpm x (seconds from first to last accepted) / 60 + the initial
burst)). The run stops once the fastest platform has drained; the rest is cancelled. Nothing
but 127.0.0.1 is contacted. Progress on stderr, the Markdown report on stdout.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

import psycopg
from benchkit import BenchError, Processes, log

REPO = Path(__file__).resolve().parent.parent
PLATFORMS = ("a", "b", "c")
_OPENER = urllib.request.build_opener(urllib.request.ProxyHandler({}))


def env_for(extra: dict[str, str]) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items()
           if k.lower() not in ("http_proxy", "https_proxy", "all_proxy")}
    env["NO_PROXY"] = env["no_proxy"] = "127.0.0.1,localhost"
    return env | {"PYTHONUNBUFFERED": "1"} | extra


def start_sim(procs: Processes, workdir: Path, rpms: list[int], args) -> tuple[str, str]:
    cmd = [sys.executable, "-m", "jobqueue.sim", "--host", "127.0.0.1", "--port", "0",
           "--latency", str(args.latency), "--jitter", str(args.jitter)]
    for name, rpm in zip(PLATFORMS, rpms, strict=True):
        cmd += ["--key", f"sk-fanout-{name}:{rpm}:{rpm * 1000}"]
    proc = procs.spawn(cmd, env_for({}), workdir / "sim.log")
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise BenchError("the simulator exited:\n" + (workdir / "sim.log").read_text())
        text = (workdir / "sim.log").read_text(errors="replace")
        if "listening on " in text:
            base = text.split("listening on ", 1)[1].split()[0]
            if not base.startswith("http://127.0.0.1:"):
                raise BenchError(f"the simulator listens on {base}, not loopback")
            return base, base.removesuffix("/v1")
        time.sleep(0.05)
    raise BenchError("the simulator did not start in 30 s")


def sim_stats(root: str) -> dict:
    with _OPENER.open(root + "/_control/stats", timeout=30) as resp:
        return json.loads(resp.read())


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--rows", type=int, default=2400)
    p.add_argument("--rpm", default="300,600,900", help="per platform a,b,c")
    p.add_argument("--latency", type=float, default=0.3)
    p.add_argument("--jitter", type=float, default=0.1)
    p.add_argument("--warmup", type=int, default=5)
    p.add_argument("--tail", type=int, default=5)
    p.add_argument("--database-url", default="postgresql://postgres@127.0.0.1:5432/postgres")
    p.add_argument("--db-name", default="bench_fanout")
    args = p.parse_args()
    rpms = [int(x) for x in args.rpm.split(",")]
    if len(rpms) != 3:
        raise SystemExit("--rpm: three numbers, for a,b,c")
    procs = Processes()
    workdir = Path(tempfile.mkdtemp(prefix="bench_fanout_"))
    try:
        with psycopg.connect(args.database_url, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{args.db_name}" WITH (FORCE)')
            conn.execute(f'CREATE DATABASE "{args.db_name}"')
        url = psycopg.conninfo.make_conninfo(args.database_url, dbname=args.db_name)
        base, root = start_sim(procs, workdir, rpms, args)
        config = workdir / "jobqueue.toml"
        config.write_text("".join(f"""
[platforms.{name}]
base_url = "{base}"
model = "sim-{name}"
api_key_env = "FANOUT_KEY_{name.upper()}"
rpm = {rpm}
tpm = {rpm * 1000}
max_tokens = 40
timeout = 20
""" for name, rpm in zip(PLATFORMS, rpms, strict=True)))
        env = env_for({"DATABASE_URL": url, "JOBQUEUE_CONFIG": str(config),
                       **{f"FANOUT_KEY_{n.upper()}": f"sk-fanout-{n}" for n in PLATFORMS}})
        jq = [sys.executable, "-m", "jobqueue"]
        subprocess_run([*jq, "migrate"], env, workdir / "migrate.log", procs)
        prompts = workdir / "prompts.csv"
        prompts.write_text("topic\n" + "".join(f"topic number {i} of the fan-out bench\n"
                                                for i in range(args.rows)))
        worker = procs.spawn(jq + ["--log-level", "WARNING", "worker"]
                             + [a for n in PLATFORMS for a in ("--platform", f"{n}:200")],
                             env, workdir / "worker.log")
        with psycopg.connect(url, autocommit=True) as conn:
            deadline = time.monotonic() + 60
            while not conn.execute("SELECT count(*) FROM jobqueue.workers").fetchone()[0]:
                if worker.poll() is not None or time.monotonic() > deadline:
                    raise BenchError("the worker did not start:\n"
                                     + (workdir / "worker.log").read_text()[-2000:])
                time.sleep(0.1)
            log(f"worker up; submitting {args.rows} rows x {len(PLATFORMS)} platforms")
            subprocess_run([*jq, "batch", "submit", str(prompts), "--platform",
                            ",".join(PLATFORMS), "--template", "Tell me about {topic}"],
                           env, workdir / "submit.log", procs)
            fastest = PLATFORMS[rpms.index(max(rpms))]
            while True:
                left = conn.execute("SELECT count(*) FROM jobqueue.jobs WHERE queue = %s",
                                    (fastest,)).fetchone()[0]
                if left == 0:
                    break
                if worker.poll() is not None:
                    raise BenchError("the worker exited:\n"
                                     + (workdir / "worker.log").read_text()[-2000:])
                time.sleep(1)
            log(f"platform {fastest} drained; stopping")
            stats = sim_stats(root)
        procs.stop([worker])
        print(report(stats, rpms, args))
        return 0
    except BenchError as exc:
        log(f"error: {exc} (logs in {workdir})")
        return 1
    finally:
        procs.stop_all()


def subprocess_run(cmd: list[str], env: dict, log_path: Path, procs: Processes) -> None:
    proc = procs.spawn(cmd, env, log_path)
    if proc.wait(300) != 0:
        raise BenchError(f"{' '.join(cmd[2:4])} failed:\n{log_path.read_text()[-2000:]}")


def report(stats: dict, rpms: list[int], args) -> str:
    timelines = {n: {s: r for s, r, _ in stats["timeline"].get(f"sk-fanout-{n}", [])}
                 for n in PLATFORMS}
    last_fastest = max(timelines[PLATFORMS[rpms.index(max(rpms))]])
    out = [f"## Fan-out over 3 platforms from one worker process "
           f"({time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())})", "",
           f"- {args.rows} rows x 3 platforms, one `jobqueue worker --platform a:200 "
           f"--platform b:200 --platform c:200`; simulator latency {args.latency} s "
           f"+/- {args.jitter} s; load average {os.getloadavg()[0]:.1f}",
           f"- steady state per platform: from its bucket empty + {args.warmup} s to "
           f"{args.tail} s before the fastest platform's last request (all three busy)", "",
           "| platform | limit RPM | accepted | 429s | steady window s | steady req/s | "
           "**steady % of limit** | whole run % (incl. burst) |",
           "|---|--:|--:|--:|--:|--:|--:|--:|"]
    for name, rpm in zip(PLATFORMS, rpms, strict=True):
        tl = timelines[name]
        key = stats["keys"].get(f"sk-fanout-{name}", {})
        first = min(tl)
        # The provider's bucket: a minute of budget at the start, refilled continuously. The
        # steady state starts once it is (nearly) empty: what is left is under 2 s of budget.
        spent, start = 0, None
        for s in range(first, max(tl) + 1):
            spent += tl.get(s, 0)
            if rpm + rpm / 60 * (s - first + 1) - spent < rpm / 30:
                start = s + 1 + args.warmup
                break
        end = last_fastest - args.tail
        if start is None or end - start < 5:
            steady, window, pct = "-", "-", "-"
        else:
            n = sum(tl.get(s, 0) for s in range(start, end))
            rate = n / (end - start)
            steady, window, pct = f"{rate:.2f}", str(end - start), f"{100 * rate * 60 / rpm:.1f}%"
        upto = [s for s in tl if s <= last_fastest]
        whole_n = sum(tl[s] for s in upto)
        whole = whole_n / (rpm + rpm * (max(upto) - first + 1) / 60)
        out.append(f"| {name} | {rpm} | {key.get('accepted', 0)} | "
                   f"{key.get('rejected_429', 0)} | {window} | {steady} | {pct} | "
                   f"{100 * whole:.1f}% |")
    out.append("")
    out.append(f"Command: `python scripts/bench_fanout.py --rows {args.rows} "
               f"--rpm {','.join(map(str, rpms))}`")
    return "\n".join(out)


if __name__ == "__main__":
    sys.exit(main())
