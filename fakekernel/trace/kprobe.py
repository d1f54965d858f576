"""kprobe_multi links and firing kprobes — kernel/trace/bpf_trace.c (bpf_kprobe_multi_link_attach,
kprobe_multi_link_handler/exit_handler, bpf_kprobe_multi_cookie/entry_ip) on top of
kernel/trace/fprobe.c + ftrace_lookup_symbols().

`Tracing` is ``kern.world.trace``: the symbol table, the registered fprobes (one per
link) and ``call(name, args, ret)``, which plays one call of a kernel function: every
entry program sees a ``struct pt_regs`` with the x86_64 argument registers filled, every
return program (BPF_F_KPROBE_MULTI_RETURN) sees the same regs with ``ax`` = the return
value.  ``env.ctx`` of such a run is a `KprobeMultiRunCtx` (bpf_get_func_ip,
bpf_get_attach_cookie read it).  The oracle kernel is built without CONFIG_FPROBE and
answers EOPNOTSUPP; `Tracing.fprobe` (default True) switches this kernel between both.
"""
from __future__ import annotations

import bisect

import attrs

from fakekernel.bpf.core import bpf_prog_run
from fakekernel.bpf.link import BpfLink
from fakekernel.bpf.link_primer import bpf_link_prime
from fakekernel.btf_vmlinux import btf_index
from fakekernel.errors import Errno, KernelError
from fakekernel.trace.kallsyms import Kallsyms
from fakekernel.trace.raw_tp import RawTracepoints
from uapi.bpf import AttachType, KprobeMultiFlags, LinkType
from uapi.btf import BtfKind
from uapi.ffi import ffi

__all__ = ["KprobeMultiLink", "KprobeMultiRunCtx", "Tracing", "bpf_kprobe_multi_link_attach",
           "MAX_KPROBE_MULTI_CNT", "KSYM_NAME_LEN", "ARG_REGS"]

MAX_KPROBE_MULTI_CNT = 1 << 20     # kernel/trace/bpf_trace.c
KSYM_NAME_LEN = 512                # include/linux/kallsyms.h
ARG_REGS = ("di", "si", "dx", "cx", "r8", "r9")     # x86_64 SysV argument registers
_U64 = ffi.sizeof("__u64")
_U64_MASK = (1 << 64) - 1
_STACK_TOP = 0xFFFFC90000010000 - 0x100             # a task stack address for regs->sp
_CALLER_IP = 0xFFFFFFFF82000000                     # where the traced call returns to


@attrs.frozen
class KprobeMultiRunCtx:
    """struct bpf_kprobe_multi_run_ctx: what the kprobe_multi helpers read."""

    link: "KprobeMultiLink"
    entry_ip: int
    is_return: bool = False

    @property
    def cookie(self) -> int:
        """bpf_kprobe_multi_cookie(): the cookie of entry_ip (addrs are sorted with them)."""
        return self.link.cookie_for(self.entry_ip)


@attrs.define(eq=False)
class KprobeMultiLink(BpfLink):
    """struct bpf_kprobe_multi_link: one fprobe on `addrs`."""

    addrs: list = attrs.field(factory=list)
    cookies: list | None = None
    flags: int = 0
    missed: int = 0

    @property
    def cnt(self) -> int:
        return len(self.addrs)

    def cookie_for(self, ip: int) -> int:
        if not self.cookies:
            return 0
        i = bisect.bisect_left(self.addrs, ip)
        return self.cookies[i] if i < len(self.addrs) and self.addrs[i] == ip else 0

    def release(self) -> None:
        """bpf_kprobe_multi_link_release(): unregister_fprobe()."""
        self.kern.world.trace.unregister_fprobe(self)

    def fill_link_info(self, info, task) -> None:
        """bpf_kprobe_multi_link_fill_link_info(): counts, then addrs/cookies if asked for."""
        km = info.kprobe_multi
        uaddrs, ucookies, ucount = km.addrs, km.cookies, km.count
        if (not uaddrs) != (not ucount) or (ucookies and not ucount):
            raise KernelError(Errno.EINVAL, "addrs and count go together")
        km.count, km.flags, km.missed = self.cnt, self.flags, self.missed
        if not uaddrs:
            return
        err = ucount < self.cnt
        n = min(ucount, self.cnt)
        put = task.mm.copy_to_user
        if ucookies:
            vals = self.cookies or [0] * n
            put(ucookies, b"".join(v.to_bytes(_U64, "little") for v in vals[:n]))
        # kallsyms_show_value(): root (CAP_SYSLOG with kptr_restrict 0) sees the addresses
        show = task.creds.uid == 0
        put(uaddrs, b"".join((a if show else 0).to_bytes(_U64, "little") for a in self.addrs[:n]))
        if err:
            raise KernelError(Errno.ENOSPC, "addrs array too small")


def _copy_user_syms(task, usyms: int, cnt: int) -> list[bytes]:
    """copy_user_syms(): an array of `cnt` user string pointers (EFAULT / E2BIG)."""
    if usyms + cnt * _U64 > 1 << 64:
        raise KernelError(Errno.EFAULT, "syms array wraps")
    out = []
    for i in range(cnt):
        ptr = int.from_bytes(task.mm.copy_from_user(usyms + i * _U64, _U64), "little")
        name = task.mm.strncpy_from_user(ptr, KSYM_NAME_LEN)
        if len(name) == KSYM_NAME_LEN:
            raise KernelError(Errno.E2BIG, "symbol name too long")
        out.append(name)
    return out


def _u64_array(task, addr: int, cnt: int) -> list[int]:
    raw = task.mm.copy_from_user(addr, cnt * _U64)
    return [int.from_bytes(raw[i * _U64:(i + 1) * _U64], "little") for i in range(cnt)]


def bpf_kprobe_multi_link_attach(kern, task, attr, prog) -> int:
    """bpf_kprobe_multi_link_attach().  Returns the link fd."""
    trace = kern.world.trace
    if not trace.fprobe:
        raise KernelError(Errno.EOPNOTSUPP, "kernel built without CONFIG_FPROBE")
    lc = attr.link_create
    if lc.flags:
        raise KernelError(Errno.EINVAL, "link_create.flags must be 0")
    if prog.expected_attach_type not in (AttachType.TRACE_KPROBE_MULTI,
                                         AttachType.TRACE_KPROBE_SESSION):
        raise KernelError(Errno.EINVAL, "prog was not loaded for kprobe_multi")
    if prog.aux.sleepable:
        raise KernelError(Errno.EINVAL, "kprobe_multi progs cannot sleep")
    km = lc.kprobe_multi
    flags = km.flags
    if flags & ~int(KprobeMultiFlags.KPROBE_MULTI_RETURN):
        raise KernelError(Errno.EINVAL, "unknown kprobe_multi.flags")
    if bool(km.addrs) == bool(km.syms):
        raise KernelError(Errno.EINVAL, "exactly one of syms and addrs")
    cnt = km.cnt
    if not cnt:
        raise KernelError(Errno.EINVAL, "cnt is 0")
    if cnt > MAX_KPROBE_MULTI_CNT:
        raise KernelError(Errno.E2BIG, "cnt too large")
    cookies = _u64_array(task, km.cookies, cnt) if km.cookies else None
    if km.addrs:
        addrs = _u64_array(task, km.addrs, cnt)
    else:
        syms = _copy_user_syms(task, km.syms, cnt)
        order = sorted(range(cnt), key=lambda i: syms[i])      # sort_r with cookies alongside
        syms = [syms[i] for i in order]
        if cookies is not None:
            cookies = [cookies[i] for i in order]
        addrs = trace.ftrace_lookup_symbols(syms)
    link = KprobeMultiLink(kern=kern, type=LinkType.KPROBE_MULTI, attach_type=lc.attach_type,
                           prog=prog, flags=flags)
    primer = bpf_link_prime(link)
    if cookies is not None:
        pairs = sorted(zip(addrs, cookies), key=lambda p: p[0])
        addrs, cookies = [a for a, _ in pairs], [c for _, c in pairs]
    link.addrs, link.cookies = addrs, cookies
    try:
        trace.register_fprobe_ips(link, addrs)
    except KernelError:
        primer.cleanup()
        raise
    return primer.settle(task)


class Tracing:
    """The tracing side of the world: kallsyms, registered fprobes, and firing them."""

    def __init__(self, kern, *, fprobe: bool = True):
        self.kern = kern
        self.fprobe = fprobe
        self.kallsyms = Kallsyms()
        self.fprobes: list[KprobeMultiLink] = []
        self.raw_tp = RawTracepoints(kern)
        from fakekernel.trace.events import TraceEvents
        self.events = TraceEvents(kern)          # trace events (perf tracepoint events)

    # ---- ftrace / fprobe ----
    def ftrace_lookup_symbols(self, names: list[bytes]) -> list[int]:
        """ESRCH unless every (distinct) name is a traceable function."""
        addrs, seen = [], set()
        for n in names:
            f = self.kallsyms.lookup_name(n.decode(errors="replace"))
            if f is None or not f.traceable or n in seen:
                raise KernelError(Errno.ESRCH, f"symbol {n!r} not found")
            seen.add(n)
            addrs.append(f.addr)
        return addrs

    def register_fprobe_ips(self, link: KprobeMultiLink, addrs: list[int]) -> None:
        for a in addrs:
            if self.kallsyms.ftrace_location(a) is None:
                raise KernelError(Errno.EINVAL, f"{a:#x} is not an ftrace location")
        self.fprobes.append(link)

    def unregister_fprobe(self, link: KprobeMultiLink) -> None:
        if link in self.fprobes:
            self.fprobes.remove(link)

    def attached_objects(self) -> set:
        return {o for link in self.fprobes for o in (link, link.prog) if o is not None} | \
            self.raw_tp.attached_objects() | self.events.attached_objects()

    def fire_tracepoint(self, name: str, args=(), *, task=None) -> list[int]:
        """One hit of tracepoint `name`: the raw_tp programs attached to it run (their r0s)."""
        return self.raw_tp.fire(name, args, task=task)

    # ---- firing ----
    def call(self, name: str, args=(), *, ret: int = 0, task=None) -> int:
        """One call of kernel function `name`: kprobes on entry, kretprobes on return.

        `args` are ints, or bytes (mapped into the kernel address space for the call, the
        register gets their address).  Returns the number of program runs.
        """
        f = self.kallsyms.lookup_name(name)
        if f is None:
            raise KeyError(f"no kernel function {name!r} in the catalog")
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
        regs = ffi.new("struct pt_regs *")
        for reg, v in zip(ARG_REGS, values):
            setattr(regs, reg, v)
        regs.ip = f.addr
        regs.sp = _STACK_TOP
        saved = kern.current
        if task is not None:
            kern.current = task
        runs = 0
        try:
            links = [lk for lk in self.fprobes if f.addr in lk.addrs]
            entry = [lk for lk in links if not lk.flags & KprobeMultiFlags.KPROBE_MULTI_RETURN]
            for lk in entry:
                runs += self._run(lk, f.addr, regs, False)
            runs += self.events.run_kprobes(f.name, regs, is_return=False)   # perf kprobe PMU
            ret, tramp_runs = self._trampoline(f.name, values, ret)           # fentry/fmod_ret/fexit
            runs += tramp_runs
            exits = [lk for lk in links if lk.flags & KprobeMultiFlags.KPROBE_MULTI_RETURN]
            if exits or self.events.kprobes(f.name, is_return=True):
                regs.ax = ret & _U64_MASK
                regs.ip = _CALLER_IP
                for lk in exits:
                    runs += self._run(lk, f.addr, regs, True)
                runs += self.events.run_kprobes(f.name, regs, is_return=True)
        finally:
            kern.current = saved
            for r in regions:
                mem.unmap(r)
        return runs

    def _trampoline(self, name: str, args: list[int], ret: int) -> tuple[int, int]:
        """The function's BPF trampoline, if programs are linked to it: (its return value, runs)."""
        from fakekernel.trace.trampoline import call_traced_runs, trampolines
        table = trampolines(self.kern)
        if not table:
            return ret, 0
        btf = self.kern.btf_vmlinux
        key = (("btf", btf.id), btf_index(btf).find_by_name_kind(name.encode(), BtfKind.FUNC))
        return call_traced_runs(self.kern, key, args, lambda: ret)

    def _run(self, link: KprobeMultiLink, entry_ip: int, regs, is_return: bool) -> int:
        """kprobe_multi_link_prog_run(): the prog on a copy of the regs (a ctx region)."""
        kern = self.kern
        region = kern.mem.map_region(bytearray(ffi.buffer(regs)), "ctx", "pt_regs")
        try:
            bpf_prog_run(kern, link.prog, region.base,
                         ctx=KprobeMultiRunCtx(link, entry_ip, is_return))
        finally:
            kern.mem.unmap(region)
        return 1
