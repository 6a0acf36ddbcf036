"""Held requests (SSE streams and `?wait=` long polls): served on one asyncio loop per process,
so they never hold one of Gunicorn's request threads, and capped per token and per process.

A held request starts as an ordinary request on a request thread: authentication, the rate
limit, the visibility check and the slot (over a cap: 429 with `Retry-After`). Under the
shipped Gunicorn worker (web/gunicorn_worker.py) the view then hands its socket to the
process's stream loop and the thread is free at once. The loop follows the job through the
process's one LISTEN (web/events.py), re-reads it on a small reader pool of its own (at most
`READERS` pooled connections at a time), and watches the socket: a client that goes away is
noticed at once and its slot freed. Served any other way (werkzeug's server in the tests,
TLS or HTTP/2 inside Gunicorn), the same coroutines run on the loop while the request thread
waits for them, as before.

On a graceful stop the worker ends every stream (an SSE client reconnects to another process)
and answers every long poll with the job's state at that moment.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import json
import queue
import threading
from collections import Counter
from collections.abc import Awaitable, Callable
from email.utils import formatdate

import structlog
from flask import Flask, Response, request

from web.auth import api_error
from web.events import AsyncSubscription, Hub

log = structlog.get_logger("jobqueue.web.streams")

KEEPALIVE_SECONDS = 15.0  # an SSE comment this often, so proxies keep an idle stream open
RETRY_AFTER_SECONDS = 5   # what a client over a cap is told to wait
READERS = 4               # threads (and so pooled connections, at most) re-reading jobs
# Set by web/gunicorn_worker.py in a request's environ: the worker can take the socket.
CAN_HAND_OFF = "jobqueue.can_hand_off"
HELD = "jobqueue.held"    # set by a view: the held request the worker hands the socket to
HOP_BY_HOP = {"connection", "content-length", "transfer-encoding", "keep-alive"}

Emit = Callable[[bytes], Awaitable[None]]


class StreamSlots:
    """How many held requests each token, and the whole process, may have open."""

    def __init__(self, per_token: int, per_process: int):
        self.per_token, self.per_process = per_token, per_process
        self._lock = threading.Lock()
        self._by_token: Counter[int] = Counter()
        self._total = 0

    def take(self, token_id: int) -> Slot | None:
        with self._lock:
            if self._total >= self.per_process or self._by_token[token_id] >= self.per_token:
                return None
            self._total += 1
            self._by_token[token_id] += 1
        return Slot(self, token_id)

    def _give_back(self, token_id: int) -> None:
        with self._lock:
            self._total -= 1
            self._by_token[token_id] -= 1
            if not self._by_token[token_id]:
                del self._by_token[token_id]

    def open(self, token_id: int | None = None) -> int:
        with self._lock:
            return self._total if token_id is None else self._by_token[token_id]


class Slot:
    def __init__(self, slots: StreamSlots, token_id: int):
        self._slots, self._token_id = slots, token_id
        self._released = False
        self._lock = threading.Lock()

    def release(self) -> None:
        with self._lock:
            if self._released:
                return
            self._released = True
        self._slots._give_back(self._token_id)


class Streams:
    """The process's stream loop (a thread running asyncio), its reader pool and its slots."""

    def __init__(self, app: Flask, hub: Hub, read_job: Callable, per_token: int,
                 per_process: int):
        self.app, self.hub, self.read_job = app, hub, read_job
        self.slots = StreamSlots(per_token, per_process)
        self.loop = asyncio.new_event_loop()
        self.readers = concurrent.futures.ThreadPoolExecutor(
            READERS, thread_name_prefix="jobqueue-stream-read")
        self.stopping = False
        self._tasks: set[asyncio.Task] = set()
        self._thread = threading.Thread(target=self._run_loop, name="jobqueue-streams",
                                        daemon=True)
        self._thread.start()

    def _run_loop(self) -> None:
        try:
            self.loop.run_forever()
        finally:
            self.loop.close()

    # -- the views' side (request threads) ------------------------------------------------

    def _slot_or_429(self, token_id: int) -> Slot | Response:
        slot = self.slots.take(token_id)
        if slot is None:
            limit = self.slots.per_token if self.slots.open(token_id) >= self.slots.per_token \
                else self.slots.per_process
            scope = "this token" if limit == self.slots.per_token else "this server process"
            return api_error(429, "too_many_streams",
                             f"{scope} already holds {limit} open streams and waits (SSE and "
                             "?wait=); close one or retry later",
                             headers={"Retry-After": str(RETRY_AFTER_SECONDS)})
        return slot

    def long_poll(self, token_id: int, job_id: int, seconds: float,
                  render: Callable[[object], Response]) -> Response:
        """Wait up to `seconds` for job `job_id` to finish, then `render(job)` (None: it was
        deleted meanwhile). `render` runs with the app context."""
        slot = self._slot_or_429(token_id)
        if not isinstance(slot, Slot):
            return slot
        if request.environ.get(CAN_HAND_OFF) and not self.stopping:
            request.environ[HELD] = HeldPoll(self, slot, job_id, seconds, render)
            return Response(b"", mimetype="application/json")
        try:
            job = self._run(self._wait_finished(job_id, seconds)).result()
        finally:
            slot.release()
        return render(job)

    def event_stream(self, token_id: int, job_id: int,
                     describe: Callable[[object], dict]) -> Response:
        """Server-Sent Events for job `job_id` (each event's data is `describe(job)`) until it
        finishes or is deleted."""
        slot = self._slot_or_429(token_id)
        if not isinstance(slot, Slot):
            return slot
        headers = {"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}
        if request.environ.get(CAN_HAND_OFF) and not self.stopping:
            request.environ[HELD] = HeldEvents(self, slot, job_id, describe)
            return Response(b"", mimetype="text/event-stream", headers=headers)
        return Response(_ReleasedOnClose(self._events_in_thread(slot, job_id, describe),
                                         slot),
                        mimetype="text/event-stream", headers=headers)

    def _events_in_thread(self, slot: Slot, job_id: int, describe):
        """The stream for a server that cannot hand off its socket: the coroutine runs on the
        loop, this generator (on the request thread) passes its events on."""
        events: queue.SimpleQueue = queue.SimpleQueue()
        done = object()

        async def emit(data: bytes) -> None:
            events.put(data)

        async def produce() -> None:
            try:
                await self._events(job_id, describe, emit)
            finally:
                events.put(done)

        future = self._run(produce())
        try:
            while (item := events.get()) is not done:
                yield item
            future.result()
        finally:
            future.cancel()
            slot.release()

    def _run(self, coro) -> concurrent.futures.Future:
        return asyncio.run_coroutine_threadsafe(self._tracked(coro), self.loop)

    # -- the loop's side ------------------------------------------------------------------

    async def _tracked(self, coro):
        task = asyncio.current_task()
        self._tasks.add(task)
        try:
            return await coro
        finally:
            self._tasks.discard(task)

    async def _read(self, job_id: int):
        return await self.loop.run_in_executor(self.readers, self.read_job, job_id)

    async def _wait_finished(self, job_id: int, seconds: float):
        deadline = self.loop.time() + seconds
        sub = AsyncSubscription(self.loop)
        with self.hub.subscribe(job_id, sub):
            job = await self._read(job_id)
            while job is not None and not job.finished and not self.stopping and (
                    left := deadline - self.loop.time()) > 0:
                if await sub.wait(left):
                    job = await self._read(job_id)
        return job

    async def _events(self, job_id: int, describe, emit: Emit) -> None:
        sub = AsyncSubscription(self.loop)
        with self.hub.subscribe(job_id, sub):
            last = None
            while True:
                job = await self._read(job_id)
                if job is None:  # deleted while followed
                    await emit(f"event: gone\ndata: {json.dumps({'id': job_id})}\n\n".encode())
                    return
                seen = (job.state, job.attempts, json.dumps(job.progress, sort_keys=True))
                if seen != last:
                    last = seen
                    data = json.dumps(describe(job), default=str)
                    kind = "done" if job.finished else "state"
                    await emit(f"event: {kind}\ndata: {data}\n\n".encode())
                if job.finished or self.stopping:
                    return
                if not await sub.wait(KEEPALIVE_SECONDS):
                    await emit(b": keep-alive\n\n")

    def stop(self, timeout: float) -> None:
        """End every held request (streams close, long polls answer now), waiting up to
        `timeout` seconds for them to write their last bytes; then stop the loop."""
        self.stopping = True
        self.hub.wake_all()

        async def drain() -> None:
            if self._tasks:
                await asyncio.wait(list(self._tasks), timeout=timeout)

        if self._thread.is_alive():
            with contextlib.suppress(concurrent.futures.TimeoutError, RuntimeError):
                asyncio.run_coroutine_threadsafe(drain(), self.loop).result(timeout + 1)
            self.loop.call_soon_threadsafe(self.loop.stop)
            self._thread.join(timeout=1)
        self.readers.shutdown(wait=False, cancel_futures=True)


class _ReleasedOnClose:
    """A response body that gives its slot back when the server closes it, even unread (a
    HEAD request never starts the generator, whose own `finally` would then never run)."""

    def __init__(self, body, slot: Slot):
        self.body, self.slot = body, slot

    def __iter__(self):
        return self.body

    def close(self) -> None:
        try:
            self.body.close()
        finally:
            self.slot.release()


class Held:
    """A request whose socket the worker handed to the stream loop (see `start`)."""

    def __init__(self, streams: Streams, slot: Slot):
        self.streams, self.slot = streams, slot

    def start(self, sock, status: str, headers: list[tuple[str, str]], http_version: str) -> None:
        """Called by the worker on its request thread, after the app answered: from now on the
        loop owns `sock`. `status` and `headers` are the app's (after_request included)."""
        try:
            self.streams._run(self._serve(sock, status, headers, http_version))
        except RuntimeError:  # the loop is gone: the process is stopping
            self.slot.release()
            sock.close()

    async def _serve(self, sock, status, headers, http_version) -> None:
        writer = None
        try:
            reader, writer = await asyncio.open_connection(sock=sock)
            work = asyncio.ensure_future(self.serve(writer, status, headers, http_version))
            gone = asyncio.ensure_future(_until_closed(reader))
            try:
                await asyncio.wait({work, gone}, return_when=asyncio.FIRST_COMPLETED)
                if work.done() and not work.cancelled() and work.exception() is not None:
                    log.warning("held_request_failed", error=repr(work.exception()))
            finally:
                gone.cancel()
                work.cancel()
                # Both end here; a write to a closed socket or the cancellation is the end.
                await asyncio.gather(work, gone, return_exceptions=True)
        except OSError as exc:
            log.debug("held_request_socket_error", error=str(exc))
        finally:
            self.slot.release()
            if writer is not None:
                writer.close()
            else:
                sock.close()

    async def serve(self, writer: asyncio.StreamWriter, status, headers, http_version):
        raise NotImplementedError


class HeldEvents(Held):
    def __init__(self, streams: Streams, slot: Slot, job_id: int, describe):
        super().__init__(streams, slot)
        self.job_id, self.describe = job_id, describe

    async def serve(self, writer, status, headers, http_version):
        chunked = http_version != "HTTP/1.0"
        extra = [("Transfer-Encoding", "chunked")] if chunked else []
        writer.write(_head(http_version, status, headers, extra))

        async def emit(data: bytes) -> None:
            writer.write(b"%x\r\n%s\r\n" % (len(data), data) if chunked else data)
            await writer.drain()

        await self.streams._events(self.job_id, self.describe, emit)
        if chunked:
            writer.write(b"0\r\n\r\n")
        await writer.drain()


class HeldPoll(Held):
    def __init__(self, streams: Streams, slot: Slot, job_id: int, seconds: float, render):
        super().__init__(streams, slot)
        self.job_id, self.seconds, self.render = job_id, seconds, render

    async def serve(self, writer, status, headers, http_version):
        job = await self.streams._wait_finished(self.job_id, self.seconds)
        response = await self.streams.loop.run_in_executor(self.streams.readers, self._render,
                                                           job)
        body = response.get_data()
        # The first answer's headers (security, rate limit) with the final status and body.
        kept = [(k, v) for k, v in headers if k.lower() != "content-type"]
        writer.write(_head(http_version, response.status, kept, [
            ("Content-Type", response.content_type), ("Content-Length", str(len(body)))]) + body)
        await writer.drain()

    def _render(self, job) -> Response:
        with self.streams.app.app_context():
            return self.render(job)


def _head(http_version: str, status: str, headers, extra) -> bytes:
    lines = [f"{http_version} {status}", f"Date: {formatdate(usegmt=True)}",
             "Connection: close"]
    lines += [f"{k}: {v}" for k, v in headers if k.lower() not in HOP_BY_HOP]
    lines += [f"{k}: {v}" for k, v in extra]
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")


async def _until_closed(reader: asyncio.StreamReader) -> None:
    """Returns when the client closes its side (or the connection breaks); what it sends
    meanwhile (a pipelined request: this connection serves no other) is dropped."""
    try:
        while await reader.read(4096):
            pass
    except OSError:
        pass
