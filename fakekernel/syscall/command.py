"""Per-command metadata and CHECK_ATTR — kernel/bpf/syscall.c (the *_LAST_FIELD macros).

`@bpf_command(cmd, last_field=...)` attaches the command number and its last attr field
and runs CHECK_ATTR before the handler: any non-zero byte of ``union bpf_attr`` after
that field is EINVAL.  It registers nothing; `syscall/__init__.py` lists the table.
"""
from __future__ import annotations

import functools
from typing import Callable

from fakekernel.errors import Errno, KernelError
from uapi.ffi import ffi, offsetofend

__all__ = ["bpf_command", "check_attr", "ATTR_SIZE"]

ATTR_SIZE = ffi.sizeof("union bpf_attr")


def check_attr(raw: bytes, last_end: int) -> None:
    if any(raw[last_end:]):
        raise KernelError(Errno.EINVAL, "non-zero attr bytes after the command's last field")


def bpf_command(cmd: int, last_field: str) -> Callable:
    last_end = offsetofend("union bpf_attr", *last_field.split("."))

    def deco(fn: Callable) -> Callable:
        @functools.wraps(fn)
        def handler(kern, task, attr, ctx):
            check_attr(ctx.raw, last_end)
            return fn(kern, task, attr, ctx)

        handler.cmd = cmd
        handler.last_field = last_field
        handler.last_field_end = last_end
        return handler

    return deco
