"""Programs on perf events — kernel/events/core.c (__perf_event_set_bpf_prog,
perf_event_set_bpf_handler, perf_event_free_bpf_prog), kernel/trace/bpf_trace.c
(perf_event_attach_bpf_prog, perf_event_detach_bpf_prog, perf_event_query_prog_array) and
kernel/bpf/syscall.c (bpf_perf_link_attach, bpf_perf_link_lops).

Tracing events (tracepoint, kprobe, uprobe) put their program in the trace event's
prog_array (`kern.world.trace.events` for tracepoints), which runs it when the event fires;
software/hardware events keep it as their overflow handler (PERF_EVENT programs).  A program
attached with PERF_EVENT_IOC_SET_BPF stays until the event's file is released; a perf link
holds the event's file and detaches on release.
"""
from __future__ import annotations

import attrs

from fakekernel.bpf.link import BpfLink
from fakekernel.bpf.link_primer import bpf_link_prime
from fakekernel.errors import Errno, KernelError
from fakekernel.perf.core import perf_event_get
from fakekernel.perf.pmu import perf_event_is_tracing, perf_event_pmu_type
from fakekernel.trace.events import TRACE_EVENT_FL_SYSCALL
from uapi.bpf import LinkType, PerfEventType, ProgType
from uapi.ffi import ffi

__all__ = ["perf_event_set_bpf_prog", "perf_event_free_bpf_prog", "perf_event_query_prog_array",
           "BpfPerfLink", "bpf_perf_link_attach", "BPF_TRACE_MAX_PROGS"]

BPF_TRACE_MAX_PROGS = 64
_U32 = ffi.sizeof("__u32")


def _probe_kind(event) -> str:
    if event.probe is not None:
        return event.probe[0]
    return "syscall" if event.tp_event.flags == TRACE_EVENT_FL_SYSCALL else "tracepoint"


def _tracing_progs(event) -> list:
    """The trace event's prog_array as (prog, cookie, owner) triples."""
    if event.tp_event is not None:
        return event.kern.world.trace.events.prog_array.get(event.tp_event.id, [])
    return [(event.prog, event.bpf_cookie, event)] if event.prog is not None else []


def perf_event_set_bpf_prog(event, prog, bpf_cookie: int) -> None:
    """__perf_event_set_bpf_prog(): attach `prog` (the caller's reference moves to the event)."""
    if not perf_event_is_tracing(event):
        # perf_event_set_bpf_handler()
        if event.prog is not None:
            raise KernelError(Errno.EEXIST, "event already has a program")
        if prog.type != ProgType.PERF_EVENT:
            raise KernelError(Errno.EINVAL, "software/hardware events take PERF_EVENT programs")
        event.prog, event.bpf_cookie = prog, bpf_cookie
        return
    kind = _probe_kind(event)
    want = ProgType.KPROBE if kind in ("kprobe", "uprobe") else ProgType.TRACEPOINT
    if prog.type != want:
        raise KernelError(Errno.EINVAL, f"a {kind} event takes {want.name} programs")
    if prog.type == ProgType.KPROBE and prog.aux.sleepable and kind != "uprobe":
        raise KernelError(Errno.EINVAL, "only uprobe programs may sleep")
    if getattr(prog, "kprobe_override", False) and kind != "kprobe":
        raise KernelError(Errno.EINVAL, "bpf_override_return needs a kprobe")
    if kind in ("tracepoint", "syscall") and \
            prog.aux.max_ctx_offset > event.tp_event.record_size:
        raise KernelError(Errno.EACCES, "program reads past the trace record")
    # perf_event_attach_bpf_prog()
    if event.prog is not None:
        raise KernelError(Errno.EEXIST, "event already has a program")
    progs = _tracing_progs(event)
    if len(progs) >= BPF_TRACE_MAX_PROGS:
        raise KernelError(Errno.E2BIG, "too many programs on this trace event")
    if any(p[0] is prog for p in progs):
        raise KernelError(Errno.EEXIST, "program already attached to this trace event")
    event.prog, event.bpf_cookie = prog, bpf_cookie
    if event.tp_event is not None:
        event.kern.world.trace.events.attach(event.tp_event.id, prog, bpf_cookie, event)
    else:
        event.kern.world.trace.events.probes.append(event)


def perf_event_free_bpf_prog(event) -> None:
    """perf_event_free_bpf_prog(): detach and drop the event's program reference."""
    prog, event.prog = event.prog, None
    if prog is None:
        return
    if perf_event_is_tracing(event):
        events = event.kern.world.trace.events
        if event.tp_event is not None:
            events.detach(event.tp_event.id, event)
        elif event in events.probes:
            events.probes.remove(event)
    prog.put()


def perf_event_query_prog_array(event, task, uquery: int) -> None:
    """PERF_EVENT_IOC_QUERY_BPF: struct perf_event_query_bpf {ids_len, prog_cnt, ids[]}."""
    from uapi.perf_event import PerfType
    if not task.perfmon_capable():
        raise KernelError(Errno.EPERM, "QUERY_BPF needs CAP_PERFMON")
    if event.attr.type != PerfType.TRACEPOINT:
        raise KernelError(Errno.EINVAL, "QUERY_BPF is for tracepoint events")
    ids_len = int.from_bytes(task.mm.copy_from_user(uquery, _U32), "little")
    if ids_len > BPF_TRACE_MAX_PROGS:
        raise KernelError(Errno.E2BIG, "ids_len above BPF_TRACE_MAX_PROGS")
    progs = [p[0] for p in _tracing_progs(event)]
    ids = [p.aux.id for p in progs[:ids_len]] + [0] * max(0, ids_len - len(progs))
    task.mm.copy_to_user(uquery + _U32, len(progs).to_bytes(_U32, "little"))
    if ids_len:
        task.mm.copy_to_user(uquery + 2 * _U32,
                             b"".join(i.to_bytes(_U32, "little") for i in ids))
    if ids_len and len(progs) > ids_len:
        raise KernelError(Errno.ENOSPC, "more programs than ids_len")


@attrs.define(eq=False)
class BpfPerfLink(BpfLink):
    """struct bpf_perf_link: a program on a perf event, holding the event's file."""

    perf_file: object = None

    def fill_link_info(self, info, task) -> None:
        """bpf_perf_link_fill_link_info(): by the attached program's type."""
        event = self.perf_file.private_data
        pe = info.perf_event
        if event.prog is None:
            raise KernelError(Errno.EOPNOTSUPP, "event has no program")
        if event.prog.type == ProgType.PERF_EVENT:
            # bpf_perf_link_fill_perf_event()
            ev = pe.event
            ev.type, ev.config, ev.cookie = perf_event_pmu_type(event), event.attr.config, event.bpf_cookie
            pe.type = PerfEventType.EVENT
        elif event.prog.type == ProgType.TRACEPOINT:
            tp = pe.tracepoint
            tp.name_len = _fill_name(task, tp.tp_name, tp.name_len, event.tp_event.name)
            pe.type = PerfEventType.TRACEPOINT
            tp.cookie = event.bpf_cookie
        elif event.prog.type == ProgType.KPROBE and event.probe[0] == "kprobe":
            _, func, offset, is_ret = event.probe
            kp = pe.kprobe
            kp.name_len = _fill_name(task, kp.func_name, kp.name_len, func)
            pe.type = PerfEventType.KRETPROBE if is_ret else PerfEventType.KPROBE
            kp.offset, kp.missed, kp.cookie = offset, 0, event.bpf_cookie
            f = event.kern.world.trace.kallsyms.lookup_name(func)
            kp.addr = f.addr + offset if task.creds.uid == 0 else 0     # kallsyms_show_value()
        elif event.prog.type == ProgType.KPROBE:
            _, path, offset, is_ret, ref_ctr_offset = event.probe
            up = pe.uprobe
            up.name_len = _fill_name(task, up.file_name, up.name_len, path)
            pe.type = PerfEventType.URETPROBE if is_ret else PerfEventType.UPROBE
            up.offset, up.cookie, up.ref_ctr_offset = offset, event.bpf_cookie, ref_ctr_offset
        else:
            raise KernelError(Errno.EOPNOTSUPP, "no link info for this program type")

    def release(self) -> None:
        """bpf_perf_link_release(): perf_event_free_bpf_prog(), then the file goes."""
        perf_event_free_bpf_prog(self.perf_file.private_data)
        f, self.perf_file = self.perf_file, None
        f.put()


def _fill_name(task, uname: int, ulen: int, name: str) -> int:
    """bpf_perf_link_fill_common() + bpf_copy_to_user(): the name's length with its NUL."""
    if (not ulen) != (not uname):
        raise KernelError(Errno.EINVAL, "name buffer and length go together")
    raw = name.encode()
    if uname:
        if ulen > len(raw):
            task.mm.copy_to_user(uname, raw + b"\0")
        else:
            task.mm.copy_to_user(uname, raw[:ulen - 1] + b"\0")
            raise KernelError(Errno.ENOSPC, "name buffer too small")
    return len(raw) + 1


def bpf_perf_link_attach(kern, task, attr, prog) -> int:
    """bpf_perf_link_attach(): flags 0, target_fd a perf event; returns the link fd."""
    lc = attr.link_create
    if lc.flags:
        raise KernelError(Errno.EINVAL, "link_create.flags must be 0")
    perf_file = perf_event_get(task, lc.target_fd).get()
    link = BpfPerfLink(kern=kern, type=LinkType.PERF_EVENT, attach_type=lc.attach_type, prog=prog)
    primer = bpf_link_prime(link)
    try:
        perf_event_set_bpf_prog(perf_file.private_data, prog, lc.perf_event.bpf_cookie)
    except KernelError:
        primer.cleanup()
        perf_file.put()
        raise
    link.perf_file = perf_file
    # the event keeps its own prog reference, the link another (bpf_link_settle)
    prog.get()
    return primer.settle(task)
