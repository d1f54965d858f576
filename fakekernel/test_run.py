"""BPF_PROG_TEST_RUN for packet programs — net/bpf/test_run.c.

One function per family, named as the kernel's and plugged into ``bpf_prog_ops.test_run``:
`bpf_prog_test_run_skb` (SOCKET_FILTER, SCHED_CLS, SCHED_ACT, CGROUP_SKB),
`bpf_prog_test_run_xdp` (XDP), and `bpf_prog_test_run_not_supported` for the types the
kernel cannot test-run (kprobe, tracepoint, ...: ENOTSUPP).  Each takes
``(kern, task, prog, attr, ctx)`` like a syscall handler; ``attr.test`` is the request,
``ctx`` the SyscallCtx that writes retval / duration / data_size_out / ctx_size_out back.

The checks and the order of the copies follow the kernel, because both are observable:
a failing copy of data_out after a clamped copy reports ENOSPC, not EFAULT; a data_out that
is too small still writes retval and the full data_size_out; ctx_out is only written when
the data part succeeded.
"""
from __future__ import annotations

from fakekernel.errors import Errno, KernelError
from fakekernel.net.headers import (AF_INET, AF_INET6, CHECKSUM_COMPLETE, ETH_HLEN, ETH_P_IP,
                                    ETH_P_IPV6, GSO_LEGACY_MAX_SIZE, GSO_MAX_SEGS, IPV4_HDR_LEN,
                                    IPV6_HDR_LEN, MAX_SKB_FRAGS, NAPI_POLL_WEIGHT, NET_IP_ALIGN,
                                    NET_SKB_PAD, PAGE_SIZE, QDISC_CB_PRIV_LEN, SKB_DATA_ALIGN,
                                    SKB_SHARED_INFO_SIZE, XDP_FRAME_SIZE, XDP_PAGE_HEAD_SIZE)
from fakekernel.net.checksum import csum_fold, csum_partial
from fakekernel.net.netdev import LOOPBACK, LOOPBACK_IFINDEX, dev_get_by_index
from fakekernel.net.skbuff import SkBuff, Sock, build_skb_ctx, eth_type_trans, unmap_skb_ctx
from fakekernel.net.xdp import XdpBuff, build_xdp_ctx, unmap_xdp_ctx
from uapi.bpf import XDP_PACKET_HEADROOM, AttachType, ProgType, TestRunFlags
from uapi.ffi import ffi, offsetofend

__all__ = ["bpf_prog_test_run_skb", "bpf_prog_test_run_xdp", "bpf_prog_test_run_not_supported",
           "bpf_test_run", "bpf_test_finish", "bpf_ctx_init", "bpf_ctx_finish", "skb_checksum"]

_U32_MAX = 0xFFFFFFFF
_U16_MASK = 0xFFFF
_SKB_CTX = "struct __sk_buff"
_XDP_CTX = "struct xdp_md"
_SKB_CTX_SIZE = ffi.sizeof(_SKB_CTX)
_XDP_CTX_SIZE = ffi.sizeof(_XDP_CTX)
TEST_XDP_MAX_BATCH = 256
TEST_XDP_FRAME_SIZE = PAGE_SIZE - XDP_PAGE_HEAD_SIZE

# convert___skb_to_skb(): the only __sk_buff fields a ctx_in may set; every other byte must be 0
_SKB_CTX_IN_FIELDS = ("mark", "priority", "ingress_ifindex", "ifindex", "cb", "tstamp", "wire_len",
                      "gso_segs", "gso_size", "hwtstamp")
_SKB_CTX_IN_RANGES = tuple((ffi.offsetof(_SKB_CTX, f), offsetofend(_SKB_CTX, f))
                           for f in _SKB_CTX_IN_FIELDS)

# bpf_prog_test_run_skb(): tc programs see the Ethernet header; with direct packet access
_L2_TYPES = frozenset({ProgType.SCHED_CLS, ProgType.SCHED_ACT})


# ---------------------------------------------------------------- the common parts

def _check_uarg_tail_zero(task, uaddr: int, expected: int, actual: int) -> None:
    """bpf_check_uarg_tail_zero()."""
    if actual > PAGE_SIZE:
        raise KernelError(Errno.E2BIG, "ctx larger than a page")
    if actual > expected and not task.mm.check_zeroed_user(uaddr + expected, actual - expected):
        raise KernelError(Errno.E2BIG, "non-zero bytes past the known ctx")


def bpf_test_init(task, attr, user_size: int, size: int, headroom: int, tailroom: int) -> bytearray:
    """bpf_test_init(): headroom + data_in + room up to SKB_DATA_ALIGN(size) (tailroom not kept)."""
    if user_size > PAGE_SIZE - headroom - tailroom:
        raise KernelError(Errno.EINVAL, "data_size_in larger than a page allows")
    data = bytearray(headroom + SKB_DATA_ALIGN(size))
    data[headroom:headroom + user_size] = task.mm.copy_from_user(attr.test.data_in, user_size)
    return data


def bpf_ctx_init(task, attr, max_size: int) -> bytearray | None:
    """bpf_ctx_init(): None without ctx_in and ctx_out, else max_size bytes from ctx_in (or zeros)."""
    t = attr.test
    if not t.ctx_in and not t.ctx_out:
        return None
    buf = bytearray(max_size)
    if t.ctx_in:
        _check_uarg_tail_zero(task, t.ctx_in, max_size, t.ctx_size_in)
        n = min(max_size, t.ctx_size_in)
        buf[:n] = task.mm.copy_from_user(t.ctx_in, n)
    return buf


def _fail_with(err: Errno, fn, *args) -> None:
    """A user copy on a `goto out` path: it fails with whatever err holds at that point."""
    try:
        fn(*args)
    except KernelError:
        raise KernelError(err, "copy to user failed") from None


def bpf_test_finish(task, attr, ctx, data: bytes, frags: list | None, size: int, retval: int,
                    duration: int) -> None:
    """bpf_test_finish(): data_out (clamped to data_size_out: ENOSPC), data_size_out, retval, duration."""
    t = attr.test
    err = Errno.EFAULT
    copy_size = size
    if t.data_size_out and copy_size > t.data_size_out:
        copy_size = t.data_size_out
        err = Errno.ENOSPC
    if t.data_out:
        n = copy_size - (sum(len(f) for f in frags) if frags is not None else 0)
        if n < 0:
            raise KernelError(Errno.ENOSPC, "data_size_out smaller than the fragments")
        _fail_with(err, task.mm.copy_to_user, t.data_out, bytes(data[:n]))
        offset = n
        for frag in frags or ():
            if offset >= copy_size:
                err = Errno.ENOSPC
                break
            chunk = bytes(frag[:min(copy_size - offset, len(frag))])
            _fail_with(err, task.mm.copy_to_user, t.data_out + offset, chunk)
            offset += len(chunk)
    for field, value in (("test.data_size_out", size), ("test.retval", retval),
                         ("test.duration", duration)):
        _fail_with(err, ctx.put_attr_field, field, value)
    if err == Errno.ENOSPC:
        raise KernelError(Errno.ENOSPC, "data_out smaller than the packet")


def bpf_ctx_finish(task, attr, ctx, buf: bytearray | None, size: int) -> None:
    """bpf_ctx_finish(): ctx_out (clamped to ctx_size_out: ENOSPC) and ctx_size_out."""
    t = attr.test
    if buf is None or not t.ctx_out:
        return
    err = Errno.EFAULT
    copy_size = size
    if copy_size > t.ctx_size_out:
        copy_size = t.ctx_size_out
        err = Errno.ENOSPC
    _fail_with(err, task.mm.copy_to_user, t.ctx_out, bytes(buf[:copy_size]))
    _fail_with(err, ctx.put_attr_field, "test.ctx_size_out", size)
    if err == Errno.ENOSPC:
        raise KernelError(Errno.ENOSPC, "ctx_out smaller than the ctx")


def bpf_test_run(kern, prog, kctx_addr: int, kern_ctx, repeat: int, *, skb_data=None) -> tuple[int, int]:
    """bpf_test_run(): run `repeat` times (0 means once) on the same ctx; (retval, duration).

    duration is the mean wall time of one run in ns, saturated at U32_MAX, as the kernel's
    bpf_test_timer reports it.
    """
    from fakekernel.bpf.core import bpf_prog_run
    from fakekernel.maps.cgroup_storage import bpf_cgroup_run_ctx, bpf_cgroup_storages_temp
    repeat = max(repeat, 1)
    start = kern.ktime_get_ns()
    with bpf_cgroup_run_ctx(kern, bpf_cgroup_storages_temp(prog), free=True):
        retval = bpf_prog_run(kern, prog, kctx_addr, ctx=kern_ctx, skb_data=skb_data,
                              repeat=repeat) & _U32_MAX
    spent = kern.ktime_get_ns() - start
    return retval, min(spent // repeat, _U32_MAX)


def bpf_prog_test_run_not_supported(kern, task, prog, attr, ctx) -> int:
    """Program types without bpf_prog_ops.test_run: bpf_prog_test_run() answers -ENOTSUPP."""
    raise KernelError(Errno.ENOTSUPP, "this program type cannot be test-run")


# ---------------------------------------------------------------- skb

def skb_checksum(data: bytes) -> int:
    """csum_partial() folded to 16 bits: enough to compare two checksums as csum_fold() does."""
    if len(data) % 2:
        data = data + b"\0"
    s = sum(int.from_bytes(data[i:i + 2], "little") for i in range(0, len(data), 2))
    while s >> 16:
        s = (s & _U16_MASK) + (s >> 16)
    return s


def _skb_csum_from_network(skb: SkBuff) -> int:
    """skb_checksum(skb, skb_network_offset(skb), len, 0): the __wsum of network header .. tail."""
    return csum_partial(bytes(skb.head[skb.network_header:skb.tail]))


def convert___skb_to_skb(skb: SkBuff, buf: bytearray | None) -> None:
    """convert___skb_to_skb(): apply the user's __sk_buff (only the settable fields) to the skb."""
    if buf is None:
        return
    allowed = bytearray(_SKB_CTX_SIZE)
    for lo, hi in _SKB_CTX_IN_RANGES:
        allowed[lo:hi] = b"\1" * (hi - lo)
    if any(b and not ok for b, ok in zip(buf, allowed)):
        raise KernelError(Errno.EINVAL, "ctx_in sets a __sk_buff field a test run does not take")
    c = ffi.from_buffer(_SKB_CTX + " *", buf)
    skb.mark = c.mark
    skb.priority = c.priority
    skb.skb_iif = c.ingress_ifindex
    skb.tstamp = c.tstamp
    skb.cb[:] = bytes(ffi.buffer(c.cb))[:QDISC_CB_PRIV_LEN]
    if c.wire_len == 0:
        skb.pkt_len = skb.len
    else:
        if c.wire_len < skb.len or c.wire_len > GSO_LEGACY_MAX_SIZE:
            raise KernelError(Errno.EINVAL, "wire_len shorter than the packet or beyond GSO limits")
        skb.pkt_len = c.wire_len
    if c.gso_segs > GSO_MAX_SEGS:
        raise KernelError(Errno.EINVAL, "gso_segs beyond GSO_MAX_SEGS")
    skb.gso_segs = c.gso_segs
    skb.gso_size = c.gso_size & _U16_MASK          # skb_shared_info.gso_size is 16 bits
    skb.hwtstamp = c.hwtstamp


def convert_skb_to___skb(skb: SkBuff, buf: bytearray | None) -> None:
    """convert_skb_to___skb(): what a test run reports back in ctx_out."""
    if buf is None:
        return
    c = ffi.from_buffer(_SKB_CTX + " *", buf)
    c.mark = skb.mark
    c.priority = skb.priority
    c.ingress_ifindex = skb.skb_iif
    c.ifindex = skb.dev.ifindex
    c.tstamp = skb.tstamp
    ffi.memmove(c.cb, bytes(skb.cb), QDISC_CB_PRIV_LEN)
    c.wire_len = skb.pkt_len
    c.gso_segs = skb.gso_segs
    c.hwtstamp = skb.hwtstamp


def _attach_dummy_sock(skb: SkBuff) -> None:
    """The sock test runs give every skb: family and addresses from an IPv4/IPv6 header."""
    sk = Sock()
    net = skb.head[skb.network_header:skb.tail]
    if skb.protocol == ETH_P_IP:
        if len(net) < IPV4_HDR_LEN:
            raise KernelError(Errno.EINVAL, "IPv4 packet shorter than an IP header")
        sk.family = AF_INET
        sk.rcv_saddr, sk.daddr = bytes(net[12:16]), bytes(net[16:20])
    elif skb.protocol == ETH_P_IPV6:
        if len(net) < IPV6_HDR_LEN:
            raise KernelError(Errno.EINVAL, "IPv6 packet shorter than an IPv6 header")
        sk.family = AF_INET6
        sk.v6_rcv_saddr, sk.v6_daddr = bytes(net[8:24]), bytes(net[24:40])
    skb.sk = sk


def bpf_prog_test_run_skb(kern, task, prog, attr, ctx) -> int:
    """bpf_prog_test_run_skb(): build an skb from data_in on lo (or ctx_in's ifindex), run, report."""
    t = attr.test
    size = t.data_size_in
    if t.flags & ~int(TestRunFlags.TEST_SKB_CHECKSUM_COMPLETE) or t.cpu or t.batch_size:
        raise KernelError(Errno.EINVAL, "flags, cpu or batch_size not valid for skb programs")
    if size < ETH_HLEN:
        raise KernelError(Errno.EINVAL, "data_size_in shorter than an Ethernet header")
    headroom = NET_SKB_PAD + NET_IP_ALIGN
    head = bpf_test_init(task, attr, size, size, headroom, SKB_SHARED_INFO_SIZE)
    skb_ctx = bpf_ctx_init(task, attr, _SKB_CTX_SIZE)
    is_l2 = prog.type in _L2_TYPES

    skb = SkBuff(head=head, data_off=0)
    skb.reserve(headroom)
    skb.put(size)
    dev = LOOPBACK
    if skb_ctx is not None:
        ifindex = ffi.from_buffer(_SKB_CTX + " *", skb_ctx).ifindex
        if ifindex > LOOPBACK_IFINDEX:
            dev = dev_get_by_index(kern, ifindex)
            if dev is None:
                raise KernelError(Errno.ENODEV, f"no device with ifindex {ifindex}")
    skb.protocol = eth_type_trans(skb, dev)
    skb.network_header = skb.data_off
    _attach_dummy_sock(skb)
    if is_l2:
        skb.push(ETH_HLEN)
    convert___skb_to_skb(skb, skb_ctx)

    checksum_complete = bool(t.flags & TestRunFlags.TEST_SKB_CHECKSUM_COMPLETE)
    if checksum_complete:
        skb.csum = _skb_csum_from_network(skb)
        skb.ip_summed = CHECKSUM_COMPLETE

    kctx, _ = build_skb_ctx(kern, skb)
    try:
        retval, duration = bpf_test_run(kern, prog, kctx.base, skb, t.repeat,
                                        skb_data=skb.ld_abs_view())
        skb.sync_back()
    finally:
        unmap_skb_ctx(kern, skb)
    if not is_l2:
        # the Ethernet header comes back zeroed for programs that never saw it
        skb.push(ETH_HLEN)
        skb.head[skb.data_off:skb.data_off + ETH_HLEN] = bytes(ETH_HLEN)
    if checksum_complete and csum_fold(_skb_csum_from_network(skb)) != csum_fold(skb.csum):
        raise KernelError(Errno.EBADMSG, "the program changed the packet without fixing skb->csum")
    convert_skb_to___skb(skb, skb_ctx)
    bpf_test_finish(task, attr, ctx, skb.data(), None, skb.len, retval, duration)
    bpf_ctx_finish(task, attr, ctx, skb_ctx, _SKB_CTX_SIZE)
    return 0


# ---------------------------------------------------------------- xdp

def xdp_metalen_invalid(meta_len: int) -> bool:
    """xdp_metalen_invalid() on 6.18: metadata must be a whole number of u32."""
    return meta_len % ffi.sizeof("__u32") != 0


def xdp_convert_md_to_buff(kern, md, xdp: XdpBuff) -> None:
    """xdp_convert_md_to_buff(): ingress_ifindex / rx_queue_index pick the rx queue; data -> meta."""
    if md is None:
        return
    if md.egress_ifindex != 0:
        raise KernelError(Errno.EINVAL, "egress_ifindex cannot be set")
    ifindex, queue = md.ingress_ifindex, md.rx_queue_index
    if not ifindex and queue:
        raise KernelError(Errno.EINVAL, "rx_queue_index without ingress_ifindex")
    if ifindex:
        dev = dev_get_by_index(kern, ifindex)
        if dev is None:
            raise KernelError(Errno.ENODEV, f"no device with ifindex {ifindex}")
        if queue >= dev.real_num_rx_queues or not dev.xdp_rxq_registered:
            raise KernelError(Errno.EINVAL, "rx queue does not exist or has no xdp rxq")
        xdp.ingress_ifindex, xdp.rx_queue_index = dev.ifindex, queue
    xdp.data = xdp.data_meta + md.data


def xdp_convert_buff_to_md(xdp: XdpBuff, md) -> None:
    if md is None:
        return
    md.data = xdp.data - xdp.data_meta
    md.data_end = xdp.data_end - xdp.data_meta


def _bpf_test_run_xdp_live(kern, prog, orig: XdpBuff, repeat: int, batch_size: int) -> int:
    """bpf_test_run_xdp_live(): every repetition runs on a fresh copy of the frame in its own
    page; the verdicts (pass to the stack, transmit, redirect) have no receiver in this
    kernel yet, so the frames end there.  Returns the mean duration."""
    from fakekernel.bpf.core import bpf_prog_run
    repeat = max(repeat, 1)
    shift = XDP_PAGE_HEAD_SIZE      # the page head sits before data_hard_start
    start = kern.ktime_get_ns()
    done = 0
    while done < repeat:
        for _ in range(min(batch_size, repeat - done)):
            page = bytearray(TEST_XDP_FRAME_SIZE)
            lo, hi = orig.data_meta - shift, orig.data_end - shift
            page[lo:hi] = orig.buf[orig.data_meta:orig.data_end]
            frame = XdpBuff(buf=page, data=orig.data - shift, data_end=hi, data_meta=lo,
                            ingress_ifindex=orig.ingress_ifindex, frame_sz=TEST_XDP_FRAME_SIZE)
            kctx, _ = build_xdp_ctx(kern, frame)
            try:
                bpf_prog_run(kern, prog, kctx.base, ctx=frame)
            finally:
                unmap_xdp_ctx(kern, frame)
            done += 1
    return min((kern.ktime_get_ns() - start) // repeat, _U32_MAX)


def bpf_prog_test_run_xdp(kern, task, prog, attr, ctx) -> int:
    """bpf_prog_test_run_xdp(): one frame on lo's rx queue 0 (or ctx_in's), optional metadata
    (ctx_in data) and fragments past the linear part; or live frames."""
    t = attr.test
    do_live = bool(t.flags & TestRunFlags.TEST_XDP_LIVE_FRAMES)
    headroom = XDP_PACKET_HEADROOM
    linear_sz = t.data_size_in
    batch_size = t.batch_size
    meta_sz = 0
    if prog.expected_attach_type in (AttachType.XDP_DEVMAP, AttachType.XDP_CPUMAP):
        raise KernelError(Errno.EINVAL, "devmap/cpumap programs cannot be test-run")
    if t.flags & ~int(TestRunFlags.TEST_XDP_LIVE_FRAMES):
        raise KernelError(Errno.EINVAL, "flags not valid for XDP")
    if prog.aux.ifindex:
        raise KernelError(Errno.EINVAL, "device-bound program")
    if do_live:
        if not batch_size:
            batch_size = NAPI_POLL_WEIGHT
        elif batch_size > TEST_XDP_MAX_BATCH:
            raise KernelError(Errno.E2BIG, "batch_size above TEST_XDP_MAX_BATCH")
    elif batch_size:
        raise KernelError(Errno.EINVAL, "batch_size without live frames")

    md_buf = bpf_ctx_init(task, attr, _XDP_CTX_SIZE)
    md = ffi.from_buffer(_XDP_CTX + " *", md_buf) if md_buf is not None else None
    if md is not None:
        # no user data may precede the metadata
        if md.data_meta or md.data_end > t.data_size_in or md.data > md.data_end \
                or (do_live and (t.data_out or t.ctx_out)):
            raise KernelError(Errno.EINVAL, "inconsistent xdp_md in ctx_in")
        meta_sz = md.data
        if xdp_metalen_invalid(meta_sz) or meta_sz > headroom - XDP_FRAME_SIZE:
            raise KernelError(Errno.EINVAL, "bad metadata size")
        headroom -= meta_sz          # the metadata comes out of the headroom
        linear_sz = md.data_end
    if do_live:
        headroom += XDP_PAGE_HEAD_SIZE
    max_linear_sz = PAGE_SIZE - headroom - SKB_SHARED_INFO_SIZE
    linear_sz = min(linear_sz, max_linear_sz)
    if do_live and t.data_size_in > linear_sz:
        raise KernelError(Errno.EINVAL, "live frames cannot be fragmented")
    if (t.data_size_in - meta_sz) & _U32_MAX < ETH_HLEN:
        raise KernelError(Errno.EINVAL, "data_size_in shorter than an Ethernet header")
    buf = bpf_test_init(task, attr, linear_sz, max_linear_sz, headroom, SKB_SHARED_INFO_SIZE)

    # the loopback device's rx queue 0 unless ctx_in names another
    xdp = XdpBuff.prepare(buf, headroom, linear_sz, ifindex=LOOPBACK.ifindex, frame_sz=PAGE_SIZE)
    xdp_convert_md_to_buff(kern, md, xdp)
    size = linear_sz
    ret: KernelError | None = None
    retval = duration = 0
    try:
        while size < t.data_size_in:
            if len(xdp.frags) == MAX_SKB_FRAGS:
                raise KernelError(Errno.ENOMEM, "more fragments than MAX_SKB_FRAGS")
            n = min(t.data_size_in - size, PAGE_SIZE)
            xdp.frags.append(bytearray(task.mm.copy_from_user(t.data_in + size, n)))
            size += n
        if do_live:
            duration = _bpf_test_run_xdp_live(kern, prog, xdp, t.repeat, batch_size)
        else:
            kctx, _ = build_xdp_ctx(kern, xdp)
            try:
                retval, duration = bpf_test_run(kern, prog, kctx.base, xdp, t.repeat)
                xdp.sync_back()
            finally:
                unmap_xdp_ctx(kern, xdp)
    except KernelError as e:
        ret = e
    # the kernel converts back before looking at the result (to drop the device reference)
    xdp_convert_buff_to_md(xdp, md)
    if ret is not None:
        raise ret
    size = xdp.data_end - xdp.data_meta + xdp.frags_size
    bpf_test_finish(task, attr, ctx, xdp.linear(), xdp.frags, size, retval, duration)
    bpf_ctx_finish(task, attr, ctx, md_buf, _XDP_CTX_SIZE)
    return 0
