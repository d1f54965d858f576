"""The attach target of BTF-attached programs — kernel/bpf/verifier.c: check_attach_btf_id() and
bpf_check_attach_target(), with kernel/bpf/bpf_lsm.c bpf_lsm_verify_prog() for LSM.

TRACING (fentry/fexit/fmod_ret, tp_btf, iter), LSM and EXT programs name what they attach to
by a BTF id: of the kernel's BTF (vmlinux, or a kernel BTF given by attach_btf_obj_fd) or, with
attach_prog_fd, of the target program's own BTF.  The result — the function's name, prototype
and argument model — is stored as ``prog.aux.attach_target`` (the kernel's attach_func_name,
attach_func_proto and the trampoline's btf_func_model) for ctx access checks and attaching.
"""
from __future__ import annotations

import attrs

from fakekernel.btf_env import BTF_KIND_STR
from fakekernel.btf_vmlinux import BTF_TRACE_PREFIX, BtfIndex, FuncModel, btf_index
from fakekernel.verifier.env import VerifierError
from uapi.btf import BtfKind
from uapi.bpf import AttachType, ProgType
from uapi.errno import Errno
from uapi.ffi import ffi

__all__ = ["AttachTarget", "check_attach_btf_id", "bpf_check_attach_target", "BTF_ID_DENY",
           "NORETURN_DENY"]

_FUNC_INFO_SIZE = ffi.sizeof("struct bpf_func_info")
_RET_SIZE_MAX = ffi.sizeof("__u64")
_BPF_TRACE_TEMPLATE_PREFIX = b"__bpf_trace_"
BTF_FUNC_GLOBAL = 1                 # enum btf_func_linkage
_HAS_SIZE = frozenset({BtfKind.INT, BtfKind.STRUCT, BtfKind.UNION, BtfKind.ENUM, BtfKind.ENUM64,
                       BtfKind.DATASEC, BtfKind.FLOAT})

# btf_id_deny: functions the trampoline itself calls (x86_64 SMP, PREEMPT_RCU off on 6.18)
BTF_ID_DENY = frozenset({b"migrate_disable", b"migrate_enable", b"rcu_read_unlock_strict",
                         b"preempt_count_add", b"preempt_count_sub"})
# noreturn_deny: fexit/fmod_ret make no sense on __noreturn functions
NORETURN_DENY = frozenset({b"__ia32_sys_exit", b"__ia32_sys_exit_group", b"__x64_sys_exit",
                           b"__x64_sys_exit_group", b"__module_put_and_kthread_exit", b"do_exit",
                           b"do_group_exit", b"kthread_complete_and_exit", b"kthread_exit",
                           b"make_task_dead"})
# btf_non_sleepable_error_inject + the ALLOW_ERROR_INJECTION list is approximated by the
# kernel's naming: sleepable fentry/fexit are accepted on syscalls (__x64_sys_*) and
# functions marked for error injection that the catalog knows
_NON_SLEEPABLE_ERROR_INJECT = frozenset({b"__filemap_add_folio", b"should_fail_alloc_page",
                                         b"should_failslab"})
_ERROR_INJECTION_PREFIXES = (b"__x64_sys_", b"__ia32_sys_", b"__se_sys_")
# register_btf_fmodret_id_set() of net/bpf/test_run.c: name -> sleepable (KF_SLEEPABLE)
_FMODRET_IDS = {b"bpf_modify_return_test": False, b"bpf_modify_return_test2": False,
                b"bpf_modify_return_test_tp": False, b"bpf_fentry_test1": True}
_SECURITY_PREFIX = b"security_"
_TRAMPOLINE_TYPES = (AttachType.TRACE_FENTRY, AttachType.TRACE_FEXIT, AttachType.MODIFY_RETURN,
                     AttachType.LSM_MAC, AttachType.LSM_CGROUP)


@attrs.frozen
class AttachTarget:
    """struct bpf_attach_target_info + aux->attach_func_name/attach_func_proto/attach_btf_trace."""

    btf: BtfIndex
    btf_id: int
    name: bytes                  # tname (for tp_btf: without the btf_trace_ prefix)
    proto_id: int                # the FUNC_PROTO describing the ctx (0: conservative, 12 u64s)
    fmodel: FuncModel | None
    addr: int = 0
    btf_trace: bool = False      # tp_btf: the proto's first argument is the hidden __data
    tgt_prog: object = None
    subprog: int = -1


def _fail(env, errno: int, line: str | bytes = b"") -> VerifierError:
    if line:
        env.verbose(line.decode() if isinstance(line, bytes) else line)
    return VerifierError(errno, "attach target")


def _func_info_type_ids(tgt_prog) -> list[int]:
    raw = tgt_prog.aux.func_info or b""
    recs = ffi.from_buffer("struct bpf_func_info[]", bytearray(raw))
    return [recs[i].type_id for i in range(len(raw) // _FUNC_INFO_SIZE)]


def _kallsyms_addr(kern, name: bytes, nargs: int) -> int:
    """kallsyms_lookup_name(): every vmlinux BTF function is a kernel symbol."""
    ksyms = kern.world.trace.kallsyms
    f = ksyms.lookup_name(name.decode())
    if f is None:
        f = ksyms.add(name.decode(), nargs)
    return f.addr


def _raw_tp_proto(env, ix: BtfIndex, t, tname: bytes) -> int:
    """The FUNC_PROTO for tp_btf: the tracepoint template's __bpf_trace_<tp> function when the
    BTF has it, else the typedef's pointee (the kernel logs the fallback; it only happens when
    the template function is missing from BTF, which the template naming below can't tell
    apart from a template of another name — so no line is logged)."""
    fid = ix.find_by_name_kind(_BPF_TRACE_TEMPLATE_PREFIX + tname, BtfKind.FUNC)
    if fid > 0:
        return ix.type_by_id(fid).type
    ptr = ix.type_by_id(t.type)
    if ptr is None or ptr.kind != BtfKind.PTR:
        raise _fail(env, Errno.EINVAL)
    return ptr.type


def bpf_check_attach_target(env, prog, tgt_prog, btf_id: int) -> AttachTarget:
    """bpf_check_attach_target(): the checks in the kernel's order and with its log lines."""
    ext = prog.type == ProgType.EXT
    tracing = prog.type == ProgType.TRACING
    if not btf_id:
        raise _fail(env, Errno.EINVAL, "Tracing programs must provide btf_id\n")
    btf = tgt_prog.aux.btf if tgt_prog is not None else prog.aux.attach_btf
    if btf is None:
        raise _fail(env, Errno.EINVAL, "FENTRY/FEXIT program can only be attached to another "
                                       "program annotated with BTF\n")
    ix = btf_index(btf)
    t = ix.type_by_id(btf_id)
    if t is None:
        raise _fail(env, Errno.EINVAL, f"attach_btf_id {btf_id} is invalid\n")
    tname = ix.name_by_offset(t.name_off)
    subprog = -1
    conservative = True
    if tgt_prog is not None:
        ids = _func_info_type_ids(tgt_prog)
        if btf_id not in ids:
            raise _fail(env, Errno.EINVAL, b"Subprog %s doesn't exist\n" % tname)
        subprog = ids.index(btf_id)
        conservative = False
        if tracing:
            if getattr(tgt_prog.aux, "attach_tracing_prog", False):
                raise _fail(env, Errno.EINVAL, "Cannot nest tracing program attach more than once\n")
        elif tgt_prog.type == prog.type:
            raise _fail(env, Errno.EINVAL, "Cannot recursively attach\n")
        if tgt_prog.type == ProgType.TRACING and ext and tgt_prog.expected_attach_type in (
                AttachType.TRACE_FENTRY, AttachType.TRACE_FEXIT):
            raise _fail(env, Errno.EINVAL, "Cannot extend fentry/fexit\n")
    elif ext:
        raise _fail(env, Errno.EINVAL, "Cannot replace kernel functions\n")

    eat = prog.expected_attach_type
    if eat == AttachType.TRACE_RAW_TP and not ext:
        if tgt_prog is not None:
            raise _fail(env, Errno.EINVAL, "Only FENTRY/FEXIT progs are attachable to another BPF prog\n")
        if t.kind != BtfKind.TYPEDEF:
            raise _fail(env, Errno.EINVAL, f"attach_btf_id {btf_id} is not a typedef\n")
        if not tname.startswith(BTF_TRACE_PREFIX):
            raise _fail(env, Errno.EINVAL,
                        b"attach_btf_id %u points to wrong type name %s\n" % (btf_id, tname))
        tname = tname[len(BTF_TRACE_PREFIX):]
        proto_id = _raw_tp_proto(env, ix, t, tname)
        if ix.type_by_id(proto_id) is None or ix.type_by_id(proto_id).kind != BtfKind.FUNC_PROTO:
            raise _fail(env, Errno.EINVAL)
        return AttachTarget(ix, btf_id, tname, proto_id, None, btf_trace=True)
    if eat == AttachType.TRACE_ITER and not ext:
        if t.kind != BtfKind.FUNC:
            raise _fail(env, Errno.EINVAL, f"attach_btf_id {btf_id} is not a function\n")
        model = _distill(env, ix, t.type, tname)
        return AttachTarget(ix, btf_id, tname, t.type, model)
    if not ext and eat not in _TRAMPOLINE_TYPES:
        raise _fail(env, Errno.EINVAL)
    if t.kind != BtfKind.FUNC:
        raise _fail(env, Errno.EINVAL, f"attach_btf_id {btf_id} is not a function\n")
    if ext:
        _btf_check_type_match(env, prog, ix, t, tname)
    proto = ix.type_by_id(t.type)
    if proto is None or proto.kind != BtfKind.FUNC_PROTO:
        raise _fail(env, Errno.EINVAL)
    model = _distill(env, ix, None if (tgt_prog is not None and conservative) else t.type, tname)
    if model.ret_size > _RET_SIZE_MAX and eat in (AttachType.MODIFY_RETURN, AttachType.TRACE_FEXIT):
        raise _fail(env, Errno.EOPNOTSUPP,
                    b"Attach to function %s with a >8 byte return value is not supported for "
                    b"this attach type\n" % tname)
    addr = 0
    if tgt_prog is None:
        addr = _kallsyms_addr(env.kern, tname, model.nr_args)
    if prog.aux.sleepable:
        ok = False
        if prog.type == ProgType.TRACING:
            ok = (tname not in _NON_SLEEPABLE_ERROR_INJECT
                  and tname.startswith(_ERROR_INJECTION_PREFIXES)) or _FMODRET_IDS.get(tname, False)
        elif prog.type == ProgType.LSM:
            from fakekernel.progs.lsm import bpf_lsm_is_sleepable_hook
            ok = bpf_lsm_is_sleepable_hook(tname)
        if not ok:
            raise _fail(env, Errno.EINVAL, b"%s is not sleepable\n" % tname)
    elif eat == AttachType.MODIFY_RETURN:
        if tgt_prog is not None:
            raise _fail(env, Errno.EINVAL, "can't modify return codes of BPF programs\n")
        if not (tname in _FMODRET_IDS or tname.startswith(_ERROR_INJECTION_PREFIXES)
                or tname.startswith(_SECURITY_PREFIX)):
            raise _fail(env, Errno.EINVAL, b"%s() is not modifiable\n" % tname)
    return AttachTarget(ix, btf_id, tname, 0 if (tgt_prog is not None and conservative) else t.type,
                        model, addr=addr, tgt_prog=tgt_prog, subprog=subprog)


def _distill(env, ix: BtfIndex, proto_id: int | None, tname: bytes) -> FuncModel:
    if proto_id is None:
        return FuncModel(ret_size=_RET_SIZE_MAX, arg_size=(_RET_SIZE_MAX,) * 5)
    model = ix.distill_func_proto(proto_id, tname)
    if isinstance(model, bytes):
        raise _fail(env, Errno.EINVAL, model)
    return model


def _kind_str(t) -> bytes:
    return BTF_KIND_STR[t.kind] if t is not None else b"UNKNOWN"


def _btf_check_type_match(env, prog, ix2: BtfIndex, t2, fn2: bytes) -> None:
    """btf_check_type_match() + btf_check_func_type_match(): the extension's main function
    (its func_info[0]) against the target, scalars and pointers to context only."""
    ids = _func_info_type_ids(prog) if prog.aux.func_info else []
    if not ids:
        raise _fail(env, Errno.EINVAL, "Program extension requires BTF\n")
    ix1 = btf_index(prog.aux.btf)
    t1 = ix1.type_by_id(ids[0])
    if not ids[0] or t1 is None or t1.kind != BtfKind.FUNC:
        raise _fail(env, Errno.EFAULT)
    fn1 = ix1.name_by_offset(t1.name_off)
    for t, fn in ((t1, fn1), (t2, fn2)):
        if t.vlen != BTF_FUNC_GLOBAL:
            raise _fail(env, Errno.EINVAL, b"%s() is not a global function\n" % fn)
    p1, p2 = ix1.type_by_id(t1.type), ix2.type_by_id(t2.type)
    if p1 is None or p2 is None or p1.kind != BtfKind.FUNC_PROTO or p2.kind != BtfKind.FUNC_PROTO:
        raise _fail(env, Errno.EFAULT)
    a1, a2 = ix1.params(t1.type), ix2.params(t2.type)
    if len(a1) != len(a2):
        raise _fail(env, Errno.EINVAL, b"%s() has %d args while %s() has %d args\n"
                    % (fn1, len(a1), fn2, len(a2)))
    r1, r2 = ix1.skip_modifiers(p1.type)[0], ix2.skip_modifiers(p2.type)[0]
    if _info(r1) != _info(r2):
        raise _fail(env, Errno.EINVAL, b"Return type %s of %s() doesn't match type %s of %s()\n"
                    % (_kind_str(r1), fn1, _kind_str(r2), fn2))
    for i, ((_n1, id1), (_n2, id2)) in enumerate(zip(a1, a2)):
        k1, k2 = ix1.skip_modifiers(id1)[0], ix2.skip_modifiers(id2)[0]
        if _info(k1) != _info(k2):
            raise _fail(env, Errno.EINVAL, b"arg%d in %s() is %s while %s() has %s\n"
                        % (i, fn1, _kind_str(k1), fn2, _kind_str(k2)))
        if k1 is None:
            continue
        if k1.kind in _HAS_SIZE and k1.size != k2.size:
            raise _fail(env, Errno.EINVAL, b"arg%d in %s() has size %d while %s() has %d\n"
                        % (i, fn1, k1.size, fn2, k2.size))
        if k1.kind in (BtfKind.INT, BtfKind.ENUM, BtfKind.ENUM64):
            continue
        if k1.kind != BtfKind.PTR:
            raise _fail(env, Errno.EINVAL, b"arg%d in %s() has unrecognized type\n" % (i, fn1))
        s1, s2 = ix1.skip_modifiers(k1.type)[0], ix2.skip_modifiers(k2.type)[0]
        for s, fn in ((s1, fn1), (s2, fn2)):
            if s is None or s.kind not in (BtfKind.STRUCT, BtfKind.UNION):
                raise _fail(env, Errno.EINVAL, b"arg%d in %s() is not a pointer to context\n" % (i, fn))
        n1, n2 = ix1.name_by_offset(s1.name_off), ix2.name_by_offset(s2.name_off)
        if n1 != n2:
            raise _fail(env, Errno.EINVAL, b"arg%d %s(struct %s *) doesn't match %s(struct %s *)\n"
                        % (i, fn1, n1, fn2, n2))


def _info(t) -> int:
    return t.info if t is not None else 0


def _can_be_sleepable(prog) -> bool:
    if prog.type == ProgType.TRACING:
        return prog.expected_attach_type in (AttachType.TRACE_FENTRY, AttachType.TRACE_FEXIT,
                                             AttachType.MODIFY_RETURN, AttachType.TRACE_ITER)
    return prog.type in (ProgType.LSM, ProgType.KPROBE, ProgType.STRUCT_OPS)


def check_attach_btf_id(env) -> None:
    """check_attach_btf_id(): resolve the target of TRACING/LSM/EXT programs."""
    prog = env.prog
    # syscall programs must sleep; only some types may (kernel/bpf/verifier.c can_be_sleepable)
    if prog.type == ProgType.SYSCALL:
        if prog.aux.sleepable:
            return
        raise _fail(env, Errno.EINVAL, "Syscall programs can only be sleepable\n")
    if prog.aux.sleepable and not _can_be_sleepable(prog):
        raise _fail(env, Errno.EINVAL, "Only fentry/fexit/fmod_ret, lsm, iter, uprobe, and struct_ops "
                                       "programs can be sleepable\n")
    if prog.type == ProgType.STRUCT_OPS:
        from fakekernel.progs.struct_ops import check_struct_ops_btf_id
        check_struct_ops_btf_id(env)
        return
    if prog.type not in (ProgType.TRACING, ProgType.LSM, ProgType.EXT):
        return
    tgt_prog = prog.aux.dst_prog
    btf_id = prog.aux.attach_btf_id
    tgt = bpf_check_attach_target(env, prog, tgt_prog, btf_id)
    if tgt_prog is not None and prog.type == ProgType.EXT:
        # freplace programs verify as their target: its ops and expected_attach_type
        env.ops = tgt_prog.ops.verifier_ops if tgt_prog.ops is not None else env.ops
        prog.expected_attach_type = tgt_prog.expected_attach_type
    prog.aux.attach_target = tgt
    if tgt.btf_trace:
        return
    if prog.expected_attach_type == AttachType.TRACE_ITER and prog.type == ProgType.TRACING:
        from fakekernel.iter import bpf_iter_prog_supported
        if not bpf_iter_prog_supported(prog, tgt):
            raise _fail(env, Errno.EINVAL)
        return
    if prog.type == ProgType.LSM:
        from fakekernel.progs.lsm import bpf_lsm_verify_prog
        line = bpf_lsm_verify_prog(prog, tgt)
        if line:
            raise _fail(env, Errno.EINVAL, line)
    elif prog.type == ProgType.TRACING and tgt.name in BTF_ID_DENY:
        raise _fail(env, Errno.EINVAL)
    elif prog.expected_attach_type in (AttachType.TRACE_FEXIT, AttachType.MODIFY_RETURN) \
            and tgt.name in NORETURN_DENY:
        raise _fail(env, Errno.EINVAL, "Attaching fexit/fmod_ret to __noreturn functions is rejected.\n")
