"""fakekernel/maps/prog_array.py and map_in_map.py — references held and released, through Kernel.bpf."""
from __future__ import annotations

from uapi import calls
from uapi.bpf import BpfCmd, MapType, ProgType
from uapi.calls import raw
from uapi.errno import Errno
from uapi.insn import BPF_EXIT_INSN, BPF_MOV64_IMM, assemble_insns


def _obj(kern, fd):
    return kern.current.files.fdget(fd).private_data


def _prog(kern, prog_type=ProgType.SCHED_CLS):
    return calls.prog_load(kern, prog_type, assemble_insns([BPF_MOV64_IMM(0, 1), BPF_EXIT_INSN()]))


def test_prog_array_holds_and_drops_prog_refs(kernel):
    pa = calls.map_create(kernel, MapType.PROG_ARRAY, 4, 4, 2)
    p = _prog(kernel)
    prog = _obj(kernel, p)
    calls.map_update_elem(kernel, pa, (0).to_bytes(4, "little"), p.to_bytes(4, "little"))
    assert prog.refcnt == 2
    calls.map_update_elem(kernel, pa, (0).to_bytes(4, "little"), p.to_bytes(4, "little"))   # replace: same count
    assert prog.refcnt == 2
    kernel.close(p)
    assert not prog.freed and _obj(kernel, pa).owner.type == ProgType.SCHED_CLS
    kernel.close(pa)                       # last uref: the array empties itself, the prog goes
    assert prog.freed


def test_prog_array_value_must_be_a_prog_fd(kernel):
    pa = calls.map_create(kernel, MapType.PROG_ARRAY, 4, 4, 2)
    ret, _ = raw(kernel, BpfCmd.MAP_UPDATE_ELEM, "flags", map_fd=pa, key=bytes(4), value=pa.to_bytes(4, "little"))
    assert ret == -Errno.EINVAL
    ret, _ = raw(kernel, BpfCmd.MAP_UPDATE_ELEM, "flags", map_fd=pa, key=bytes(4), value=(2**32 - 1).to_bytes(4, "little"))
    assert ret == -Errno.EBADF
    kernel.close(pa)


def test_map_in_map_refs(kernel):
    for outer_type in (MapType.ARRAY_OF_MAPS, MapType.HASH_OF_MAPS):
        tmpl = calls.map_create(kernel, MapType.ARRAY, 4, 8, 4)
        outer = calls.map_create(kernel, outer_type, 4, 4, 4, inner_map_fd=tmpl)
        inner = _obj(kernel, tmpl)
        assert inner.refcnt == 1                     # the template is not kept
        calls.map_update_elem(kernel, outer, bytes(4), tmpl.to_bytes(4, "little"))
        assert (inner.refcnt, inner.usercnt) == (2, 1)
        calls.map_delete_elem(kernel, outer, bytes(4))
        assert inner.refcnt == 1
        calls.map_update_elem(kernel, outer, (1).to_bytes(4, "little"), tmpl.to_bytes(4, "little"))
        kernel.close(tmpl)
        assert not inner.freed
        kernel.close(outer)
        assert inner.freed
