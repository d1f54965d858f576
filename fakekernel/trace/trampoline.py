"""BPF trampolines and tracing links — kernel/bpf/trampoline.c (bpf_trampoline_link_prog,
bpf_trampoline_unlink_prog, the BPF_TRAMP_* kinds) and kernel/bpf/syscall.c
(bpf_tracing_prog_attach, bpf_tracing_link_lops, the TRACING/LSM/EXT branch of
bpf_raw_tp_link_attach).

A trampoline is keyed by its target (a kernel function of a BTF object, or a function of a
BPF program) and holds the fentry, fexit and fmod_ret programs linked to it, or the one
extension (freplace) program replacing it.  `call_traced` plays one call of a simulated
kernel function through its trampoline: fentry programs see the arguments, fmod_ret
programs may make the function return early with their value, fexit programs also see the
return value.  The simulated kernel calls it from `kern.world.trace.call` (any vmlinux
function, next to its kprobes), from the test runs of bpf_fentry_test* / bpf_modify_return_test,
and from its LSM hooks (`fakekernel.security`).  (Extension programs are linked and reported
but the interpreter does not redirect the target's subprogram to them.)
"""
from __future__ import annotations

import attrs

from fakekernel.bpf.core import bpf_prog_run
from fakekernel.bpf.link import BpfLink
from fakekernel.bpf.link_primer import bpf_link_prime
from fakekernel.errors import Errno, KernelError
from uapi.bpf import AttachType, LinkType, ProgType

__all__ = ["Trampoline", "TracingLink", "bpf_tracing_prog_attach", "bpf_tracing_raw_tp_attach",
           "call_traced", "call_traced_runs", "BPF_MAX_TRAMP_LINKS", "trampolines"]

BPF_MAX_TRAMP_LINKS = 38             # include/linux/bpf.h (x86_64)
_U64_MASK = (1 << 64) - 1
# enum bpf_tramp_prog_type
TRAMP_FENTRY, TRAMP_FEXIT, TRAMP_MODIFY_RETURN, TRAMP_REPLACE = range(4)


@attrs.define(eq=False)
class Trampoline:
    """struct bpf_trampoline: the programs per kind, or the extension."""

    key: tuple
    progs: dict = attrs.field(factory=lambda: {TRAMP_FENTRY: [], TRAMP_FEXIT: [],
                                               TRAMP_MODIFY_RETURN: []})
    extension: object = None         # the TracingLink of an EXT program

    def count(self) -> int:
        return sum(len(v) for v in self.progs.values())


def trampolines(kern) -> dict:
    """key -> Trampoline (the kernel's trampoline_table)."""
    tr = kern.world.trace
    table = getattr(tr, "trampolines", None)
    if table is None:
        table = tr.trampolines = {}
    return table


def _tramp_kind(prog) -> int:
    """bpf_attach_type_to_tramp()."""
    eat = prog.expected_attach_type
    if prog.type == ProgType.EXT:
        return TRAMP_REPLACE
    if eat == AttachType.TRACE_FENTRY:
        return TRAMP_FENTRY
    if eat == AttachType.MODIFY_RETURN:
        return TRAMP_MODIFY_RETURN
    if eat == AttachType.LSM_MAC:
        tgt = prog.aux.attach_target
        proto = tgt.btf.type_by_id(tgt.proto_id) if tgt is not None and tgt.proto_id else None
        return TRAMP_MODIFY_RETURN if proto is not None and proto.type else TRAMP_FEXIT
    return TRAMP_FEXIT


def _link_prog(tr: Trampoline, link) -> None:
    """bpf_trampoline_link_prog(): EBUSY around extensions and for a prog linked twice."""
    kind = _tramp_kind(link.prog)
    if tr.extension is not None:
        raise KernelError(Errno.EBUSY, "an extension replaces this function")
    if kind == TRAMP_REPLACE:
        if tr.count():
            raise KernelError(Errno.EBUSY, "fentry/fexit programs are attached here")
        tr.extension = link
        return
    if tr.count() >= BPF_MAX_TRAMP_LINKS:
        raise KernelError(Errno.E2BIG, "too many programs on this trampoline")
    if any(lk.prog is link.prog for lk in tr.progs[kind]):
        raise KernelError(Errno.EBUSY, "the program is linked here already")
    tr.progs[kind].append(link)


def _unlink_prog(kern, tr: Trampoline, link) -> None:
    if tr.extension is link:
        tr.extension = None
    for links in tr.progs.values():
        if link in links:
            links.remove(link)
    if tr.extension is None and not tr.count():
        trampolines(kern).pop(tr.key, None)


@attrs.define(eq=False)
class TracingLink(BpfLink):
    """struct bpf_tracing_link."""

    trampoline: Trampoline | None = None
    tgt_prog: object = None
    target_obj_id: int = 0
    target_btf_id: int = 0
    cookie: int = 0

    def release(self) -> None:
        """bpf_tracing_link_release(): unlink from the trampoline, drop the target prog."""
        if self.trampoline is not None:
            _unlink_prog(self.kern, self.trampoline, self)
            self.trampoline = None
        if self.tgt_prog is not None:
            self.tgt_prog.put()
            self.tgt_prog = None

    def detach(self) -> None:
        self.release()

    def fill_link_info(self, info, task) -> None:
        """bpf_tracing_link_fill_link_info()."""
        info.tracing.attach_type = self.attach_type
        info.tracing.target_obj_id = self.target_obj_id
        info.tracing.target_btf_id = self.target_btf_id
        info.tracing.cookie = self.cookie


class _NoLog:
    """A verifier env stand-in for bpf_check_attach_target() at attach time (no log)."""

    def __init__(self, kern):
        self.kern = kern

    def verbose(self, text) -> None:
        pass


def bpf_tracing_prog_attach(kern, task, prog, tgt_prog_fd: int, btf_id: int, cookie: int) -> int:
    """bpf_tracing_prog_attach(): a TRACING link on the trampoline of the load-time target
    (or, for EXT, of a new target program + btf id).  Returns the link fd."""
    from fakekernel.syscall import fdget
    from fakekernel.verifier.attach_btf import bpf_check_attach_target
    from fakekernel.verifier.env import VerifierError
    eat = prog.expected_attach_type
    ok = {ProgType.TRACING: eat in (AttachType.TRACE_FENTRY, AttachType.TRACE_FEXIT,
                                    AttachType.MODIFY_RETURN),
          ProgType.EXT: eat == 0 or prog.aux.attach_target is not None,
          ProgType.LSM: eat == AttachType.LSM_MAC}.get(prog.type, False)
    if not ok:
        raise KernelError(Errno.EINVAL, "this program has no trampoline attach")
    if bool(tgt_prog_fd) != bool(btf_id):
        raise KernelError(Errno.EINVAL, "target_fd and target_btf_id go together")
    tgt_prog = None
    tgt = prog.aux.attach_target
    if tgt_prog_fd:
        if prog.type != ProgType.EXT:
            raise KernelError(Errno.EINVAL, "only extensions may pick a new target")
        tgt_prog = fdget.bpf_prog_get(task, tgt_prog_fd)
        if tgt is None or tgt.tgt_prog is not tgt_prog or tgt.btf_id != btf_id:
            try:
                tgt = bpf_check_attach_target(_NoLog(kern), prog, tgt_prog, btf_id)
            except VerifierError as e:
                raise KernelError(e.errno, "the new target does not fit") from None
        key = (("prog", tgt_prog.aux.id), btf_id)
        obj_id = tgt_prog.aux.id
    else:
        consumed = getattr(prog.aux, "attach_consumed", False)
        if tgt is None or (consumed and (prog.type not in (ProgType.TRACING, ProgType.LSM)
                                         or tgt.tgt_prog is not None)):
            raise KernelError(Errno.EINVAL, "the load-time target is gone")
        if tgt.tgt_prog is not None:
            tgt_prog = tgt.tgt_prog
            key = (("prog", tgt_prog.aux.id), tgt.btf_id)
            obj_id = tgt_prog.aux.id
        else:
            btf = prog.aux.attach_btf
            key = (("btf", btf.id), tgt.btf_id)
            obj_id = btf.id
    link = TracingLink(kern=kern, type=LinkType.TRACING, attach_type=eat, prog=prog,
                       target_obj_id=obj_id, target_btf_id=key[1], cookie=cookie)
    primer = bpf_link_prime(link)
    table = trampolines(kern)
    tr = table.get(key)
    created = tr is None
    if created:
        tr = table[key] = Trampoline(key=key)
    try:
        _link_prog(tr, link)
    except KernelError:
        if created:
            table.pop(key, None)
        primer.cleanup()
        raise
    link.trampoline = tr
    if tgt_prog is not None:
        link.tgt_prog = tgt_prog.get()
    prog.aux.attach_consumed = True          # prog->aux->dst_prog / dst_trampoline cleared
    return primer.settle(task)


def bpf_tracing_raw_tp_attach(kern, task, prog, user_tp_name: int, cookie: int) -> int:
    """bpf_raw_tp_link_attach() for TRACING/EXT/LSM: the attach point comes from the load
    (EINVAL with a name); tp_btf programs get a raw tracepoint link on their tracepoint."""
    from fakekernel.trace.raw_tp import RawTpLink
    if user_tp_name:
        raise KernelError(Errno.EINVAL, "BTF-attached programs take no tracepoint name")
    if prog.type == ProgType.TRACING and prog.expected_attach_type == AttachType.TRACE_RAW_TP:
        raw = kern.world.trace.raw_tp
        btp = raw.bpf_get_raw_tracepoint(prog.aux.attach_target.name.decode())
        if btp is None:
            raise KernelError(Errno.ENOENT, "no such tracepoint")
        link = RawTpLink(kern=kern, type=LinkType.RAW_TRACEPOINT, attach_type=0, prog=prog,
                         btp=btp, cookie=cookie)
        primer = bpf_link_prime(link)
        try:
            raw.bpf_probe_register(btp, link)
        except KernelError:
            primer.cleanup()
            raise
        return primer.settle(task)
    return bpf_tracing_prog_attach(kern, task, prog, 0, 0, 0)


def _run(kern, prog, ctx_args: list[int]) -> int:
    from fakekernel.btf_objects import ObjectImages
    images = ObjectImages(kern, None)
    try:
        return bpf_prog_run(kern, prog, images.ctx(ctx_args)) & _U64_MASK
    finally:
        images.unmap()


def call_traced(kern, key: tuple, args: list[int], impl) -> int:
    """One call of a traced function: fentry progs, fmod_ret progs (a non-zero return skips
    the function and becomes its return value), the function, then fexit progs."""
    return call_traced_runs(kern, key, args, impl)[0]


def call_traced_runs(kern, key: tuple, args: list[int], impl) -> tuple[int, int]:
    """call_traced() and the number of program runs it made."""
    tr = trampolines(kern).get(key)
    if tr is None:
        return impl(), 0
    args = [a & _U64_MASK for a in args]
    runs = 0
    for link in list(tr.progs[TRAMP_FENTRY]):
        _run(kern, link.prog, args)
        runs += 1
    ret = None
    for link in list(tr.progs[TRAMP_MODIFY_RETURN]):
        r = _run(kern, link.prog, args + [0])
        runs += 1
        if r & 0xFFFFFFFF:
            ret = r
            break
    if ret is None:
        ret = impl()
    for link in list(tr.progs[TRAMP_FEXIT]):
        _run(kern, link.prog, args + [ret & _U64_MASK])
        runs += 1
    return ret, runs
