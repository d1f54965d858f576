"""kprobe_multi on do_sys_openat2: count calls per pid in a HASH map.

Raw bpf(): MAP_CREATE (HASH u32 pid -> u64), PROG_LOAD (KPROBE, expected_attach_type
BPF_TRACE_KPROBE_MULTI), LINK_CREATE(BPF_TRACE_KPROBE_MULTI) by symbol name, then the
function "called" from Python by two processes, then the counts read back.
Run: python3 examples/kprobe_counter.py  (or python3 -m fakekernel.examples.kprobe_counter)
"""
from __future__ import annotations

from fakekernel import Kernel
from uapi import calls
from uapi.asm import assemble
from uapi.bpf import AttachType, MapType, ProgType, UpdateFlags
from uapi.ffi import ffi

AT_FDCWD = -100


def counter(map_fd: int) -> bytes:
    return assemble(f"""
        call bpf_get_current_pid_tgid#14
        r0 >>= 32
        *(u32 *)(r10 -4) = r0
        r2 = r10
        r2 += -4
        r1 = map[id:{map_fd}]
        call bpf_map_lookup_elem#1
        if r0 == 0x0 goto pc+3
        r1 = 1
        lock *(u64 *)(r0 +0) += r1
        goto pc+10
        r1 = 1
        *(u64 *)(r10 -16) = r1
        r2 = r10
        r2 += -4
        r3 = r10
        r3 += -16
        r1 = map[id:{map_fd}]
        r4 = {UpdateFlags.NOEXIST}
        call bpf_map_update_elem#2
        r0 = 0
        exit
    """)


def run(kern: Kernel | None = None) -> dict:
    kern = kern or Kernel()
    counts = calls.map_create(kern, MapType.HASH, 4, 8, 64, name="opens")
    prog = calls.prog_load(kern, ProgType.KPROBE, counter(counts), name="count_opens",
                           expected_attach_type=AttachType.TRACE_KPROBE_MULTI)
    name = ffi.new("char[]", b"do_sys_openat2")
    syms = ffi.new("uint64_t[]", [int(ffi.cast("uintptr_t", name))])
    link = calls.link_create(kern, prog, 0, AttachType.TRACE_KPROBE_MULTI,
                             kprobe_multi__syms=syms, kprobe_multi__cnt=1)
    other = kern.spawn(pid=4242)
    for task in (kern.current, other, kern.current, kern.current):
        kern.world.trace.call("do_sys_openat2", args=(AT_FDCWD, b"/etc/hostname\0", 0), task=task)
    kern.world.trace.call("vfs_read", args=(0, 0, 0, 0))          # not probed
    result = {}
    for pid in (kern.current.pid, other.pid):
        v = calls.map_lookup_elem(kern, counts, pid.to_bytes(4, "little"), 8)
        result[pid] = int.from_bytes(v, "little")
    for fd in (link, prog, counts):
        kern.close(fd)
    return result


def main() -> int:
    kern = Kernel()
    r = run(kern)
    assert r == {kern.current.pid: 3, 4242: 1}, r
    print(r)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
