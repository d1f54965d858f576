"""SYN cookies for programs — net/core/filter.c (bpf_tcp_check_syncookie, bpf_tcp_gen_syncookie,
bpf_tcp_raw_gen_syncookie_ipv4/ipv6, bpf_tcp_raw_check_syncookie_ipv4/ipv6) with
net/ipv4/syncookies.c + net/ipv6/syncookies.c (secure_tcp_syn_cookie, check_tcp_syn_cookie,
the MSS tables) and net/ipv4/tcp_input.c (tcp_parse_mss_option).

The cookie layout is the kernel's: hash(addresses, ports) + client ISN + minute counter << 24
+ (second hash + MSS index) & 0xFFFFFF, checked over a two-minute window.  The hashes are keyed
BLAKE2 over a fixed simulated secret instead of the kernel's boot-time siphash keys, so a
cookie is deterministic (and different from any real kernel's); the MSS half of a result is
the kernel's.  The socket-based helpers follow the kernel's checks; with net.ipv4.tcp_syncookies
at its default 1 and no SYN-queue overflow they end in ENOENT, as a real listener does.
"""
from __future__ import annotations

import hashlib

from fakekernel.helpers.base import neg_errno
from fakekernel.helpers.sk_lookup_family import sk_of_ptr
from fakekernel.net.af_inet import IPPROTO_TCP
from fakekernel.net.socket import AF_INET6, TcpState
from uapi.bpf import FuncId
from uapi.errno import Errno

__all__ = ["SYNCOOKIES_RUNTIME", "tcp_parse_mss_option"]

IPHDR_LEN, IPV6HDR_LEN, TCPHDR_LEN = 20, 40, 20
COOKIEBITS = 24
COOKIEMASK = (1 << COOKIEBITS) - 1
MAX_SYNCOOKIE_AGE = 2
TCP_SYNCOOKIE_PERIOD_NS = 60 * 10**9
MSSTAB4 = (536, 1300, 1440, 1460)
MSSTAB6 = (1280 - 60, 1480 - 60, 1500 - 60, 9000 - 60)
TCP_MSS_DEFAULT = 536
IPV6_MIN_MTU = 1280
TCPOPT_EOL, TCPOPT_NOP, TCPOPT_MSS, TCPOLEN_MSS = 0, 1, 2, 4
_SECRET = b"fakekernel simulated syncookie secret"
_U32 = 0xFFFFFFFF
# tcphdr byte 12: doff << 4; byte 13: the flags
_DOFF, _FLAGS = 12, 13
TH_FIN, TH_SYN, TH_RST, TH_ACK = 0x01, 0x02, 0x04, 0x10


def tcp_parse_mss_option(th: bytes, user_mss: int = 0) -> int:
    """tcp_parse_mss_option(): the MSS option's value (0: none)."""
    end = (th[_DOFF] >> 4) * 4
    i, mss = TCPHDR_LEN, 0
    while i < end:
        opcode = th[i]
        if opcode == TCPOPT_EOL:
            return mss
        if opcode == TCPOPT_NOP:
            i += 1
            continue
        if end - i < 2:
            return mss
        opsize = th[i + 1]
        if opsize < 2 or opsize > end - i:
            return mss
        if opcode == TCPOPT_MSS and opsize == TCPOLEN_MSS:
            in_mss = int.from_bytes(th[i + 2:i + 4], "big")
            if in_mss:
                mss = min(in_mss, user_mss) if user_mss and user_mss < in_mss else in_mss
        i += opsize
    return mss


def _cookie_hash(addrs: bytes, ports: bytes, count: int, c: int) -> int:
    h = hashlib.blake2b(addrs + ports + count.to_bytes(4, "little"), key=_SECRET + bytes([c]), digest_size=4)
    return int.from_bytes(h.digest(), "little")


def _cookie_time(kern) -> int:
    return (kern.ktime_get_ns() // TCP_SYNCOOKIE_PERIOD_NS) & _U32


def _split(iph: bytes, th: bytes, v6: bool):
    addrs = iph[8:40] if v6 else iph[12:20]
    return addrs, th[0:4]


def _init_sequence(kern, iph: bytes, th: bytes, mss: int, v6: bool) -> tuple[int, int]:
    """__cookie_v4/v6_init_sequence(): (cookie, the MSS the cookie encodes)."""
    tab = MSSTAB6 if v6 else MSSTAB4
    mssind = len(tab) - 1
    while mssind and mss < tab[mssind]:
        mssind -= 1
    addrs, ports = _split(iph, th, v6)
    sseq = int.from_bytes(th[4:8], "big")
    count = _cookie_time(kern)
    cookie = (_cookie_hash(addrs, ports, 0, 0) + sseq + (count << COOKIEBITS)
              + ((_cookie_hash(addrs, ports, count, 1) + mssind) & COOKIEMASK)) & _U32
    return cookie, tab[mssind]


def _cookie_check(kern, iph: bytes, th: bytes, v6: bool) -> int:
    """__cookie_v4/v6_check(): the MSS a valid cookie encodes, else 0."""
    tab = MSSTAB6 if v6 else MSSTAB4
    addrs, ports = _split(iph, th, v6)
    cookie = (int.from_bytes(th[8:12], "big") - 1) & _U32
    seq = (int.from_bytes(th[4:8], "big") - 1) & _U32
    count = _cookie_time(kern)
    cookie = (cookie - _cookie_hash(addrs, ports, 0, 0) - seq) & _U32
    diff = (count - (cookie >> COOKIEBITS)) & (_U32 >> COOKIEBITS)
    if diff >= MAX_SYNCOOKIE_AGE:
        return 0
    mssind = (cookie - _cookie_hash(addrs, ports, (count - diff) & _U32, 1)) & COOKIEMASK
    return tab[mssind] if mssind < len(tab) else 0


def _raw_gen(env, r1, r2, r3, v6: bool) -> int:
    th_len = r3 & _U32
    th = bytes(env.mem.read(r2, th_len)) if th_len else b""
    if th_len < TCPHDR_LEN or th_len != (th[_DOFF] >> 4) * 4:
        return neg_errno(Errno.EINVAL)
    clamp = IPV6_MIN_MTU - TCPHDR_LEN - IPV6HDR_LEN if v6 else TCP_MSS_DEFAULT
    mss = tcp_parse_mss_option(th) or clamp
    iph = bytes(env.mem.read(r1, IPV6HDR_LEN if v6 else IPHDR_LEN))
    cookie, mss = _init_sequence(env.kernel, iph, th, mss, v6)
    return cookie | mss << 32


def _raw_check(env, r1, r2, v6: bool) -> int:
    iph = bytes(env.mem.read(r1, IPV6HDR_LEN if v6 else IPHDR_LEN))
    th = bytes(env.mem.read(r2, TCPHDR_LEN))
    return 0 if _cookie_check(env.kernel, iph, th, v6) > 0 else neg_errno(Errno.EACCES)


def _syncookies_sysctl(kern) -> int:
    return kern.sysctls.get("net.ipv4.tcp_syncookies", 1)


def _listener_checks(env, r1, th_len: int):
    """The checks both socket helpers start with: (sock, th) or an errno."""
    if not r1 or th_len < TCPHDR_LEN:
        return Errno.EINVAL
    _, sk = sk_of_ptr(env, r1)
    if getattr(sk, "state", 0) != TcpState.LISTEN or getattr(sk, "protocol", 0) != IPPROTO_TCP:
        return Errno.EINVAL
    return sk


def bpf_tcp_check_syncookie(env, r1, r2, r3, r4, r5) -> int:
    """bpf_tcp_check_syncookie(sk, iph, iph_len, th, th_len)."""
    th_len, iph_len = r5 & _U32, r3 & _U32
    sk = _listener_checks(env, r1, th_len)
    if isinstance(sk, Errno):
        return neg_errno(sk)
    if not _syncookies_sysctl(env.kernel):
        return neg_errno(Errno.EINVAL)
    flags = env.mem.read(r4 + _FLAGS, 1)[0]
    if not flags & TH_ACK or flags & (TH_RST | TH_SYN):
        return neg_errno(Errno.ENOENT)
    if iph_len < IPHDR_LEN:
        return neg_errno(Errno.EINVAL)
    return neg_errno(Errno.ENOENT)           # tcp_synq_no_recent_overflow(): no SYN flood seen


def bpf_tcp_gen_syncookie(env, r1, r2, r3, r4, r5) -> int:
    """bpf_tcp_gen_syncookie(sk, iph, iph_len, th, th_len)."""
    th_len, iph_len = r5 & _U32, r3 & _U32
    th = bytes(env.mem.read(r4, th_len)) if th_len >= TCPHDR_LEN else b""
    if th and th_len != (th[_DOFF] >> 4) * 4:
        return neg_errno(Errno.EINVAL)
    sk = _listener_checks(env, r1, th_len)
    if isinstance(sk, Errno):
        return neg_errno(sk)
    if not _syncookies_sysctl(env.kernel):
        return neg_errno(Errno.ENOENT)
    flags = th[_FLAGS]
    if not flags & TH_SYN or flags & (TH_ACK | TH_FIN | TH_RST):
        return neg_errno(Errno.EINVAL)
    if iph_len < IPHDR_LEN:
        return neg_errno(Errno.EINVAL)
    version = env.mem.read(r2, 1)[0] >> 4
    if version == 4:
        pass
    elif version == 6:
        if iph_len < IPV6HDR_LEN:
            return neg_errno(Errno.EINVAL)
        if sk.family != AF_INET6:
            return neg_errno(Errno.EINVAL)
    else:
        return neg_errno(Errno.EPROTONOSUPPORT)
    if _syncookies_sysctl(env.kernel) != 2:
        return neg_errno(Errno.ENOENT)       # tcp_get_syncookie_mss(): the SYN queue is not full
    iph = bytes(env.mem.read(r2, IPV6HDR_LEN if version == 6 else IPHDR_LEN))
    mss = tcp_parse_mss_option(th) or (MSSTAB6 if version == 6 else MSSTAB4)[0]
    cookie, mss = _init_sequence(env.kernel, iph, th, mss, version == 6)
    return cookie | mss << 32


SYNCOOKIES_RUNTIME = {
    FuncId.tcp_check_syncookie: bpf_tcp_check_syncookie,
    FuncId.tcp_gen_syncookie: bpf_tcp_gen_syncookie,
    FuncId.tcp_raw_gen_syncookie_ipv4: lambda env, r1, r2, r3, r4, r5: _raw_gen(env, r1, r2, r3, False),
    FuncId.tcp_raw_gen_syncookie_ipv6: lambda env, r1, r2, r3, r4, r5: _raw_gen(env, r1, r2, r3, True),
    FuncId.tcp_raw_check_syncookie_ipv4: lambda env, r1, r2, r3, r4, r5: _raw_check(env, r1, r2, False),
    FuncId.tcp_raw_check_syncookie_ipv6: lambda env, r1, r2, r3, r4, r5: _raw_check(env, r1, r2, True),
}
