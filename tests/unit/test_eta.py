"""The batch ETA (jobqueue/batches/eta.py): steady when the observed rate jitters, from the
limiter's budget while the platform is rate limited, and per platform for a fan-out batch."""

from __future__ import annotations

import itertools
import random

from jobqueue.batches.eta import BatchEta, RateEstimator


def jittery_run(rate: float, jitter: float, seconds: int, total: int, seed: int = 7):
    """(t, done) once a second: each second finishes rate x (1 ± jitter) jobs, at random."""
    rng = random.Random(seed)
    done, out = 0.0, []
    for t in range(seconds + 1):
        out.append((float(t), min(total, int(done))))
        done += rate * rng.uniform(1 - jitter, 1 + jitter)
    return out


class TestSmoothing:
    def test_eta_does_not_swing_with_a_jittering_rate(self):
        """At 10 jobs/s ± 50% per poll, every ETA after the first window is within 30% of
        the true time left, and the ETA never jumps by more than 10% between polls; the
        instantaneous estimate swings far more on the same data."""
        total, est = 6000, RateEstimator(window=30)
        run = jittery_run(10, 0.5, 500, total)
        etas, naive = [], []
        for (_, done_prev), (t, done) in itertools.pairwise(run):
            est.observe(t, done)
            if t < 30:
                continue
            eta = est.eta(total - done)
            truth = (total - done) / 10
            assert abs(eta - truth) <= 0.3 * truth, (t, eta, truth)
            etas.append((t, eta))
            naive.append((total - done) / max(1, done - done_prev))
        for (t0, e0), (t1, e1) in itertools.pairwise(etas):
            assert abs(e1 - (e0 - (t1 - t0))) <= 0.1 * e0, (t1, e0, e1)
        swings = [abs(b - a) / a for a, b in itertools.pairwise(naive)]
        assert max(swings) > 0.5  # what `batch wait` showed before: 1:09 -> 3:54 -> 0:45

    def test_first_window_uses_the_average_so_far(self):
        """Before a window has passed, the rate is the plain average since the first poll."""
        est = RateEstimator(window=30)
        for t, done in ((0, 0), (1, 30), (2, 30), (3, 30)):
            est.observe(t, done)
        assert est.rate() == 10 and est.eta(100) == 10

    def test_a_second_poll_a_window_after_the_first_gives_the_average(self):
        """`batch wait --interval 60` (or one slow poll): the second observation comes a whole
        window after the first; it seeds the rate with the average (it used to add to None)."""
        est = RateEstimator(window=60)
        est.observe(0, 0)
        est.observe(61, 61)
        assert est.rate() == 1 and est.eta(30) == 30

    def test_follows_a_real_change_of_rate(self):
        """Twice the workers: within two windows the ETA reflects the new rate."""
        est, done = RateEstimator(window=20), 0
        for t in range(0, 101):
            est.observe(t, done)
            done += 5
        for t in range(101, 141):
            est.observe(t, done)
            done += 10
        assert abs(est.rate() - 10) < 1.5

    def test_nothing_measured_nothing_left(self):
        est = RateEstimator()
        assert est.eta(10) is None
        est.observe(0, 0)
        est.observe(1, 0)
        assert est.eta(10) is None and est.eta(0) == 0


class TestRateLimited:
    def test_eta_comes_from_the_budget_while_limited(self):
        """A limited platform at 2 keys x 600 RPM (20/s): the ETA is remaining / 20 whatever
        bursts the polls saw, and stays so one window after the last limited poll."""
        est = RateEstimator(window=30)
        bursts = [0, 80, 80, 120, 200, 200, 260]  # refill bursts: 0..80 jobs a poll
        for t, done in enumerate(bursts):
            est.observe(t, done, limited=True, budget=20.0)
            assert est.eta(1000 - done) == (1000 - done) / 20
        est.observe(20, 400, limited=False, budget=20.0)
        assert est.limited() and est.eta(600) == 30  # still within the window
        est.observe(40, 440, limited=False, budget=20.0)  # 2/s measured since
        assert not est.limited() and est.rate() < 20

    def test_no_eta_before_the_first_observation(self):
        assert BatchEta().eta() is None

    def test_fan_out_batch_takes_the_slowest_platform(self):
        """Two platforms: the batch ends when the slower one does; the limited one's ETA is
        its budget's."""
        eta = BatchEta(window=30)
        counts = lambda done, total: {"succeeded": done, "dead": 0,  # noqa: E731
                                      "cancelled": 0, "duplicates": 0, "total": total}
        for t in range(0, 40):
            eta.observe(t, {"fast": counts(10 * t, 1000), "slow": counts(2 * t, 1000)},
                        {"slow": (True, 1.0), "fast": (False, 50.0)})
        # fast: 10/s measured, 610 left -> 61 s; slow: limited at 1 req/s, 922 left -> 922 s
        assert eta.eta() == 922


class TestBatchPace:
    def test_the_pace_is_the_budget_of_the_limited_platforms_with_work_left(self):
        """A limited platform paces the batch while it has jobs left; one that has finished
        them, limited or not, does not."""
        counts = lambda done, total: {"succeeded": done, "dead": 0,  # noqa: E731
                                      "cancelled": 0, "duplicates": 0, "total": total}
        eta = BatchEta(window=30)
        for t in range(0, 10):
            eta.observe(t, {"done": counts(10, 10), "slow": counts(t, 100)},
                        {"done": (True, 5.0), "slow": (True, 2.0)})
        assert eta.limited() == ["slow"] and eta.rate() == 2.0

    def test_unlimited_the_pace_is_what_every_platform_finishes(self):
        counts = lambda done, total: {"succeeded": done, "dead": 0,  # noqa: E731
                                      "cancelled": 0, "duplicates": 0, "total": total}
        eta = BatchEta(window=30)
        for t in range(0, 10):
            eta.observe(t, {"a": counts(min(4 * t, 20), 20), "b": counts(t, 100)})
        assert eta.limited() == [] and eta.rate() == (20 / 9) + 1.0
        assert BatchEta().rate() is None

    def test_platforms_not_limited_share_what_they_finish(self):
        """A fan-out whose fast platform has finished: its workers' pace goes to the jobs
        left on the other one (the dashboard's ETA always read the batch as a whole)."""
        counts = lambda done, total: {"succeeded": done, "dead": 0,  # noqa: E731
                                      "cancelled": 0, "duplicates": 0, "total": total}
        eta = BatchEta(window=30)
        for t in range(0, 11):
            eta.observe(t, {"fast": counts(9 * t, 90), "slow": counts(t, 30)})
        assert eta.rate() == 10.0 and eta.eta() == 20 / 10.0
