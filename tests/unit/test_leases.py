"""How old a lease must be before the heartbeat renews it (jobqueue/worker/leases.py)."""

from __future__ import annotations

import pytest

from jobqueue.worker.config import WorkerConfig
from jobqueue.worker.leases import renew_after


@pytest.mark.parametrize(("lease", "beat", "after"), [
    (30.0, None, 5.0),   # the default beat, a third of the lease: half a beat
    (0.6, 0.2, 0.1),
    (30.0, 20.0, 5.0),   # a slow beat: half of the 10 s that renewing every beat would leave
    (30.0, 30.0, 0.0),   # a beat as long as the lease: renew at every beat, as before
    (30.0, 60.0, 0.0),   # (tests use this to keep the heartbeat away)
])
def test_renew_after(lease, beat, after):
    config = WorkerConfig(lease_seconds=lease, heartbeat_seconds=beat)
    assert renew_after(config) == pytest.approx(after)


@pytest.mark.parametrize("lease", [0.3, 2.0, 30.0, 600.0])
@pytest.mark.parametrize("share", [0.1, 1 / 3, 0.5, 0.66, 0.9])
def test_a_lease_is_renewed_with_at_least_half_the_margin_of_renewing_every_beat(lease, share):
    """Worst case: a lease set less than renew_after before a beat is skipped by it and
    renewed at the next, a beat later: it then has lease - beat - renew_after left, at least
    half of the lease - beat that renewing at every beat leaves."""
    beat = lease * share
    after = renew_after(WorkerConfig(lease_seconds=lease, heartbeat_seconds=beat))
    assert after <= beat / 2 + 1e-9  # skipped at most once: a beat later it is older
    left = lease - (after + beat)
    assert left >= (lease - beat) / 2 - 1e-9
