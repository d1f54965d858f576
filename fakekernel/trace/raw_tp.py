"""Raw tracepoints and their links — kernel/trace/bpf_trace.c (bpf_get_raw_tracepoint,
bpf_probe_register/unregister, __bpf_trace_run) and kernel/bpf/syscall.c
(bpf_raw_tp_link_attach, bpf_raw_tp_link_lops).

`RawTracepoints` is ``kern.world.trace.raw_tp``: the kernel's tracepoints (name -> number of
arguments, from the generated 6.18 catalog; tests may add more with `add`), the links
registered on each, and `fire`, which plays one hit of a tracepoint: every attached program
runs on a ``struct bpf_raw_tracepoint_args`` holding the arguments as u64s, with its link's
cookie in the run ctx (bpf_get_attach_cookie).
"""
from __future__ import annotations

import attrs

from fakekernel.bpf.core import bpf_prog_run
from fakekernel.bpf.link import BpfLink
from fakekernel.bpf.link_primer import bpf_link_prime
from fakekernel.errors import Errno, KernelError
from fakekernel.trace._tracepoints import TRACEPOINT_NARGS
from uapi.bpf import LinkType, ProgType
from uapi.ffi import ffi

__all__ = ["BpfRawEventMap", "RawTpLink", "RawTpRunCtx", "RawTracepoints", "bpf_raw_tp_link_attach",
           "raw_tp_link_attach_name",
           "RAW_TP_NAME_BUF", "RAW_TP_PROG_TYPES"]

RAW_TP_NAME_BUF = 128               # the char buf[128] bpf_raw_tp_link_attach() copies the name into
_U64 = ffi.sizeof("__u64")
_U64_MASK = (1 << 64) - 1


@attrs.frozen
class BpfRawEventMap:
    """struct bpf_raw_event_map: one tracepoint as BPF sees it."""

    name: str
    num_args: int
    writable_size: int = 0


@attrs.frozen
class RawTpRunCtx:
    """struct bpf_trace_run_ctx: what bpf_get_attach_cookie reads."""

    cookie: int = 0


@attrs.define(eq=False)
class RawTpLink(BpfLink):
    """struct bpf_raw_tp_link."""

    btp: BpfRawEventMap | None = None
    cookie: int = 0

    def release(self) -> None:
        """bpf_raw_tp_link_release(): bpf_probe_unregister()."""
        self.kern.world.trace.raw_tp.unregister(self)

    def fill_link_info(self, info, task) -> None:
        """bpf_raw_tp_link_fill_link_info(): name length (and cookie), then the name if asked."""
        rt = info.raw_tracepoint
        ubuf, ulen = rt.tp_name, rt.tp_name_len
        if (not ulen) != (not ubuf):
            raise KernelError(Errno.EINVAL, "tp_name and tp_name_len go together")
        name = self.btp.name.encode()
        rt.tp_name_len = len(name) + 1
        rt.cookie = self.cookie
        if not ubuf:
            return
        # bpf_copy_to_user(): the whole name, or as much as fits, NUL-terminated
        if ulen >= len(name) + 1:
            task.mm.copy_to_user(ubuf, name + b"\0")
            return
        task.mm.copy_to_user(ubuf, name[:ulen - 1] + b"\0")
        raise KernelError(Errno.ENOSPC, "tp_name buffer too short")


def bpf_raw_tp_link_attach(kern, task, prog, user_tp_name: int, cookie: int) -> int:
    """bpf_raw_tp_link_attach() for RAW_TRACEPOINT(_WRITABLE) programs: attach by name."""
    name = task.mm.strncpy_from_user(user_tp_name, RAW_TP_NAME_BUF - 1)
    return raw_tp_link_attach_name(kern, task, prog, name.decode("latin-1"), cookie)


def raw_tp_link_attach_name(kern, task, prog, tp_name: str, cookie: int) -> int:
    """The rest of bpf_raw_tp_link_attach() once the tracepoint's name is known (also the
    path of TRACING programs loaded for BPF_TRACE_RAW_TP, named by their btf_trace_ type)."""
    raw = kern.world.trace.raw_tp
    btp = raw.bpf_get_raw_tracepoint(tp_name)
    if btp is None:
        raise KernelError(Errno.ENOENT, f"no tracepoint {tp_name!r}")
    link = RawTpLink(kern=kern, type=LinkType.RAW_TRACEPOINT, attach_type=0, prog=prog, btp=btp,
                     cookie=cookie)
    primer = bpf_link_prime(link)
    try:
        raw.bpf_probe_register(btp, link)
    except KernelError:
        primer.cleanup()
        raise
    return primer.settle(task)


class RawTracepoints:
    """The tracepoints of the simulated kernel and the raw_tp links on each."""

    def __init__(self, kern, catalog: dict[str, int] = TRACEPOINT_NARGS):
        self.kern = kern
        self.catalog = dict(catalog)
        self.writable: dict[str, int] = {}
        self.links: list[RawTpLink] = []

    def add(self, name: str, num_args: int, *, writable_size: int = 0) -> None:
        """Declare another tracepoint (e.g. a module's, or a writable one)."""
        self.catalog[name] = num_args
        if writable_size:
            self.writable[name] = writable_size

    def bpf_get_raw_tracepoint(self, name: str) -> BpfRawEventMap | None:
        n = self.catalog.get(name)
        if n is None:
            return None
        return BpfRawEventMap(name, n, self.writable.get(name, 0))

    def bpf_probe_register(self, btp: BpfRawEventMap, link: RawTpLink) -> None:
        """The program may not read past the tracepoint's arguments nor write past its buffer."""
        aux = link.prog.aux
        if aux.max_ctx_offset > btp.num_args * _U64:
            raise KernelError(Errno.EINVAL, "prog reads more arguments than the tracepoint has")
        if aux.max_tp_access > btp.writable_size:
            raise KernelError(Errno.EINVAL, "prog writes past the tracepoint's buffer")
        self.links.append(link)

    def unregister(self, link: RawTpLink) -> None:
        if link in self.links:
            self.links.remove(link)

    def attached_objects(self) -> set:
        return {o for link in self.links for o in (link, link.prog) if o is not None}

    def fire(self, name: str, args=(), *, task=None) -> list[int]:
        """One hit of tracepoint `name` with `args` (ints; bytes are mapped into the kernel
        address space and passed by address).  Returns each attached program's r0."""
        if name not in self.catalog:
            raise KeyError(f"no tracepoint {name!r}")
        kern = self.kern
        mem = kern.mem
        regions, values = [], []
        for a in args:
            if isinstance(a, (bytes, bytearray)):
                r = mem.map_region(bytearray(a), "arg", f"{name} arg")
                regions.append(r)
                values.append(r.base)
            else:
                values.append(int(a) & _U64_MASK)
        values += [0] * (self.catalog[name] - len(values))
        saved = kern.current
        if task is not None:
            kern.current = task
        results = []
        try:
            blob = b"".join(v.to_bytes(_U64, "little") for v in values)
            for link in [lk for lk in self.links if lk.btp.name == name]:
                region = mem.map_region(bytearray(blob) or bytearray(_U64), "ctx", "raw_tp args",
                                        writable=False)
                try:
                    results.append(bpf_prog_run(kern, link.prog, region.base,
                                                ctx=RawTpRunCtx(link.cookie)))
                finally:
                    mem.unmap(region)
        finally:
            kern.current = saved
            for r in regions:
                mem.unmap(r)
        return results


RAW_TP_PROG_TYPES = frozenset({ProgType.RAW_TRACEPOINT, ProgType.RAW_TRACEPOINT_WRITABLE})
