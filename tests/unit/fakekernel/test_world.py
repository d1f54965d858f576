"""The simulated world: XDP links on netdevs and the receive path, kprobe_multi links and
kernel-function calls, World.open and attached_objects."""
from __future__ import annotations

import os

import pytest

from fakekernel import Kernel
from fakekernel.net import rx
from fakekernel.net.xdp import XDP_PTR_SLOTS
from fakekernel.trace.kprobe import ARG_REGS
from uapi import calls
from uapi.bpf import (BPF_DW, BPF_B, BPF_H, BPF_JGT, BPF_JNE, BPF_REG_0, BPF_REG_1, BPF_REG_2,
                      BPF_REG_3, AttachType, BpfCmd, KprobeMultiFlags, ProgType, XdpAction)
from uapi.errno import Errno
from uapi.ffi import ffi
from uapi.insn import (BPF_ALU64_IMM, BPF_EXIT_INSN, BPF_JMP_IMM, BPF_JMP_REG, BPF_LDX_MEM,
                       BPF_MOV64_IMM, BPF_MOV64_REG, assemble_insns)
from uapi.bpf import BPF_ADD

from hookutil import install_prog, prog_of, ret_prog

XDP = AttachType.XDP
UDP_DISCARD = 9


class B:
    def __init__(self, kern):
        self.kern = kern

    def bpf(self, cmd, attr, size):
        return self.kern.bpf(cmd, attr, size)


def link(k, prog, target, at, flags=0, **extra):
    fields = {f"link_create__{n}": v for n, v in extra.items()}
    return calls.raw(B(k), BpfCmd.LINK_CREATE, None, size=64, link_create__prog_fd=prog,
                     link_create__target_fd=target, link_create__attach_type=at,
                     link_create__flags=flags, **fields)[0]


def xdp_drop_udp9() -> bytes:
    """if (ipv4 && proto == UDP && dport == 9) return XDP_DROP; return XDP_PASS;  (xlated form)"""
    return assemble_insns([
        BPF_LDX_MEM(BPF_DW, BPF_REG_2, BPF_REG_1, XDP_PTR_SLOTS["data"]),
        BPF_LDX_MEM(BPF_DW, BPF_REG_3, BPF_REG_1, XDP_PTR_SLOTS["data_end"]),
        BPF_MOV64_REG(BPF_REG_1, BPF_REG_2),
        BPF_ALU64_IMM(BPF_ADD, BPF_REG_1, 14 + 20 + 4),
        BPF_MOV64_IMM(BPF_REG_0, XdpAction.PASS),
        BPF_JMP_REG(BPF_JGT, BPF_REG_1, BPF_REG_3, 5),
        BPF_LDX_MEM(BPF_B, BPF_REG_1, BPF_REG_2, 14 + 9),
        BPF_JMP_IMM(BPF_JNE, BPF_REG_1, 17, 3),
        BPF_LDX_MEM(BPF_H, BPF_REG_1, BPF_REG_2, 14 + 20 + 2),
        BPF_JMP_IMM(BPF_JNE, BPF_REG_1, UDP_DISCARD << 8, 1),     # be16 9 loaded little-endian
        BPF_MOV64_IMM(BPF_REG_0, XdpAction.DROP),
        BPF_EXIT_INSN(),
    ])


def frame(proto: int, dport: int) -> bytes:
    eth = bytes(12) + (0x0800).to_bytes(2, "big")
    ip = bytes([0x45, 0]) + (20 + 8).to_bytes(2, "big") + bytes(4) + bytes([64, proto]) + \
        bytes(2) + bytes([127, 0, 0, 1]) * 2
    l4 = (40000).to_bytes(2, "big") + dport.to_bytes(2, "big") + bytes(4)
    return eth + ip + l4


def test_link_create_xdp_on_lo_then_close_detaches(kernel):
    x = install_prog(kernel, ProgType.XDP, xdp_drop_udp9())
    lk = link(kernel, x, 1, XDP)
    assert lk >= 0
    net = kernel.world.net
    assert net.receive(1, frame(17, UDP_DISCARD)).action == XdpAction.DROP
    res = net.receive(1, frame(17, 53))
    assert res.action == XdpAction.PASS and not res.delivered
    assert prog_of(kernel, x) in kernel.world.attached_objects()
    kernel.close(lk)
    assert net.receive(1, frame(17, UDP_DISCARD)).action is None
    assert not kernel.world.attached_objects()
    kernel.close(x)


def test_link_create_xdp_errnos(kernel):
    x = install_prog(kernel, ProgType.XDP)
    x2 = install_prog(kernel, ProgType.XDP)
    xc = install_prog(kernel, ProgType.XDP, eat=AttachType.XDP_CPUMAP)
    sk = install_prog(kernel, ProgType.SOCKET_FILTER)
    try:
        assert link(kernel, x, 0, XDP) == -Errno.EINVAL
        assert link(kernel, x, 999, XDP) == -Errno.EINVAL
        assert link(kernel, x, 1, XDP, 16) == -Errno.EINVAL       # XDP_FLAGS_REPLACE
        assert link(kernel, x, 1, XDP, 1) == -Errno.EINVAL        # UPDATE_IF_NOEXIST
        assert link(kernel, x, 1, XDP, 4) == -Errno.EOPNOTSUPP    # DRV mode on lo
        assert link(kernel, x, 1, XDP, 8) == -Errno.EOPNOTSUPP
        assert link(kernel, x, 1, XDP, 6) == -Errno.EINVAL
        assert link(kernel, xc, 1, XDP) == -Errno.EINVAL
        assert link(kernel, sk, 1, XDP) == -Errno.EINVAL
        assert link(kernel, x, 1, AttachType.CGROUP_INET_INGRESS) == -Errno.EINVAL
        assert link(kernel, 999, 1, XDP) == -Errno.EBADF
        assert link(kernel, 0, 1, XDP) == -Errno.EINVAL
        lk = link(kernel, x, 1, XDP, 2)
        assert lk >= 0
        assert link(kernel, x2, 1, XDP) == -Errno.EBUSY
        assert link(kernel, x2, 1, XDP, 4) == -Errno.EEXIST       # native vs generic
        kernel.close(lk)
    finally:
        for f in (x, x2, xc, sk):
            kernel.close(f)


def test_link_create_xdp_native_on_veth(kernel):
    idx = kernel.world.net.add_device("veth0", "veth")
    assert idx == 2 and kernel.world.net.add_device("dum0", "dummy") == 3
    x = install_prog(kernel, ProgType.XDP, ret_prog(XdpAction.TX))
    lk = link(kernel, x, idx, XDP, 4)
    assert lk >= 0
    assert link(kernel, x, 3, XDP, 4) == -Errno.EOPNOTSUPP
    f = frame(17, 53)
    assert kernel.world.net.receive(idx, f).action == XdpAction.TX
    assert kernel.world.net.tx[idx] == [f]
    kernel.close(lk)
    kernel.close(x)


def test_xdp_invalid_action_warns_and_drops(kernel):
    x = install_prog(kernel, ProgType.XDP, ret_prog(7), name=b"bad")
    lk = link(kernel, x, 1, XDP)
    res = kernel.world.net.receive(1, frame(6, 80))
    assert res.xdp_ret == 7 and res.action == XdpAction.ABORTED
    assert kernel.world.dmesg == [f"Illegal XDP return value 7 on prog bad (id "
                                  f"{prog_of(kernel, x).aux.id}) dev lo, expect packet loss!"]
    kernel.world.net.receive(1, frame(6, 80))
    assert len(kernel.world.dmesg) == 1                             # pr_warn_once
    kernel.close(lk)
    kernel.close(x)


def test_receive_delivers_through_cgroup_ingress(kernel):
    world = kernel.world
    world.cgroup.mkdir("/sys/fs/cgroup/unified/app")
    cgfd = kernel.open("/sys/fs/cgroup/unified/app", os.O_RDONLY | os.O_DIRECTORY)
    deny = install_prog(kernel, ProgType.CGROUP_SKB, ret_prog(0))
    sock = world.net.bind(rx.IPPROTO_UDP, 5353, cgroup="app")
    res = world.net.receive(1, frame(17, 5353))
    assert res.delivered and res.cgroup_allowed and len(sock.queue) == 1
    calls.prog_attach(B(kernel), deny, cgfd, AttachType.CGROUP_INET_INGRESS)
    res = world.net.receive(1, frame(17, 5353))
    assert not res.delivered and res.cgroup_allowed is False and len(sock.queue) == 1
    calls.prog_detach(B(kernel), deny, cgfd, AttachType.CGROUP_INET_INGRESS)
    kernel.close(deny)
    kernel.close(cgfd)
    world.net.close_socket(sock)
    world.cgroup.rmdir("/sys/fs/cgroup/unified/app")


def _syms(names):
    bufs = [ffi.new("char[]", n.encode()) for n in names]
    arr = ffi.new("uint64_t[]", [int(ffi.cast("uintptr_t", b)) for b in bufs])
    return arr, bufs


def kmulti(k, prog, names=None, addrs=None, flags=0, cookies=None, cnt=None, link_flags=0):
    keep = []
    extra = {"kprobe_multi__flags": flags}
    if names is not None:
        arr, bufs = _syms(names)
        keep += [arr, bufs]
        extra["kprobe_multi__syms"] = arr
    if addrs is not None:
        a = ffi.new("uint64_t[]", addrs)
        keep.append(a)
        extra["kprobe_multi__addrs"] = a
    if cookies is not None:
        c = ffi.new("uint64_t[]", cookies)
        keep.append(c)
        extra["kprobe_multi__cookies"] = c
    n = cnt if cnt is not None else len(names if names is not None else addrs or [])
    extra["kprobe_multi__cnt"] = n
    return link(k, prog, 0, AttachType.TRACE_KPROBE_MULTI, link_flags, **extra)


def test_link_create_kprobe_multi_errnos(kernel):
    km = install_prog(kernel, ProgType.KPROBE, eat=AttachType.TRACE_KPROBE_MULTI)
    kp = install_prog(kernel, ProgType.KPROBE)
    try:
        assert kmulti(kernel, kp, ["vfs_read"]) == -Errno.EINVAL          # not a multi prog
        assert kmulti(kernel, km, ["vfs_read"], link_flags=1) == -Errno.EINVAL
        assert kmulti(kernel, km, ["vfs_read"], flags=2) == -Errno.EINVAL
        assert kmulti(kernel, km, None, None, cnt=1) == -Errno.EINVAL
        assert kmulti(kernel, km, ["vfs_read"], cnt=0) == -Errno.EINVAL
        assert kmulti(kernel, km, ["no_such_function"]) == -Errno.ESRCH
        assert kmulti(kernel, km, ["vfs_read", "vfs_read"]) == -Errno.ESRCH
        assert kmulti(kernel, km, ["__rcu_read_lock"]) == -Errno.ESRCH    # notrace
        assert kmulti(kernel, km, ["x" * 600]) == -Errno.E2BIG
        assert kmulti(kernel, km, addrs=[0xffffffff81000001]) == -Errno.EINVAL
        assert link(kernel, km, 0xffffffff, AttachType.PERF_EVENT) == -Errno.EINVAL
        assert link(kernel, kp, 0xffffffff, AttachType.PERF_EVENT) == -Errno.EBADF
        assert link(kernel, kp, 0, AttachType.PERF_EVENT) == -Errno.EBADF
        kernel.world.trace.fprobe = False
        assert kmulti(kernel, km, ["vfs_read"]) == -Errno.EOPNOTSUPP
        assert kmulti(kernel, kp, ["vfs_read"]) == -Errno.EOPNOTSUPP
    finally:
        kernel.close(km)
        kernel.close(kp)


def test_kprobe_multi_fires_with_regs_cookie_and_return(kernel):
    kernel.sysctls["kernel.bpf_stats_enabled"] = 1      # run_cnt counts only with stats on
    # r0 = ctx->di (first argument); kretprobe: r0 = ctx->ax
    di = ffi.offsetof("struct pt_regs", "di")
    ax = ffi.offsetof("struct pt_regs", "ax")
    km = install_prog(kernel, ProgType.KPROBE, assemble_insns(
        [BPF_LDX_MEM(BPF_DW, BPF_REG_0, BPF_REG_1, di), BPF_EXIT_INSN()]),
        eat=AttachType.TRACE_KPROBE_MULTI)
    kr = install_prog(kernel, ProgType.KPROBE, assemble_insns(
        [BPF_LDX_MEM(BPF_DW, BPF_REG_0, BPF_REG_1, ax), BPF_EXIT_INSN()]),
        eat=AttachType.TRACE_KPROBE_MULTI)
    l1 = kmulti(kernel, km, ["vfs_write", "do_sys_openat2"], cookies=[11, 22])
    l2 = kmulti(kernel, kr, ["do_sys_openat2"], flags=KprobeMultiFlags.KPROBE_MULTI_RETURN)
    assert l1 >= 0 and l2 >= 0
    link1 = kernel.current.files.fdget(l1).private_data
    f = kernel.world.trace.kallsyms.lookup_name("do_sys_openat2")
    assert link1.cookie_for(f.addr) == 22
    assert link1.cookie_for(kernel.world.trace.kallsyms.lookup_name("vfs_write").addr) == 11
    assert kernel.world.trace.call("do_sys_openat2", args=(-100, b"/etc/passwd\0", 0), ret=3) == 2
    assert kernel.world.trace.call("vfs_read", args=(1, 2, 3, 4)) == 0
    assert prog_of(kernel, km).aux.run_cnt == 1 and prog_of(kernel, kr).aux.run_cnt == 1
    assert ARG_REGS[0] == "di"
    kernel.close(l1)
    assert kernel.world.trace.call("do_sys_openat2", args=(1, 2, 3)) == 1
    kernel.close(l2)
    assert kernel.world.trace.call("do_sys_openat2", args=(1, 2, 3)) == 0
    kernel.close(km)
    kernel.close(kr)


def test_world_open_and_devices(kernel):
    assert kernel.open("/sys/fs/cgroup/unified", os.O_RDONLY | os.O_DIRECTORY) >= 3
    fd = kernel.open("/sys/fs/cgroup/unified", os.O_RDONLY)
    assert kernel.current.files.fdget(fd).kind == "cgroup"
    assert kernel.open("/sys/fs/cgroup/unified/nope", os.O_RDONLY) == -Errno.ENOENT
    assert kernel.open("/sys/fs/cgroup/unified", os.O_RDWR) == -Errno.EISDIR
    assert kernel.world.dev_get_by_index(1).name == "lo"
    assert kernel.world.netdevs[1].name == "lo"
    with pytest.raises(Exception):
        kernel.world.net.add_device("lo", "veth")
    for f in (3, fd):
        kernel.close(f)
    assert Kernel().world.net.add_device("veth0") == 2
