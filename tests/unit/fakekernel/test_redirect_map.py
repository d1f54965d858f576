"""bpf_redirect_map's world effect: a frame redirected through a devmap leaves the target
device (after the entry's BPF_XDP_DEVMAP program, which sees egress_ifindex), BPF_F_BROADCAST
copies it to every entry (BPF_F_EXCLUDE_INGRESS skips the receiver), a miss returns the
flags' default action, native XDP cannot send out of a device without ndo_xdp_xmit, a cpumap
entry re-receives the frame on its CPU after its BPF_XDP_CPUMAP program, and devmap entries
leave with their device."""
from __future__ import annotations

from uapi import calls
from uapi.asm import assemble
from uapi.bpf import AttachType, BpfCmd, MapType, ProgType, XdpAction
from uapi.insn import BPF_CALL_HELPER, BPF_EXIT_INSN, BPF_LD_MAP_FD, BPF_MOV64_IMM, assemble_insns
from uapi.bpf import FuncId

from fakekernel.net import rx
from uapi.ffi import ffi

LO = 1
XDP = AttachType.XDP
XDP_FLAGS_DRV_MODE = 1 << 2
EGRESS_IFINDEX = ffi.offsetof("struct xdp_md", "egress_ifindex")


class B:
    def __init__(self, kern):
        self.kern = kern

    def bpf(self, cmd, attr, size):
        return self.kern.bpf(cmd, attr, size)


def u32(v: int) -> bytes:
    return v.to_bytes(4, "little")


def udp_frame(dport: int, payload: bytes = bytes(4)) -> bytes:
    eth = bytes(12) + (0x0800).to_bytes(2, "big")
    ip = bytes([0x45, 0]) + (20 + 8 + len(payload)).to_bytes(2, "big") + bytes(4) + bytes([64, 17]) + \
        bytes(2) + bytes([127, 0, 0, 1]) * 2
    l4 = (40000).to_bytes(2, "big") + dport.to_bytes(2, "big") + (8 + len(payload)).to_bytes(2, "big") + bytes(2)
    return eth + ip + l4 + payload


def redirect_prog(k, map_fd, key, flags=0):
    insns = assemble_insns([BPF_LD_MAP_FD(1, map_fd), BPF_MOV64_IMM(2, key), BPF_MOV64_IMM(3, flags),
                            BPF_CALL_HELPER(FuncId.redirect_map), BPF_EXIT_INSN()])
    return calls.prog_load(B(k), ProgType.XDP, insns)


# writes r6 into the frame's byte `off`, then returns `ret`
_STAMP = """
r2 = *(u32 *)(r1 +0)
r3 = *(u32 *)(r1 +4)
r4 = r2
r4 += {end}
if r4 > r3 goto pc+1
*(u8 *)(r2 +{off}) = r6
r0 = {ret}
exit
"""


def devmap_stamp_prog(k, ret=XdpAction.PASS):
    """r6 = ctx->egress_ifindex; stamp it into byte 0."""
    text = f"r6 = *(u32 *)(r1 +{EGRESS_IFINDEX})\n" + _STAMP.format(off=0, end=1, ret=int(ret))
    return calls.prog_load(B(k), ProgType.XDP, assemble(text), expected_attach_type=AttachType.XDP_DEVMAP)


def cpumap_stamp_prog(k, off):
    """r6 = bpf_get_smp_processor_id() + 0x40; stamp it into byte `off`."""
    text = "r6 = r1\ncall bpf_get_smp_processor_id#8\nr1 = r6\nr6 = r0\nr6 += 64\n" + \
        _STAMP.format(off=off, end=off + 1, ret=int(XdpAction.PASS))
    return calls.prog_load(B(k), ProgType.XDP, assemble(text), expected_attach_type=AttachType.XDP_CPUMAP)


def attach(k, prog, ifindex, flags=0):
    lk = calls.raw(B(k), BpfCmd.LINK_CREATE, None, size=64, link_create__prog_fd=prog,
                   link_create__target_fd=ifindex, link_create__attach_type=XDP,
                   link_create__flags=flags)[0]
    assert lk >= 0
    return lk


def close_all(k, *fds):
    for fd in fds:
        assert k.close(fd) == 0


def test_devmap_redirect_runs_the_entry_prog_and_transmits_on_the_target(kernel):
    net = kernel.world.net
    veth = net.add_device("veth0", "veth")
    dprog = devmap_stamp_prog(kernel)
    m = calls.map_create(B(kernel), MapType.DEVMAP, 4, 8, 4)
    calls.map_update_elem(B(kernel), m, u32(2), u32(veth) + u32(dprog))
    x = redirect_prog(kernel, m, 2)
    lk = attach(kernel, x, LO)
    f = udp_frame(9)
    res = net.receive(LO, f)
    assert res.xdp_ret == XdpAction.REDIRECT and res.action == XdpAction.REDIRECT
    assert net.tx[veth] == [bytes([veth]) + f[1:]]         # egress_ifindex seen by the devmap prog
    assert net.tx[LO] == []
    close_all(kernel, lk, x, m, dprog)


def test_devmap_prog_drop_consumes_the_frame(kernel):
    net = kernel.world.net
    veth = net.add_device("veth0", "veth")
    dprog = devmap_stamp_prog(kernel, XdpAction.DROP)
    m = calls.map_create(B(kernel), MapType.DEVMAP_HASH, 4, 8, 4)
    calls.map_update_elem(B(kernel), m, u32(77), u32(veth) + u32(dprog))
    x = redirect_prog(kernel, m, 77)
    lk = attach(kernel, x, LO)
    assert net.receive(LO, udp_frame(9)).action == XdpAction.REDIRECT
    assert net.tx[veth] == []
    close_all(kernel, lk, x, m, dprog)


def test_devmap_broadcast_exclude_ingress_copies_to_every_other_device(kernel):
    net = kernel.world.net
    v1, v2 = net.add_device("veth1", "veth"), net.add_device("veth2", "veth")
    m = calls.map_create(B(kernel), MapType.DEVMAP, 4, 4, 8)
    for key, ifindex in ((0, LO), (3, v1), (5, v2)):
        calls.map_update_elem(B(kernel), m, u32(key), u32(ifindex))
    x = redirect_prog(kernel, m, 6, flags=8 | 16)           # BPF_F_BROADCAST | BPF_F_EXCLUDE_INGRESS
    lk = attach(kernel, x, LO)
    f = udp_frame(9)
    assert net.receive(LO, f).action == XdpAction.REDIRECT
    assert (net.tx[LO], net.tx[v1], net.tx[v2]) == ([], [f], [f])
    close_all(kernel, lk, x)
    x = redirect_prog(kernel, m, 6, flags=8)                # broadcast including the ingress device
    lk = attach(kernel, x, LO)
    net.receive(LO, f)
    assert (net.tx[LO], net.tx[v1], net.tx[v2]) == ([f], [f, f], [f, f])
    close_all(kernel, lk, x, m)


def test_redirect_map_miss_returns_the_default_action(kernel):
    net = kernel.world.net
    sock = net.bind(rx.IPPROTO_UDP, 5353)
    m = calls.map_create(B(kernel), MapType.DEVMAP, 4, 4, 4)
    x = redirect_prog(kernel, m, 1, flags=XdpAction.PASS)
    lk = attach(kernel, x, LO)
    res = net.receive(LO, udp_frame(5353))
    assert res.xdp_ret == XdpAction.PASS and res.delivered and len(sock.queue) == 1
    close_all(kernel, lk, x)
    x = redirect_prog(kernel, m, 1, flags=XdpAction.TX)
    lk = attach(kernel, x, LO)
    assert net.receive(LO, udp_frame(5353)).action == XdpAction.TX
    close_all(kernel, lk, x, m)
    net.close_socket(sock)


def test_native_redirect_needs_a_target_with_ndo_xdp_xmit(kernel):
    net = kernel.world.net
    v1, v2 = net.add_device("veth1", "veth"), net.add_device("veth2", "veth")
    m = calls.map_create(B(kernel), MapType.DEVMAP, 4, 4, 4)
    calls.map_update_elem(B(kernel), m, u32(0), u32(LO))
    calls.map_update_elem(B(kernel), m, u32(1), u32(v2))
    to_lo, to_v2 = redirect_prog(kernel, m, 0), redirect_prog(kernel, m, 1)
    lk = attach(kernel, to_lo, v1, XDP_FLAGS_DRV_MODE)
    res = net.receive(v1, udp_frame(9))
    assert res.xdp_ret == XdpAction.REDIRECT and res.action == XdpAction.DROP   # lo: no ndo_xdp_xmit
    assert net.tx[LO] == []
    close_all(kernel, lk)
    lk = attach(kernel, to_v2, v1, XDP_FLAGS_DRV_MODE)
    assert net.receive(v1, udp_frame(9)).action == XdpAction.REDIRECT
    assert net.tx[v2] == [udp_frame(9)]
    close_all(kernel, lk, to_lo, to_v2, m)


def test_devmap_entries_leave_with_their_device(kernel):
    net = kernel.world.net
    veth = net.add_device("veth0", "veth")
    dprog = devmap_stamp_prog(kernel)
    for t in (MapType.DEVMAP, MapType.DEVMAP_HASH):
        m = calls.map_create(B(kernel), t, 4, 8, 4)
        calls.map_update_elem(B(kernel), m, u32(1), u32(veth) + u32(dprog))
        calls.map_update_elem(B(kernel), m, u32(2), u32(LO))
        dm = kernel.current.files.fdget(m).private_data
        before = dm.memlock
        assert kernel.current.files.fdget(dprog).private_data.refcnt == 2
        net.del_device(veth)
        assert calls.raw(B(kernel), BpfCmd.MAP_LOOKUP_ELEM, "flags", map_fd=m, key=u32(1),
                         value=bytearray(8))[0] == -2
        assert calls.map_lookup_elem(B(kernel), m, u32(2), 8)[:4] == u32(LO)
        assert dm.memlock < before
        assert kernel.current.files.fdget(dprog).private_data.refcnt == 1
        close_all(kernel, m)
        veth = net.add_device("veth0", "veth")
    close_all(kernel, dprog)


def test_cpumap_redirect_reruns_on_the_entry_cpu_and_reaches_the_stack(kernel):
    """The cpumap program runs on the entry's CPU (it stamps 0x40 + its CPU into the last
    payload byte) and the frame it passes is delivered to the bound socket."""
    net = kernel.world.net
    sock = net.bind(rx.IPPROTO_UDP, 5353)
    f = udp_frame(5353, b"data")
    cprog = cpumap_stamp_prog(kernel, len(f) - 1)
    m = calls.map_create(B(kernel), MapType.CPUMAP, 4, 8, 2)
    calls.map_update_elem(B(kernel), m, u32(1), u32(64) + u32(cprog))
    x = redirect_prog(kernel, m, 1)
    lk = attach(kernel, x, LO)
    res = net.receive(LO, f)
    assert res.action == XdpAction.REDIRECT
    assert sock.queue == [f[14:-1] + b"\x41"]
    entry = kernel.current.files.fdget(m).private_data.cpu_map[1]
    assert entry.stats == {"pass": 1, "drop": 0, "redirect": 0}
    close_all(kernel, lk, x)
    # a missing entry with the default XDP_DROP: nothing more arrives
    x = redirect_prog(kernel, m, 0, flags=XdpAction.DROP)
    lk = attach(kernel, x, LO)
    assert net.receive(LO, f).action == XdpAction.DROP and len(sock.queue) == 1
    close_all(kernel, lk, x, m, cprog)
    net.close_socket(sock)


def _xsk(kernel, ifindex, queue, rx=4):
    from fakekernel.net.xsk import SOL_XDP, XdpSockOpt
    fd = kernel.socket(44, 3, 0)
    for opt, val in ((XdpSockOpt.RX_RING, rx), (XdpSockOpt.UMEM_FILL_RING, 4),
                     (XdpSockOpt.UMEM_COMPLETION_RING, 4)):
        assert kernel.setsockopt(fd, SOL_XDP, opt, val) == 0
    reg = (1 << 20).to_bytes(8, "little") + (1 << 16).to_bytes(8, "little") + (4096).to_bytes(4, "little") \
        + bytes(12)
    assert kernel.setsockopt(fd, SOL_XDP, XdpSockOpt.UMEM_REG, reg) == 0
    if ifindex is not None:
        assert kernel.bind(fd, (ifindex, queue, 2)) == 0
    return fd, kernel.current.files.fdget(fd).private_data


def test_xskmap_redirect_queues_the_frame_on_the_bound_socket(kernel):
    net = kernel.world.net
    xfd, xs = _xsk(kernel, LO, 0, rx=2)
    ufd, unbound = _xsk(kernel, None, 0)
    m = calls.map_create(B(kernel), MapType.XSKMAP, 4, 4, 4)
    calls.map_update_elem(B(kernel), m, u32(0), u32(xfd))
    calls.map_update_elem(B(kernel), m, u32(1), u32(ufd))
    x0, x1 = redirect_prog(kernel, m, 0), redirect_prog(kernel, m, 1)
    lk = attach(kernel, x0, LO)
    f = udp_frame(9)
    assert net.receive(LO, f).action == XdpAction.REDIRECT and xs.rx == [f]
    assert net.receive(LO, f, rx_queue=0).action == XdpAction.REDIRECT and xs.rx == [f, f]
    assert net.receive(LO, f).action == XdpAction.DROP and len(xs.rx) == 2      # rx ring full
    xs.rx.clear()
    close_all(kernel, lk)
    lk = attach(kernel, x1, LO)
    assert net.receive(LO, f).action == XdpAction.DROP and unbound.rx == []    # not bound: EINVAL
    close_all(kernel, lk, x0, x1)
    close_all(kernel, xfd)                           # the socket leaves slot 0
    assert calls.raw(B(kernel), BpfCmd.MAP_DELETE_ELEM, "key", map_fd=m, key=u32(0))[0] == 0
    assert kernel.current.files.fdget(m).private_data.count == 1
    close_all(kernel, m, ufd)


def test_devmap_prog_tx_verdict_is_warned_traced_and_dropped(kernel):
    net = kernel.world.net
    veth = net.add_device("veth0", "veth")
    text = f"r6 = *(u32 *)(r1 +{EGRESS_IFINDEX})\n" + _STAMP.format(off=0, end=1, ret=int(XdpAction.TX))
    dprog = calls.prog_load(B(kernel), ProgType.XDP, assemble(text), name=b"dtx",
                            expected_attach_type=AttachType.XDP_DEVMAP)
    m = calls.map_create(B(kernel), MapType.DEVMAP, 4, 8, 1)
    calls.map_update_elem(B(kernel), m, u32(0), u32(veth) + u32(dprog))
    x = redirect_prog(kernel, m, 0)
    lk = attach(kernel, x, LO)
    assert net.receive(LO, udp_frame(9)).action == XdpAction.REDIRECT
    pid = kernel.current.files.fdget(dprog).private_data.aux.id
    assert net.tx[veth] == []
    assert kernel.world.dmesg == [f"Driver unsupported XDP return value 3 on prog dtx (id {pid}) "
                                  f"dev N/A, expect packet loss!"]
    assert kernel.trace_lines[-1] == f"xdp_exception: prog_id={pid} action=3 ifindex={veth}"
    close_all(kernel, lk, x, m, dprog)


def test_xskmap_redirect_needs_the_socket_queue(kernel):
    net = kernel.world.net
    veth = net.add_device("veth0", "veth", rx_queues=2)
    xfd, xs = _xsk(kernel, veth, 1)
    m = calls.map_create(B(kernel), MapType.XSKMAP, 4, 4, 1)
    calls.map_update_elem(B(kernel), m, u32(0), u32(xfd))
    x = redirect_prog(kernel, m, 0)
    lk = attach(kernel, x, veth, XDP_FLAGS_DRV_MODE)
    f = udp_frame(9)
    assert net.receive(veth, f, rx_queue=0).action == XdpAction.DROP and xs.rx == []
    assert net.receive(veth, f, rx_queue=1).action == XdpAction.REDIRECT and xs.rx == [f]
    assert net.receive(LO, f).action is None                 # no program on lo
    close_all(kernel, lk, x, m, xfd)


def test_xsk_socket_is_unbound_when_its_device_goes(kernel):
    from fakekernel.net.xsk import XskState
    from uapi.errno import Errno
    net = kernel.world.net
    veth = net.add_device("veth0", "veth")
    xfd, xs = _xsk(kernel, veth, 0)
    net.del_device(veth)
    assert xs.xsk_state == XskState.UNBOUND and xs.dev is None and xs.err == Errno.ENETDOWN
    close_all(kernel, xfd)
