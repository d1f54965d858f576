"""Classifier blocks, chains and protos — net/sched/cls_api.c (tcf_block, tcf_chain,
tcf_proto, tcf_chain_tp_find, tcf_auto_prio, tcf_classify).

A block (one per clsact direction) holds chains by index, in creation order; a chain exists
while it holds protos (there is no RTM_NEWCHAIN here), and its protos are kept sorted by
priority.  A proto is one classifier kind at one (priority, protocol); its filters live in
the classifier's own state (`tp.root`, see cls_bpf.py).
"""
from __future__ import annotations

import attrs

from fakekernel.errors import Errno, KernelError
from uapi.pkt_sched import ETH_P_ALL, TC_H_MAJ, TC_H_MAKE, TcAct

__all__ = ["TcfBlock", "TcfChain", "TcfProto", "tcf_chain_tp_find", "tcf_chain_tp_prev",
           "tcf_auto_prio", "tcf_classify", "TCF_PROTO_OPS", "htons"]

_AUTO_PRIO_FIRST = TC_H_MAKE(0xC0000000, 0)


def htons(v: int) -> int:
    return ((v & 0xFF) << 8) | ((v >> 8) & 0xFF)


@attrs.define(eq=False)
class TcfProto:
    """struct tcf_proto: one classifier instance at (prio, protocol) in a chain."""

    ops: object                     # the classifier module (cls_bpf.CLS_BPF_OPS)
    prio: int                       # the major half of tcm_info (TC_H_MAJ)
    protocol: int                   # the minor half: network byte order, as sent
    chain: "TcfChain"
    root: object = None             # the classifier's head (cls_bpf.ClsBpfHead)


@attrs.define(eq=False)
class TcfChain:
    """struct tcf_chain: protos sorted by priority."""

    index: int
    block: "TcfBlock"
    filter_chain: list = attrs.field(factory=list)


@attrs.define(eq=False)
class TcfBlock:
    """struct tcf_block: the chains of one qdisc direction, in creation order."""

    q: object                       # the owning qdisc
    classid: int = 0
    chains: dict = attrs.field(factory=dict)

    def chain_get(self, index: int, create: bool) -> TcfChain | None:
        """tcf_chain_get(): None when absent and not to be created."""
        chain = self.chains.get(index)
        if chain is None and create:
            chain = self.chains[index] = TcfChain(index=index, block=self)
        return chain

    def chain_put_if_empty(self, chain: TcfChain) -> None:
        """tcf_chain_put(): a chain without protos goes."""
        if not chain.filter_chain and self.chains.get(chain.index) is chain:
            del self.chains[chain.index]

    def protos(self):
        for chain in list(self.chains.values()):
            yield from list(chain.filter_chain)

    def flush(self) -> None:
        """tcf_block_put(): every proto of every chain is destroyed."""
        for chain in list(self.chains.values()):
            for tp in list(chain.filter_chain):
                tp.ops.destroy(tp)
            chain.filter_chain.clear()
        self.chains.clear()


def tcf_chain_tp_find(chain: TcfChain, protocol: int, prio: int,
                      prio_allocate: bool) -> tuple[TcfProto | None, int]:
    """tcf_chain_tp_find(): the proto at `prio` (or None) and its insert position.  A proto
    at `prio` with another protocol is EINVAL; one at the start of the auto-allocation
    range ENOSPC (6.18 messages)."""
    for pos, tp in enumerate(chain.filter_chain):
        if tp.prio >= prio:
            if tp.prio == prio:
                if prio_allocate:
                    raise KernelError(Errno.ENOSPC,
                                      "Lowest ID from auto-alloc range already in use")
                if tp.protocol != protocol and protocol:
                    raise KernelError(Errno.EINVAL,
                                      "Protocol mismatch for filter with specified priority")
                return tp, pos
            return None, pos
    return None, len(chain.filter_chain)


def tcf_chain_tp_prev(chain: TcfChain, pos: int) -> TcfProto | None:
    """tcf_chain_tp_prev(): despite the name, the proto at the insert position (*pprev) —
    the first one at or above the auto-allocation start."""
    return chain.filter_chain[pos] if pos < len(chain.filter_chain) else None


def tcf_auto_prio(tp: TcfProto | None) -> int:
    """tcf_auto_prio(): 0xC000 when no proto sits at or above 0x8000, else one below the
    lowest such (measured on 6.18: 49152, 49151, ...; 0xD000 gives 0xCFFF)."""
    first = _AUTO_PRIO_FIRST if tp is None else (tp.prio - 1) & 0xFFFFFFFF
    return TC_H_MAJ(first)


def tcf_classify(skb, chain: TcfChain | None, res: dict) -> int:
    """__tcf_classify(): the protos of the chain in priority order whose protocol matches
    the packet's (or is ETH_P_ALL); the first non-negative verdict wins, TC_ACT_UNSPEC
    when none gives one."""
    if chain is None:
        return TcAct.UNSPEC
    proto = htons(skb.protocol)
    for tp in list(chain.filter_chain):
        if tp.protocol != proto and tp.protocol != htons(ETH_P_ALL):
            continue
        err = tp.ops.classify(skb, tp, res)
        if err >= 0:
            return err
    return TcAct.UNSPEC


TCF_PROTO_OPS: dict = {}             # kind -> classifier module (register_tcf_proto_ops)
