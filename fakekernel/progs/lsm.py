"""BPF_PROG_TYPE_LSM — kernel/bpf/bpf_lsm.c (lsm_verifier_ops, bpf_lsm_func_proto,
bpf_lsm_verify_prog, bpf_lsm_is_sleepable_hook).

An LSM program attaches to a ``bpf_lsm_<hook>`` function of the kernel's BTF.  The kernel's
hook set (bpf_lsm_hooks) is every LSM_HOOK of lsm_hook_defs.h; here it is every
``bpf_lsm_*`` FUNC of the vmlinux BTF except the few helper functions of bpf_lsm.c itself.
The ctx is the tracing one (u64 arguments, return value after them).
"""
from __future__ import annotations

from fakekernel.bpf.ops import VerifierOps
from fakekernel.btf_vmlinux import BPF_LSM_PREFIX
from fakekernel.helpers.trace import bpf_tracing_func_proto
from fakekernel.progs.tracing import TRACING_CTX_SIZE, tracing_prog_is_valid_access
from uapi.bpf import FuncId

__all__ = ["VERIFIER_OPS", "bpf_lsm_verify_prog", "bpf_lsm_is_sleepable_hook", "is_lsm_hook"]

MAX_ERRNO = 4095
# bpf_lsm.c's own functions that carry the prefix but are not hooks
_NOT_HOOKS = frozenset(BPF_LSM_PREFIX + n for n in (
    b"find_cgroup_shim", b"func_proto", b"get_retval_range", b"has_d_inode_locked",
    b"hook_returns_errno", b"is_sleepable_hook", b"is_trusted", b"verify_prog", b"init"))
# bpf_lsm_disabled_hooks: hooks whose calling convention BPF cannot honour
_DISABLED_HOOKS = frozenset(BPF_LSM_PREFIX + n for n in (
    b"vm_enough_memory", b"inode_need_killpriv", b"inode_getsecurity", b"inode_listsecurity",
    b"inode_copy_up_xattr", b"getselfattr", b"getprocattr", b"setprocattr", b"key_getsecurity",
    b"audit_rule_match", b"xfrm_decode_session", b"ismaclabel"))
# sleepable_lsm_hooks
_SLEEPABLE_HOOKS = frozenset(BPF_LSM_PREFIX + n for n in (
    b"bpf bpf_map bpf_map_create bpf_map_free bpf_prog bpf_prog_load bpf_token_create "
    b"bpf_token_free bpf_token_cmd bpf_token_capable bprm_check_security bprm_committed_creds "
    b"bprm_committing_creds bprm_creds_for_exec bprm_creds_from_file capget capset cred_prepare "
    b"file_ioctl file_lock file_open file_post_open file_receive inode_create "
    b"inode_free_security inode_getattr inode_getxattr inode_mknod inode_need_killpriv "
    b"inode_post_setxattr inode_readlink inode_rename inode_rmdir inode_setattr inode_setxattr "
    b"inode_symlink inode_unlink kernel_module_request kernel_read_file kernfs_init_security "
    b"path_unlink path_mkdir path_rmdir path_truncate path_symlink path_link path_rename "
    b"path_chmod path_chown mmap_file netlink_send path_notify release_secctx "
    b"sb_alloc_security sb_eat_lsm_opts sb_kern_mount sb_mount sb_remount sb_set_mnt_opts "
    b"sb_show_options sb_statfs sb_umount settime socket_accept socket_bind socket_connect "
    b"socket_create socket_getpeername socket_getpeersec_dgram socket_getsockname "
    b"socket_getsockopt socket_listen socket_post_create socket_recvmsg socket_sendmsg "
    b"socket_shutdown socket_socketpair syslog task_alloc current_getsecid_subj "
    b"task_getsecid_obj task_prctl task_setscheduler userns_create").split())


def is_lsm_hook(name: bytes) -> bool:
    return name.startswith(BPF_LSM_PREFIX) and name not in _NOT_HOOKS


def bpf_lsm_is_sleepable_hook(name: bytes) -> bool:
    return name in _SLEEPABLE_HOOKS


def bpf_lsm_verify_prog(prog, tgt) -> str:
    """bpf_lsm_verify_prog(): '' if the program may attach, else the verifier log line."""
    if not prog.gpl_compatible:
        return "LSM programs must have a GPL compatible license\n"
    name = tgt.name.decode(errors="replace")
    if tgt.name in _DISABLED_HOOKS:
        return f"attach_btf_id {tgt.btf_id} points to disabled hook {name}\n"
    if not is_lsm_hook(tgt.name):
        return f"attach_btf_id {tgt.btf_id} points to wrong type name {name}\n"
    return ""


def bpf_lsm_func_proto(func_id: int, prog):
    if func_id in (FuncId.get_func_arg, FuncId.get_func_ret, FuncId.get_func_arg_cnt):
        from fakekernel.helpers.func_args import trampoline_func_proto     # tracing_prog_func_proto()
        return trampoline_func_proto(func_id, prog)
    return bpf_tracing_func_proto(func_id, prog)


def lsm_ret_range(prog) -> tuple[int, int] | None:
    """check_return_code() for LSM: void hooks any value; int hooks an errno or 0
    (bpf_lsm_get_retval_range(); the few bool hooks [0, 1] are not told apart here)."""
    tgt = prog.aux.attach_target
    if tgt is None or not tgt.proto_id or not tgt.btf.type_by_id(tgt.proto_id).type:
        return None
    return -MAX_ERRNO, 0


VERIFIER_OPS = VerifierOps(get_func_proto=bpf_lsm_func_proto,
                           is_valid_access=tracing_prog_is_valid_access,
                           ctx_size=TRACING_CTX_SIZE, kctx_size=TRACING_CTX_SIZE,
                           get_ret_range=lsm_ret_range)
