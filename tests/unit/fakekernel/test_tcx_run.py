"""fakekernel/net/tcx.py at run time — tcx_run / sch_handle_ingress / sch_handle_egress:
programs run in mprog order on frames arriving at (or leaving) a device, TCX_NEXT goes on,
the first other verdict decides (unknown codes act as TCX_NEXT = pass)."""
from __future__ import annotations

from fakekernel.net import tcx
from uapi import calls
from uapi.asm import assemble
from uapi.bpf import AttachFlags, AttachType, BpfCmd, ProgType
from uapi.ffi import ffi

MARK = ffi.offsetof("struct __sk_buff", "mark")
LO = 1
# Ethernet (to lo's all-zero address) + a minimal IPv4/UDP packet
FRAME = (bytes(6) + bytes(6) + b"\x08\x00"
         + bytes.fromhex("4500001c00000000401100007f0000017f000001") + bytes.fromhex("1f901f9000080000"))


def load(k, text: str) -> int:
    return calls.prog_load(k, ProgType.SCHED_CLS, assemble(text))


def attach(k, fd, at=AttachType.TCX_INGRESS, flags=0, rel=0):
    r, _ = calls.raw(k, BpfCmd.PROG_ATTACH, "expected_revision", target_ifindex=LO,
                     attach_bpf_fd=fd, attach_type=at, attach_flags=flags, relative_fd=rel)
    assert r == 0


def detach(k, fd, at=AttachType.TCX_INGRESS):
    r, _ = calls.raw(k, BpfCmd.PROG_DETACH, "expected_revision", target_ifindex=LO,
                     attach_bpf_fd=fd, attach_type=at)
    assert r == 0


SET_MARK_NEXT = f"r2 = 1\n*(u32 *)(r1 +{MARK}) = r2\nr0 = -1\nexit"
DROP_IF_MARKED = f"r2 = *(u32 *)(r1 +{MARK})\nr0 = 0\nif r2 != 0x1 goto pc+1\nr0 = 2\nexit"


def test_tcx_ingress_no_programs_no_verdict(kernel):
    assert kernel.world.net.receive(LO, FRAME).tcx_verdict is None


def test_tcx_ingress_next_then_drop_in_order(kernel):
    a, b = load(kernel, SET_MARK_NEXT), load(kernel, DROP_IF_MARKED)
    attach(kernel, b)
    attach(kernel, a, flags=AttachFlags.BEFORE, rel=b)      # a runs first, marks, says NEXT
    res = kernel.world.net.receive(LO, FRAME)
    assert res.tcx_verdict == tcx.TCX_DROP and not res.delivered
    detach(kernel, a)
    detach(kernel, b)
    for fd in (a, b):
        kernel.close(fd)


def test_tcx_ingress_order_matters_pass(kernel):
    a, b = load(kernel, SET_MARK_NEXT), load(kernel, DROP_IF_MARKED)
    attach(kernel, b)
    attach(kernel, a)                                       # after b: b sees no mark, passes
    assert kernel.world.net.receive(LO, FRAME).tcx_verdict == tcx.TCX_PASS
    detach(kernel, a)
    detach(kernel, b)
    for fd in (a, b):
        kernel.close(fd)


def test_tcx_ingress_all_next_and_unknown_code_pass(kernel):
    a, b = load(kernel, "r0 = -1\nexit"), load(kernel, "r0 = 1\nexit")
    c = load(kernel, "r0 = 2\nexit")
    attach(kernel, a)
    assert kernel.world.net.receive(LO, FRAME).tcx_verdict == tcx.TCX_NEXT
    attach(kernel, b)
    attach(kernel, c)                # never reached: b's unknown code ends the run
    assert kernel.world.net.receive(LO, FRAME).tcx_verdict == tcx.TCX_NEXT
    for fd in (a, b, c):
        detach(kernel, fd)
        kernel.close(fd)


def test_tcx_egress_runs_on_transmit(kernel):
    a = load(kernel, "r0 = 2\nexit")
    attach(kernel, a, at=AttachType.TCX_EGRESS)
    dev = kernel.world.net.dev_get_by_index(LO)
    verdict, out = tcx.sch_handle_egress(kernel, dev, FRAME)
    assert (verdict, out) == (tcx.TCX_DROP, FRAME)
    assert kernel.world.net.receive(LO, FRAME).tcx_verdict is None     # ingress is separate
    detach(kernel, a, at=AttachType.TCX_EGRESS)
    kernel.close(a)


def test_tcx_device_removal_detaches_links(kernel):
    net = kernel.world.net
    ifindex = net.add_device("veth9")
    a = load(kernel, "r0 = 0\nexit")
    r, _ = calls.raw(kernel, BpfCmd.LINK_CREATE, "link_create.tcx.expected_revision",
                     link_create__prog_fd=a, link_create__target_ifindex=ifindex,
                     link_create__attach_type=AttachType.TCX_INGRESS)
    assert r >= 0
    net.del_device(ifindex)
    info = calls.obj_get_info_by_fd(kernel, r, "link")[0]
    assert info.tcx.ifindex == 0
    kernel.close(r)
    kernel.close(a)
