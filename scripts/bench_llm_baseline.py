#!/usr/bin/env python
"""The baseline side of scripts/bench_llm.py: chat calls with no shared limiter.

One process makes its share of the benchmark's calls the way a plain script would: one
`openai.AsyncOpenAI` client per key with the SDK's own retries (`max_retries`, default 2, which
honour the server's retry-after-ms / retry-after), an `asyncio.Semaphore` for concurrency, and
call i on key i % len(keys). A call the SDK gives up on (RateLimitError after its retries) is
made again at once in the same slot, as a rerun of the failures would, until it succeeds or
`--deadline` passes, so that every call completes; the give-ups are counted.

Started by bench_llm.py, which also builds the prompts with `make_prompt` from here (so both
systems send the same requests):
    python scripts/bench_llm_baseline.py --base-url URL --key-env VAR [--key-env VAR2] \
        --first 0 --count 2000 --out result.json
It prints READY on stdout once its clients exist, waits for a line on stdin (the go signal,
sent to every process at once), runs, writes its JSON result to --out and exits 0.
The API keys come from the named environment variables, never from the command line.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
import time

WORDS = ("pricing", "onboarding", "latency", "invoice", "warehouse", "customer", "renewal",
         "forecast", "support", "roadmap", "contract", "shipping", "billing", "analytics",
         "retention", "migration", "security", "payroll", "inventory", "feedback")


def make_prompt(index: int, chars: int) -> str:
    """A unique prompt of exactly `chars` characters (ceil(chars / 4) prompt tokens)."""
    words = " ".join(WORDS[(index * 7 + k) % len(WORDS)] for k in range(chars // 5 + 2))
    text = f"Request {index:06d}: summarise the notes on {words}"[:chars]
    if len(text) < chars:  # only for tiny sizes: pad rather than change the token count
        text = text.ljust(chars, ".")
    return text[:-1] + "." if text.endswith(" ") else text


def vm_kib(field: str, pid: int | str = "self") -> int | None:
    """VmRSS / VmHWM of a process in KiB from /proc (None if gone or not Linux)."""
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith(field + ":"):
                    return int(line.split()[1])
    except (OSError, ValueError, IndexError):
        return None
    return None


async def run(args: argparse.Namespace, secrets: list[str]) -> dict:
    import openai

    clients = [openai.AsyncOpenAI(api_key=s, base_url=args.base_url, timeout=args.timeout,
                                  max_retries=args.max_retries) for s in secrets]
    sem = asyncio.Semaphore(args.concurrency)
    prompts = {i: make_prompt(i, args.prompt_chars)
               for i in range(args.first, args.first + args.count)}
    print("READY", flush=True)
    await asyncio.to_thread(sys.stdin.readline)  # the go signal
    t0 = time.time()
    deadline = time.monotonic() + args.deadline
    calls: list[dict] = []
    errors: dict[str, int] = {}

    async def one(i: int) -> None:
        queued = time.time()
        async with sem:
            started = time.time()
            give_ups = 0
            client = clients[i % len(clients)]
            while True:
                try:
                    completion = await client.chat.completions.create(
                        model=args.model, messages=[{"role": "user", "content": prompts[i]}],
                        max_tokens=args.max_tokens, temperature=1)
                except openai.RateLimitError:
                    give_ups += 1
                    if time.monotonic() < deadline:
                        continue
                    errors["RateLimitError (deadline)"] = errors.get(
                        "RateLimitError (deadline)", 0) + 1
                    return
                except openai.APIError as exc:  # 5xx, timeouts: the SDK retried them too
                    name = type(exc).__name__
                    errors[name] = errors.get(name, 0) + 1
                    if time.monotonic() < deadline:
                        continue
                    return
                break
            done = time.time()
            usage = completion.usage
            calls.append({"i": i, "key": i % len(clients), "job_s": done - queued,
                          "wait_s": started - queued, "call_s": done - started,
                          "give_ups": give_ups, "done": done,
                          "completion_tokens": usage.completion_tokens if usage else None,
                          "total_tokens": usage.total_tokens if usage else None})

    await asyncio.gather(*(one(i) for i in prompts))
    for client in clients:
        await client.close()
    return {"t0": t0, "t_end": time.time(), "first": args.first, "count": args.count,
            "succeeded": len(calls), "errors": errors, "calls": calls,
            "vm_hwm_kib": vm_kib("VmHWM"), "pid": os.getpid()}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--base-url", required=True)
    p.add_argument("--key-env", action="append", required=True,
                   help="environment variable holding an API key (repeatable)")
    p.add_argument("--first", type=int, default=0, help="index of this process's first call")
    p.add_argument("--count", type=int, required=True)
    p.add_argument("--concurrency", type=int, default=200)
    p.add_argument("--max-retries", type=int, default=2, help="the SDK's max_retries")
    p.add_argument("--prompt-chars", type=int, default=240)
    p.add_argument("--max-tokens", type=int, default=40)
    p.add_argument("--model", default="gpt-4o-mini")
    p.add_argument("--timeout", type=float, default=20.0, help="per HTTP attempt")
    p.add_argument("--deadline", type=float, default=600.0,
                   help="stop retrying calls after this many seconds")
    p.add_argument("--out", required=True)
    args = p.parse_args(argv)
    missing = [name for name in args.key_env if not os.environ.get(name)]
    if missing:
        print(f"environment variable(s) {', '.join(missing)} not set", file=sys.stderr)
        return 2
    result = asyncio.run(run(args, [os.environ[name] for name in args.key_env]))
    with open(args.out, "w") as f:
        json.dump(result, f)
    return 0


if __name__ == "__main__":
    sys.exit(main())
