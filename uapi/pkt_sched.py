"""Traffic-control ABI — include/uapi/linux/{pkt_sched,pkt_cls,gen_stats,rtnetlink}.h.

Hand-written (frozen ABI, values as in the 6.18 headers): qdisc/class handles (TC_H_*), the
tcmsg attributes (TCA_*), the "bpf" classifier's options (TCA_BPF_*), the classifier
offload flags (TCA_CLS_FLAGS_*), the tc action codes (TC_ACT_*), the statistics attributes
(TCA_STATS_*) and the netlink request flags of NEW requests (NLM_F_REPLACE/EXCL/CREATE).
"""
from __future__ import annotations

import enum

import cffi

__all__ = ["ffi", "TcAct", "TC_H_MAJ", "TC_H_MIN", "TC_H_MAKE"]

ffi = cffi.FFI()
ffi.cdef("""
struct gnet_stats_basic { uint64_t bytes; uint32_t packets; };
struct gnet_stats_queue { uint32_t qlen; uint32_t backlog; uint32_t drops; uint32_t requeues;
                          uint32_t overlimits; };
struct tc_stats { uint64_t bytes; uint32_t packets; uint32_t drops; uint32_t overlimits;
                  uint32_t bps; uint32_t pps; uint32_t qlen; uint32_t backlog; };
""")

# netlink.h: modifiers to NEW requests
NLM_F_ECHO = 0x08
NLM_F_REPLACE, NLM_F_EXCL, NLM_F_CREATE, NLM_F_APPEND = 0x100, 0x200, 0x400, 0x800

# rtnetlink.h
RTM_NEWTCLASS, RTM_DELTCLASS, RTM_GETTCLASS = 40, 41, 42
RTM_NEWCHAIN, RTM_DELCHAIN, RTM_GETCHAIN = 100, 101, 102
TCM_IFINDEX_MAGIC_BLOCK = 0xFFFFFFFF

# pkt_sched.h: handles
TC_H_MAJ_MASK, TC_H_MIN_MASK = 0xFFFF0000, 0x0000FFFF
TC_H_UNSPEC, TC_H_ROOT, TC_H_INGRESS = 0, 0xFFFFFFFF, 0xFFFFFFF1
TC_H_CLSACT = TC_H_INGRESS
TC_H_MIN_PRIORITY, TC_H_MIN_INGRESS, TC_H_MIN_EGRESS = 0xFFE0, 0xFFF2, 0xFFF3


def TC_H_MAJ(h: int) -> int:
    return h & TC_H_MAJ_MASK


def TC_H_MIN(h: int) -> int:
    return h & TC_H_MIN_MASK


def TC_H_MAKE(maj: int, min_: int) -> int:
    return (maj & TC_H_MAJ_MASK) | (min_ & TC_H_MIN_MASK)


# rtnetlink.h: enum TCA_*
TCA_UNSPEC, TCA_KIND, TCA_OPTIONS, TCA_STATS, TCA_XSTATS, TCA_RATE = 0, 1, 2, 3, 4, 5
TCA_FCNT, TCA_STATS2, TCA_STAB, TCA_PAD, TCA_DUMP_INVISIBLE, TCA_CHAIN = 6, 7, 8, 9, 10, 11
TCA_HW_OFFLOAD, TCA_INGRESS_BLOCK, TCA_EGRESS_BLOCK, TCA_DUMP_FLAGS = 12, 13, 14, 15
TCA_EXT_WARN_MSG = 16
TCA_MAX = TCA_EXT_WARN_MSG

# gen_stats.h: enum TCA_STATS_*
TCA_STATS_UNSPEC, TCA_STATS_BASIC, TCA_STATS_RATE_EST, TCA_STATS_QUEUE = 0, 1, 2, 3
TCA_STATS_APP, TCA_STATS_RATE_EST64, TCA_STATS_PAD, TCA_STATS_BASIC_HW = 4, 5, 6, 7
TCA_STATS_PKT64 = 8

# pkt_cls.h: enum TCA_BPF_*
TCA_BPF_UNSPEC, TCA_BPF_ACT, TCA_BPF_POLICE, TCA_BPF_CLASSID = 0, 1, 2, 3
TCA_BPF_OPS_LEN, TCA_BPF_OPS, TCA_BPF_FD, TCA_BPF_NAME = 4, 5, 6, 7
TCA_BPF_FLAGS, TCA_BPF_FLAGS_GEN, TCA_BPF_TAG, TCA_BPF_ID = 8, 9, 10, 11
TCA_BPF_MAX = TCA_BPF_ID
TCA_BPF_FLAG_ACT_DIRECT = 1 << 0

# pkt_cls.h: classifier offload flags
TCA_CLS_FLAGS_SKIP_HW, TCA_CLS_FLAGS_SKIP_SW = 1 << 0, 1 << 1
TCA_CLS_FLAGS_IN_HW, TCA_CLS_FLAGS_NOT_IN_HW, TCA_CLS_FLAGS_VERBOSE = 1 << 2, 1 << 3, 1 << 4

# pkt_cls.h: TC_ACT_EXT_* (goto chain / jump are encoded in the opcode's high bits)
TC_ACT_EXT_SHIFT = 28
TC_ACT_EXT_VAL_MASK = (1 << TC_ACT_EXT_SHIFT) - 1


class TcAct(enum.IntEnum):
    """pkt_cls.h TC_ACT_*: what a classifier/action tells the qdisc layer to do."""

    UNSPEC = -1
    OK = 0
    RECLASSIFY = 1
    SHOT = 2
    PIPE = 3
    STOLEN = 4
    QUEUED = 5
    REPEAT = 6
    REDIRECT = 7
    TRAP = 8


TC_ACT_UNSPEC, TC_ACT_OK, TC_ACT_SHOT = TcAct.UNSPEC, TcAct.OK, TcAct.SHOT
TC_ACT_STOLEN, TC_ACT_REDIRECT, TC_ACT_TRAP = TcAct.STOLEN, TcAct.REDIRECT, TcAct.TRAP

# if_ether.h
ETH_P_ALL = 0x0003
