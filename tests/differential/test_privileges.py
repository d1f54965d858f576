"""The privilege gate, per command, against the real kernel.

The oracle child keeps uid 0 but drops its capability sets to exactly the ones under test
(capset(2)); the kernel's checks look at capabilities (capable(CAP_BPF) ...), and with
`kernel.unprivileged_bpf_disabled` set, a caller without CAP_BPF is refused outright.
The fake runs the same scenario as a task with the same capability set.
"""
from __future__ import annotations

import json
import os

import cffi
import pytest

from fakekernel import Creds, Kernel
from uapi import calls
from uapi.bpf import BpfCmd, MapType, ProgType
from uapi.capability import Cap
from uapi.errno import Errno

_ffi = cffi.FFI()
_ffi.cdef("""
struct cap_header { uint32_t version; int pid; };
struct cap_data { uint32_t effective, permitted, inheritable; };
int capset(struct cap_header *hdr, const struct cap_data *data);
""")
_libc = _ffi.dlopen(None)
_LINUX_CAPABILITY_VERSION_3 = 0x20080522

RET0 = bytes.fromhex("b700000000000000" "9500000000000000")     # r0 = 0; exit

CAP_SETS = {
    "none": set(),
    "bpf": {Cap.BPF},
    "bpf+net_admin": {Cap.BPF, Cap.NET_ADMIN},
    "bpf+perfmon": {Cap.BPF, Cap.PERFMON},
    "net_admin": {Cap.NET_ADMIN},
    "sys_admin": {Cap.SYS_ADMIN},
}


def scenario(b) -> dict:
    out = {}

    def keep(name, ret):
        if isinstance(ret, int) and ret >= 0:
            b.close(ret)
            ret = "fd"
        out[name] = ret

    def attempt(fn, *a, **kw):
        try:
            return fn(*a, **kw)
        except calls.BpfError as e:
            return -e.errno

    keep("map_create", attempt(calls.map_create, b, MapType.ARRAY, 4, 4, 1))
    # fd arrays need no privilege and check their attrs first; a stack map's checks all
    # come after the CAP_BPF gate (stack_map_alloc)
    for mt, vs in ((MapType.PERF_EVENT_ARRAY, 4), (MapType.PERF_EVENT_ARRAY, 8), (MapType.CGROUP_ARRAY, 4),
                   (MapType.CGROUP_ARRAY, 8), (MapType.STACK_TRACE, 8), (MapType.STACK_TRACE, 4)):
        keep(f"typed map {mt.name} v{vs}", attempt(calls.map_create, b, mt, 4, vs, 1))
    for pt in (ProgType.SOCKET_FILTER, ProgType.CGROUP_SKB, ProgType.XDP, ProgType.SCHED_CLS,
               ProgType.KPROBE, ProgType.TRACEPOINT):
        keep(f"prog_load {pt.name}", calls.prog_load(b, pt, RET0, strict=False).ret)
    # id walks depend on what else the machine holds: compare only whether the gate let us in
    nxt = attempt(calls.prog_get_next_id, b, 0)
    out["prog_get_next_id"] = nxt if nxt == -Errno.EPERM else "allowed"
    keep("map_get_fd_by_id 0", attempt(calls.map_get_fd_by_id, b, 0))
    ret, _ = calls.raw(b, BpfCmd.BTF_GET_NEXT_ID, "next_id", start_id=0)
    out["btf_get_next_id"] = ret if ret == -Errno.EPERM else "allowed"
    return out


def _host_with_caps(caps: set) -> dict:
    from backends import HostBackend
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:
        try:
            os.close(r)
            mask = sum(1 << int(c) for c in caps)
            hdr = _ffi.new("struct cap_header *", {"version": _LINUX_CAPABILITY_VERSION_3})
            data = _ffi.new("struct cap_data[2]")
            for i in range(2):
                data[i].effective = data[i].permitted = (mask >> (32 * i)) & 0xFFFFFFFF
            if _libc.capset(hdr, data) != 0:
                os.write(w, b'{"error": "capset"}')
            else:
                os.write(w, json.dumps(scenario(HostBackend())).encode())
        finally:
            os._exit(0)
    os.close(w)
    chunks = []
    while chunk := os.read(r, 65536):
        chunks.append(chunk)
    os.close(r)
    os.waitpid(pid, 0)
    return json.loads(b"".join(chunks))


@pytest.mark.parametrize("capset_name", list(CAP_SETS))
def test_privilege_gate_per_command_matches_host(host, capset_name):
    if os.geteuid() != 0:
        pytest.skip("needs root to choose the capability set of the oracle child")
    caps = CAP_SETS[capset_name]
    with open("/proc/sys/kernel/unprivileged_bpf_disabled") as f:
        disabled = int(f.read())
    from backends import FakeBackend
    fake = FakeBackend(Kernel(creds=Creds(uid=0, caps=frozenset(caps)),
                              sysctls={"kernel.unprivileged_bpf_disabled": disabled}))
    got_fake = scenario(fake)
    fake.cleanup()
    assert got_fake == _host_with_caps(caps)


@pytest.mark.parametrize("disabled", [0, 1, 2])
def test_unprivileged_socket_filter_follows_sysctl(disabled):
    """unprivileged_bpf_disabled=0 lets an unprivileged task load SOCKET_FILTER and
    CGROUP_SKB only (the real machine runs with 2, so this part follows the kernel source)."""
    k = Kernel(creds=Creds(uid=1000, caps=frozenset()),
               sysctls={"kernel.unprivileged_bpf_disabled": disabled})
    r = scenario(FakeBackendFor(k))
    if disabled:
        assert all(v == -1 for k_, v in r.items() if k_.startswith(("map_create", "prog_load")))
    else:
        assert r["prog_load SOCKET_FILTER"] == "fd" and r["prog_load CGROUP_SKB"] == "fd"
        assert r["map_create"] == "fd"
        assert r["prog_load XDP"] == -1 and r["prog_load KPROBE"] == -1
    k.shutdown()


def FakeBackendFor(k):
    from backends import FakeBackend
    return FakeBackend(k)
