"""From a batch file's rows to job specs (what each row enqueues), including the fan-out of
one row over several platforms and samples."""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass

from jobqueue.batches.files import BatchRow
from jobqueue.jobs import JobSpec

MAX_SAMPLES = 100  # per (row, platform): a typo like --samples 1000 is refused, not enqueued


def chat_spec(row: BatchRow, max_attempts: int) -> JobSpec:
    payload: dict = {"messages": row.messages}
    for name in ("model", "max_tokens", "temperature"):
        value = getattr(row, name)
        if value is not None:
            payload[name] = value
    return JobSpec("chat", payload, priority=row.priority, max_attempts=max_attempts,
                   idempotency_key=row.idempotency_key, metadata=row.metadata, ref=row.ref,
                   depends_on=row.depends_on, on_parent_failure=row.on_parent_failure)


def without_fallback(specs: Iterable[JobSpec]) -> Iterator[JobSpec]:
    """A batch that forbids the platform's fallback model: every job waits for the main
    model, however long the provider limits it (the payload's `"fallback": false`)."""
    for spec in specs:
        spec.payload["fallback"] = False
        yield spec


@dataclass(frozen=True, slots=True)
class Target:
    """One platform a batch fans out to: its queue name and its jobs' attempt budget."""

    platform: str
    max_attempts: int


def fanout_specs(rows: Iterable[BatchRow], targets: Sequence[Target],
                 samples: int = 1) -> Iterator[JobSpec]:
    """One chat job per (row, platform, sample), in that order, each on its platform's queue
    (fanout's jobs without their sample numbers)."""
    for _, spec in fanout(rows, targets, samples):
        yield spec


def fanout(rows: Iterable[BatchRow], targets: Sequence[Target],
           samples: int = 1) -> Iterator[tuple[int, JobSpec]]:
    """(sample, job): one chat job per (row, platform, sample), in that order, each on its
    platform's queue; the sample (1..samples) for a caller that records it (a campaign's
    metadata).

    A plain batch (one platform, one sample) is chat_spec unchanged. Otherwise a row's
    idempotency key becomes `KEY:PLATFORM:SAMPLE`, so the same row on another platform or as
    another sample is another job (it used to merge into the first platform's), while
    resubmitting the same file gives back the same jobs. With several samples each job carries
    its number in the payload and skips the response cache: samples are independent answers.
    """
    if not targets:
        raise ValueError("a fan-out needs at least one platform")
    if not 1 <= samples <= MAX_SAMPLES:
        raise ValueError(f"samples: must be from 1 to {MAX_SAMPLES}, got {samples}")
    plain = len(targets) == 1 and samples == 1
    for row in rows:
        if not plain and (row.ref is not None or row.depends_on):
            # a ref names one job; fanned out it would name several
            raise ValueError(f"line {row.line}: ref/depends_on (workflows) cannot be fanned "
                             "out over platforms or samples; submit one platform, one sample")
        for target in targets:
            for sample in range(1, samples + 1):
                spec = chat_spec(row, target.max_attempts)
                spec.queue = target.platform
                if not plain:
                    if row.idempotency_key is not None:
                        spec.idempotency_key = (f"{row.idempotency_key}:{target.platform}:"
                                                f"{sample}")
                    if samples > 1:
                        spec.payload["sample"] = sample
                        spec.payload["cache"] = False
                yield sample, spec


def parse_platforms(text: str | Sequence[str]) -> list[str]:
    """`openai,gemini` (or a list) as platform names in order, without blanks or repeats;
    ValueError naming the problem."""
    names = text.split(",") if isinstance(text, str) else list(text)
    out: list[str] = []
    for name in names:
        if not isinstance(name, str):
            raise ValueError(f"platform names must be strings, got {name!r}")
        name = name.strip()
        if not name:
            raise ValueError("an empty platform name (write a,b,c)")
        if name in out:
            raise ValueError(f"platform {name!r} given twice")
        out.append(name)
    if not out:
        raise ValueError("at least one platform is needed")
    return out
