"""Psocks and the programs attached to socket maps — net/core/skmsg.c (struct sk_psock,
sk_psock_init/put) and net/core/sock_map.c (sock_map_link/unref, sock_map_get_from_fd,
sock_map_prog_detach, sock_map_prog_update, sock_map_prog_link_lookup,
sock_map_bpf_prog_query, sock_map_release_progs).

A socket in a socket map carries a psock (sk_user_data) with one link per map slot holding
it; the psock goes with its last link (sk_psock_put), and so do the programs it took.

A SOCKMAP/SOCKHASH has one slot per attach type (struct sk_psock_progs): SK_MSG_VERDICT →
msg_parser, SK_SKB_STREAM_PARSER → stream_parser, SK_SKB_STREAM_VERDICT → stream_verdict,
SK_SKB_VERDICT → skb_verdict (the two verdict kinds exclude each other: EBUSY).  PROG_ATTACH
replaces what a slot holds; PROG_DETACH needs the prog that is there (ENOENT).  The map holds
its programs until its last user reference goes.  A socket entering the map takes the map's
programs into its psock: a psock already running a program of the same kind for another map
is EBUSY, and a stream parser + verdict pair needs TCP (EOPNOTSUPP).
"""
from __future__ import annotations

import attrs

from fakekernel.errors import Errno, KernelError
from fakekernel.syscall.fdget import bpf_map_get, bpf_prog_get
from uapi.bpf import AttachType

__all__ = ["SkPsock", "SkPsockProgs", "sk_psock_put", "sock_map_unref", "sock_map_link",
           "sock_map_get_from_fd", "sock_map_prog_detach", "sock_map_bpf_prog_query",
           "psock_check_progs", "psock_take_progs", "psock_unlink_progs", "SOCK_MAP_ATTACH_TYPES"]

_SLOT = {AttachType.SK_MSG_VERDICT: "msg_parser",
         AttachType.SK_SKB_STREAM_PARSER: "stream_parser",
         AttachType.SK_SKB_STREAM_VERDICT: "stream_verdict",
         AttachType.SK_SKB_VERDICT: "skb_verdict"}
SOCK_MAP_ATTACH_TYPES = frozenset(_SLOT)
_U32 = 4


@attrs.define(eq=False)
class SkPsockProgs:
    """struct sk_psock_progs (each slot holds a reference on its prog)."""

    msg_parser: object = None
    stream_parser: object = None
    stream_verdict: object = None
    skb_verdict: object = None

    def drop(self) -> None:
        """psock_progs_drop()."""
        for name in _SLOT.values():
            prog = getattr(self, name)
            setattr(self, name, None)
            if prog is not None:
                prog.put()


def _lookup(bpf_map, which: int) -> tuple[SkPsockProgs, str]:
    """sock_map_prog_link_lookup()."""
    progs = getattr(bpf_map, "progs", None)
    if progs is None or which not in _SLOT:
        raise KernelError(Errno.EOPNOTSUPP, "not a socket map, or not a socket-map attach type")
    if which == AttachType.SK_SKB_STREAM_VERDICT and progs.skb_verdict is not None:
        raise KernelError(Errno.EBUSY, "an skb verdict program is attached")
    if which == AttachType.SK_SKB_VERDICT and progs.stream_verdict is not None:
        raise KernelError(Errno.EBUSY, "a stream verdict program is attached")
    return progs, _SLOT[which]


def _prog_update(bpf_map, prog, old, which: int) -> None:
    """sock_map_prog_update() for PROG_ATTACH (old None) / PROG_DETACH (prog None)."""
    progs, name = _lookup(bpf_map, which)
    cur = getattr(progs, name)
    if old is not None:
        if cur is not old:                       # psock_replace_prog()
            raise KernelError(Errno.ENOENT, "that program is not attached")
        setattr(progs, name, prog.get() if prog is not None else None)
        old.put()
        return
    setattr(progs, name, prog.get())             # psock_set_prog()
    if cur is not None:
        cur.put()


def sock_map_get_from_fd(task, attr, prog) -> int:
    """sock_map_get_from_fd(): PROG_ATTACH of an SK_SKB/SK_MSG prog to the map target_fd."""
    if attr.attach_flags or attr.replace_bpf_fd:
        raise KernelError(Errno.EINVAL, "socket maps take no attach flags")
    _, bpf_map = bpf_map_get(task, attr.target_fd)
    _prog_update(bpf_map, prog, None, attr.attach_type)
    return 0


def sock_map_prog_detach(task, attr, ptype: int) -> int:
    """sock_map_prog_detach()."""
    if attr.attach_flags or attr.replace_bpf_fd:
        raise KernelError(Errno.EINVAL, "socket maps take no attach flags")
    _, bpf_map = bpf_map_get(task, attr.target_fd)
    prog = bpf_prog_get(task, attr.attach_bpf_fd)
    if prog.type != ptype:
        raise KernelError(Errno.EINVAL, "program of another type")
    _prog_update(bpf_map, None, prog, attr.attach_type)
    return 0


def sock_map_bpf_prog_query(task, attr, ctx) -> int:
    """sock_map_bpf_prog_query(): the slot's program id (attach_flags and prog_cnt are written
    even when the lookup fails)."""
    q = attr.query
    if q.query_flags:
        raise KernelError(Errno.EINVAL, "socket maps take no query flags")
    _, bpf_map = bpf_map_get(task, q.target_fd)
    err, prog_cnt, prog_id = None, 0, 0
    try:
        progs, name = _lookup(bpf_map, q.attach_type)
        prog = getattr(progs, name)
        prog_cnt = 0 if prog is None else 1
        if q.prog_cnt and q.prog_ids and prog_cnt:
            prog_id = prog.aux.id
    except KernelError as e:
        err = e
    ctx.put_attr_field("query.attach_flags", 0)
    if prog_id:
        task.mm.copy_to_user(q.prog_ids, prog_id.to_bytes(_U32, "little"))
    ctx.put_attr_field("query.prog_cnt", prog_cnt)
    if err is not None:
        raise err
    return 0


def psock_unlink_progs(bpf_map, psock_progs: SkPsockProgs) -> None:
    """sock_map_del_link(): leaving a map whose parser / verdict programs the socket runs
    stops them (sk_psock_stop_strp / sk_psock_stop_verdict clear the psock's programs)."""
    progs = getattr(bpf_map, "progs", None)
    started = psock_progs.stream_verdict is not None or psock_progs.skb_verdict is not None
    if progs is None or not started:
        return
    names = []
    if progs.stream_parser is not None:
        names.append("stream_parser")
    if progs.stream_verdict is not None or progs.skb_verdict is not None:
        names += ["stream_verdict", "skb_verdict"]
    for name in names:
        prog = getattr(psock_progs, name)
        setattr(psock_progs, name, None)
        if prog is not None:
            prog.put()


def psock_check_progs(bpf_map, psock_progs: SkPsockProgs | None) -> None:
    """sock_map_link(): a psock already running a program of a kind the map has is EBUSY."""
    progs = getattr(bpf_map, "progs", None)
    if progs is None or psock_progs is None:
        return
    mine = psock_progs
    verdict = mine.skb_verdict is not None or mine.stream_verdict is not None
    if ((progs.msg_parser and mine.msg_parser) or (progs.stream_parser and mine.stream_parser)
            or ((progs.skb_verdict or progs.stream_verdict) and verdict)):
        raise KernelError(Errno.EBUSY, "the socket already runs such a program")


def psock_take_progs(bpf_map, sk, psock_progs: SkPsockProgs | None) -> SkPsockProgs:
    """The psock's programs once linked to `bpf_map` (new ones referenced); EOPNOTSUPP for a
    stream parser + verdict on a socket that is not TCP.  Nothing changes on error."""
    mine = attrs.evolve(psock_progs) if psock_progs is not None else SkPsockProgs()
    progs = getattr(bpf_map, "progs", None)
    if progs is None:
        return mine
    started = mine.stream_verdict is not None or mine.skb_verdict is not None
    if progs.stream_parser and progs.stream_verdict and not started and not sk.sk_is_tcp():
        raise KernelError(Errno.EOPNOTSUPP, "a stream parser needs TCP")
    for name in _SLOT.values():
        prog = getattr(progs, name)
        if prog is not None:
            setattr(mine, name, prog.get())
    return mine


# ------------------------------------------------------------------ psock (net/core/skmsg.c)

@attrs.define(eq=False)
class SkPsock:
    """struct sk_psock: the socket's membership in socket maps (one link per slot)."""

    sk: object
    links: list = attrs.field(factory=list)      # [(map, link_raw)]
    refcnt: int = 1
    progs: SkPsockProgs = attrs.field(factory=SkPsockProgs)   # referenced

    def sock_map_close(self, sk) -> None:
        """sock_map_close() / sock_map_unhash(): leave every map still holding the socket."""
        for bpf_map, raw in list(self.links):
            bpf_map.sock_map_delete_from_link(sk, raw)


def sk_psock_put(sk, psock: SkPsock) -> None:
    """sk_psock_put(): the last reference drops the psock and frees sk_user_data."""
    psock.refcnt -= 1
    if psock.refcnt == 0 and sk.psock is psock:
        sk.psock = None
        if sk.user_data is psock:
            sk.user_data = None
        psock.progs.drop()


def sock_map_unref(sk, bpf_map, raw) -> None:
    """sock_map_unref(): remove the link, drop its psock reference."""
    psock = sk.psock
    if psock is None:
        return
    for i, (m, r) in enumerate(psock.links):
        if m is bpf_map and r is raw:
            del psock.links[i]
            psock_unlink_progs(bpf_map, psock.progs)
            break
    sk_psock_put(sk, psock)


def sock_map_link(bpf_map, sk) -> SkPsock:
    """sock_map_link(): an existing psock is shared (EBUSY if it already runs a program of a
    kind the map has), else one is made (EBUSY if sk_user_data is taken); the psock takes
    the map's programs (EOPNOTSUPP: a stream parser on a non-TCP socket)."""
    psock = sk.psock
    if psock is not None:
        psock_check_progs(bpf_map, psock.progs)
    elif sk.user_data is not None:               # sk_psock_init()
        raise KernelError(Errno.EBUSY, "sk_user_data is taken")
    progs = psock_take_progs(bpf_map, sk, psock.progs if psock is not None else None)
    if psock is None:
        psock = SkPsock(sk=sk, progs=progs)
        sk.psock = sk.user_data = psock
    else:
        psock.progs = progs                      # the old programs' references carry over
        psock.refcnt += 1
    return psock
