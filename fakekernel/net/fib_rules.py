"""Policy routing rules — net/core/fib_rules.c (fib_rules_lookup, fib_rule_match, the default
rules), net/ipv4/fib_rules.c (fib4_rule_match, fib4_rule_action, __fib_lookup) and
net/ipv6/fib6_rules.c (fib6_rule_action_alt), as ``ip rule add`` makes them.

Until the first rule is added a namespace uses the kernel's fast path (fakekernel.net.fib:
local and main merged, then default); adding one switches the family to rule lookups and, for
IPv4, splits local from main (fib_unmerge), as the kernel does.  Rules match on iif, oif,
fwmark/mask and from/to prefixes (with ``not``); actions are ``table N``, blackhole,
unreachable and prohibit.
"""
from __future__ import annotations

import ipaddress

import attrs

from fakekernel.errors import Errno, KernelError

__all__ = ["FibRule", "FibRules", "RULE_ACTIONS"]

# include/uapi/linux/fib_rules.h actions, by their ``ip rule`` names
FR_ACT_TO_TBL, FR_ACT_BLACKHOLE, FR_ACT_UNREACHABLE, FR_ACT_PROHIBIT = 1, 6, 7, 8
RULE_ACTIONS = {"table": FR_ACT_TO_TBL, "blackhole": FR_ACT_BLACKHOLE, "unreachable": FR_ACT_UNREACHABLE,
                "prohibit": FR_ACT_PROHIBIT}
_ACTION_ERR = {FR_ACT_BLACKHOLE: -Errno.EINVAL, FR_ACT_UNREACHABLE: -Errno.ENETUNREACH,
               FR_ACT_PROHIBIT: -Errno.EACCES}
_LOCAL_PREF, _MAIN_PREF, _DEFAULT_PREF = 0, 32766, 32767
_U32 = 0xFFFFFFFF


@attrs.define(eq=False)
class FibRule:
    """struct fib_rule (+ fib4_rule / fib6_rule selectors)."""

    pref: int
    action: int = FR_ACT_TO_TBL
    table: int = 0
    iif: int = 0
    oif: int = 0
    mark: int = 0
    mark_mask: int = 0
    src: object = None                # ipaddress network or None
    dst: object = None
    invert: bool = False

    def match(self, iif: int, oif: int, mark: int, saddr, daddr) -> bool:
        """fib_rule_match() + fib4/6_rule_match()."""
        ok = not (self.iif and self.iif != iif) and not (self.oif and self.oif != oif) \
            and not (self.mark ^ mark) & self.mark_mask \
            and (self.src is None or saddr in self.src) and (self.dst is None or daddr in self.dst)
        return ok != self.invert


class FibRules:
    """The rules of one family; ``custom`` is fib_has_custom_rules."""

    def __init__(self, main: int, local: int, default: int, *, with_default: bool):
        self.custom = False
        self.rules = [FibRule(_LOCAL_PREF, table=local), FibRule(_MAIN_PREF, table=main)]
        if with_default:
            self.rules.append(FibRule(_DEFAULT_PREF, table=default))

    def add(self, *, pref: int | None, action: str, table: int, iif: int, oif: int, fwmark: int | None,
            mask: int | None, src: str | None, dst: str | None, invert: bool, version: int) -> FibRule:
        act = RULE_ACTIONS.get(action)
        if act is None:
            raise KernelError(Errno.EINVAL, f"unknown rule action {action!r}")
        if act == FR_ACT_TO_TBL and not table:
            raise KernelError(Errno.EINVAL, "a table rule needs a table")
        if pref is None:                      # fib_default_rule_pref(): just before the second rule
            pref = self.rules[1].pref - 1 if len(self.rules) > 1 and self.rules[1].pref else 0
        nets = []
        for p in (src, dst):
            net = ipaddress.ip_network(p, strict=False) if p is not None else None
            if net is not None and net.version != version:
                raise KernelError(Errno.EINVAL, "prefix of another family")
            nets.append(net)
        if fwmark is not None and mask is None:
            mask = _U32
        rule = FibRule(pref, act, table if act == FR_ACT_TO_TBL else 0, iif, oif, fwmark or 0,
                       mask if fwmark is not None else 0, nets[0], nets[1], invert)
        idx = next((i for i, r in enumerate(self.rules) if r.pref > pref), len(self.rules))
        self.rules.insert(idx, rule)
        self.custom = True
        return rule

    def lookup(self, table_lookup, iif: int, oif: int, mark: int, saddr, daddr):
        """fib_rules_lookup(): the first matching rule whose action or table gives an answer;
        (err, result); -ESRCH when none does."""
        for rule in self.rules:
            if not rule.match(iif, oif, mark, saddr, daddr):
                continue
            if rule.action != FR_ACT_TO_TBL:
                return _ACTION_ERR[rule.action], None
            err, res = table_lookup(rule.table)
            if err != -Errno.EAGAIN:
                return err, res
        return -Errno.ESRCH, None
