"""Netfilter ABI bits BPF_PROG_TYPE_NETFILTER uses — include/uapi/linux/netfilter.h (NF_DROP,
NF_ACCEPT, NFPROTO_*, enum nf_inet_hooks) and the ctx_in of its PROG_TEST_RUN, ``struct
nf_hook_state`` (include/linux/netfilter.h, x86_64 layout as 6.18's BTF describes it).

Hand-written (frozen ABI); `ffi` holds only `struct nf_hook_state`.
"""
from __future__ import annotations

import enum

import cffi

__all__ = ["ffi", "NfVerdict", "NfProto", "NfInetHook", "NF_HOOK_STATE", "NF_IP_PRI_FIRST", "NF_IP_PRI_LAST",
           "NF_IP_PRI_CONNTRACK_DEFRAG"]

# enum nf_ip_hook_priorities (include/uapi/linux/netfilter_ipv4.h), the values BPF links check
NF_IP_PRI_FIRST = -(1 << 31)          # INT_MIN
NF_IP_PRI_CONNTRACK_DEFRAG = -400
NF_IP_PRI_LAST = (1 << 31) - 1        # INT_MAX

NF_HOOK_STATE = "struct nf_hook_state"

ffi = cffi.FFI()
ffi.cdef("""
struct nf_hook_state {
    uint8_t hook;
    uint8_t pf;
    void *in;
    void *out;
    void *sk;
    void *net;
    void *okfn;
};
""")


class NfVerdict(enum.IntEnum):
    DROP = 0
    ACCEPT = 1


class NfProto(enum.IntEnum):
    UNSPEC = 0
    INET = 1
    IPV4 = 2
    ARP = 3
    NETDEV = 5
    BRIDGE = 7
    IPV6 = 10


class NfInetHook(enum.IntEnum):
    """enum nf_inet_hooks."""

    PRE_ROUTING = 0
    LOCAL_IN = 1
    FORWARD = 2
    LOCAL_OUT = 3
    POST_ROUTING = 4
    NUMHOOKS = 5
