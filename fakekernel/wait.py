"""Wait queues — include/linux/wait.h (wait_queue_head_t, wake_up).

An object that userspace can poll (a ring buffer; later perf buffers) owns a `WaitQueue`;
whoever waits on it (the runner's epoll bridge, an in-process poller) adds a callback,
and the object calls `wake_up()` where the kernel would (irq_work -> wake_up_all).
Callbacks run synchronously and must not raise into the caller.
"""
from __future__ import annotations

__all__ = ["WaitQueue", "EPOLLIN", "EPOLLOUT", "EPOLLERR", "EPOLLRDNORM", "EPOLLWRNORM"]

# include/uapi/linux/eventpoll.h
EPOLLIN, EPOLLOUT, EPOLLERR = 0x001, 0x004, 0x008
EPOLLRDNORM, EPOLLWRNORM = 0x040, 0x100


class WaitQueue:
    __slots__ = ("_waiters",)

    def __init__(self) -> None:
        self._waiters: list = []

    def add(self, fn) -> None:
        self._waiters.append(fn)

    def remove(self, fn) -> None:
        if fn in self._waiters:
            self._waiters.remove(fn)

    def __len__(self) -> int:
        return len(self._waiters)

    def wake_up(self) -> None:
        for fn in list(self._waiters):
            fn()
