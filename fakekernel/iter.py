"""BPF iterators — kernel/bpf/bpf_iter.c (the target registry, bpf_iter_prog_supported,
bpf_iter_link_attach, bpf_iter_new_fd, bpf_seq_read) with the object iterators of
kernel/bpf/map_iter.c, prog_iter.c, link_iter.c and task_iter.c, and the map element walk of
fakekernel.map_iter.

A target ``X`` is the kernel function ``bpf_iter_X`` whose BTF prototype is the ctx the
program sees: ``struct bpf_iter_meta *meta`` then the object (NULL on the final call made
when the walk ends).  Reading the fd ITER_CREATE returns runs the program over the objects
and hands out what it printed with bpf_seq_printf/bpf_seq_write, in the chunks and with the
errors of bpf_seq_read().  The objects a program dereferences are laid out as the vmlinux
BTF says (`fakekernel.btf_objects`), with the fields the simulated kernel knows filled in.
"""
from __future__ import annotations

import enum
from collections.abc import Callable

import attrs

from fakekernel.bpf.core import bpf_prog_run
from fakekernel.bpf.link import BpfLink
from fakekernel.bpf.link_primer import bpf_link_prime
from fakekernel.btf_objects import ObjectImages
from fakekernel.btf_vmlinux import BPF_ITER_PREFIX, btf_index
from fakekernel.errors import Errno, KernelError
from fakekernel.fdtable import O_CLOEXEC, O_RDONLY, File
from fakekernel.helpers.seq import SeqFile
from fakekernel.map_iter import MAP_ELEM_START, check_map_elem_map, map_elem_args, map_elem_rewind, map_elem_step
from uapi.bpf import LinkType
from uapi.ffi import ffi

__all__ = ["BPF_ITER_TARGETS", "ITER_CTX_ARGS", "iter_ctx_arg", "bpf_iter_prog_supported", "bpf_iter_link_attach",
           "bpf_iter_new_fd", "BpfIterLink", "BpfIterFile", "ITER_FILE_KIND"]

ITER_FILE_KIND = "bpf_iter"                  # anon_inode:bpf_iter
_PAGE_SIZE = 4096
_SEQ_BUF_SIZE = _PAGE_SIZE << 3              # bpf_seq_read()'s seq->size
MAX_ITER_OBJECTS = 1_000_000
_LINK_INFO = "union bpf_iter_link_info"
_LINK_INFO_SIZE = ffi.sizeof(_LINK_INFO)

#: the targets a 6.18 kernel registers at boot (loads of other bpf_iter_* functions: EINVAL)
BPF_ITER_TARGETS = frozenset({
    b"bpf_link", b"bpf_map", b"bpf_map_elem", b"bpf_prog", b"bpf_sk_storage_map", b"cgroup",
    b"dmabuf", b"ipv6_route", b"kmem_cache", b"ksym", b"netlink", b"sockmap", b"task",
    b"task_file", b"task_vma", b"tcp", b"udp", b"unix"})


# each target's ctx_arg_info: the register type of an object argument (by argument index;
# meta, argument 0, and unlisted arguments are the generic trusted PTR_TO_BTF_ID), measured
# on 6.18.  "buf"/"rdonly_buf" are PTR_TO_BUF_OR_NULL (map element keys and values).
_ON, _TON = "or_null", "trusted_or_null"
ITER_CTX_ARGS = {
    b"bpf_link": {1: _ON}, b"bpf_map": {1: _TON}, b"bpf_map_elem": {2: "rdonly_buf", 3: "buf"},
    b"bpf_prog": {1: _ON}, b"bpf_sk_storage_map": {2: _ON, 3: "buf"}, b"cgroup": {1: _TON},
    b"dmabuf": {1: _ON}, b"ipv6_route": {1: _ON}, b"kmem_cache": {1: _TON}, b"ksym": {1: _ON},
    b"netlink": {1: _ON}, b"sockmap": {2: "rdonly_buf", 3: _ON}, b"task": {1: _TON},
    b"task_file": {1: _ON, 3: _ON}, b"task_vma": {1: _ON, 2: _ON}, b"tcp": {1: _TON},
    b"udp": {1: _TON}, b"unix": {1: _ON}}


def iter_ctx_arg(tgt, arg: int) -> str | None:
    """The ctx_arg_info kind of argument `arg` of an iterator program, or None (generic)."""
    name = tgt.name[len(BPF_ITER_PREFIX):]
    return ITER_CTX_ARGS.get(name, {}).get(arg)


def bpf_iter_prog_supported(prog, tgt) -> bool:
    """bpf_iter_prog_supported(): the attach function is bpf_iter_<a registered target>."""
    name = tgt.name
    return name.startswith(BPF_ITER_PREFIX) and name[len(BPF_ITER_PREFIX):] in BPF_ITER_TARGETS


# ---------------------------------------------------------------- targets with a walk here

@attrs.frozen
class _Walk:
    """How the seq file walks one target: `step(kern, link, pos)` gives (the position after the
    object, the object) or None at the end; `args(images, link, obj)` are the ctx arguments after
    meta (obj None: the final call); `rewind(obj)` is the position that finds `obj` again."""

    step: Callable
    args: Callable
    rewind: Callable
    start: object = 1


def _idr_step(idr_name: str):
    """The objects of an idr in id order, from id `pos` on."""
    def step(kern, link, pos: int):
        found = getattr(kern, idr_name).get_next(pos - 1)
        return None if found is None else (found[0] + 1, found[1])
    return step


def _task_step(kern, link, pos: int):
    """Tasks by pid (one thread per process here, so tid == tgid == pid), or the link's one."""
    only = link.task_pid
    tasks = sorted((t for t in kern.tasks if t.pid >= pos and (not only or t.pid == only)), key=lambda t: t.pid)
    return None if not tasks else (tasks[0].pid + 1, tasks[0])


def _object_args(kind: str):
    return lambda images, link, obj: [images.object_image(kind, obj) if obj is not None else 0]


def _obj_id(obj) -> int:
    aux = getattr(obj, "aux", None)
    return aux.id if aux is not None else obj.id


_WALKS = {b"bpf_map": _Walk(_idr_step("map_idr"), _object_args("bpf_map"), _obj_id),
          b"bpf_prog": _Walk(_idr_step("prog_idr"), _object_args("bpf_prog"), _obj_id),
          b"bpf_link": _Walk(_idr_step("link_idr"), _object_args("bpf_link"), _obj_id),
          b"task": _Walk(_task_step, _object_args("task_struct"), lambda t: t.pid),
          b"bpf_map_elem": _Walk(map_elem_step, lambda images, link, key: map_elem_args(images, link.bpf_map, key),
                                 map_elem_rewind, MAP_ELEM_START)}
_TASK_TARGETS = (b"task", b"task_file", b"task_vma")
# targets registered with BPF_ITER_RESCHED (sleepable programs allowed), measured on 6.18
_RESCHED_TARGETS = frozenset({*_TASK_TARGETS, b"dmabuf", b"kmem_cache", b"ksym"})


# ---------------------------------------------------------------- the link

@attrs.define(eq=False)
class BpfIterLink(BpfLink):
    """struct bpf_iter_link: the target and the link info the attach was given."""

    target: bytes = b""
    linfo: bytes = b""
    task_pid: int = 0            # task iterators: the one process to walk (0: every task)
    task_by_tid: bool = False    # BPF_TASK_ITER_TID (else TGID when task_pid is set)
    bpf_map: object = None       # map element iterators: the map (a counted, user reference)
    cgroup_order: int = 0
    cgroup_id: int = 0

    def release(self) -> None:
        """bpf_iter_link_release() -> the target's detach_target (the map reference)."""
        m, self.bpf_map = self.bpf_map, None
        if m is not None:
            m.put(uref=True)

    def fill_link_info(self, info, task) -> None:
        """bpf_iter_link_fill_link_info(): the target name (ENOSPC when it does not fit)."""
        it = info.iter
        ubuf, ulen = it.target_name, it.target_name_len
        if (not ulen) != (not ubuf):
            raise KernelError(Errno.EINVAL, "target_name and target_name_len go together")
        name = self.target
        it.target_name_len = len(name) + 1
        if ubuf:
            if ulen >= len(name) + 1:
                task.mm.copy_to_user(ubuf, name + b"\0")
            else:
                task.mm.copy_to_user(ubuf, name[:ulen - 1] + b"\0")
                raise KernelError(Errno.ENOSPC, "target_name buffer too short")
        # the target's fill_link_info
        if self.bpf_map is not None:
            it.map.map_id = self.bpf_map.id
        elif self.target in _TASK_TARGETS and self.task_pid:
            if self.task_by_tid:
                it.task.tid = self.task_pid
            else:
                it.task.pid = self.task_pid
        elif self.target == b"cgroup":
            it.cgroup.order = self.cgroup_order
            it.cgroup.cgroup_id = self.cgroup_id


def _check_task_linfo(task, linfo) -> int:
    """bpf_iter_attach_task(): at most one of tid/pid/pid_fd; the pid to walk (0: all)."""
    t = linfo.task
    if sum(1 for v in (t.tid, t.pid, t.pid_fd) if v) > 1:
        raise KernelError(Errno.EINVAL, "more than one of tid, pid, pid_fd")
    if t.pid_fd:
        from fakekernel.pid import pidfd_get_pid
        return pidfd_get_pid(task, t.pid_fd).pid
    return t.tid or t.pid


class CgroupIterOrder(enum.IntEnum):
    """enum bpf_cgroup_iter_order (include/uapi/linux/bpf.h; not in the generated uapi yet)."""

    ORDER_UNSPEC = 0
    SELF_ONLY = 1
    DESCENDANTS_PRE = 2
    DESCENDANTS_POST = 3
    ANCESTORS_UP = 4


def _check_cgroup_linfo(kern, task, linfo) -> int:
    """bpf_iter_attach_cgroup(): a walk order, then a cgroup by fd or id (or the root);
    returns the start cgroup's id."""
    cg = linfo.cgroup
    if cg.order not in (CgroupIterOrder.SELF_ONLY, CgroupIterOrder.DESCENDANTS_PRE,
                        CgroupIterOrder.DESCENDANTS_POST, CgroupIterOrder.ANCESTORS_UP):
        raise KernelError(Errno.EINVAL, "unknown cgroup iterator order")
    if cg.cgroup_fd and cg.cgroup_id:
        raise KernelError(Errno.EINVAL, "cgroup_fd and cgroup_id together")
    if cg.cgroup_fd:
        from fakekernel.cgroup import cgroup_get_from_fd
        return cgroup_get_from_fd(task, cg.cgroup_fd).id
    if cg.cgroup_id:
        if not any(c.id == cg.cgroup_id for c in kern.world.cgroup.walk()):
            raise KernelError(Errno.ENOENT, f"no cgroup with id {cg.cgroup_id}")
        return cg.cgroup_id
    return kern.world.cgroup.root.id


def bpf_iter_link_attach(kern, task, attr, prog) -> int:
    """bpf_iter_link_attach(): LINK_CREATE with BPF_TRACE_ITER.  Returns the link fd."""
    lc = attr.link_create
    if lc.target_fd or lc.flags:
        raise KernelError(Errno.EINVAL, "target_fd/flags must be 0 for an iterator link")
    uinfo, ulen = lc.iter_info, lc.iter_info_len
    if (not uinfo) != (not ulen):
        raise KernelError(Errno.EINVAL, "iter_info and iter_info_len go together")
    raw = bytes(_LINK_INFO_SIZE)
    if uinfo:
        if ulen > _LINK_INFO_SIZE and \
                not task.mm.check_zeroed_user(uinfo + _LINK_INFO_SIZE, ulen - _LINK_INFO_SIZE):
            raise KernelError(Errno.E2BIG, "non-zero bytes after union bpf_iter_link_info")
        got = task.mm.copy_from_user(uinfo, min(ulen, _LINK_INFO_SIZE))
        raw = bytes(got) + bytes(_LINK_INFO_SIZE - len(got))
    tgt = prog.aux.attach_target
    name = tgt.name[len(BPF_ITER_PREFIX):] if tgt is not None else b""
    if tgt is None or prog.aux.attach_btf_id != tgt.btf_id or name not in BPF_ITER_TARGETS:
        raise KernelError(Errno.ENOENT, "no iterator target for this program")
    if prog.aux.sleepable and name not in _RESCHED_TARGETS:
        raise KernelError(Errno.EINVAL, "sleepable programs only on resched-able iterators")
    link = BpfIterLink(kern=kern, type=LinkType.ITER, attach_type=lc.attach_type, prog=prog,
                       target=name, linfo=raw)
    primer = bpf_link_prime(link)
    try:
        linfo = ffi.from_buffer(_LINK_INFO + " *", bytearray(raw))
        if name in _TASK_TARGETS:
            link.task_pid = _check_task_linfo(task, linfo)
            link.task_by_tid = bool(linfo.task.tid)
        elif name == b"cgroup":
            link.cgroup_id = _check_cgroup_linfo(kern, task, linfo)
            link.cgroup_order = linfo.cgroup.order
        elif name in (b"bpf_map_elem", b"bpf_sk_storage_map", b"sockmap"):
            from fakekernel.syscall import fdget
            if not linfo.map.map_fd:
                raise KernelError(Errno.EBADF, "a map iterator needs map_fd")
            _f, m = fdget.bpf_map_get(task, linfo.map.map_fd)
            if name == b"bpf_map_elem":
                check_map_elem_map(m)
            link.bpf_map = m.get(uref=True)         # bpf_map_get_with_uref()
    except KernelError:
        primer.cleanup()
        raise
    return primer.settle(task)


# ---------------------------------------------------------------- the seq file

@attrs.define(eq=False)
class BpfIterFile:
    """The seq_file behind an ITER_CREATE fd (struct bpf_iter_priv_data + struct seq_file)."""

    kern: object
    link: BpfIterLink
    prog: object
    session_id: int
    seq: SeqFile = attrs.field(factory=lambda: SeqFile(_SEQ_BUF_SIZE))
    pos: object = None            # the walk's position (_Walk.start when the file is made)
    seq_num: int = 0
    done_stop: bool = False
    pending: bytes = b""          # produced but not yet read (seq->count from seq->from)

    def __attrs_post_init__(self) -> None:
        walk = _WALKS.get(self.link.target)
        if self.pos is None and walk is not None:
            self.pos = walk.start

    def file_release(self, file) -> None:
        self.prog.put()

    # ---- seq_operations: start/next/show/stop over the target's walk ----
    def _next(self):
        found = _WALKS[self.link.target].step(self.kern, self.link, self.pos)
        if found is None:
            return None
        self.pos = found[0]
        return found[1]

    def _show(self, obj, in_stop: bool = False) -> int:
        """__bpf_*_seq_show(): run the program on (meta, obj); -EAGAIN when it returns 1."""
        if in_stop and self.done_stop:
            return 0
        images = ObjectImages(self.kern, btf_index(self.kern.btf_vmlinux))
        try:
            seq_addr = self.kern.mem.map_object(self.seq)
            meta = images.image("bpf_iter_meta", {"seq": seq_addr, "session_id": self.session_id,
                                                   "seq_num": self.seq_num})
            ctx = images.ctx([meta, *_WALKS[self.link.target].args(images, self.link, obj)])
            ret = bpf_prog_run(self.kern, self.prog, ctx) & 0xFFFFFFFF
        finally:
            images.unmap()
        return 0 if ret == 0 else -Errno.EAGAIN

    def read(self, size: int) -> bytes:
        """bpf_seq_read(): up to `size` bytes; b"" at the end; KernelError on E2BIG/EAGAIN."""
        if self.link.target not in _WALKS:
            raise KernelError(Errno.EOPNOTSUPP, f"iterator {self.link.target!r} is not modelled")
        if self.pending:
            out, self.pending = self.pending[:size], self.pending[size:]
            return out
        seq = self.seq
        seq.reset()
        obj = self._next()
        if obj is not None:
            err = self._show(obj)
            if err < 0 or seq.overflowed:
                raise KernelError(-err if err else Errno.E2BIG, "the first object did not fit")
            num_objs = 0
            while True:
                num_objs += 1
                offs = len(seq.buf)
                obj = self._next()
                if obj is None:
                    break
                self.seq_num += 1
                if len(seq.buf) >= size or num_objs >= MAX_ITER_OBJECTS:
                    self._rewind(obj)
                    break
                err = self._show(obj)
                if err < 0 or seq.overflowed:
                    seq.truncate(offs)
                    if offs == 0:
                        raise KernelError(-err if err else Errno.E2BIG, "object did not fit")
                    self._rewind(obj)
                    break
        if obj is None:
            offs = len(seq.buf)
            self._show(None, in_stop=True)
            if not seq.overflowed:
                self.done_stop = True
            else:
                seq.truncate(offs)
                if offs == 0:
                    raise KernelError(Errno.E2BIG, "the final output did not fit")
        data = bytes(seq.buf)
        self.pending = data[size:]
        return data[:size]

    def _rewind(self, obj) -> None:
        """The next read starts again at `obj` (start() finds the current object again)."""
        self.pos = _WALKS[self.link.target].rewind(obj)


def bpf_iter_new_fd(kern, task, link) -> int:
    """bpf_iter_new_fd(): EINVAL for a link that is not an iterator's; an O_RDONLY fd."""
    if not isinstance(link, BpfIterLink):
        raise KernelError(Errno.EINVAL, "not an iterator link")
    kern.bpf_iter_session_id += 1
    it = BpfIterFile(kern=kern, link=link, prog=link.prog.get(), session_id=kern.bpf_iter_session_id)
    return task.files.install(File(kind=ITER_FILE_KIND, private_data=it,
                                   f_flags=O_RDONLY | O_CLOEXEC))
