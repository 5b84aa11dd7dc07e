"""Consent expiry of transports through the worker's ConsentSchedule (RFC 7675; docs/RELIABILITY.md, B9).

The schedule must disconnect exactly the transports, and at exactly the once-a-second checks, that calling
``check_consent`` on every transport would, while looking only at transports whose deadline has come up.
"""

from __future__ import annotations

import random
from typing import Any

import pytest

from router import stun
from router import transport as transport_module
from router.ice import CONSENT_TIMEOUT_MS
from router.transport import ConsentSchedule, WebRtcTransport

PWD = "p" * 22


class Clock:
    """Stands in for the time module inside router.transport, in milliseconds."""

    def __init__(self) -> None:
        self.ms = 1_000_000

    def monotonic(self) -> float:
        return self.ms / 1000


class StubEngine:
    def add_transport(self, handle: int) -> None:
        pass

    def remove_transport(self, handle: int) -> None:
        pass

    def send(self, host: str, port: int, data: bytes, local: str = "") -> None:
        pass

    def bind_tuple(self, handle: int, host: str, port: int, local: str = "") -> None:
        pass


@pytest.fixture
def clock(monkeypatch: pytest.MonkeyPatch) -> Clock:
    c = Clock()
    monkeypatch.setattr(transport_module, "time", c)
    return c


def make(index: int, events: list[tuple[str, str, dict[str, Any]]], consent: ConsentSchedule | None) -> WebRtcTransport:
    return WebRtcTransport(
        transport_id=f"t{index}",
        router_id="r",
        handle=index,
        engine=StubEngine(),
        certificate=None,  # type: ignore[arg-type]  # DTLS is not started in these tests
        ice_ufrag=f"u{index:04d}",
        ice_pwd=PWD,
        notify=lambda event, target, body: events.append((event, target, body.to_wire())),
        on_data_message=lambda t, label, data: None,
        consent=consent,
    )


def check(t: WebRtcTransport, *, nominate: bool = False) -> bytes:
    m = stun.StunMessage(stun.METHOD_BINDING, stun.StunClass.REQUEST)
    m.add_username(f"{t.ice.local_ufrag}:peer").add_priority(1).add_ice_controlling(7)
    if nominate:
        m.add_use_candidate()
    return m.to_bytes(PWD.encode())


def test_expiry_at_the_deadline_and_checks_move_it(clock: Clock) -> None:
    events: list[tuple[str, str, dict[str, Any]]] = []
    schedule = ConsentSchedule()
    t = make(0, events, schedule)
    assert len(schedule) == 0  # not connected: nothing to time
    peer = ("192.0.2.1", 5000)
    t.handle_stun(check(t, nominate=True), peer)
    assert t.ice_state == "connected" and len(schedule) == 1
    first = clock.ms
    clock.ms += 20_000
    t.handle_stun(check(t), peer)  # a consent check 20 s later: the deadline moves, the schedule is not touched
    assert len(schedule) == 1
    schedule.run(first + CONSENT_TIMEOUT_MS + 1)  # the old deadline comes up: still fresh, filed again
    assert t.ice_state == "connected" and len(schedule) == 1
    schedule.run(clock.ms + CONSENT_TIMEOUT_MS)
    assert t.ice_state == "connected"
    schedule.run(clock.ms + CONSENT_TIMEOUT_MS + 1)
    assert t.ice_state == "disconnected" and len(schedule) == 0
    assert events[-1] == ("transport.ice_state", "t0", {"state": "disconnected"})


def test_only_due_transports_are_looked_at(clock: Clock, monkeypatch: pytest.MonkeyPatch) -> None:
    events: list[tuple[str, str, dict[str, Any]]] = []
    schedule = ConsentSchedule()
    transports = [make(i, events, schedule) for i in range(100)]
    for i, t in enumerate(transports):
        clock.ms += 100  # connected 100 ms apart
        t.handle_stun(check(t, nominate=True), ("10.0.0.1", 1000 + i))
    looked_at: list[str] = []
    original = WebRtcTransport.consent_due

    def spy(self: WebRtcTransport, now_ms: int) -> None:
        looked_at.append(self.id)
        original(self, now_ms)

    monkeypatch.setattr(WebRtcTransport, "consent_due", spy)
    schedule.run(clock.ms)  # nobody is due
    assert looked_at == []
    first = transports[0].ice.last_valid_check_ms
    assert first is not None
    schedule.run(first + CONSENT_TIMEOUT_MS + 1 + 250)  # the first three deadlines have come up
    assert looked_at == ["t0", "t1", "t2"]
    assert [t.ice_state for t in transports[:4]] == ["disconnected"] * 3 + ["connected"]


def test_closed_and_reconnected_transports(clock: Clock) -> None:
    events: list[tuple[str, str, dict[str, Any]]] = []
    schedule = ConsentSchedule()
    a, b = make(1, events, schedule), make(2, events, schedule)
    a.handle_stun(check(a, nominate=True), ("10.0.0.1", 1))
    b.handle_stun(check(b, nominate=True), ("10.0.0.2", 2))
    a.close()
    events.clear()
    schedule.run(clock.ms + CONSENT_TIMEOUT_MS + 1)
    assert events == [("transport.ice_state", "t2", {"state": "disconnected"})]  # nothing about the closed one
    assert len(schedule) == 0
    # Consent lost, then the peer nominates a new path: connected again and timed again.
    clock.ms += CONSENT_TIMEOUT_MS + 1
    b.handle_stun(check(b, nominate=True), ("10.0.0.2", 3))
    assert b.ice_state == "connected" and len(schedule) == 1
    # check_consent called directly (not through the schedule) leaves at most one live entry behind.
    clock.ms += CONSENT_TIMEOUT_MS + 1
    b.check_consent(clock.ms)
    b.handle_stun(check(b, nominate=True), ("10.0.0.2", 4))
    schedule.run(clock.ms + CONSENT_TIMEOUT_MS + 1)
    assert events.count(("transport.ice_state", "t2", {"state": "disconnected"})) == 3


@pytest.mark.parametrize("seed", range(5))
def test_schedule_decides_like_checking_every_transport(clock: Clock, seed: int) -> None:
    """Twins fed the same checks: one set timed by the schedule, one checked one by one every second (the old
    way); their states and notifications must agree after every second."""
    rng = random.Random(seed)
    scheduled_events: list[tuple[str, str, dict[str, Any]]] = []
    scanned_events: list[tuple[str, str, dict[str, Any]]] = []
    schedule = ConsentSchedule()
    scheduled = [make(i, scheduled_events, schedule) for i in range(40)]
    scanned = [make(i, scanned_events, None) for i in range(40)]
    period = {i: rng.choice([2_500, 5_000, 29_000, 31_000, 60_000]) for i in range(40)}
    next_check = {i: rng.randrange(0, 10_000) for i in range(40)}
    start = clock.ms
    for second in range(1, 180):
        end = start + second * 1000
        for step in range(0, 1000, 50):
            clock.ms = end - 1000 + step
            for i in range(40):
                if clock.ms - start >= next_check[i]:
                    next_check[i] += period[i] + rng.randrange(-200, 200)
                    nominate = rng.random() < 0.05
                    port = 1000 + i + (10_000 if rng.random() < 0.03 else 0)
                    for t in (scheduled[i], scanned[i]):
                        t.handle_stun(check(t, nominate=nominate), ("10.0.0.9", port))
                    if rng.random() < 0.01:
                        for t in (scheduled[i], scanned[i]):
                            t.ice.remove_tuple(("10.0.0.9", port))
                    if rng.random() < 0.005:
                        for t in (scheduled[i], scanned[i]):
                            t.close()
        clock.ms = end
        schedule.run(end)
        for t in scanned:
            if not t.closed:
                t.check_consent(end)
        assert [t.ice_state for t in scheduled] == [t.ice_state for t in scanned]
        assert sorted(map(str, scheduled_events)) == sorted(map(str, scanned_events))
    assert any(e[2] == {"state": "disconnected"} for e in scanned_events)
    assert len(schedule) <= 40


def test_a_crowd_that_leaves_at_once_does_not_hold_its_entries_for_a_consent_timeout() -> None:
    schedule = ConsentSchedule()
    kept = [schedule.add(object(), 30_000 + i) for i in range(10)]  # type: ignore[arg-type]
    gone = [schedule.add(object(), 30_000 + i) for i in range(100)]  # type: ignore[arg-type]
    for entry in gone:
        schedule.cancel(entry)
        schedule.cancel(entry)  # twice is once
    assert len(schedule) <= 10 + ConsentSchedule.COMPACT_MIN
    assert all(entry in schedule._heap for entry in kept)
