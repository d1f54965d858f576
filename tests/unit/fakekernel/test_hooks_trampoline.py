"""Trampolines on simulated kernel activity: an LSM program on bpf_lsm_bpf decides bpf() commands
(security_bpf), and fentry/fexit/fmod_ret programs run when the world calls a kernel function
(`kern.world.trace.call`), next to kprobes.  The reference kernel refuses these loads (lockdown),
so the expected behaviour is the kernel source's: security_bpf() runs before the command is
decoded, an int LSM hook's first non-zero program verdict is the result, fmod_ret replaces the
return value fexit and kretprobes then see."""
from __future__ import annotations

import functools

import pytest

from fakekernel import Kernel
from fakekernel.btf_vmlinux import btf_index
from uapi import calls
from uapi.asm import assemble
from uapi.btf import BtfKind
from uapi.bpf import AttachType, BpfCmd, MapType, ProgType
from uapi.errno import Errno


@functools.cache
def _ix():
    return btf_index(Kernel().btf_vmlinux)


def fn(name: str) -> int:
    return _ix().find_by_name_kind(name.encode(), BtfKind.FUNC)


def attach(k, prog_fd, attach_type):
    return calls.link_create(k, prog_fd, 0, attach_type)


def lsm_deny_map_create(k, errno=Errno.EPERM) -> int:
    """bpf_lsm_bpf(cmd, attr, size, kernel): -errno for BPF_MAP_CREATE of a HASH map."""
    insns = assemble("\n".join([
        "r2 = *(u64 *)(r1 +0)", f"if r2 != {int(BpfCmd.MAP_CREATE)} goto pc+5",
        "r3 = *(u64 *)(r1 +8)", "r4 = *(u32 *)(r3 +0)", f"if r4 != {int(MapType.HASH)} goto pc+2",
        f"r0 = {-int(errno)}", "exit", "r0 = 0", "exit"]))
    return calls.prog_load(k, ProgType.LSM, insns, expected_attach_type=AttachType.LSM_MAC,
                           attach_btf_id=fn("bpf_lsm_bpf"))


def test_lsm_bpf_hook_refuses_map_create_while_linked(kernel):
    p = lsm_deny_map_create(kernel)
    m = calls.map_create(kernel, MapType.ARRAY, 4, 4, 1)            # before the link: allowed
    link = attach(kernel, p, AttachType.LSM_MAC)
    with pytest.raises(calls.BpfError) as e:
        calls.map_create(kernel, MapType.HASH, 4, 4, 1)
    assert e.value.errno == Errno.EPERM
    arr = calls.map_create(kernel, MapType.ARRAY, 4, 4, 1)          # the program reads attr->map_type
    ret, _ = calls.raw(kernel, 999, None)                            # hook first, then "unknown command"
    assert ret == -Errno.EINVAL
    kernel.close(link)
    h = calls.map_create(kernel, MapType.HASH, 4, 4, 1)
    for fd in (h, arr, m, p):
        kernel.close(fd)


def test_lsm_bpf_hook_verdict_errno_passes_through(kernel):
    p = lsm_deny_map_create(kernel, Errno.EACCES)
    link = attach(kernel, p, AttachType.LSM_MAC)
    ret, _ = calls.raw(kernel, BpfCmd.MAP_CREATE, "map_extra", map_type=MapType.HASH, key_size=4,
                       value_size=4, max_entries=1)
    assert ret == -Errno.EACCES
    kernel.close(link)
    kernel.close(p)




@pytest.mark.parametrize("eat", [AttachType.TRACE_FENTRY, AttachType.TRACE_FEXIT])
def test_fentry_fexit_run_when_the_world_calls_the_function(kernel, eat):
    """The program stores the first argument and the third (fexit: the return value) into an
    array map value, so the test sees it ran with the world's arguments."""
    m = calls.map_create(kernel, MapType.ARRAY, 4, 16, 1)
    val = f"r2 = *(u64 *)(r1 +{32 if eat == AttachType.TRACE_FEXIT else 16})"   # vfs_read has 4 args
    from uapi.insn import BPF_LD_IMM64_RAW_FULL, encode_prog
    from uapi.bpf import BPF_PSEUDO_MAP_VALUE
    head = encode_prog(list(BPF_LD_IMM64_RAW_FULL(3, BPF_PSEUDO_MAP_VALUE, 0, 0, m, 0)))
    body = assemble("\n".join(["r4 = *(u64 *)(r1 +0)", "*(u64 *)(r3 +0) = r4", val,
                               "*(u64 *)(r3 +8) = r2", "r0 = 0", "exit"]))
    p = calls.prog_load(kernel, ProgType.TRACING, head + body, expected_attach_type=eat,
                        attach_btf_id=fn("vfs_read"))
    link = attach(kernel, p, eat)
    runs = kernel.world.trace.call("vfs_read", [0x1234, 7, 4096, 0], ret=55)
    assert runs == 1
    got = calls.map_lookup_elem(kernel, m, bytes(4), 16)
    want_second = 55 if eat == AttachType.TRACE_FEXIT else 4096
    assert got == (0x1234).to_bytes(8, "little") + want_second.to_bytes(8, "little")
    kernel.close(link)
    assert kernel.world.trace.call("vfs_read", [1, 2, 3, 4]) == 0
    for fd in (p, m):
        kernel.close(fd)
