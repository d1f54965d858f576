"""MAP_CREATE with btf_fd + btf_key_type_id / btf_value_type_id (map_check_btf and the
array / hash map_check_btf ops), fake vs the real kernel: the errno for each key/value type
choice, the ids shown in map info, and the map's reference on its BTF."""
from __future__ import annotations

from btfutil import BtfWriter, btf_load
from uapi import calls
from uapi.bpf import BpfCmd, MapType
from uapi.btf import BtfKind

A, PA, H, PH, LRU = (MapType.ARRAY, MapType.PERCPU_ARRAY, MapType.HASH, MapType.PERCPU_HASH,
                     MapType.LRU_HASH)


def types():
    w = BtfWriter()
    t = {}
    t["int"] = w.int_("int", 4, encoding=1)
    t["u64"] = w.int_("long long unsigned int", 8)
    t["u32t"] = w.typedef("u32", t["int"])
    t["val"] = w.struct("val", 8, [("a", t["int"], 0), ("b", t["int"], 32)])
    t["ptr"] = w.ptr(t["val"])
    t["arr"] = w.array(t["int"], t["int"], 2)
    t["proto"] = w.func_proto(0, [])
    t["func"] = w.func("f", t["proto"])
    t["fwd"] = w.fwd("fw")
    t["i16"] = w.int_("short4", 4, bits=16)
    t["var"] = w.var("x", t["int"])
    t["sec"] = w.datasec(".data", 4, [(t["var"], 0, 4)])
    t["cval"] = w.modifier(BtfKind.CONST, t["val"])
    t["enum"] = w.enum("e", 4, [("E0", 0)])
    t["i24"] = w.int_("i24", 4, bits=24, offset=8)
    t["u8"] = w.int_("unsigned char", 1)
    return w.blob(), t


def create(b, mt, ks, vs, n, btf_fd, kid, vid, **kw):
    return calls.raw(b, BpfCmd.MAP_CREATE, None, map_type=mt, key_size=ks, value_size=vs,
                     max_entries=n, btf_fd=btf_fd, btf_key_type_id=kid, btf_value_type_id=vid,
                     **kw)[0]


def scenario_map_check_btf(b):
    blob, t = types()
    btf = btf_load(b, blob).ret
    assert btf >= 0
    btf_id = calls.obj_get_info_by_fd(b, btf, "btf")[0].id
    cases = [
        (A, 4, 8, 4, "int", "val"), (A, 4, 8, 4, "u32t", "cval"), (A, 4, 8, 4, "u64", "val"),
        (A, 4, 16, 4, "int", "val"), (A, 4, 8, 4, 500, "val"), (A, 4, 8, 4, "int", 500),
        (A, 4, 8, 4, "enum", "val"), (A, 4, 8, 4, "i16", "val"), (A, 4, 8, 4, "i24", "val"),
        (A, 4, 4, 1, 0, "sec"), (A, 4, 4, 2, 0, "sec"), (A, 4, 8, 1, 0, "val"),
        (PA, 4, 4, 1, 0, "sec"), (A, 4, 4, 1, "int", "sec"),
        (A, 4, 8, 4, "int", "func"), (A, 4, 8, 4, "int", "fwd"), (A, 4, 8, 4, "int", "proto"),
        (A, 4, 8, 4, "int", "ptr"), (A, 4, 8, 4, "int", "arr"), (A, 4, 4, 4, "int", "var"),
        (A, 4, 8, 4, "var", "val"), (A, 4, 8, 4, "func", "val"),
        (H, 4, 8, 4, "int", "val"), (H, 4, 8, 4, 0, "val"), (H, 8, 8, 4, "u64", "val"),
        (H, 4, 8, 4, "enum", "val"), (H, 8, 8, 4, "ptr", "arr"), (H, 1, 8, 4, "u8", "val"),
        (H, 4, 8, 4, "fwd", "val"), (PH, 4, 8, 4, 0, "val"), (LRU, 4, 8, 4, 0, "val"),
        (PH, 4, 8, 4, "int", "val"), (LRU, 4, 8, 4, "u32t", "cval"), (H, 4, 8, 4, "int", 0),
        (A, 4, 8, 4, "int", 0),
    ]
    out = []
    for mt, ks, vs, n, k, v in cases:
        kid = t[k] if isinstance(k, str) else k
        vid = t[v] if isinstance(v, str) else v
        fd = create(b, mt, ks, vs, n, btf, kid, vid)
        if fd >= 0:
            info = calls.obj_get_info_by_fd(b, fd, "map")[0]
            out.append(("ok", info.btf_id == btf_id, info.btf_key_type_id == kid,
                        info.btf_value_type_id == vid))
            b.close(fd)
        else:
            out.append(fd)
    # the btf fd itself: not open, not BTF, stdin
    m = calls.map_create(b, A, 4, 8, 1)
    out += [create(b, A, 4, 8, 4, 999, t["int"], t["val"]),
            create(b, A, 4, 8, 4, m, t["int"], t["val"]),
            create(b, A, 4, 8, 4, 0, t["int"], t["val"]),
            create(b, A, 4, 8, 4, 999, t["int"], 500)]
    b.close(m)
    # no type ids: btf_fd is not even looked at, and info shows no BTF
    fd = create(b, A, 4, 8, 4, btf, 0, 0)
    info = calls.obj_get_info_by_fd(b, fd, "map")[0]
    out.append((info.btf_id, info.btf_key_type_id, info.btf_value_type_id))
    b.close(fd)
    # the map holds its BTF: the id still resolves once the btf fd is closed
    fd = create(b, H, 4, 8, 4, btf, t["int"], t["val"])
    b.close(btf)
    again = calls.raw(b, BpfCmd.BTF_GET_FD_BY_ID, None, btf_id=btf_id)[0]
    out += [again >= 0, calls.obj_get_info_by_fd(b, fd, "map")[0].btf_id == btf_id]
    if again >= 0:
        b.close(again)
    b.close(fd)
    return out


def test_map_create_btf_key_value_types_einval(both):
    fake, host = both
    assert scenario_map_check_btf(fake) == scenario_map_check_btf(host)
