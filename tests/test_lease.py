"""Leader election on a Lease (webhook.audit.lease), candidates sharing an in-memory API
with the real API's optimistic concurrency, on a clock the test moves. The end-to-end
test runs two real servers against a real kube-apiserver."""

from __future__ import annotations

import pytest

from tests.fake_kube import FakeKube
from webhook.audit.lease import LeaseElector


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def candidates(kube: FakeKube, clock: Clock, *names: str) -> list[LeaseElector]:
    return [
        LeaseElector(kube, "sys", "audit", name, lease_seconds=15, renew_deadline=10, clock=clock)
        for name in names
    ]


def holder(kube: FakeKube) -> str:
    lease = kube.stored("coordination.k8s.io/v1", "leases", "sys", "audit")
    return str(lease["spec"]["holderIdentity"])


def test_one_leader_and_it_keeps_the_lease_while_it_renews() -> None:
    kube, clock = FakeKube(), Clock()
    a, b = candidates(kube, clock, "a", "b")
    assert a.step() and not b.step()
    for _ in range(20):  # a minute of renewals every 3 s: b never gets in
        clock.now += 3
        assert a.step() and not b.step()
    assert holder(kube) == "a"
    lease = kube.stored("coordination.k8s.io/v1", "leases", "sys", "audit")
    assert lease["spec"]["leaseTransitions"] == 0


def test_a_silent_leader_is_replaced_after_the_lease_duration() -> None:
    kube, clock = FakeKube(), Clock()
    a, b = candidates(kube, clock, "a", "b")
    assert a.step()
    assert not b.step()  # b sees the lease now and starts counting
    clock.now += 9
    assert a.leading()  # within the renew deadline
    clock.now += 2
    assert not a.leading()  # 11 s without renewal: a stops acting on it ...
    assert not b.step()  # ... before b may take it (15 s after b last saw it change)
    clock.now += 5
    assert b.step()
    assert holder(kube) == "b"
    lease = kube.stored("coordination.k8s.io/v1", "leases", "sys", "audit")
    assert lease["spec"]["leaseTransitions"] == 1
    assert not a.step()  # a comes back: b holds it and renews
    assert holder(kube) == "b"


def test_a_released_lease_is_taken_at_once() -> None:
    kube, clock = FakeKube(), Clock()
    a, b = candidates(kube, clock, "a", "b")
    assert a.step() and not b.step()
    a.release()
    assert not a.leading()
    assert holder(kube) == ""
    assert b.step()


def test_a_lost_race_is_not_leadership() -> None:
    """Both read the expired lease; the second write carries a stale resourceVersion."""
    kube, clock = FakeKube(), Clock()
    a, b, c = candidates(kube, clock, "a", "b", "c")
    assert a.step()
    assert not b.step() and not c.step()
    clock.now += 16
    original_get = kube.get
    reads = [original_get("/apis/coordination.k8s.io/v1/namespaces/sys/leases/audit")]
    kube.get = lambda path, **q: reads[0]  # type: ignore[method-assign]  # both read the same
    assert b.step()
    assert not c.step()  # 409 on its write
    kube.get = original_get  # type: ignore[method-assign]
    assert holder(kube) == "b"


def test_settings_that_cannot_work_are_refused() -> None:
    with pytest.raises(ValueError, match="renew_deadline"):
        LeaseElector(FakeKube(), "sys", "audit", "a", lease_seconds=10, renew_deadline=10)
