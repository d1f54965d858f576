"""perf_event ABI — include/uapi/linux/perf_event.h (+ asm-generic/ioctl.h for the ioctl numbers).

Hand-written constants (frozen ABI).  The struct layouts (`struct perf_event_attr`,
`struct perf_event_mmap_page`, `struct perf_event_header`) come from the generated cdef
through `uapi.ffi.ffi`.  Only what the emulator and its tests use is here.
"""
from __future__ import annotations

import enum

from uapi.ffi import ffi

__all__ = ["PerfType", "PerfSwId", "PerfSample", "PerfFormat", "PerfRecord", "PerfFlag",
           "PerfEventIoc", "PerfMisc", "PERF_ATTR_SIZE_VER0", "PERF_ATTR_SIZE", "PERF_SAMPLE_MAX",
           "PERF_FORMAT_MAX", "PERF_SAMPLE_BRANCH_MAX", "PERF_SAMPLE_BRANCH_PLM_ALL",
           "PERF_SAMPLE_BRANCH_USER", "PERF_SAMPLE_BRANCH_KERNEL", "PERF_SAMPLE_BRANCH_HV",
           "PERF_SAMPLE_BRANCH_ANY", "PERF_PROBE_CONFIG_IS_RETPROBE", "PERF_IOC_FLAG_GROUP",
           "PERF_MMAP_PAGE_SIZE", "perf_attr_bytes", "NR_perf_event_open", "NR_ioctl"]

NR_perf_event_open = 298            # arch/x86/entry/syscalls/syscall_64.tbl
NR_ioctl = 16


class PerfType(enum.IntEnum):
    """enum perf_type_id; dynamic PMUs (kprobe, uprobe, ...) get numbers past MAX."""

    HARDWARE = 0
    SOFTWARE = 1
    TRACEPOINT = 2
    HW_CACHE = 3
    RAW = 4
    BREAKPOINT = 5
    MAX = 6


class PerfSwId(enum.IntEnum):
    """enum perf_sw_ids."""

    CPU_CLOCK = 0
    TASK_CLOCK = 1
    PAGE_FAULTS = 2
    CONTEXT_SWITCHES = 3
    CPU_MIGRATIONS = 4
    PAGE_FAULTS_MIN = 5
    PAGE_FAULTS_MAJ = 6
    ALIGNMENT_FAULTS = 7
    EMULATION_FAULTS = 8
    DUMMY = 9
    BPF_OUTPUT = 10
    CGROUP_SWITCHES = 11
    MAX = 12


class PerfSample(enum.IntFlag, boundary=enum.KEEP):
    """enum perf_event_sample_format (the bits used here)."""

    IP = 1 << 0
    TID = 1 << 1
    TIME = 1 << 2
    ADDR = 1 << 3
    READ = 1 << 4
    CALLCHAIN = 1 << 5
    ID = 1 << 6
    CPU = 1 << 7
    PERIOD = 1 << 8
    STREAM_ID = 1 << 9
    RAW = 1 << 10
    BRANCH_STACK = 1 << 11
    REGS_USER = 1 << 12
    STACK_USER = 1 << 13
    WEIGHT = 1 << 14
    DATA_SRC = 1 << 15
    IDENTIFIER = 1 << 16
    TRANSACTION = 1 << 17
    REGS_INTR = 1 << 18
    PHYS_ADDR = 1 << 19
    AUX = 1 << 20
    CGROUP = 1 << 21
    DATA_PAGE_SIZE = 1 << 22
    CODE_PAGE_SIZE = 1 << 23
    WEIGHT_STRUCT = 1 << 24


PERF_SAMPLE_MAX = 1 << 25           # non-ABI: first unknown sample bit
PERF_SAMPLE_BRANCH_MAX = 1 << 20    # non-ABI: first unknown branch_sample_type bit
PERF_SAMPLE_BRANCH_USER, PERF_SAMPLE_BRANCH_KERNEL, PERF_SAMPLE_BRANCH_HV = 1 << 0, 1 << 1, 1 << 2
PERF_SAMPLE_BRANCH_PLM_ALL = PERF_SAMPLE_BRANCH_USER | PERF_SAMPLE_BRANCH_KERNEL | PERF_SAMPLE_BRANCH_HV
PERF_SAMPLE_BRANCH_ANY = 1 << 3
PERF_FORMAT_MAX = 1 << 5


class PerfFormat(enum.IntFlag, boundary=enum.KEEP):
    """enum perf_event_read_format."""

    TOTAL_TIME_ENABLED = 1 << 0
    TOTAL_TIME_RUNNING = 1 << 1
    ID = 1 << 2
    GROUP = 1 << 3
    LOST = 1 << 4


class PerfRecord(enum.IntEnum):
    """enum perf_event_type (the records a BPF output buffer carries)."""

    MMAP = 1
    LOST = 2
    COMM = 3
    EXIT = 4
    THROTTLE = 5
    UNTHROTTLE = 6
    FORK = 7
    READ = 8
    SAMPLE = 9


class PerfMisc(enum.IntFlag, boundary=enum.KEEP):
    """perf_event_header.misc cpumode bits."""

    CPUMODE_UNKNOWN = 0
    KERNEL = 1
    USER = 2


class PerfFlag(enum.IntFlag, boundary=enum.KEEP):
    """perf_event_open() flags (PERF_FLAG_*)."""

    FD_NO_GROUP = 1 << 0
    FD_OUTPUT = 1 << 1
    PID_CGROUP = 1 << 2
    FD_CLOEXEC = 1 << 3
    ALL = FD_NO_GROUP | FD_OUTPUT | PID_CGROUP | FD_CLOEXEC


def _ioc(direction: int, nr: int, size: int) -> int:
    """_IOC(dir, '$', nr, size) of asm-generic/ioctl.h."""
    return (direction << 30) | (size << 16) | (ord("$") << 8) | nr


_NONE, _WRITE, _READ = 0, 1, 2
_PTR = ffi.sizeof("void *")


class PerfEventIoc(enum.IntEnum):
    """PERF_EVENT_IOC_*: _IO/_IOW/_IOR/_IOWR('$', n, type)."""

    ENABLE = _ioc(_NONE, 0, 0)
    DISABLE = _ioc(_NONE, 1, 0)
    REFRESH = _ioc(_NONE, 2, 0)
    RESET = _ioc(_NONE, 3, 0)
    PERIOD = _ioc(_WRITE, 4, ffi.sizeof("__u64"))
    SET_OUTPUT = _ioc(_NONE, 5, 0)
    SET_FILTER = _ioc(_WRITE, 6, _PTR)
    ID = _ioc(_READ, 7, _PTR)
    SET_BPF = _ioc(_WRITE, 8, ffi.sizeof("__u32"))
    PAUSE_OUTPUT = _ioc(_WRITE, 9, ffi.sizeof("__u32"))
    QUERY_BPF = _ioc(_READ | _WRITE, 10, _PTR)
    MODIFY_ATTRIBUTES = _ioc(_WRITE, 11, _PTR)


PERF_IOC_FLAG_GROUP = 1 << 0
PERF_ATTR_SIZE_VER0 = 64            # the first published struct perf_event_attr
PERF_ATTR_SIZE = ffi.sizeof("struct perf_event_attr")
PERF_PROBE_CONFIG_IS_RETPROBE = 1 << 0      # kprobe/uprobe PMU: format/retprobe is "config:0"
PERF_MMAP_PAGE_SIZE = ffi.sizeof("struct perf_event_mmap_page")


def perf_attr_bytes(**fields) -> bytes:
    """A `struct perf_event_attr` with `fields` set (size defaults to the full struct)."""
    a = ffi.new("struct perf_event_attr *")
    a.size = PERF_ATTR_SIZE
    for k, v in fields.items():
        setattr(a, k, v)
    return bytes(ffi.buffer(a))
