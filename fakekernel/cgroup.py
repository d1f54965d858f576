"""cgroup BPF — kernel/bpf/cgroup.c (+ the cgroup2 directory tree of kernel/cgroup/cgroup.c).

A `CgroupFs` is the cgroup2 hierarchy of one `Kernel` (mounted at ``/sys/fs/cgroup/unified``
by default).  Every `Cgroup` carries a `CgroupBpf`: per attach type the list of attached
programs/links (``progs``), the attach mode of that list (``flags``: 0, BPF_F_ALLOW_OVERRIDE
or BPF_F_ALLOW_MULTI), a revision counter (6.16+ mprog API) and the *effective* array
computed down the hierarchy.  Attach/detach/query/link follow ``__cgroup_bpf_attach``,
``__cgroup_bpf_detach``, ``__cgroup_bpf_query`` and ``cgroup_bpf_link_attach`` check by check.
"""
from __future__ import annotations

import attrs

from fakekernel.bpf.link import BpfLink
from fakekernel.bpf.link_primer import bpf_link_prime
from fakekernel.errors import Errno, KernelError
from uapi.bpf import BPF_F_LINK, AttachFlags, AttachType, LinkType, QueryFlags
from uapi.ffi import ffi, offsetofend

__all__ = ["Cgroup", "CgroupBpf", "CgroupFs", "CgroupLink", "ProgListEntry",
           "CGROUP_ATTACH_TYPES", "BPF_CGROUP_MAX_PROGS", "CGROUP2_MOUNT", "CGROUP_FILE_KIND",
           "cgroup_bpf_attach", "cgroup_bpf_detach", "cgroup_bpf_query", "cgroup_get_from_fd",
           "cgroup_bpf_link_attach", "BPF_F_LINK_ATTACH_MASK"]

CGROUP2_MOUNT = "/sys/fs/cgroup/unified"
CGROUP_FILE_KIND = "cgroup"          # File.kind of an opened cgroup2 directory
BPF_CGROUP_MAX_PROGS = 64            # kernel/bpf/cgroup.c
ROOT_CGROUP_ID = 1                   # kernfs id of the root cgroup

# to_cgroup_bpf_attach_type(): the attach types a cgroup keeps a list for.
# (BPF_LSM_CGROUP needs a BTF shim per hook and is not modelled: bpf_cgroup_atype_find fails.)
CGROUP_ATTACH_TYPES = frozenset({
    AttachType.CGROUP_INET_INGRESS, AttachType.CGROUP_INET_EGRESS,
    AttachType.CGROUP_INET_SOCK_CREATE, AttachType.CGROUP_INET_SOCK_RELEASE,
    AttachType.CGROUP_INET4_BIND, AttachType.CGROUP_INET6_BIND,
    AttachType.CGROUP_INET4_POST_BIND, AttachType.CGROUP_INET6_POST_BIND,
    AttachType.CGROUP_INET4_CONNECT, AttachType.CGROUP_INET6_CONNECT,
    AttachType.CGROUP_UNIX_CONNECT, AttachType.CGROUP_INET4_GETPEERNAME,
    AttachType.CGROUP_INET6_GETPEERNAME, AttachType.CGROUP_UNIX_GETPEERNAME,
    AttachType.CGROUP_INET4_GETSOCKNAME, AttachType.CGROUP_INET6_GETSOCKNAME,
    AttachType.CGROUP_UNIX_GETSOCKNAME, AttachType.CGROUP_UDP4_SENDMSG,
    AttachType.CGROUP_UDP6_SENDMSG, AttachType.CGROUP_UNIX_SENDMSG,
    AttachType.CGROUP_UDP4_RECVMSG, AttachType.CGROUP_UDP6_RECVMSG,
    AttachType.CGROUP_UNIX_RECVMSG, AttachType.CGROUP_SOCK_OPS, AttachType.CGROUP_DEVICE,
    AttachType.CGROUP_SYSCTL, AttachType.CGROUP_GETSOCKOPT, AttachType.CGROUP_SETSOCKOPT,
})

_MODE_FLAGS = AttachFlags.ALLOW_OVERRIDE | AttachFlags.ALLOW_MULTI
BPF_F_LINK_ATTACH_MASK = (AttachFlags.ID | AttachFlags.BEFORE | AttachFlags.AFTER
                          | AttachFlags.PREORDER | BPF_F_LINK)
_U32 = ffi.sizeof("__u32")
_U64 = ffi.sizeof("__u64")


def bpf_cgroup_atype_find(attach_type: int) -> int:
    """bpf_cgroup_atype_find(): EINVAL for attach types no cgroup list exists for."""
    if attach_type not in CGROUP_ATTACH_TYPES:
        raise KernelError(Errno.EINVAL, f"attach type {attach_type} has no cgroup list")
    return AttachType(attach_type)


@attrs.define(eq=False)
class ProgListEntry:
    """struct bpf_prog_list: one attachment, either a prog (PROG_ATTACH) or a link."""

    prog: object = None
    link: "CgroupLink | None" = None
    flags: int = 0
    storage: dict = attrs.field(factory=dict)      # cgroup storage type -> BpfCgroupStorage

    @property
    def effective_prog(self):
        """prog_list_prog()."""
        if self.prog is not None:
            return self.prog
        if self.link is not None:
            return self.link.prog
        return None


@attrs.define(eq=False)
class CgroupBpf:
    """struct cgroup_bpf."""

    progs: dict = attrs.field(factory=dict)        # atype -> list[ProgListEntry]
    flags: dict = attrs.field(factory=dict)        # atype -> 0 / ALLOW_OVERRIDE / ALLOW_MULTI
    revisions: dict = attrs.field(factory=dict)    # atype -> u64, starts at 1
    effective: dict = attrs.field(factory=dict)    # atype -> list[ProgListEntry]
    storages: list = attrs.field(factory=list)     # this cgroup's BpfCgroupStorage objects

    def plist(self, atype: int) -> list:
        return self.progs.setdefault(atype, [])

    def revision(self, atype: int) -> int:
        return self.revisions.get(atype, 1)

    def bump(self, atype: int) -> None:
        self.revisions[atype] = self.revision(atype) + 1


@attrs.define(eq=False)
class Cgroup:
    """struct cgroup (a cgroup2 directory)."""

    name: str
    parent: "Cgroup | None"
    id: int
    children: dict = attrs.field(factory=dict)
    bpf: CgroupBpf = attrs.field(factory=CgroupBpf)
    online: bool = True
    bpf_storage: dict = attrs.field(factory=dict)   # cgroup->bpf_cgrp_storage: map -> elem

    @property
    def path(self) -> str:
        parts, c = [], self
        while c.parent is not None:
            parts.append(c.name)
            c = c.parent
        return "/" + "/".join(reversed(parts))

    def ancestors(self):
        """self, parent, grandparent ... (the cgroup_parent() walk)."""
        c = self
        while c is not None:
            yield c
            c = c.parent

    def descendants_pre(self):
        """css_for_each_descendant_pre(): self first, then every live descendant."""
        yield self
        for child in list(self.children.values()):
            yield from child.descendants_pre()

    def file_release(self, file) -> None:
        """An open cgroup directory pins nothing BPF cares about."""


# ------------------------------------------------------------------ effective arrays

def _prog_list_length(entries: list) -> int:
    return sum(1 for pl in entries if pl.effective_prog is not None)


def hierarchy_allows_attach(cgrp: Cgroup, atype: int) -> bool:
    """A non-overridable single prog in an ancestor forbids attaching below it."""
    p = cgrp.parent
    while p is not None:
        flags = p.bpf.flags.get(atype, 0)
        if flags & AttachFlags.ALLOW_MULTI:
            return True
        if _prog_list_length(p.bpf.plist(atype)) == 1:
            return bool(flags & AttachFlags.ALLOW_OVERRIDE)
        p = p.parent
    return True


def compute_effective_progs(cgrp: Cgroup, atype: int) -> list:
    """The run order for `cgrp`: this cgroup's list, then each ancestor's while MULTI allows.

    BPF_F_PREORDER entries run before all others, outermost ancestor's first... in the
    order compute_effective_progs() lays them out: per level, pre-order entries fill the
    front slots from the back and are then reversed, so they keep attach order per level
    with deeper levels after their ancestors.
    """
    levels = []
    cnt = 0
    for p in cgrp.ancestors():
        if cnt > 0 and not (p.bpf.flags.get(atype, 0) & AttachFlags.ALLOW_MULTI):
            continue
        live = [pl for pl in p.bpf.plist(atype) if pl.effective_prog is not None]
        levels.append(live)
        cnt += len(live)
    pre, post = [], []
    for live in levels:
        # preorder entries of deeper levels go *after* those of shallower ones
        pre[0:0] = [pl for pl in live if pl.flags & AttachFlags.PREORDER]
        post += [pl for pl in live if not pl.flags & AttachFlags.PREORDER]
    return pre + post


def update_effective_progs(cgrp: Cgroup, atype: int) -> None:
    for desc in cgrp.descendants_pre():
        if desc.online:
            desc.bpf.effective[atype] = compute_effective_progs(desc, atype)


# ------------------------------------------------------------------ attach / detach

def _find_attach_entry(entries: list, prog, link, replace_prog, allow_multi: bool):
    """find_attach_entry(): the entry to overwrite, None to insert a new one."""
    if not allow_multi:
        return entries[0] if entries else None
    for pl in entries:
        if prog is not None and pl.prog is prog and prog is not replace_prog:
            raise KernelError(Errno.EINVAL, "prog already attached to this cgroup")
        if link is not None and pl.link is link:
            raise KernelError(Errno.EINVAL, "link already attached to this cgroup")
    if replace_prog is not None:
        for pl in entries:
            if pl.prog is replace_prog:
                return pl
        raise KernelError(Errno.ENOENT, "prog to replace is not attached")
    return None


def _anchor(kern, task, flags: int, id_or_fd: int, is_link: bool):
    """bpf_get_anchor_link() / bpf_get_anchor_prog()."""
    from fakekernel.syscall import fdget         # the syscall package imports this module
    if flags & AttachFlags.ID:
        idr = kern.link_idr if is_link else kern.prog_idr
        obj = idr.find(id_or_fd) if id_or_fd else None
        if obj is None:
            raise KernelError(Errno.ENOENT, f"no object with id {id_or_fd}")
        return obj
    if not id_or_fd:
        raise KernelError(Errno.EINVAL, "no anchor given")
    return fdget.bpf_link_get(task, id_or_fd) if is_link else fdget.bpf_prog_get(task, id_or_fd)


def _insert_position(kern, task, entries: list, prog, link, flags: int, id_or_fd: int) -> int:
    """get_prog_list() + insert_pl_to_hlist(): the list index the new entry goes to."""
    is_link, is_id = bool(flags & BPF_F_LINK), bool(flags & AttachFlags.ID)
    before, after = bool(flags & AttachFlags.BEFORE), bool(flags & AttachFlags.AFTER)
    if is_link or is_id or id_or_fd:
        if before == after:
            raise KernelError(Errno.EINVAL, "a relative attach needs exactly BEFORE or AFTER")
        if (is_link and link is None) or (not is_link and prog is None):
            raise KernelError(Errno.EINVAL, "anchor kind does not match what is attached")
    elif entries and before and after:
        raise KernelError(Errno.EINVAL, "BEFORE and AFTER together")
    if not (is_link or is_id or id_or_fd):
        if not entries:
            return 0
        return 0 if before else len(entries)
    anchor = _anchor(kern, task, flags, id_or_fd, is_link)
    for i, pl in enumerate(entries):
        if (not is_link and pl.prog is anchor) or (is_link and pl.link is anchor):
            if bool(pl.flags & AttachFlags.PREORDER) != bool(flags & AttachFlags.PREORDER):
                raise KernelError(Errno.EINVAL, "anchor has a different PREORDER setting")
            return i if before else i + 1
    raise KernelError(Errno.ENOENT, "anchor is not attached here")


def cgroup_bpf_attach(kern, task, cgrp: Cgroup, prog, replace_prog, link, attach_type: int,
                      flags: int, id_or_fd: int = 0, revision: int = 0) -> None:
    """__cgroup_bpf_attach().  Takes its own reference on `prog` when it stores it."""
    saved_flags = flags & _MODE_FLAGS
    if (flags & AttachFlags.ALLOW_OVERRIDE and flags & AttachFlags.ALLOW_MULTI) or \
            (flags & AttachFlags.REPLACE and not flags & AttachFlags.ALLOW_MULTI):
        raise KernelError(Errno.EINVAL, "invalid combination of attach flags")
    if flags & AttachFlags.REPLACE and flags & (AttachFlags.BEFORE | AttachFlags.AFTER):
        raise KernelError(Errno.EINVAL, "REPLACE with BEFORE/AFTER")
    if link is not None and (prog is not None or replace_prog is not None):
        raise KernelError(Errno.EINVAL, "link and prog together")
    if (replace_prog is not None) != bool(flags & AttachFlags.REPLACE):
        raise KernelError(Errno.EINVAL, "replace_bpf_fd and BPF_F_REPLACE go together")
    atype = bpf_cgroup_atype_find(attach_type)
    if revision and revision != cgrp.bpf.revision(atype):
        raise KernelError(Errno.ESTALE, "expected_revision does not match")
    entries = cgrp.bpf.plist(atype)
    if not hierarchy_allows_attach(cgrp, atype):
        raise KernelError(Errno.EPERM, "an ancestor's program forbids overriding")
    if entries and cgrp.bpf.flags.get(atype, 0) != saved_flags:
        raise KernelError(Errno.EPERM, "attach mode differs from the programs already attached")
    if _prog_list_length(entries) >= BPF_CGROUP_MAX_PROGS:
        raise KernelError(Errno.E2BIG, "too many programs on this cgroup")
    pl = _find_attach_entry(entries, prog, link, replace_prog,
                            bool(flags & AttachFlags.ALLOW_MULTI))
    old_prog = None
    if pl is not None:
        old_prog = pl.prog
    else:
        pos = _insert_position(kern, task, entries, prog, link, flags, id_or_fd)
        pl = ProgListEntry()
        entries.insert(pos, pl)
    pl.prog = prog.get() if prog is not None else None
    pl.link = link
    pl.flags = flags
    from fakekernel.maps.cgroup_storage import bpf_cgroup_storages_link
    pl.storage = bpf_cgroup_storages_link(cgrp, attach_type, pl.effective_prog)
    cgrp.bpf.flags[atype] = saved_flags
    update_effective_progs(cgrp, atype)
    cgrp.bpf.bump(atype)
    if old_prog is not None:
        old_prog.put()


def _find_detach_entry(entries: list, prog, link, allow_multi: bool) -> ProgListEntry:
    if not allow_multi:
        if not entries:
            raise KernelError(Errno.ENOENT, "nothing attached")
        return entries[0]          # legacy: NONE/OVERRIDE detach ignores which prog
    if prog is None and link is None:
        raise KernelError(Errno.EINVAL, "detaching from a MULTI list needs the prog")
    for pl in entries:
        if pl.prog is prog and pl.link is link:
            return pl
    raise KernelError(Errno.ENOENT, "prog is not attached here")


def cgroup_bpf_detach(cgrp: Cgroup, prog, link, attach_type: int, revision: int = 0) -> None:
    """__cgroup_bpf_detach()."""
    atype = bpf_cgroup_atype_find(attach_type)
    if revision and revision != cgrp.bpf.revision(atype):
        raise KernelError(Errno.ESTALE, "expected_revision does not match")
    entries = cgrp.bpf.plist(atype)
    if prog is not None and link is not None:
        raise KernelError(Errno.EINVAL, "prog and link together")
    pl = _find_detach_entry(entries, prog, link,
                            bool(cgrp.bpf.flags.get(atype, 0) & AttachFlags.ALLOW_MULTI))
    old_prog = pl.prog
    entries.remove(pl)
    update_effective_progs(cgrp, atype)
    cgrp.bpf.bump(atype)
    if not entries:
        cgrp.bpf.flags[atype] = 0
    if old_prog is not None:
        old_prog.put()


def cgroup_bpf_release(cgrp: Cgroup) -> None:
    """cgroup_bpf_release(): a removed cgroup drops its programs and auto-detaches links."""
    for atype, entries in cgrp.bpf.progs.items():
        for pl in entries:
            if pl.prog is not None:
                pl.prog.put()
            if pl.link is not None:
                pl.link.cgroup = None
        entries.clear()
        cgrp.bpf.effective[atype] = []
    from fakekernel.maps.cgroup_storage import bpf_cgroup_storages_release
    bpf_cgroup_storages_release(cgrp)


# ------------------------------------------------------------------ query

def cgroup_bpf_query(cgrp: Cgroup, attr, ctx) -> int:
    """__cgroup_bpf_query(): counts, flags, revision and ids written to the user's attr."""
    q = attr.query
    effective_query = bool(q.query_flags & QueryFlags.QUERY_EFFECTIVE)
    if effective_query and q.prog_attach_flags:
        raise KernelError(Errno.EINVAL, "prog_attach_flags with BPF_F_QUERY_EFFECTIVE")
    if q.attach_type == AttachType.LSM_CGROUP:
        # no BPF_LSM_CGROUP shim can be attached in this kernel: an empty range of lists
        if not effective_query and q.prog_cnt and q.prog_ids and not q.prog_attach_flags:
            raise KernelError(Errno.EINVAL, "LSM_CGROUP query needs prog_attach_flags")
        ctx.put_attr_field("query.attach_flags", 0)
        ctx.put_attr_field("query.prog_cnt", 0)
        if ctx.size >= offsetofend("union bpf_attr", "query", "revision"):
            ctx.put_attr_field("query.revision", 0)
        return 0
    atype = bpf_cgroup_atype_find(q.attach_type)
    flags = cgrp.bpf.flags.get(atype, 0)
    if effective_query:
        entries = cgrp.bpf.effective.get(atype) or compute_effective_progs(cgrp, atype)
        progs = [pl.effective_prog for pl in entries]
    else:
        progs = [pl.effective_prog for pl in cgrp.bpf.plist(atype) if pl.effective_prog is not None]
    total = len(progs)
    ctx.put_attr_field("query.attach_flags", 0 if effective_query else flags)
    ctx.put_attr_field("query.prog_cnt", total)
    revision = 0 if effective_query else cgrp.bpf.revision(atype)
    if ctx.size >= offsetofend("union bpf_attr", "query", "revision"):
        ctx.put_attr_field("query.revision", revision)
    if q.prog_cnt == 0 or not q.prog_ids or not total:
        return 0
    err = None
    if q.prog_cnt < total:
        total = q.prog_cnt
        err = Errno.ENOSPC
    mm = ctx.task.mm
    for i, p in enumerate(progs[:total]):
        mm.copy_to_user(q.prog_ids + i * _U32, p.aux.id.to_bytes(_U32, "little"))
    if q.prog_attach_flags and not effective_query:
        for i in range(total):
            mm.copy_to_user(q.prog_attach_flags + i * _U32, int(flags).to_bytes(_U32, "little"))
    if err is not None:
        raise KernelError(err, "prog_ids array too small")
    return 0


# ------------------------------------------------------------------ links

@attrs.define(eq=False)
class CgroupLink(BpfLink):
    """struct bpf_cgroup_link."""

    cgroup: Cgroup | None = None

    def release(self) -> None:
        """bpf_cgroup_link_release(): detach unless the cgroup already went away."""
        if self.cgroup is None:
            return
        cgroup_bpf_detach(self.cgroup, None, self, self.attach_type)
        self.cgroup = None

    def detach(self) -> None:
        self.release()

    def update_prog(self, new_prog, old_prog) -> None:
        """cgroup_bpf_replace()."""
        if self.cgroup is None:
            raise KernelError(Errno.ENOLINK, "cgroup is gone")
        if old_prog is not None and self.prog is not old_prog:
            raise KernelError(Errno.EPERM, "old_prog does not match")
        if self.prog.type != new_prog.type:
            raise KernelError(Errno.EINVAL, "prog type differs")
        atype = bpf_cgroup_atype_find(self.attach_type)
        self.cgroup.bpf.bump(atype)
        old, self.prog = self.prog, new_prog.get()
        old.put()

    def fill_link_info(self, info, task) -> None:
        info.cgroup.cgroup_id = self.cgroup.id if self.cgroup is not None else 0
        info.cgroup.attach_type = self.attach_type


def cgroup_bpf_link_attach(kern, task, attr, prog) -> int:
    """cgroup_bpf_link_attach(): a bpf_cgroup_link in MULTI mode.  Returns the link fd."""
    lc = attr.link_create
    if lc.flags & ~int(BPF_F_LINK_ATTACH_MASK):
        raise KernelError(Errno.EINVAL, "unknown link_create.flags for a cgroup link")
    cgrp = cgroup_get_from_fd(task, lc.target_fd)
    link = CgroupLink(kern=kern, type=LinkType.CGROUP, attach_type=lc.attach_type, prog=prog,
                      cgroup=cgrp)
    primer = bpf_link_prime(link)
    try:
        cgroup_bpf_attach(kern, task, cgrp, None, None, link, lc.attach_type,
                          AttachFlags.ALLOW_MULTI | lc.flags, lc.cgroup.relative_fd,
                          lc.cgroup.expected_revision)
    except KernelError:
        link.cgroup = None
        primer.cleanup()
        raise
    return primer.settle(task)


# ------------------------------------------------------------------ fds and the tree

def cgroup_get_from_fd(task, fd: int) -> Cgroup:
    """cgroup_v1v2_get_from_fd() for cgroup2: EBADF for anything but a cgroup2 directory,
    ENOENT for the directory of a removed cgroup (css_tryget_online_from_dir)."""
    f = task.files.fdget(fd)
    if f.kind != CGROUP_FILE_KIND:
        raise KernelError(Errno.EBADF, f"fd {fd} is not a cgroup2 directory")
    if not f.private_data.online:
        raise KernelError(Errno.ENOENT, f"fd {fd} is a removed cgroup's directory")
    return f.private_data


class CgroupFs:
    """The cgroup2 hierarchy (cgroup_root) of one kernel."""

    def __init__(self, kern, mountpoint: str = CGROUP2_MOUNT):
        self.kern = kern
        self.mountpoint = mountpoint.rstrip("/")
        self._next_id = ROOT_CGROUP_ID + 1
        self.root = Cgroup(name="", parent=None, id=ROOT_CGROUP_ID)

    def _rel(self, path: str) -> list[str] | None:
        p = path.rstrip("/") or "/"
        if p == self.mountpoint:
            return []
        if not p.startswith(self.mountpoint + "/"):
            return None
        return [c for c in p[len(self.mountpoint):].split("/") if c]

    def owns(self, path: str) -> bool:
        return self._rel(path) is not None

    def lookup(self, path: str) -> Cgroup:
        parts = self._rel(path)
        if parts is None:
            raise KernelError(Errno.ENOENT, f"{path} is not in the cgroup2 mount")
        c = self.root
        for part in parts:
            if part not in c.children:
                raise KernelError(Errno.ENOENT, f"no cgroup {path}")
            c = c.children[part]
        return c

    def get(self, cg) -> Cgroup:
        """A Cgroup from a path (absolute, or relative to the mount) or a Cgroup."""
        if isinstance(cg, Cgroup):
            return cg
        return self.lookup(cg if cg.startswith("/") else f"{self.mountpoint}/{cg}")

    def mkdir(self, path: str) -> Cgroup:
        """mkdir(2) in cgroup2: the new cgroup inherits its ancestors' effective programs."""
        parts = self._rel(path)
        if not parts:
            raise KernelError(Errno.EEXIST if parts == [] else Errno.ENOENT, f"mkdir {path}")
        parent = self.lookup(self.mountpoint + "/" + "/".join(parts[:-1]))
        if parts[-1] in parent.children:
            raise KernelError(Errno.EEXIST, f"{path} exists")
        c = Cgroup(name=parts[-1], parent=parent, id=self._next_id)
        self._next_id += 1
        parent.children[c.name] = c
        for atype in CGROUP_ATTACH_TYPES:          # cgroup_bpf_inherit()
            eff = compute_effective_progs(c, atype)
            if eff:
                c.bpf.effective[atype] = eff
        return c

    def rmdir(self, path: str) -> None:
        """rmdir(2): EBUSY with children; the cgroup's programs are released."""
        c = self.lookup(path)
        if c is self.root:
            raise KernelError(Errno.EBUSY, "cannot remove the root cgroup")
        if c.children:
            raise KernelError(Errno.EBUSY, "cgroup has children")
        del c.parent.children[c.name]
        c.online = False
        cgroup_bpf_release(c)
        from fakekernel.maps.bpf_local_storage import bpf_local_storage_destroy
        bpf_local_storage_destroy(c.bpf_storage)        # bpf_cgrp_storage_free()

    def walk(self):
        return self.root.descendants_pre()

    def attached_objects(self) -> set:
        out = set()
        for c in self.walk():
            for entries in c.bpf.progs.values():
                for pl in entries:
                    if pl.prog is not None:
                        out.add(pl.prog)
                    if pl.link is not None:
                        out.add(pl.link)
                        out.add(pl.link.prog)
        return out
