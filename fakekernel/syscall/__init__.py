"""The bpf() syscall — kernel/bpf/syscall.c: __sys_bpf().

`sys_bpf` is the only syscall-level entry: the attr size rules (E2BIG), the copy from
user memory (EFAULT), then one handler per command from the explicit `COMMANDS` table
(unknown command: EINVAL).  Handlers raise `KernelError`; only here does it become -errno.
"""
from __future__ import annotations

import attrs

from fakekernel.errors import Errno, KernelError
from fakekernel.security import security_bpf
from fakekernel.syscall import attach_cmds, btf_cmds, link_cmds, map_batch, map_cmds, obj_cmds, prog_cmds
from fakekernel.syscall import iter_cmds, prog_aux_cmds, prog_stream, task_fd_query, token_cmds
from fakekernel.syscall.command import ATTR_SIZE
from uapi.bpf import BpfCmd
from uapi.ffi import ffi

__all__ = ["sys_bpf", "COMMANDS", "SyscallCtx", "PAGE_SIZE"]

PAGE_SIZE = 4096

COMMANDS = {
    BpfCmd.MAP_CREATE: map_cmds.map_create,
    BpfCmd.MAP_LOOKUP_ELEM: map_cmds.map_lookup_elem,
    BpfCmd.MAP_UPDATE_ELEM: map_cmds.map_update_elem,
    BpfCmd.MAP_DELETE_ELEM: map_cmds.map_delete_elem,
    BpfCmd.MAP_GET_NEXT_KEY: map_cmds.map_get_next_key,
    BpfCmd.MAP_LOOKUP_AND_DELETE_ELEM: map_cmds.map_lookup_and_delete_elem,
    BpfCmd.MAP_FREEZE: map_cmds.map_freeze,
    BpfCmd.MAP_LOOKUP_BATCH: map_batch.map_lookup_batch,
    BpfCmd.MAP_LOOKUP_AND_DELETE_BATCH: map_batch.map_lookup_and_delete_batch,
    BpfCmd.MAP_UPDATE_BATCH: map_batch.map_update_batch,
    BpfCmd.MAP_DELETE_BATCH: map_batch.map_delete_batch,
    BpfCmd.PROG_LOAD: prog_cmds.bpf_prog_load,
    BpfCmd.PROG_TEST_RUN: prog_cmds.bpf_prog_test_run,
    BpfCmd.OBJ_PIN: obj_cmds.bpf_obj_pin,
    BpfCmd.OBJ_GET: obj_cmds.bpf_obj_get,
    BpfCmd.PROG_GET_NEXT_ID: obj_cmds.bpf_prog_get_next_id,
    BpfCmd.MAP_GET_NEXT_ID: obj_cmds.bpf_map_get_next_id,
    BpfCmd.PROG_GET_FD_BY_ID: obj_cmds.bpf_prog_get_fd_by_id,
    BpfCmd.MAP_GET_FD_BY_ID: obj_cmds.bpf_map_get_fd_by_id,
    BpfCmd.OBJ_GET_INFO_BY_FD: obj_cmds.bpf_obj_get_info_by_fd,
    BpfCmd.PROG_ATTACH: attach_cmds.bpf_prog_attach,
    BpfCmd.PROG_DETACH: attach_cmds.bpf_prog_detach,
    BpfCmd.PROG_QUERY: attach_cmds.bpf_prog_query,
    BpfCmd.LINK_CREATE: link_cmds.link_create,
    BpfCmd.LINK_UPDATE: link_cmds.link_update,
    BpfCmd.LINK_DETACH: link_cmds.link_detach,
    BpfCmd.LINK_GET_FD_BY_ID: link_cmds.bpf_link_get_fd_by_id,
    BpfCmd.LINK_GET_NEXT_ID: link_cmds.bpf_link_get_next_id,
    BpfCmd.RAW_TRACEPOINT_OPEN: link_cmds.bpf_raw_tracepoint_open,
    BpfCmd.PROG_BIND_MAP: prog_aux_cmds.bpf_prog_bind_map,
    BpfCmd.ENABLE_STATS: prog_aux_cmds.bpf_enable_stats,
    BpfCmd.BTF_LOAD: btf_cmds.bpf_btf_load,
    BpfCmd.BTF_GET_FD_BY_ID: btf_cmds.bpf_btf_get_fd_by_id,
    BpfCmd.BTF_GET_NEXT_ID: btf_cmds.bpf_btf_get_next_id,
    BpfCmd.ITER_CREATE: iter_cmds.bpf_iter_create,
    BpfCmd.TASK_FD_QUERY: task_fd_query.bpf_task_fd_query,
    BpfCmd.PROG_STREAM_READ_BY_FD: prog_stream.prog_stream_read,
    BpfCmd.TOKEN_CREATE: token_cmds.token_create,
}


@attrs.define(eq=False)
class SyscallCtx:
    """What a handler knows about the call besides the decoded attr."""

    raw: bytes            # the zero-filled union bpf_attr as copied from the user
    uattr: int            # the user address of attr (for fields written back)
    size: int             # the size the user passed, capped at sizeof(union bpf_attr)
    task: object

    def put_attr_field(self, field: str, value: int) -> None:
        """put_user() of one scalar field of the user's attr (e.g. test.retval, next_id)."""
        off = ffi.offsetof("union bpf_attr", *field.split("."))
        t = ffi.typeof("union bpf_attr")
        for part in field.split("."):
            t = dict(t.fields)[part].type
        n = ffi.sizeof(t)
        self.task.mm.copy_to_user(self.uattr + off, int(value).to_bytes(n, "little"))


def sys_bpf(kern, task, cmd: int, uattr: int, size: int) -> int:
    try:
        # bpf_check_uarg_tail_zero()
        if size > PAGE_SIZE:
            raise KernelError(Errno.E2BIG, "attr size larger than a page")
        if size > ATTR_SIZE and not task.mm.check_zeroed_user(uattr + ATTR_SIZE, size - ATTR_SIZE):
            raise KernelError(Errno.E2BIG, "non-zero bytes past the known union bpf_attr")
        size = min(size, ATTR_SIZE)
        raw = task.mm.copy_from_user(uattr, size) + bytes(ATTR_SIZE - size)
        err = security_bpf(kern, cmd, raw, size)
        if err < 0:
            raise KernelError(-err, "an LSM program refused the command")
        handler = COMMANDS.get(cmd)
        if handler is None:
            raise KernelError(Errno.EINVAL, f"unknown command {cmd}")
        attr = ffi.new("union bpf_attr *")
        ffi.memmove(attr, raw, ATTR_SIZE)
        ret = handler(kern, task, attr, SyscallCtx(raw, uattr, size, task))
    except KernelError as e:
        ret = -e.errno
    for hook in kern.syscall_hooks:
        hook(cmd, uattr, size, ret)
    return ret
