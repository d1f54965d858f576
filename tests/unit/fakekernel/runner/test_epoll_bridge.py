"""runner/epoll.py's registrations, in-process: a real epoll instance stands in for the
target's, a fake pollable object for a ring buffer (state poll) or a perf event (poll takes
the pending wakeup).  Level-triggered registrations are ready exactly while the object is
(re-synchronised at each wait), edge-triggered ones once per wakeup; MOD re-polls."""
from __future__ import annotations

import os
import select

import pytest

from fakekernel.runner.epoll import EpollBridge, _Instance
from fakekernel.wait import EPOLLIN, WaitQueue
from uapi.vfs import EPOLL_CTL_ADD, EPOLL_CTL_DEL, EPOLL_CTL_MOD, EPOLLET, ffi


class FakeRing:
    """Pollable like a ring buffer: readable while data is pending (no side effect)."""

    def __init__(self):
        self.pending = 0
        self.waitq = WaitQueue()

    def map_poll(self) -> int:
        return EPOLLIN if self.pending else 0

    def produce(self) -> None:
        self.pending += 1
        self.waitq.wake_up()


@pytest.fixture
def setup(monkeypatch):
    import fakekernel.runner.epoll as mod
    monkeypatch.setattr(mod, "BpfMap", FakeRing)        # a map: state poll
    bridge = EpollBridge()
    ep = select.epoll()
    inst = _Instance(ep=os.dup(ep.fileno()))    # the bridge's own reference, as pidfd_getfd's
    bridge._instances.append(inst)
    yield bridge, inst, ep
    bridge.close()                          # closes its reference too
    assert not bridge._instances
    ep.close()


def ev(events: int, data: int = 0xabc):
    return ffi.new("struct epoll_event *", {"events": events, "data": data})


def ready(ep) -> int:
    return len(ep.poll(0))


def sync_waits(inst):
    """What a trapped epoll_wait does for this instance."""
    for reg in inst.regs.values():
        if reg.level:
            reg.sync()


def test_level_triggered_ready_while_data_remains(setup):
    bridge, inst, ep = setup
    ring = FakeRing()
    assert bridge._ctl(inst, EPOLL_CTL_ADD, 7, ring, ev(EPOLLIN)) == 0
    assert ready(ep) == 0
    ring.produce()
    sync_waits(inst)
    assert ready(ep) == 1
    sync_waits(inst)
    assert ready(ep) == 1                   # not consumed: still ready
    ring.pending = 0                        # the consumer caught up (no wakeup)
    sync_waits(inst)
    assert ready(ep) == 0


def test_edge_triggered_once_per_wakeup(setup):
    bridge, inst, ep = setup
    ring = FakeRing()
    assert bridge._ctl(inst, EPOLL_CTL_ADD, 7, ring, ev(EPOLLIN | EPOLLET)) == 0
    ring.produce()
    assert ready(ep) == 1
    assert ready(ep) == 0                   # unconsumed, but no new edge
    ring.produce()
    assert ready(ep) == 1


def test_add_when_ready_reports_at_once_and_mod_repolls(setup):
    bridge, inst, ep = setup
    ring = FakeRing()
    ring.pending = 1
    assert bridge._ctl(inst, EPOLL_CTL_ADD, 7, ring, ev(EPOLLIN | EPOLLET)) == 0
    assert ready(ep) == 1 and ready(ep) == 0
    assert bridge._ctl(inst, EPOLL_CTL_MOD, 7, ring, ev(EPOLLIN | EPOLLET)) == 0
    assert ready(ep) == 1                   # ep_modify polls again
    assert bridge._ctl(inst, EPOLL_CTL_MOD, 7, ring, ev(EPOLLIN)) == 0
    assert bridge._level == 1
    assert ready(ep) == 1 and ready(ep) == 1
    assert bridge._ctl(inst, EPOLL_CTL_ADD, 7, ring, ev(EPOLLIN)) == -17     # EEXIST
    assert bridge._ctl(inst, EPOLL_CTL_DEL, 7, ring, None) == 0
    assert bridge._level == 0 and not ring.waitq
    assert bridge._ctl(inst, EPOLL_CTL_DEL, 7, ring, None) == -2            # ENOENT


def test_perf_like_objects_stay_edge_triggered(setup, monkeypatch):
    import fakekernel.runner.epoll as mod
    bridge, inst, ep = setup
    monkeypatch.setattr(mod, "BpfMap", type("NotAPerfEvent", (), {}))
    ring = FakeRing()
    assert bridge._ctl(inst, EPOLL_CTL_ADD, 7, ring, ev(EPOLLIN)) == 0
    assert bridge._level == 0
    ring.produce()
    assert ready(ep) == 1 and ready(ep) == 0


def test_without_visible_waits_everything_is_edge_triggered(setup):
    bridge, inst, ep = setup
    bridge.sees_waits = False               # the LD_PRELOAD fallback
    ring = FakeRing()
    assert bridge._ctl(inst, EPOLL_CTL_ADD, 7, ring, ev(EPOLLIN)) == 0
    assert bridge._level == 0
