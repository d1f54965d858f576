"""Unit tests: LINK_UPDATE / LINK_DETACH / LINK_GET_* / RAW_TRACEPOINT_OPEN (syscall/link_cmds.py)
and PROG_BIND_MAP / ENABLE_STATS (syscall/prog_aux_cmds.py) on a fresh Kernel."""
from __future__ import annotations

from fakekernel import Kernel
from fakekernel.errors import Errno
from fakekernel.task import Creds
from uapi import calls
from uapi.bpf import AttachFlags, AttachType, BpfCmd, MapType, ProgType
from uapi.capability import Cap
from uapi.insn import BPF_EXIT_INSN, BPF_MOV64_IMM, assemble_insns

LO = 1


def load(k, ptype=ProgType.XDP, ret=2):
    return calls.prog_load(k, ptype, assemble_insns([BPF_MOV64_IMM(0, ret), BPF_EXIT_INSN()]))


def xdp_link(k, prog):
    return calls.raw(k, BpfCmd.LINK_CREATE, None, link_create__prog_fd=prog,
                     link_create__target_fd=LO, link_create__attach_type=AttachType.XDP)[0]


def test_link_update_replace_swaps_prog_and_refs(kernel):
    p1, p2 = load(kernel), load(kernel, ret=1)
    lk = xdp_link(kernel, p1)
    link = kernel.current.files.fdget(lk).private_data
    prog2 = kernel.current.files.fdget(p2).private_data
    assert calls.raw(kernel, BpfCmd.LINK_UPDATE, None, link_update__link_fd=lk,
                     link_update__new_prog_fd=p2, link_update__flags=AttachFlags.REPLACE,
                     link_update__old_prog_fd=p2)[0] == -Errno.EPERM
    assert prog2.refcnt == 1                       # nothing taken on the error path
    assert calls.raw(kernel, BpfCmd.LINK_UPDATE, None, link_update__link_fd=lk,
                     link_update__new_prog_fd=p2, link_update__flags=AttachFlags.REPLACE,
                     link_update__old_prog_fd=p1)[0] == 0
    assert link.prog is prog2 and prog2.refcnt == 2
    for fd in (lk, p1, p2):
        kernel.close(fd)


def test_link_detach_keeps_fd_and_id(kernel):
    p = load(kernel)
    lk = xdp_link(kernel, p)
    lid = calls.obj_get_info_by_fd(kernel, lk, "link")[0].id
    assert calls.raw(kernel, BpfCmd.LINK_DETACH, None, link_detach__link_fd=lk)[0] == 0
    info = calls.obj_get_info_by_fd(kernel, lk, "link")[0]
    assert (info.id, info.xdp.ifindex) == (lid, 0)
    f = calls.raw(kernel, BpfCmd.LINK_GET_FD_BY_ID, None, link_id=lid)[0]
    assert f >= 0
    for fd in (f, lk, p):
        kernel.close(fd)
    assert calls.raw(kernel, BpfCmd.LINK_GET_FD_BY_ID, None, link_id=lid)[0] == -Errno.ENOENT


def test_link_get_fd_by_id_no_sys_admin_eperm():
    k = Kernel(creds=Creds(caps=frozenset({Cap.BPF, Cap.NET_ADMIN})), vmlinux_btf=None)
    assert calls.raw(k, BpfCmd.LINK_GET_FD_BY_ID, None, link_id=1)[0] == -Errno.EPERM
    assert calls.raw(k, BpfCmd.LINK_GET_NEXT_ID, None, start_id=0)[0] == -Errno.EPERM
    assert calls.raw(k, BpfCmd.ENABLE_STATS, None, enable_stats__type=0)[0] == -Errno.EPERM


def test_raw_tracepoint_open_xdp_prog_einval(kernel):
    p = load(kernel)
    assert calls.raw(kernel, BpfCmd.RAW_TRACEPOINT_OPEN, None,
                     raw_tracepoint__prog_fd=p)[0] == -Errno.EINVAL
    kernel.close(p)


def test_prog_bind_map_once_and_ref(kernel):
    m = calls.map_create(kernel, MapType.ARRAY, 4, 8, 1)
    p = load(kernel)
    bpf_map = kernel.current.files.fdget(m).private_data
    prog = kernel.current.files.fdget(p).private_data
    for _ in range(2):
        assert calls.raw(kernel, BpfCmd.PROG_BIND_MAP, None, prog_bind_map__prog_fd=p,
                         prog_bind_map__map_fd=m)[0] == 0
    assert prog.aux.used_maps == [bpf_map] and bpf_map.refcnt == 2
    kernel.close(m)
    assert bpf_map.refcnt == 1
    kernel.close(p)
    assert bpf_map.refcnt == 0


def test_enable_stats_counts_only_while_held(kernel):
    p = load(kernel)
    prog = kernel.current.files.fdget(p).private_data
    calls.prog_test_run(kernel, p, bytes(64))
    assert prog.aux.run_cnt == 0
    s = calls.raw(kernel, BpfCmd.ENABLE_STATS, None, enable_stats__type=0)[0]
    assert s >= 0 and kernel.bpf_stats_enabled_key == 1
    calls.prog_test_run(kernel, p, bytes(64), repeat=2)
    assert prog.aux.run_cnt == 2
    kernel.close(s)
    assert kernel.bpf_stats_enabled_key == 0
    calls.prog_test_run(kernel, p, bytes(64))
    assert prog.aux.run_cnt == 2
    kernel.close(p)
