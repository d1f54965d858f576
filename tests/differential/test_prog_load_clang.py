"""Real compiler output through PROG_LOAD on both kernels: clang -O2 programs of every supported
type (packet parsing with bounds checks, map lookups and updates, atomics, ctx writes, helper
calls, a bounded loop), built for -mcpu=v2 and v3 (ALU32/JMP32).  fakekernel must accept
exactly what Linux accepts, with the same level-1 log.
"""
from __future__ import annotations

import pathlib
import re
import shutil
import subprocess

import pytest

from uapi import calls
from uapi.bpf import AttachType, ProgType
from verifier.elfprog import load_object, patch_maps

PROGS = pathlib.Path(__file__).resolve().parent.parent / "verifier" / "progs"
CLANG = shutil.which("clang-19") or shutil.which("clang")
_KADDR = re.compile(r"0x[0-9a-f]{12,16}")

OBJECTS = [
    ("xdp_parse", "xdp", ProgType.XDP, 0),
    ("tc_mark", "tc", ProgType.SCHED_CLS, 0),
    ("sockfilter", "socket", ProgType.SOCKET_FILTER, 0),
    ("cgroup_egress", "cgroup_skb/egress", ProgType.CGROUP_SKB, AttachType.CGROUP_INET_EGRESS),
    ("kprobe_open", "kprobe/do_sys_openat2", ProgType.KPROBE, 0),
    ("tp_enter", "tracepoint/raw_syscalls/sys_enter", ProgType.TRACEPOINT, 0),
]


@pytest.fixture(scope="module")
def objdir(tmp_path_factory):
    if CLANG is None:
        pytest.skip("clang is not installed")
    out = tmp_path_factory.mktemp("bpfobj")
    for name, *_ in OBJECTS:
        for cpu in ("v2", "v3"):
            subprocess.run([CLANG, "-O2", "-target", "bpf", f"-mcpu={cpu}", f"-I{PROGS}", "-c",
                            str(PROGS / f"{name}.c"), "-o", str(out / f"{name}_{cpu}.o")], check=True)
    return out


def _load(b, path, section, prog_type, eat, log_level):
    insns, maps, relocs, lic = load_object(str(path), section)
    fds = {n: calls.map_create(b, t, k, v, m, map_flags=f) for n, (t, k, v, m, f) in maps.items()}
    try:
        res = calls.prog_load(b, prog_type, patch_maps(insns, relocs, fds), lic, log_level=log_level,
                              log_size=1 << 22, strict=False, expected_attach_type=eat)
    finally:
        for fd in fds.values():
            b.close(fd)
    if res.ret >= 0:
        b.close(res.ret)
    return (res.ret >= 0, res.ret if res.ret < 0 else 0, _KADDR.sub("<kaddr>", res.log))


@pytest.mark.parametrize("cpu", ["v2", "v3"])
@pytest.mark.parametrize("name,section,prog_type,eat", OBJECTS, ids=[o[0] for o in OBJECTS])
def test_prog_load_clang_object_verdict(both, objdir, name, section, prog_type, eat, cpu):
    fake, host = both
    path = objdir / f"{name}_{cpu}.o"
    h = _load(host, path, section, prog_type, eat, 1)
    f = _load(fake, path, section, prog_type, eat, 1)
    assert h[0], h[2]            # the sample programs are valid
    assert f == h                # verdict and the whole level-1 log (incl. "processed ..." statistics)
