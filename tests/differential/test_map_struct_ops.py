"""BPF_MAP_TYPE_STRUCT_OPS against the real kernel: creation (value types from the kernel's
BTF, a user BTF fd, key 4 / one entry / flags), the element commands of an unregistered map,
and the update walk over the value up to what needs a STRUCT_OPS program."""
from __future__ import annotations

import functools

import pytest

from btfutil import BtfWriter, btf_load
from uapi import calls
from uapi.asm import assemble
from uapi.bpf import BpfCmd, MapFlags, MapType, ProgType
from uapi.btf import BtfKind, decode_btf
from uapi.errno import Errno

pytestmark = pytest.mark.differential

VMLINUX = "/sys/kernel/btf/vmlinux"


@functools.lru_cache(maxsize=1)
def _vmlinux_types():
    with open(VMLINUX, "rb") as f:
        return decode_btf(f.read())


def _struct(name):
    """(id, size, {member: byte offset}) of a struct in the running kernel's BTF."""
    for t in _vmlinux_types()[1:]:
        if t.kind == BtfKind.STRUCT and t.name == name:
            return t.id, t.size, {m.name: m.bit_offset // 8 for m in t.members}
    pytest.skip(f"struct {name} not in this kernel's BTF")


def tcp():
    return _struct("bpf_struct_ops_tcp_congestion_ops")


def dummy():
    return _struct("bpf_struct_ops_bpf_dummy_ops")


def _btf_fd(b):
    w = BtfWriter()
    w.int_("int", 4)
    return btf_load(b, w.blob()).ret


def create(b, vt, *, btf_fd=None, key_size=4, value_size=None, max_entries=1, flags=0, vid=None, **kw):
    own = btf_fd is None
    if own:
        btf_fd = _btf_fd(b)
    ret, _ = calls.raw(b, BpfCmd.MAP_CREATE, "map_extra", map_type=MapType.STRUCT_OPS, key_size=key_size,
                       value_size=vt[1] if value_size is None else value_size, max_entries=max_entries,
                       map_flags=flags, btf_fd=btf_fd,
                       btf_vmlinux_value_type_id=vt[0] if vid is None else vid, **kw)
    if own:
        b.close(btf_fd)
    return ret


CREATE_CASES = {
    "tcp": dict(), "dummy": dict(which="dummy"), "link": dict(flags=MapFlags.LINK),
    "wrong_value_size": dict(value_size=248), "key8": dict(key_size=8), "two_entries": dict(max_entries=2),
    "no_vid": dict(vid=0), "vid_not_struct_ops": dict(vid_plus=1), "vid_generic_value": dict(vid_name="bpf_struct_ops_value"),
    "rdonly": dict(flags=MapFlags.RDONLY), "rdonly_prog": dict(flags=MapFlags.RDONLY_PROG),
    "numa": dict(flags=MapFlags.NUMA_NODE), "mmapable": dict(flags=MapFlags.MMAPABLE),
    "vtype_btf_obj_fd": dict(flags=MapFlags.VTYPE_BTF_OBJ_FD), "btf_key_type": dict(btf_key_type_id=1),
    "btf_fd_bad": dict(btf_fd=9999), "btf_fd_stdin": dict(btf_fd=0), "map_extra": dict(map_extra=1),
    "wrong_size_and_unknown": dict(vid_plus=1, value_size=8),
}


@pytest.mark.parametrize("case", CREATE_CASES.values(), ids=CREATE_CASES.keys())
def test_map_create_struct_ops_matrix(both, case):
    case = dict(case)
    vt = dummy() if case.pop("which", None) == "dummy" else tcp()
    if "vid_plus" in case:
        case["vid"] = vt[0] + case.pop("vid_plus")
    if "vid_name" in case:
        case["vid"] = _struct(case.pop("vid_name"))[0]

    def scenario(b):
        fd = create(b, vt, **case)
        if fd >= 0:
            b.close(fd)
            return "ok"
        return fd
    fake, host = both
    assert scenario(fake) == scenario(host)


def test_map_info_struct_ops(both):
    vt = tcp()

    def scenario(b):
        fd = create(b, vt, flags=MapFlags.LINK)
        info, _ = calls.obj_get_info_by_fd(b, fd, "map")
        out = (info.type, info.key_size, info.value_size, info.max_entries, info.map_flags,
               info.btf_vmlinux_value_type_id, info.btf_key_type_id, info.btf_value_type_id,
               info.btf_vmlinux_id)
        b.close(fd)
        return out
    fake, host = both
    assert scenario(fake) == scenario(host)


@pytest.mark.parametrize("flags", [0, MapFlags.LINK], ids=["plain", "link"])
def test_map_elem_cmds_struct_ops_unregistered(both, flags):
    vt = tcp()

    def scenario(b):
        fd = create(b, vt, flags=flags)
        out = []
        for key in (0, 1):
            k, v, nk = bytearray(key.to_bytes(4, "little")), bytearray(b"\xaa" * vt[1]), bytearray(b"\xff" * 4)
            out.append((calls.raw(b, BpfCmd.MAP_LOOKUP_ELEM, "flags", map_fd=fd, key=k, value=v)[0], bytes(v)))
            out.append(calls.raw(b, BpfCmd.MAP_DELETE_ELEM, "key", map_fd=fd, key=k)[0])
            out.append((calls.raw(b, BpfCmd.MAP_GET_NEXT_KEY, "next_key", map_fd=fd, key=k, next_key=nk)[0],
                        bytes(nk)))
        nk = bytearray(b"\xff" * 4)
        out.append((calls.raw(b, BpfCmd.MAP_GET_NEXT_KEY, "next_key", map_fd=fd, next_key=nk)[0], bytes(nk)))
        v = bytearray(vt[1])
        k = bytearray(4)
        out.append(calls.raw(b, BpfCmd.MAP_LOOKUP_ELEM, "flags", map_fd=fd, key=k, value=v, flags=4)[0])
        out.append(calls.raw(b, BpfCmd.MAP_LOOKUP_AND_DELETE_ELEM, "flags", map_fd=fd, key=k, value=v)[0])
        out.append(calls.raw(b, BpfCmd.MAP_FREEZE, "map_fd", map_fd=fd)[0])
        b.close(fd)
        return out
    fake, host = both
    res = scenario(fake)
    assert res == scenario(host)
    assert res[0] == (0, bytes(vt[1]))


def _tcp_value(**fields):
    """A struct bpf_struct_ops_tcp_congestion_ops with some fields set (name/flags/owner/key/ssthresh...)."""
    vid, size, outer = tcp()
    data_off = outer["data"]
    _, _, inner = _struct("tcp_congestion_ops")
    v = bytearray(size)
    for name, val in fields.items():
        if name == "common_state":
            v[4:8] = val.to_bytes(4, "little")
        elif name == "common_refcnt":
            v[0:4] = val.to_bytes(4, "little")
        elif name == "pad":
            v[16] = val                     # between common (8 bytes) and data (64)
        elif name == "tail":
            v[-1] = val                     # ____cacheline_aligned padding after the ops struct
        elif name == "name":
            off = data_off + inner["name"]
            v[off:off + len(val)] = val
        else:
            width = 4 if name in ("flags", "key") else 8
            off = data_off + inner[name]
            v[off:off + width] = (val & (2**(8 * width) - 1)).to_bytes(width, "little")
    return v


UPDATE_CASES = {
    "zero": dict(), "named": dict(name=b"fk_ca"), "bad_name": dict(name=b"fk-ca"),
    "flags_ok": dict(name=b"fk_ca", flags=1), "flags_bad": dict(name=b"fk_ca", flags=4),
    "key_nonzero": dict(name=b"fk_ca", key=1), "state": dict(name=b"fk_ca", common_state=1),
    "refcnt": dict(name=b"fk_ca", common_refcnt=1), "pad": dict(name=b"fk_ca", pad=1),
    "owner_set": dict(name=b"fk_ca", owner=1), "prog_fd_bad": dict(name=b"fk_ca", ssthresh=9999),
    "prog_fd_map": dict(ssthresh="MAP"), "prog_fd_not_struct_ops": dict(ssthresh="PROG"),
    "prog_fd_negative": dict(ssthresh=-1), "prog_fd_high_bits": dict(name=b"fk_ca", ssthresh=1 << 32),
}


@pytest.mark.parametrize("case", UPDATE_CASES.values(), ids=UPDATE_CASES.keys())
def test_map_update_struct_ops_tcp(both, case):
    vt = tcp()

    def scenario(b):
        fd = create(b, vt)
        prog = calls.prog_load(b, ProgType.SOCKET_FILTER, assemble("r0 = 0\nexit"))
        fields = {k: (fd if v == "MAP" else prog if v == "PROG" else v) for k, v in case.items()}
        k = bytearray(4)
        ret, _ = calls.raw(b, BpfCmd.MAP_UPDATE_ELEM, "flags", map_fd=fd, key=k, value=_tcp_value(**fields))
        v = bytearray(vt[1])
        after = calls.raw(b, BpfCmd.MAP_LOOKUP_ELEM, "flags", map_fd=fd, key=k, value=v)[0], bytes(v)
        b.close(prog)
        b.close(fd)
        return ret, after
    fake, host = both
    assert scenario(fake) == scenario(host)


@pytest.mark.parametrize("key,flags", [(0, 0), (1, 0), (0, 1), (1, 1)])
def test_map_update_struct_ops_key_and_flags(both, key, flags):
    vt = tcp()

    def scenario(b):
        fd = create(b, vt)
        ret, _ = calls.raw(b, BpfCmd.MAP_UPDATE_ELEM, "flags", map_fd=fd, key=bytearray(key.to_bytes(4, "little")),
                           value=_tcp_value(name=b"fk_ca"), flags=flags)
        b.close(fd)
        return ret
    fake, host = both
    assert scenario(fake) == scenario(host)


def test_map_update_struct_ops_dummy_eopnotsupp(both):
    vt = dummy()

    def scenario(b):
        fd = create(b, vt)
        ret, _ = calls.raw(b, BpfCmd.MAP_UPDATE_ELEM, "flags", map_fd=fd, key=bytearray(4), value=bytearray(vt[1]))
        b.close(fd)
        return ret
    fake, host = both
    assert scenario(fake) == scenario(host) == -Errno.EOPNOTSUPP


# ---- STRUCT_OPS programs and registration (tcp_congestion_ops) ----

def _ops_struct():
    return _struct("tcp_congestion_ops")


def _member_index(name):
    """The member's index in struct tcp_congestion_ops (= the prog's expected_attach_type)."""
    for t in _vmlinux_types()[1:]:
        if t.kind == BtfKind.STRUCT and t.name == "tcp_congestion_ops":
            return [m.name for m in t.members].index(name)
    raise LookupError(name)


def _load_st_ops(b, member, *, btf_id=None, license="GPL"):
    res = calls.prog_load(b, ProgType.STRUCT_OPS, assemble("r0 = 0\nexit"), license=license,
                          expected_attach_type=_member_index(member) if isinstance(member, str) else member,
                          attach_btf_id=_ops_struct()[0] if btf_id is None else btf_id, strict=False,
                          log_level=1, log_size=1 << 16)
    if res.ret >= 0:
        return res.ret
    return res.ret, [ln for ln in res.log.splitlines() if ln and not ln.startswith("processed")][-1:]


LOAD_CASES = {
    "ssthresh": dict(member="ssthresh"), "release": dict(member="release"),
    "get_info_unsupported": dict(member="get_info"), "name_not_func": dict(member="name"),
    "idx_out_of_range": dict(member=40), "not_gpl": dict(member="ssthresh", license="Dual MIT/GPL-NOT"),
    "not_struct_ops_type": dict(member=0, btf_id=1),
}


@pytest.mark.parametrize("case", LOAD_CASES.values(), ids=LOAD_CASES.keys())
def test_prog_load_struct_ops_tcp_members(both, case):
    def scenario(b):
        r = _load_st_ops(b, **case)
        if isinstance(r, int):
            b.close(r)
            return "ok"
        return r
    fake, host = both
    assert scenario(fake) == scenario(host)


def _decode(b, value, prog_ids):
    """(refcnt, state, name, {member: prog label}) of a struct_ops value read back."""
    _, _, outer = tcp()
    _, _, inner = _ops_struct()
    data = outer["data"]
    refcnt, state = int.from_bytes(value[0:4], "little"), int.from_bytes(value[4:8], "little")
    name = bytes(value[data + inner["name"]:data + inner["name"] + 16]).split(b"\0")[0]
    slots = {}
    for m in ("ssthresh", "cong_avoid", "undo_cwnd", "init"):
        v = int.from_bytes(value[data + inner[m]:data + inner[m] + 8], "little")
        slots[m] = prog_ids.get(v, v)
    return refcnt, state, name, slots


def test_map_update_struct_ops_registers_tcp_ca(both):
    """Programs in the slots register a congestion control (EBUSY again, EEXIST for its name
    in another map, ENOENT/EINVAL on the way); delete unregisters it."""
    ca = b"fk_ca_diff"

    def scenario(b):
        out = []
        progs = {m: _load_st_ops(b, m) for m in ("ssthresh", "cong_avoid", "undo_cwnd", "init")}
        ids = {calls.obj_get_info_by_fd(b, fd, "prog")[0].id: m for m, fd in progs.items()}
        m1, m2, m3 = create(b, tcp()), create(b, tcp()), create(b, tcp(), flags=MapFlags.LINK)
        k = bytearray(4)

        def update(m, **f):
            v = _tcp_value(name=ca, **{x: progs[y] if isinstance(y, str) else y for x, y in f.items()})
            return calls.raw(b, BpfCmd.MAP_UPDATE_ELEM, "flags", map_fd=m, key=k, value=v)[0]

        def lookup(m):
            v = bytearray(tcp()[1])
            ret = calls.raw(b, BpfCmd.MAP_LOOKUP_ELEM, "flags", map_fd=m, key=k, value=v)[0]
            return ret, _decode(b, v, ids)

        def delete(m):
            return calls.raw(b, BpfCmd.MAP_DELETE_ELEM, "key", map_fd=m, key=k)[0]

        out.append(update(m1, ssthresh="ssthresh"))                                   # validate: EINVAL
        out.append(update(m1, ssthresh="cong_avoid", cong_avoid="cong_avoid", undo_cwnd="undo_cwnd"))
        out.append(update(m1, ssthresh="ssthresh", cong_avoid="cong_avoid", undo_cwnd="undo_cwnd",
                          init="init"))
        out.append(lookup(m1))
        out.append(update(m1, ssthresh="ssthresh", cong_avoid="cong_avoid", undo_cwnd="undo_cwnd"))
        out.append(update(m2, ssthresh="ssthresh", cong_avoid="cong_avoid", undo_cwnd="undo_cwnd"))
        out.append(lookup(m2))
        out.append(update(m3, ssthresh="ssthresh", cong_avoid="cong_avoid", undo_cwnd="undo_cwnd"))
        out.append(lookup(m3))
        out.append(delete(m3))
        out.append(delete(m1))
        out.append(lookup(m1)[0])
        out.append(delete(m1))
        out.append(update(m2, ssthresh="ssthresh", cong_avoid="cong_avoid", undo_cwnd="undo_cwnd"))
        out.append(lookup(m2))
        out.append(delete(m2))
        for fd in (m3, m2, m1, *progs.values()):
            b.close(fd)
        return out
    fake, host = both
    res = scenario(fake)
    assert res == scenario(host)
    assert res[2] == 0


def test_prog_test_run_struct_ops_tcp_eopnotsupp(both):
    def scenario(b):
        fd = _load_st_ops(b, "ssthresh")
        ret = calls.prog_test_run(b, fd, bytes(64), strict=False).ret
        info, _ = calls.obj_get_info_by_fd(b, fd, "prog")
        b.close(fd)
        return ret, info.type, info.attach_btf_id, info.attach_btf_obj_id
    fake, host = both
    assert scenario(fake) == scenario(host)


def test_link_create_struct_ops_registers_and_detaches(both):
    """BPF_F_LINK maps: READY after the update, registered by LINK_CREATE (EEXIST twice, EINVAL
    for maps that are not READY link maps), unregistered by LINK_DETACH (idempotent)."""
    from uapi.bpf import AttachType
    ca = b"fk_ca_link"

    def lc(b, map_fd):
        return calls.raw(b, BpfCmd.LINK_CREATE, None, size=64, link_create__prog_fd=map_fd,
                         link_create__attach_type=AttachType.STRUCT_OPS)[0]

    def scenario(b):
        out = []
        progs = [_load_st_ops(b, m) for m in ("ssthresh", "cong_avoid", "undo_cwnd")]
        m_link, m_empty, m_plain = (create(b, tcp(), flags=MapFlags.LINK), create(b, tcp(), flags=MapFlags.LINK),
                                    create(b, tcp()))
        arr = calls.map_create(b, MapType.ARRAY, 4, 4, 1)
        k = bytearray(4)
        value = _tcp_value(name=ca, ssthresh=progs[0], cong_avoid=progs[1], undo_cwnd=progs[2])
        out.append(calls.raw(b, BpfCmd.MAP_UPDATE_ELEM, "flags", map_fd=m_link, key=k, value=value)[0])
        out += [lc(b, m_empty), lc(b, m_plain), lc(b, arr), lc(b, progs[0]), lc(b, 9999)]
        link = lc(b, m_link)
        out.append(link >= 0)
        out.append(lc(b, m_link))                                        # the name is taken
        out.append(calls.raw(b, BpfCmd.MAP_UPDATE_ELEM, "flags", map_fd=m_plain, key=k, value=value)[0])
        map_id = calls.obj_get_info_by_fd(b, m_link, "map")[0].id
        info = calls.obj_get_info_by_fd(b, link, "link")[0]
        out.append((info.type, info.prog_id, info.struct_ops.map_id == map_id))
        v = bytearray(tcp()[1])
        calls.raw(b, BpfCmd.MAP_LOOKUP_ELEM, "flags", map_fd=m_link, key=k, value=v)
        out.append(bytes(v[:8]))
        out.append(calls.raw(b, BpfCmd.LINK_DETACH, "link_detach.link_fd", link_detach__link_fd=link)[0])
        out.append(calls.obj_get_info_by_fd(b, link, "link")[0].struct_ops.map_id)
        out.append(calls.raw(b, BpfCmd.LINK_DETACH, "link_detach.link_fd", link_detach__link_fd=link)[0])
        out.append(calls.raw(b, BpfCmd.MAP_UPDATE_ELEM, "flags", map_fd=m_plain, key=k, value=value)[0])
        out.append(calls.raw(b, BpfCmd.MAP_DELETE_ELEM, "key", map_fd=m_plain, key=k)[0])
        link2 = lc(b, m_link)                                            # attached again, then closed
        out.append(link2 >= 0)
        b.close(link2)
        out.append(calls.raw(b, BpfCmd.MAP_UPDATE_ELEM, "flags", map_fd=m_plain, key=k,
                             value=_tcp_value(name=ca, ssthresh=progs[0], cong_avoid=progs[1],
                                              undo_cwnd=progs[2]))[0])
        out.append(calls.raw(b, BpfCmd.MAP_DELETE_ELEM, "key", map_fd=m_plain, key=k)[0])
        for fd in (link, arr, m_plain, m_empty, m_link, *progs):
            b.close(fd)
        return out
    fake, host = both
    res = scenario(fake)
    assert res == scenario(host)
    assert res[6] is True
