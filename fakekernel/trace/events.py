"""Trace events and firing them — kernel/trace/trace_events.c (the tracefs ``id``/``format`` files),
kernel/trace/trace_event_perf.c + kernel/events/core.c (perf_trace_run_bpf_submit,
trace_call_bpf) and kernel/trace/trace_syscalls.c (the syscalls/ events).

`TRACE_EVENTS` is the simulated kernel's catalog: for each event its system, name, id (the
ids this 6.18 build gives them, so tools that hard-code or read them agree with the real
kernel), its fields after the 8-byte common header and its ``print fmt``.  `TraceEvent.format()`
is the tracefs ``format`` file, byte for byte.

Firing: ``kern.world.trace.events.fire("syscalls", "sys_enter_openat", dfd=..., filename=...,
...)`` builds the record the way the kernel lays it out (common_type = id, common_pid = the
current task, fields at their offsets; ``__data_loc`` strings after the fixed part) and runs
every program attached to the event (`prog_array`, filled by PERF_EVENT_IOC_SET_BPF and perf
links) with the record as its ctx, as trace_call_bpf() does.  Returns the number of runs.
Perf kprobe events (the kprobe PMU) with a program are in `probes`; ``kern.world.trace.call``
runs them with the function's ``pt_regs``.
"""
from __future__ import annotations

import attrs

from fakekernel.bpf.core import bpf_prog_run
from uapi.ffi import ffi

__all__ = ["Field", "TraceEvent", "TraceEvents", "TRACE_EVENTS", "COMMON_FIELDS",
           "TRACE_EVENT_FL_TRACEPOINT", "TRACE_EVENT_FL_SYSCALL"]

TRACE_EVENT_FL_TRACEPOINT = "tracepoint"       # TRACE_EVENT_FL_TRACEPOINT
TRACE_EVENT_FL_SYSCALL = "syscall"             # is_syscall_trace_event()
_DATA_LOC = "__data_loc "


@attrs.frozen
class Field:
    """One `field:` line: its C declaration, offset, size and signedness."""

    decl: str
    offset: int
    size: int
    signed: bool

    @property
    def name(self) -> str:
        last = self.decl.split()[-1]
        return last.split("[", 1)[0]

    def line(self) -> str:
        return (f"\tfield:{self.decl};\toffset:{self.offset};\tsize:{self.size};"
                f"\tsigned:{int(self.signed)};\n")


COMMON_FIELDS = (
    Field("unsigned short common_type", 0, 2, False),
    Field("unsigned char common_flags", 2, 1, False),
    Field("unsigned char common_preempt_count", 3, 1, False),
    Field("int common_pid", 4, 4, True),
)


@attrs.frozen
class TraceEvent:
    """struct trace_event_call of one event."""

    system: str
    name: str
    id: int
    fields: tuple
    print_fmt: str

    @property
    def flags(self) -> str:
        return TRACE_EVENT_FL_SYSCALL if self.system == "syscalls" else TRACE_EVENT_FL_TRACEPOINT

    @property
    def record_size(self) -> int:
        """sizeof the event's entry struct (trace_event_get_offsets())."""
        end = max(f.offset + f.size for f in (*COMMON_FIELDS, *self.fields))
        align = 8 if any(f.size % 8 == 0 and not f.decl.startswith(("char ", _DATA_LOC))
                         for f in self.fields) else 4
        return -(-end // align) * align

    def format(self) -> str:
        """The tracefs events/<system>/<name>/format file."""
        return (f"name: {self.name}\nID: {self.id}\nformat:\n"
                + "".join(f.line() for f in COMMON_FIELDS) + "\n"
                + "".join(f.line() for f in self.fields)
                + f"\nprint fmt: {self.print_fmt}\n")

    def record(self, pid: int, values: dict) -> bytes:
        """The raw record: common header, then each field (ints little-endian, char arrays
        zero-padded, ``__data_loc`` strings appended after the fixed part)."""
        buf = bytearray(self.record_size)
        buf[0:2] = self.id.to_bytes(2, "little")
        buf[4:8] = (pid & 0xFFFFFFFF).to_bytes(4, "little")
        for f in self.fields:
            v = values.get(f.name, 0)
            if f.decl.startswith(_DATA_LOC):
                data = (v.encode() if isinstance(v, str) else bytes(v or b"")) + b"\0"
                loc = (len(data) << 16) | len(buf)
                buf[f.offset:f.offset + 4] = loc.to_bytes(4, "little")
                buf += data
            elif isinstance(v, (bytes, bytearray, str)):
                raw = v.encode() if isinstance(v, str) else bytes(v)
                buf[f.offset:f.offset + f.size] = raw[:f.size].ljust(f.size, b"\0")
            elif isinstance(v, (list, tuple)):
                each = f.size // len(v) if v else f.size
                for i, x in enumerate(v):
                    o = f.offset + i * each
                    buf[o:o + each] = (int(x) & ((1 << (8 * each)) - 1)).to_bytes(each, "little")
            else:
                buf[f.offset:f.offset + f.size] = \
                    (int(v) & ((1 << (8 * f.size)) - 1)).to_bytes(f.size, "little")
        pad = -len(buf) % 8
        return bytes(buf + b"\0" * pad)


TRACE_EVENTS = (
    TraceEvent("syscalls", "sys_enter_openat", 782, (
        Field("int __syscall_nr", 8, 4, True),
        Field("int dfd", 16, 8, False),
        Field("const char * filename", 24, 8, False),
        Field("int flags", 32, 8, False),
        Field("umode_t mode", 40, 8, False),
    ), '"dfd: 0x%08lx, filename: 0x%08lx, flags: 0x%08lx, mode: 0x%08lx", '
       '((unsigned long)(REC->dfd)), ((unsigned long)(REC->filename)), '
       '((unsigned long)(REC->flags)), ((unsigned long)(REC->mode))'),
    TraceEvent("syscalls", "sys_exit_openat", 781, (
        Field("int __syscall_nr", 8, 4, True),
        Field("long ret", 16, 8, True),
    ), '"0x%lx", REC->ret'),
    TraceEvent("syscalls", "sys_enter_execve", 862, (
        Field("int __syscall_nr", 8, 4, True),
        Field("const char * filename", 16, 8, False),
        Field("const char *const * argv", 24, 8, False),
        Field("const char *const * envp", 32, 8, False),
    ), '"filename: 0x%08lx, argv: 0x%08lx, envp: 0x%08lx", ((unsigned long)(REC->filename)), '
       '((unsigned long)(REC->argv)), ((unsigned long)(REC->envp))'),
    TraceEvent("sched", "sched_process_exec", 365, (
        Field("__data_loc char[] filename", 8, 4, False),
        Field("pid_t pid", 12, 4, True),
        Field("pid_t old_pid", 16, 4, True),
    ), '"filename=%s pid=%d old_pid=%d", __get_str(filename), REC->pid, REC->old_pid'),
    TraceEvent("sched", "sched_process_fork", 366, (
        Field("__data_loc char[] parent_comm", 8, 4, False),
        Field("pid_t parent_pid", 12, 4, True),
        Field("__data_loc char[] child_comm", 16, 4, False),
        Field("pid_t child_pid", 20, 4, True),
    ), '"comm=%s pid=%d child_comm=%s child_pid=%d", __get_str(parent_comm), REC->parent_pid, '
       '__get_str(child_comm), REC->child_pid'),
    TraceEvent("sched", "sched_process_exit", 369, (
        Field("char comm[16]", 8, 16, False),
        Field("pid_t pid", 24, 4, True),
        Field("int prio", 28, 4, True),
        Field("bool group_dead", 32, 1, False),
    ), '"comm=%s pid=%d prio=%d group_dead=%s", REC->comm, REC->pid, REC->prio, '
       'REC->group_dead ? "true" : "false"'),
    TraceEvent("raw_syscalls", "sys_enter", 443, (
        Field("long id", 8, 8, True),
        Field("unsigned long args[6]", 16, 48, False),
    ), '"NR %ld (%lx, %lx, %lx, %lx, %lx, %lx)", REC->id, REC->args[0], REC->args[1], '
       'REC->args[2], REC->args[3], REC->args[4], REC->args[5]'),
    TraceEvent("raw_syscalls", "sys_exit", 442, (
        Field("long id", 8, 8, True),
        Field("long ret", 16, 8, True),
    ), '"NR %ld = %ld", REC->id, REC->ret'),
)


class TraceEvents:
    """The ftrace_events list of one kernel, with the programs attached per event."""

    def __init__(self, kern, events=TRACE_EVENTS):
        self.kern = kern
        self.by_id = {e.id: e for e in events}
        self.by_name = {(e.system, e.name): e for e in events}
        self.prog_array: dict[int, list] = {}      # event id -> [(prog, cookie, owner)]
        self.probes: list = []                     # kprobe/uprobe perf events with a program

    def lookup(self, system: str, name: str) -> TraceEvent | None:
        return self.by_name.get((system, name))

    # ---- tp_event->prog_array (perf_event_attach_bpf_prog / perf_event_detach_bpf_prog) ----
    def attach(self, event_id: int, prog, cookie: int, owner) -> None:
        self.prog_array.setdefault(event_id, []).append((prog, cookie, owner))

    def detach(self, event_id: int, owner) -> None:
        progs = [p for p in self.prog_array.get(event_id, []) if p[2] is not owner]
        if progs:
            self.prog_array[event_id] = progs
        else:
            self.prog_array.pop(event_id, None)

    def attached_objects(self) -> set:
        return {p[0] for progs in self.prog_array.values() for p in progs} | \
            {ev.prog for ev in self.probes if ev.prog is not None}

    # ---- kprobe PMU events (kernel/trace/trace_kprobe.c: kprobe_perf_func / kretprobe_perf_func)
    def kprobes(self, func: str, *, is_return: bool) -> list:
        """Perf kprobe events with a program on `func` (at offset 0), entry or return."""
        return [ev for ev in self.probes if ev.probe[0] == "kprobe" and ev.probe[1] == func
                and not ev.probe[2] and ev.probe[3] == is_return]

    def run_kprobes(self, func: str, regs, *, is_return: bool) -> int:
        """trace_call_bpf() for each matching event: its program on a copy of `regs`."""
        evs = self.kprobes(func, is_return=is_return)
        if not evs:
            return 0
        kern = self.kern
        region = kern.mem.map_region(bytearray(ffi.buffer(regs)), "ctx", "pt_regs")
        try:
            for ev in evs:
                bpf_prog_run(kern, ev.prog, region.base, ctx=ev, cpu=kern.cpu)
        finally:
            kern.mem.unmap(region)
        return len(evs)

    # ---- firing ----
    def fire(self, system: str, name: str, *, task=None, **values) -> int:
        """The tracepoint `system:name` hits with field `values`; returns the program runs."""
        ev = self.by_name.get((system, name))
        if ev is None:
            raise KeyError(f"no trace event {system}:{name} in the catalog")
        kern = self.kern
        task = task or kern.current
        progs = self.prog_array.get(ev.id, [])
        if not progs:
            return 0
        rec = bytearray(ev.record(task.pid, values))
        region = kern.mem.map_region(rec, "ctx", f"{system}:{name} record")
        saved, kern.current = kern.current, task
        try:
            # trace_call_bpf(): every attached program, whether or not its event is enabled
            for prog, cookie, owner in list(progs):
                bpf_prog_run(kern, prog, region.base, ctx=owner, cpu=kern.cpu)
        finally:
            kern.current = saved
            kern.mem.unmap(region)
        return len(progs)
