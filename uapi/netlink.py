"""Netlink and rtnetlink ABI — include/uapi/linux/{netlink,rtnetlink,if_link,pkt_sched}.h.

Hand-written (frozen ABI): the message headers and the attribute numbers the emulated
rtnetlink reads or writes (XDP on links, tc qdisc/filter dumps), and a TLV codec:
`nla_parse` / `nla_put` with the 4-byte NLA_ALIGNTO alignment of netlink attributes.
"""
from __future__ import annotations

import cffi

__all__ = ["ffi", "NLMSG_HDRLEN", "nla_align", "nla_put", "nla_parse", "nlmsg",
           "AF_NETLINK", "NETLINK_ROUTE", "SOL_NETLINK"]

ffi = cffi.FFI()
ffi.cdef("""
struct nlmsghdr { uint32_t nlmsg_len; uint16_t nlmsg_type; uint16_t nlmsg_flags;
                  uint32_t nlmsg_seq; uint32_t nlmsg_pid; };
struct nlmsgerr { int error; struct nlmsghdr msg; };
struct ifinfomsg { unsigned char ifi_family; unsigned char __ifi_pad; unsigned short ifi_type;
                   int ifi_index; unsigned int ifi_flags; unsigned int ifi_change; };
struct tcmsg { unsigned char tcm_family; unsigned char tcm__pad1; unsigned short tcm__pad2;
               int tcm_ifindex; uint32_t tcm_handle; uint32_t tcm_parent; uint32_t tcm_info; };
struct sockaddr_nl { unsigned short nl_family; unsigned short nl_pad; uint32_t nl_pid;
                     uint32_t nl_groups; };
""")

AF_NETLINK = 16
NETLINK_ROUTE = 0
SOL_NETLINK = 270
# setsockopt(SOL_NETLINK, ...)
NETLINK_CAP_ACK = 10
NETLINK_EXT_ACK = 11
NETLINK_GET_STRICT_CHK = 12

NLMSG_HDRLEN = ffi.sizeof("struct nlmsghdr")
NLMSG_NOOP, NLMSG_ERROR, NLMSG_DONE = 1, 2, 3
NLM_F_REQUEST, NLM_F_MULTI, NLM_F_ACK = 0x01, 0x02, 0x04
NLM_F_ROOT, NLM_F_MATCH = 0x100, 0x200
NLM_F_DUMP = NLM_F_ROOT | NLM_F_MATCH
NLM_F_CAPPED, NLM_F_ACK_TLVS = 0x100, 0x200          # in NLMSG_ERROR replies
NLMSGERR_ATTR_MSG = 1

RTM_NEWLINK, RTM_DELLINK, RTM_GETLINK, RTM_SETLINK = 16, 17, 18, 19
RTM_NEWQDISC, RTM_DELQDISC, RTM_GETQDISC = 36, 37, 38
RTM_NEWTFILTER, RTM_DELTFILTER, RTM_GETTFILTER = 44, 45, 46

IFLA_ADDRESS, IFLA_BROADCAST, IFLA_IFNAME, IFLA_MTU = 1, 2, 3, 4
IFLA_XDP = 43
IFLA_XDP_FD, IFLA_XDP_ATTACHED, IFLA_XDP_FLAGS, IFLA_XDP_PROG_ID = 1, 2, 3, 4
IFLA_XDP_DRV_PROG_ID, IFLA_XDP_SKB_PROG_ID, IFLA_XDP_HW_PROG_ID = 5, 6, 7
IFLA_XDP_EXPECTED_FD = 8
XDP_ATTACHED_NONE, XDP_ATTACHED_DRV, XDP_ATTACHED_SKB = 0, 1, 2
XDP_ATTACHED_HW, XDP_ATTACHED_MULTI = 3, 4

NLA_ALIGNTO = 4
NLA_HDRLEN = 4
NLA_F_NESTED = 1 << 15
NLA_F_NET_BYTEORDER = 1 << 14
NLA_TYPE_MASK = ~(NLA_F_NESTED | NLA_F_NET_BYTEORDER) & 0xFFFF


def nla_align(n: int) -> int:
    return (n + NLA_ALIGNTO - 1) & ~(NLA_ALIGNTO - 1)


def nla_put(atype: int, payload: bytes) -> bytes:
    """One attribute: struct nlattr {u16 nla_len; u16 nla_type} + payload, padded."""
    length = NLA_HDRLEN + len(payload)
    raw = length.to_bytes(2, "little") + atype.to_bytes(2, "little") + payload
    return raw + bytes(nla_align(length) - length)


def nla_parse(data: bytes) -> dict[int, bytes] | None:
    """The attributes of a TLV stream by type (last wins, as nla_parse keeps the last);
    None when an attribute's length is malformed (the kernel's EINVAL)."""
    out: dict[int, bytes] = {}
    off = 0
    while off + NLA_HDRLEN <= len(data):
        length = int.from_bytes(data[off:off + 2], "little")
        atype = int.from_bytes(data[off + 2:off + 4], "little") & NLA_TYPE_MASK
        if length < NLA_HDRLEN or off + length > len(data):
            return None
        out[atype] = bytes(data[off + NLA_HDRLEN:off + length])
        off += nla_align(length)
    return out


def nlmsg(mtype: int, flags: int, seq: int, pid: int, payload: bytes) -> bytes:
    """A message: struct nlmsghdr + payload (padded to 4 bytes)."""
    length = NLMSG_HDRLEN + len(payload)
    hdr = ffi.new("struct nlmsghdr *", {"nlmsg_len": length, "nlmsg_type": mtype,
                                        "nlmsg_flags": flags, "nlmsg_seq": seq, "nlmsg_pid": pid})
    return bytes(ffi.buffer(hdr)) + payload + bytes(nla_align(length) - length)
