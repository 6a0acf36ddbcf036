"""Stop requests (SIGTERM, SIGINT) that arrive before anything can act on them.

A worker process needs a few hundred milliseconds (imports, the database, the event loop)
before its asyncio signal handlers are in place; until then Python's defaults apply, and a
SIGTERM killed the process outright (a deploy that stops a worker it has just started, or a
supervisor stopping its children early). So `jobqueue/__main__.py` calls `install_early()`
first of all: from then on a stop signal is recorded, not obeyed. Whoever is ready to act on
it takes over and calls `replay()`, which sends each recorded signal again to this process,
now to the real handler: the worker's loop (through `run_worker`'s `on_start` hook, which runs
once the loop's handlers are installed) or the supervisor. A command other than `worker`
calls `release()`: the old handlers come back and get what was recorded.

This module must stay cheap to import (only `signal`): it runs before everything else, which
is why it is not in `jobqueue/worker/` (importing that package loads the worker runtime, 0.15 s:
the very window this closes).
"""

from __future__ import annotations

import signal

STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT)

_received: list[int] = []
_previous: dict[int, object] = {}


def _record(signum: int, _frame) -> None:
    _received.append(signum)


def install_early() -> None:
    """Record SIGTERM and SIGINT from now on instead of dying (or raising KeyboardInterrupt).
    A parent that blocked them before starting us (`block_in_child`: the supervisor does) has
    closed even the window before this runs: they are unblocked here, and one that waited
    is recorded now."""
    for signum in STOP_SIGNALS:
        previous = signal.signal(signum, _record)
        _previous.setdefault(signum, previous)
    signal.pthread_sigmask(signal.SIG_UNBLOCK, STOP_SIGNALS)


def block_in_child() -> None:
    """For a parent's preexec_fn: the child starts with stop signals blocked (the mask
    survives exec), so one sent before the child's `install_early` waits for it."""
    signal.pthread_sigmask(signal.SIG_BLOCK, STOP_SIGNALS)


def received() -> list[int]:
    """The stop signals recorded and not yet replayed, oldest first."""
    return list(_received)


def replay() -> None:
    """Deliver the recorded signals again, to the handlers now installed (call it after
    installing them)."""
    while _received:
        signal.raise_signal(_received.pop(0))


def release() -> None:
    """Give the signals back to the handlers that were there before, and replay."""
    for signum, previous in _previous.items():
        if signal.getsignal(signum) is _record:
            signal.signal(signum, previous)
    _previous.clear()
    replay()
