"""The OpenAI-compatible simulator used by `jobqueue demo`, the tests and the benchmarks: same
JSON and headers as real providers, per-key limits, 429s, injected faults. Loopback only."""

from jobqueue.sim.server import FakeOpenAI, Limits

__all__ = ["FakeOpenAI", "Limits"]
