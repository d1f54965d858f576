"""The sock_ops hook — include/net/tcp.h (tcp_call_bpf) and kernel/bpf/cgroup.c
(__cgroup_bpf_run_filter_sock_ops) at the TCP events of the simulated loopback connections.

What fires, in the order the reference kernel shows over loopback (measured on 6.18):
listen(2) → TCP_LISTEN_CB on the listener; connect(2) → on the client TCP_CONNECT_CB,
RWND_INIT, TIMEOUT_INIT, NEEDS_ECN (SYN_SENT); on the server's request socket (not a full
socket, NEW_SYN_RECV, the listener's cgroup) RWND_INIT, TIMEOUT_INIT, NEEDS_ECN; then
ACTIVE_ESTABLISHED_CB on the client (ESTABLISHED, the SYN-ACK as skb) and
PASSIVE_ESTABLISHED_CB on the new server socket (SYN_RECV, the ACK as skb).
A program's verdict and its replies (initial timeout, window, ECN) change nothing the
simulated TCP shows.  Not modelled: the callbacks bpf_sock_ops_cb_flags_set() enables
(RTO, retransmit, state, RTT, header options), TCP counters beyond the initial congestion
window (srtt, sequence numbers, mss: 0), and the options of the segments (NOPs).
"""
from __future__ import annotations

import ipaddress

from fakekernel.cgroup_run import CgCtx, bpf_prog_run_array_cg, sock_cgroup
from fakekernel.errors import Errno, KernelError
from fakekernel.net.socket import AF_INET, TcpState
from uapi.bpf import BPF_LOAD_HDR_OPT_TCP_SYN, AttachType, FuncId, SockOpsCbFlags, SockOpsOp
from uapi.ffi import ffi
from uapi.insn import s32, u64

__all__ = ["inet_listen", "tcp_connect_sock_ops", "tcp_call_bpf", "SockOpsKern"]

TCP_INIT_CWND = 10                      # include/net/tcp.h
_ALL = int(SockOpsCbFlags.ALL_CB_FLAGS)
_TCPHDR = 20                            # sizeof(struct tcphdr)
_TCP_SYN, _TCP_ACK = 0x02, 0x10
_TCPOPT_EOL, _TCPOPT_NOP = 0, 1
_EXP_KINDS = (253, 254)                 # TCPOPT_EXP and the other experimental kind (RFC 6994)
_LOAD_SYN = int(BPF_LOAD_HDR_OPT_TCP_SYN)
_SYNACK_LEN, _ACK_LEN = 40, 32          # measured: the loopback SYN-ACK and ACK (header + options)
_DOFF_SHIFT = 4
_FLAGS_OFF = 13                         # byte of the TCP flags in the header


class SockOpsKern(CgCtx):
    """struct bpf_sock_ops_kern: the op, whether ``sk`` is a full socket, the segment."""

    op: int = 0
    fullsock: bool = True
    segment: bytearray | None = None

    def cb_flags_set(self, env, argval: int) -> int:
        """bpf_sock_ops_cb_flags_set(): -EINVAL without a full socket; the unknown bits back."""
        if not self.fullsock:
            raise KernelError(Errno.EINVAL, "not a full socket")
        val = s32(argval)
        self.sk.bpf_sock_ops_cb_flags = val & _ALL
        return u64(val & ~_ALL)

    def load_hdr_opt(self, env, search: int, length: int, flags: int) -> int:
        """bpf_sock_ops_load_hdr_opt(): find the option ``search`` names (kind, len, magic)
        in the segment's options and copy it; -ENOMSG when absent."""
        if length < 2 or flags & ~_LOAD_SYN:
            raise KernelError(Errno.EINVAL, "bad length or flags")
        want = bytes(env.mem.read(search, length))
        kind, klen = want[0], want[1]
        if klen > length or kind in (_TCPOPT_NOP, _TCPOPT_EOL):
            raise KernelError(Errno.EINVAL, "bad search option")
        if kind in _EXP_KINDS:
            if klen not in (4, 6):
                raise KernelError(Errno.EINVAL, "experimental option needs a 2 or 4 byte magic")
            magic = want[2:klen]
        elif klen:
            raise KernelError(Errno.EINVAL, "only experimental options are searched with a length")
        else:
            magic = b""
        if flags & _LOAD_SYN:
            _unmodelled()              # the saved SYN is not kept by the simulated TCP
        if self.segment is None:
            raise KernelError(Errno.EPERM, "this op has no segment")
        opt = _search_tcp_opt(bytes(self.segment[_TCPHDR:]), kind, magic)
        copy = opt[:min(opt[1], length)]
        env.mem.write(search, copy)
        if opt[1] > length:
            raise KernelError(Errno.ENOSPC, "option longer than the buffer")
        return opt[1]

    def store_hdr_opt(self, env, src: int, length: int, flags: int) -> int:
        """bpf_sock_ops_store_hdr_opt(): only from WRITE_HDR_OPT_CB (never fired here)."""
        raise KernelError(Errno.EPERM, "not in WRITE_HDR_OPT_CB")

    def reserve_hdr_opt(self, env, length: int, flags: int) -> int:
        """bpf_sock_ops_reserve_hdr_opt(): only from HDR_OPT_LEN_CB (never fired here)."""
        raise KernelError(Errno.EPERM, "not in HDR_OPT_LEN_CB")

    def bpf_setsockopt(self, env, level, optname, optval, optlen) -> int:
        if not self.fullsock:
            return u64(-Errno.EINVAL)
        return super().bpf_setsockopt(env, level, optname, optval, optlen)

    def bpf_getsockopt(self, env, level, optname, optval, optlen) -> int:
        if not self.fullsock:
            env.mem.write(optval, bytes(optlen))
            return u64(-Errno.EINVAL)
        return super().bpf_getsockopt(env, level, optname, optval, optlen)


def _unmodelled():
    from fakekernel.helpers import HelperNotImplemented
    raise HelperNotImplemented(FuncId.load_hdr_opt)


def _search_tcp_opt(opts: bytes, kind: int, magic: bytes) -> bytes:
    """bpf_search_tcp_opt(): the option's bytes; KernelError ENOMSG / EFAULT."""
    i = 0
    while i < len(opts):
        k = opts[i]
        if k == _TCPOPT_EOL:
            break
        if k == _TCPOPT_NOP:
            i += 1
            continue
        left = len(opts) - i
        if left < 2 or left < opts[i + 1] or opts[i + 1] < 2:
            raise KernelError(Errno.EFAULT, "malformed options")
        klen = opts[i + 1]
        if k == kind and (not magic or (len(magic) <= klen - 2 and opts[i + 2:i + 2 + len(magic)] == magic)):
            return opts[i:i + klen]
        i += klen
    raise KernelError(Errno.ENOMSG, "option not found")


def _words(addr: bytes) -> list[int]:
    return [int.from_bytes(addr[i:i + 4], "little") for i in range(0, len(addr), 4)]


def _be16(port: int) -> int:
    return int.from_bytes(port.to_bytes(2, "big"), "little")


def _segment(sport: int, dport: int, flags: int, length: int) -> bytearray:
    """A TCP header (no IP header: skb->data is at the TCP header) padded with NOP options."""
    seg = bytearray([_TCPOPT_NOP]) * length
    seg[0:_TCPHDR] = bytes(_TCPHDR)
    seg[0:2], seg[2:4] = sport.to_bytes(2, "big"), dport.to_bytes(2, "big")
    seg[12] = (length // 4) << _DOFF_SHIFT
    seg[_FLAGS_OFF] = flags
    return seg


def tcp_call_bpf(kern, sk, op: int, *, state: int, local: tuple, remote: tuple, fullsock: bool = True,
                 cgroup_sk=None, segment: tuple | None = None) -> int:
    """tcp_call_bpf(): run the sock_ops programs for one op; the reply or -1.

    ``local``/``remote`` are (addr bytes, port); ``segment`` (flags, length) is the skb an
    established callback carries; ``cgroup_sk`` the socket whose cgroup runs (a request
    socket's listener)."""
    cgrp = sock_cgroup(kern, cgroup_sk or sk)
    if not cgrp.bpf.effective.get(AttachType.CGROUP_SOCK_OPS):
        return 0
    so = ffi.new("struct bpf_sock_ops *")
    so.op, so.is_fullsock, so.state, so.family = op, int(fullsock), state, sk.family
    so.local_port = local[1]
    so.remote_port = _be16(remote[1]) << 16         # the kernel shows it in the upper half
    if sk.family == AF_INET:
        so.local_ip4, so.remote_ip4 = _words(local[0])[0], _words(remote[0])[0]
    else:
        so.local_ip6, so.remote_ip6 = _words(local[0]), _words(remote[0])
    if fullsock:
        so.snd_cwnd = TCP_INIT_CWND
        so.bpf_sock_ops_cb_flags = sk.bpf_sock_ops_cb_flags
    ctx = SockOpsKern(uapi=so, name="bpf_sock_ops", sk=sk)
    ctx.op, ctx.fullsock = op, fullsock
    if fullsock:
        ctx.map_sock(kern, lambda a: setattr(so, "sk", ffi.cast("void *", a)))
    if segment is not None:
        flags, length = segment
        seg = _segment(remote[1], local[1], flags, length)
        region = kern.mem.map_region(seg, "packet", "sock_ops skb")
        ctx.mapped.append(region)
        ctx.segment = seg
        so.skb_data = ffi.cast("void *", region.base)
        so.skb_data_end = ffi.cast("void *", region.base + length)
        so.skb_len, so.skb_tcp_flags = length, flags
    ret = bpf_prog_run_array_cg(kern, cgrp, AttachType.CGROUP_SOCK_OPS, ctx)
    return so.reply if ret == 0 else -1


def _ends(sk):
    return (sk.addr or sk._any(), sk.port), ((sk.peer[0], sk.peer[1]) if sk.peer else (sk._any(), 0))


def inet_listen(kern, sk, backlog: int) -> None:
    """inet_listen(): TCP_LISTEN_CB once the socket starts listening."""
    was_listening = getattr(sk, "state", None) == TcpState.LISTEN
    sk.listen(backlog)
    if sk.sk_is_tcp() and not was_listening:
        local, remote = _ends(sk)
        tcp_call_bpf(kern, sk, SockOpsOp.TCP_LISTEN_CB, state=TcpState.LISTEN, local=local, remote=remote)


def tcp_connect_sock_ops(kern, sk, dest=None) -> None:
    """The callbacks of a loopback handshake `sk` (the client) just completed — or, refused,
    only started (`dest`: the address it tried, as connect(2) took it)."""
    child = sk.peer_sock
    local, remote = _ends(sk)
    if sk.peer is None and dest is not None:
        remote = (ipaddress.ip_address(dest[0]).packed, dest[1])
        if not sk.addr or sk.addr == sk._any():          # the route's source, as for the SYN
            local = (sk._loopback(), local[1])
    for op in (SockOpsOp.TCP_CONNECT_CB, SockOpsOp.RWND_INIT, SockOpsOp.TIMEOUT_INIT, SockOpsOp.NEEDS_ECN):
        tcp_call_bpf(kern, sk, op, state=TcpState.SYN_SENT, local=local, remote=remote)
    if child is None:
        return
    listener = child.listener
    child.sk_cgrp_data = getattr(listener, "sk_cgrp_data", None)        # sk_clone_lock()
    for op in (SockOpsOp.RWND_INIT, SockOpsOp.TIMEOUT_INIT, SockOpsOp.NEEDS_ECN):
        tcp_call_bpf(kern, child, op, state=TcpState.NEW_SYN_RECV, local=remote, remote=local,
                     fullsock=False, cgroup_sk=listener)
    tcp_call_bpf(kern, sk, SockOpsOp.ACTIVE_ESTABLISHED_CB, state=TcpState.ESTABLISHED, local=local,
                 remote=remote, segment=(_TCP_SYN | _TCP_ACK, _SYNACK_LEN))
    tcp_call_bpf(kern, child, SockOpsOp.PASSIVE_ESTABLISHED_CB, state=TcpState.SYN_RECV, local=remote,
                 remote=local, segment=(_TCP_ACK, _ACK_LEN))
