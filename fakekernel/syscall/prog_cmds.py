"""BPF_PROG_LOAD and BPF_PROG_TEST_RUN — kernel/bpf/syscall.c: bpf_prog_load(), bpf_prog_test_run()."""
from __future__ import annotations

from fakekernel.bpf.prog import BpfProg, BpfProgAux
from fakekernel.bpf_types import PROG_TYPES
from fakekernel.errors import Errno, KernelError
from fakekernel.maps.prog_array import bpf_check_tail_call
from fakekernel.syscall import fdget
from fakekernel.syscall.command import bpf_command
from uapi.bpf import BPF_F_TOKEN_FD, AttachType, BpfCmd, ProgLoadFlags, ProgType
from uapi.capability import Cap
from uapi.ffi import ffi

__all__ = ["bpf_prog_load", "bpf_prog_test_run", "bpf_obj_name_cpy", "license_is_gpl_compatible"]

BPF_MAXINSNS = 4096                     # include/uapi/linux/bpf_common.h
BPF_COMPLEXITY_LIMIT_INSNS = 1_000_000  # include/linux/bpf.h
BTF_MAX_TYPE = 0xFFFFF
_LICENSE_LEN = 128
_INSN_SIZE = ffi.sizeof("struct bpf_insn")

_PROG_LOAD_FLAGS = (ProgLoadFlags.STRICT_ALIGNMENT | ProgLoadFlags.ANY_ALIGNMENT
                    | ProgLoadFlags.TEST_STATE_FREQ | ProgLoadFlags.SLEEPABLE
                    | ProgLoadFlags.TEST_RND_HI32 | ProgLoadFlags.XDP_HAS_FRAGS
                    | ProgLoadFlags.XDP_DEV_BOUND_ONLY | ProgLoadFlags.TEST_REG_INVARIANTS
                    | BPF_F_TOKEN_FD)

_GPL_COMPATIBLE = {b"GPL", b"GPL v2", b"GPL and additional rights", b"Dual BSD/GPL",
                   b"Dual MIT/GPL", b"Dual MPL/GPL"}

_NET_ADMIN_TYPES = frozenset({
    ProgType.SCHED_CLS, ProgType.SCHED_ACT, ProgType.XDP, ProgType.LWT_IN, ProgType.LWT_OUT,
    ProgType.LWT_XMIT, ProgType.LWT_SEG6LOCAL, ProgType.SK_SKB, ProgType.SK_MSG,
    ProgType.FLOW_DISSECTOR, ProgType.CGROUP_DEVICE, ProgType.CGROUP_SOCK,
    ProgType.CGROUP_SOCK_ADDR, ProgType.CGROUP_SOCKOPT, ProgType.CGROUP_SYSCTL,
    ProgType.SOCK_OPS, ProgType.EXT, ProgType.NETFILTER})
_PERFMON_TYPES = frozenset({
    ProgType.KPROBE, ProgType.TRACEPOINT, ProgType.PERF_EVENT, ProgType.RAW_TRACEPOINT,
    ProgType.RAW_TRACEPOINT_WRITABLE, ProgType.TRACING, ProgType.LSM,
    ProgType.STRUCT_OPS, ProgType.EXT})

# bpf_prog_load_check_attach(): prog types whose expected_attach_type is constrained
_EXPECTED_ATTACH = {
    ProgType.CGROUP_SOCK: {AttachType.CGROUP_INET_SOCK_CREATE, AttachType.CGROUP_INET_SOCK_RELEASE,
                           AttachType.CGROUP_INET4_POST_BIND, AttachType.CGROUP_INET6_POST_BIND},
    ProgType.CGROUP_SOCK_ADDR: {
        AttachType.CGROUP_INET4_BIND, AttachType.CGROUP_INET6_BIND,
        AttachType.CGROUP_INET4_CONNECT, AttachType.CGROUP_INET6_CONNECT,
        AttachType.CGROUP_UNIX_CONNECT, AttachType.CGROUP_INET4_GETPEERNAME,
        AttachType.CGROUP_INET6_GETPEERNAME, AttachType.CGROUP_UNIX_GETPEERNAME,
        AttachType.CGROUP_INET4_GETSOCKNAME, AttachType.CGROUP_INET6_GETSOCKNAME,
        AttachType.CGROUP_UNIX_GETSOCKNAME, AttachType.CGROUP_UDP4_SENDMSG,
        AttachType.CGROUP_UDP6_SENDMSG, AttachType.CGROUP_UNIX_SENDMSG,
        AttachType.CGROUP_UDP4_RECVMSG, AttachType.CGROUP_UDP6_RECVMSG,
        AttachType.CGROUP_UNIX_RECVMSG},
    ProgType.CGROUP_SKB: {AttachType.CGROUP_INET_INGRESS, AttachType.CGROUP_INET_EGRESS},
    ProgType.CGROUP_SOCKOPT: {AttachType.CGROUP_SETSOCKOPT, AttachType.CGROUP_GETSOCKOPT},
    ProgType.SK_LOOKUP: {AttachType.SK_LOOKUP},
    ProgType.SK_REUSEPORT: {AttachType.SK_REUSEPORT_SELECT,
                            AttachType.SK_REUSEPORT_SELECT_OR_MIGRATE},
    ProgType.NETFILTER: {AttachType.NETFILTER},
}
_BTF_ATTACH_TYPES = frozenset({ProgType.TRACING, ProgType.LSM, ProgType.STRUCT_OPS, ProgType.EXT})


def bpf_obj_name_cpy(raw: bytes) -> bytes:
    """bpf_obj_name_cpy(): [A-Za-z0-9_.]* NUL-terminated within the 16 bytes, else EINVAL."""
    name = bytearray()
    for b in raw:
        if b == 0:
            return bytes(name)
        if not (chr(b).isascii() and (chr(b).isalnum() or b in b"_.")):
            raise KernelError(Errno.EINVAL, "invalid character in object name")
        name.append(b)
    raise KernelError(Errno.EINVAL, "object name is not NUL-terminated")


def license_is_gpl_compatible(lic: bytes) -> bool:
    return lic in _GPL_COMPATIBLE


def _fixup_attach_type(attr) -> int:
    """bpf_prog_load_fixup_attach_type()."""
    eat = attr.expected_attach_type
    if attr.prog_type == ProgType.CGROUP_SOCK and not eat:
        return AttachType.CGROUP_INET_SOCK_CREATE
    if attr.prog_type == ProgType.SK_REUSEPORT and not eat:
        return AttachType.SK_REUSEPORT_SELECT
    return eat


def _check_attach(prog_type: int, eat: int, attach_btf: bool, btf_id: int, dst_prog) -> None:
    """bpf_prog_load_check_attach()."""
    if btf_id:
        if btf_id > BTF_MAX_TYPE or (not attach_btf and dst_prog is None) \
                or prog_type not in _BTF_ATTACH_TYPES:
            raise KernelError(Errno.EINVAL, "attach_btf_id not allowed here")
    if attach_btf and (not btf_id or dst_prog is not None):
        raise KernelError(Errno.EINVAL, "attach btf without btf id")
    if dst_prog is not None and prog_type not in (ProgType.TRACING, ProgType.EXT):
        raise KernelError(Errno.EINVAL, "attach_prog_fd for a non-tracing prog")
    allowed = _EXPECTED_ATTACH.get(prog_type)
    if allowed is not None and eat not in allowed:
        raise KernelError(Errno.EINVAL, "expected_attach_type does not fit the prog type")
    if prog_type in (ProgType.SYSCALL, ProgType.EXT) and eat:
        raise KernelError(Errno.EINVAL, "expected_attach_type must be 0")


def _kernel_btf_get_by_fd(task, fd: int):
    """attach_btf_obj_fd: btf_get_by_fd() (EINVAL when it is not a BTF), and only kernel BTF
    (ENOTSUPP for a program's BTF).  Kernel BTF objects live as long as the kernel: no ref."""
    from fakekernel.btf import BTF_FILE_KIND
    try:
        f = task.files.fdget(fd)
    except KernelError:
        raise KernelError(Errno.EINVAL, "attach_prog_fd is neither a prog nor a BTF") from None
    if f.kind != BTF_FILE_KIND:
        raise KernelError(Errno.EINVAL, "attach_prog_fd is neither a prog nor a BTF")
    if not f.private_data.kernel_btf:
        raise KernelError(Errno.ENOTSUPP, "attach through a program's BTF object")
    return f.private_data


def _token_fd(task, attr) -> None:
    """bpf_token_get_from_fd(): no tokens exist in this kernel, so every fd is wrong."""
    fdget_file = task.files.fdget(attr.prog_token_fd)     # EBADF
    if fdget_file.kind != "bpf-token":
        raise KernelError(Errno.EINVAL, "not a BPF token")


@bpf_command(BpfCmd.PROG_LOAD, last_field="keyring_id")
def bpf_prog_load(kern, task, attr, ctx) -> int:
    """kernel/bpf/syscall.c: bpf_prog_load().  Returns the new prog fd."""
    from fakekernel.verifier import bpf_check

    prog_type = attr.prog_type
    if attr.prog_flags & ~int(_PROG_LOAD_FLAGS):
        raise KernelError(Errno.EINVAL, "unknown prog_flags")
    eat = _fixup_attach_type(attr)
    if attr.prog_flags & BPF_F_TOKEN_FD:
        _token_fd(task, attr)
    bpf_cap = task.bpf_capable()
    if kern.sysctl("kernel.unprivileged_bpf_disabled") and not bpf_cap:
        raise KernelError(Errno.EPERM, "unprivileged BPF is disabled")
    limit = BPF_COMPLEXITY_LIMIT_INSNS if bpf_cap else BPF_MAXINSNS
    if attr.insn_cnt == 0 or attr.insn_cnt > limit:
        raise KernelError(Errno.E2BIG, "insn_cnt out of range")
    if prog_type not in (ProgType.SOCKET_FILTER, ProgType.CGROUP_SKB) and not bpf_cap:
        raise KernelError(Errno.EPERM, "prog type needs CAP_BPF")
    if prog_type in _NET_ADMIN_TYPES and not task.net_admin_capable():
        raise KernelError(Errno.EPERM, "prog type needs CAP_NET_ADMIN")
    if prog_type in _PERFMON_TYPES and not task.perfmon_capable():
        raise KernelError(Errno.EPERM, "prog type needs CAP_PERFMON")

    dst_prog = None
    attach_btf = None
    if attr.attach_prog_fd:
        try:
            dst_prog = fdget.bpf_prog_get(task, attr.attach_prog_fd)
        except KernelError:
            attach_btf = _kernel_btf_get_by_fd(task, attr.attach_btf_obj_fd)
    elif attr.attach_btf_id:
        # fall back to the vmlinux BTF (bpf_get_btf_vmlinux()); EINVAL on a kernel without BTF
        attach_btf = kern.btf_vmlinux
        if attach_btf is None:
            raise KernelError(Errno.EINVAL, "the kernel has no BTF")
    _check_attach(prog_type, eat, attach_btf is not None, attr.attach_btf_id, dst_prog)

    # copy the program and its license from user memory (EFAULT)
    insns = task.mm.copy_from_user(attr.insns, attr.insn_cnt * _INSN_SIZE)
    lic = task.mm.strncpy_from_user(attr.license, _LICENSE_LEN - 1)

    # find_prog_type()
    typedef = PROG_TYPES.get(prog_type)
    if typedef is None:
        raise KernelError(Errno.EINVAL, f"prog type {prog_type} is not supported")
    aux = BpfProgAux(load_time=kern.ktime_get_boottime_ns(), uid=task.creds.uid,
                     attach_btf_id=attr.attach_btf_id,
                     sleepable=bool(attr.prog_flags & ProgLoadFlags.SLEEPABLE),
                     xdp_has_frags=bool(attr.prog_flags & ProgLoadFlags.XDP_HAS_FRAGS),
                     ifindex=attr.prog_ifindex, attach_btf=attach_btf, dst_prog=dst_prog)
    aux.name = bpf_obj_name_cpy(bytes(ffi.buffer(attr.prog_name)))
    prog = BpfProg(kern=kern, type=prog_type, expected_attach_type=eat, insns=insns,
                   orig_insns=insns, len=attr.insn_cnt,
                   gpl_compatible=license_is_gpl_compatible(lic), aux=aux, ops=typedef,
                   prog_flags=attr.prog_flags)
    try:
        bpf_check(kern, task, prog, attr, ctx)
        bpf_check_tail_call(prog)      # bpf_prog_select_runtime(): prog arrays' owner rule
    except BaseException:
        prog._free_used_maps()
        raise
    prog.aux.id = kern.prog_idr.alloc_cyclic(prog)
    return fdget.bpf_prog_new_fd(kern, task, prog)


@bpf_command(BpfCmd.PROG_TEST_RUN, last_field="test.batch_size")
def bpf_prog_test_run(kern, task, attr, ctx) -> int:
    """kernel/bpf/syscall.c: bpf_prog_test_run()."""
    t = attr.test
    if bool(t.ctx_size_in) != bool(t.ctx_in) or bool(t.ctx_size_out) != bool(t.ctx_out):
        raise KernelError(Errno.EINVAL, "ctx buffer and size must come together")
    prog = fdget.bpf_prog_get(task, t.prog_fd)
    run = prog.ops.prog_ops.test_run
    if run is None:
        raise KernelError(Errno.ENOTSUPP, "this prog type cannot be test-run")
    prog.get()
    try:
        return run(kern, task, prog, attr, ctx)
    finally:
        prog.put()
