#!/usr/bin/env python3
"""Generate uapi/_bpf_cdef.py and uapi/bpf.py.

Sources (both pinned, both recorded with their sha256 in the output):
  * the running Linux 6.18 kernel's BTF (``/sys/kernel/btf/vmlinux`` or a saved copy):
    every struct/union layout and every enum (named and anonymous) comes from here, so
    the values are the emulated kernel's own — the way cilium/ebpf's gentypes works;
  * ``include/uapi/linux/{bpf,bpf_common}.h`` of the matching UAPI (libbpf's synced copy):
    only for object-like ``#define`` constants (opcodes, attach/prog-load flags, pseudo
    sources), which BTF cannot carry.

Usage: python tools/gen_uapi.py --btf /sys/kernel/btf/vmlinux --include DIR
where DIR holds bpf.h and bpf_common.h.
"""
from __future__ import annotations

import argparse
import hashlib
import pathlib
import re
import sys

ROOT = pathlib.Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from uapi.btf import BtfKind, BtfType, decode_btf  # noqa: E402

# The structures the project needs (their dependencies follow automatically).
STRUCTS = [
    ("union", "bpf_attr"),
    ("struct", "bpf_insn"),
    ("struct", "bpf_lpm_trie_key_u8"),
    ("struct", "__sk_buff"),
    ("struct", "xdp_md"),
    ("struct", "pt_regs"),
    ("struct", "bpf_sock"),
    ("struct", "bpf_prog_info"),
    ("struct", "bpf_map_info"),
    ("struct", "bpf_btf_info"),
    ("struct", "bpf_link_info"),
    ("struct", "bpf_func_info"),
    ("struct", "bpf_line_info"),
    ("struct", "bpf_spin_lock"),
    ("struct", "bpf_timer"),
    ("struct", "bpf_sock_tuple"),
    ("struct", "bpf_flow_keys"),
    ("struct", "bpf_sock_addr"),
    ("struct", "bpf_sock_ops"),
    ("struct", "bpf_raw_tracepoint_args"),
    ("struct", "bpf_perf_event_data"),
    ("struct", "sk_msg_md"),
    ("struct", "sk_reuseport_md"),
    ("struct", "bpf_sysctl"),
    ("struct", "bpf_sockopt"),
    ("struct", "bpf_sk_lookup"),
    ("struct", "bpf_cgroup_dev_ctx"),
    ("struct", "bpf_fib_lookup"),
    ("struct", "btf_header"),
    ("struct", "btf_type"),
    ("struct", "bpf_devmap_val"),
    ("struct", "bpf_cpumap_val"),
    ("struct", "bpf_cgroup_storage_key"),
    ("struct", "bpf_stack_build_id"),
    ("struct", "bpf_tunnel_key"),
    ("struct", "bpf_xfrm_state"),
    ("struct", "bpf_tcp_sock"),
    ("struct", "bpf_xdp_sock"),
    ("struct", "bpf_pidns_info"),
    ("struct", "bpf_perf_event_value"),
    ("struct", "perf_branch_entry"),
    ("struct", "bpf_redir_neigh"),
    ("struct", "bpf_core_relo"),
    ("union", "bpf_iter_link_info"),
    ("struct", "bpf_nf_ctx"),
    ("struct", "perf_event_attr"),
    ("struct", "perf_event_mmap_page"),
    ("struct", "perf_event_header"),
    ("struct", "sockaddr_xdp"),
    ("struct", "xdp_umem_reg"),
    ("struct", "xdp_mmap_offsets"),
    ("struct", "xdp_desc"),
    ("struct", "bpf_iter__bpf_map"),
    ("struct", "bpf_wq"),
    ("struct", "bpf_list_head"),
    ("struct", "bpf_list_node"),
    ("struct", "bpf_rb_root"),
    ("struct", "bpf_rb_node"),
    ("struct", "bpf_refcount"),
    ("struct", "bpf_res_spin_lock"),
    ("struct", "bpf_task_work"),
]

# Named enums: (BTF enum name, Python class, prefix stripped from member names).
NAMED_ENUMS = [
    ("bpf_cmd", "BpfCmd", "BPF_"),
    ("bpf_map_type", "MapType", "BPF_MAP_TYPE_"),
    ("bpf_prog_type", "ProgType", "BPF_PROG_TYPE_"),
    ("bpf_attach_type", "AttachType", "BPF_"),
    ("bpf_link_type", "LinkType", "BPF_LINK_TYPE_"),
    ("bpf_func_id", "FuncId", "BPF_FUNC_"),
    ("xdp_action", "XdpAction", "XDP_"),
    ("bpf_ret_code", "RetCode", "BPF_"),
    ("bpf_stats_type", "StatsType", "BPF_STATS_"),
    ("bpf_task_fd_type", "TaskFdType", "BPF_FD_TYPE_"),
    ("sk_action", "SkAction", "SK_"),
    ("bpf_adj_room_mode", "AdjRoomMode", "BPF_ADJ_ROOM_"),
    ("bpf_hdr_start_off", "HdrStartOff", "BPF_HDR_START_"),
    ("bpf_lwt_encap_mode", "LwtEncapMode", "BPF_LWT_ENCAP_"),
    ("bpf_perf_event_type", "PerfEventType", "BPF_PERF_EVENT_"),
    ("bpf_addr_space_cast", "AddrSpaceCast", "BPF_"),
    ("bpf_cond_pseudo_jmp", "CondPseudoJmp", "BPF_"),
    ("tcx_action_base", "TcxAction", "TCX_"),
    ("bpf_check_mtu_flags", "MtuChkFlags", "BPF_MTU_CHK_"),
    ("bpf_check_mtu_ret", "MtuChkRet", "BPF_MTU_CHK_RET_"),
    ("bpf_stream_id", "StreamId", "BPF_"),     # uapi: the anonymous BPF_STREAM_STDOUT/STDERR
    ("net_device_flags_unused", None, None),
]

# Anonymous enums, recognised by their first member: (first member, class, prefix, is_flag).
ANON_ENUMS = [
    ("BPF_REG_0", "Reg", "BPF_REG_", False),
    ("BPF_ANY", "UpdateFlags", "BPF_", True),
    ("BPF_F_NO_PREALLOC", "MapFlags", "BPF_F_", True),
    ("BPF_F_INGRESS", "RedirectFlags", "BPF_F_", True),
    ("BPF_F_INDEX_MASK", "PerfOutputFlags", "BPF_F_", True),
    ("BPF_F_RECOMPUTE_CSUM", "StoreBytesFlags", "BPF_F_", True),
    ("BPF_F_PSEUDO_HDR", "CsumFlags", "BPF_F_", True),
    ("BPF_F_SKIP_FIELD_MASK", "StackFlags", "BPF_F_", True),
    ("BPF_F_ADJ_ROOM_FIXED_GSO", "AdjRoomFlags", "BPF_F_ADJ_ROOM_", True),
    ("BPF_F_KPROBE_MULTI_RETURN", "KprobeMultiFlags", "BPF_F_", True),
    ("BPF_F_UPROBE_MULTI_RETURN", "UprobeMultiFlags", "BPF_F_", True),
    ("BPF_F_NEIGH", "RedirectPeerFlags", "BPF_F_", True),
    ("BPF_F_TIMER_ABS", "TimerFlags", "BPF_F_", True),
    ("BPF_F_ZERO_CSUM_TX", "TunnelKeyFlags", "BPF_F_", True),
    ("BPF_FIB_LOOKUP_DIRECT", "FibLookupFlags", "BPF_FIB_LOOKUP_", True),
    ("BPF_FIB_LKUP_RET_SUCCESS", "FibLookupRet", "BPF_FIB_LKUP_RET_", False),
    ("BPF_SK_LOOKUP_F_REPLACE", "SkLookupFlags", "BPF_SK_LOOKUP_F_", True),
    ("BPF_RB_NO_WAKEUP", "RingbufFlags", "BPF_RB_", True),
    ("BPF_RB_AVAIL_DATA", "RingbufQuery", "BPF_RB_", False),
    ("BPF_RINGBUF_BUSY_BIT", "RingbufHdr", "BPF_RINGBUF_", True),
    ("BPF_F_BPRM_SECUREEXEC", "BprmFlags", "BPF_F_", True),
    ("BPF_F_SYSCTL_BASE_NAME", "SysctlFlags", "BPF_F_", True),
    ("BPF_F_GET_BRANCH_RECORDS_SIZE", "BranchRecordsFlags", "BPF_F_", True),
    ("BPF_SOCK_OPS_RTO_CB_FLAG", "SockOpsCbFlags", "BPF_SOCK_OPS_", True),
    ("BPF_SOCK_OPS_VOID", "SockOpsOp", "BPF_SOCK_OPS_", False),
    ("BPF_LOCAL_STORAGE_GET_F_CREATE", "LocalStorageFlags", "BPF_LOCAL_STORAGE_GET_F_", True),
    ("BPF_DEVCG_ACC_MKNOD", "DevcgAcc", "BPF_DEVCG_ACC_", True),
    ("BPF_DEVCG_DEV_BLOCK", "DevcgDev", "BPF_DEVCG_DEV_", False),
    ("XDP_ATTACHED_NONE", "XdpAttached", "XDP_ATTACHED_", False),
    ("BPF_F_TUNINFO_IPV6", "TunInfoFlags", "BPF_F_", True),
    ("BPF_F_HDR_FIELD_MASK", "HdrFieldMask", "BPF_F_", True),
    ("BPF_F_CURRENT_NETNS", "NetnsFlags", "BPF_F_", False),
    ("BPF_F_TUNINFO_FLAGS", "TunInfoFlags2", "BPF_F_", True),
    ("BPF_LOAD_HDR_OPT_TCP_SYN", "HdrOptFlags", "BPF_", True),
    ("BPF_WRITE_HDR_TCP_CURRENT_MSS", "WriteHdrFlags", "BPF_WRITE_HDR_", False),
    ("BPF_SKB_TSTAMP_UNSPEC", "SkbTstamp", "BPF_SKB_", False),
    ("BPF_F_TOKEN_FD", "TokenFlags", "BPF_F_", True),
    ("BPF_SKB_CLOCK_REALTIME", "SkbClock", "BPF_SKB_CLOCK_", False),
]

# Object-like #defines grouped into flag classes; everything else becomes a plain constant.
DEFINE_GROUPS = [
    ("AttachFlags", "BPF_F_", True, ["BPF_F_ALLOW_OVERRIDE", "BPF_F_ALLOW_MULTI", "BPF_F_REPLACE",
                                    "BPF_F_BEFORE", "BPF_F_AFTER", "BPF_F_ID", "BPF_F_PREORDER"]),
    ("ProgLoadFlags", "BPF_F_", True, ["BPF_F_STRICT_ALIGNMENT", "BPF_F_ANY_ALIGNMENT",
                                      "BPF_F_TEST_RND_HI32", "BPF_F_TEST_STATE_FREQ",
                                      "BPF_F_SLEEPABLE", "BPF_F_XDP_HAS_FRAGS",
                                      "BPF_F_XDP_DEV_BOUND_ONLY", "BPF_F_TEST_REG_INVARIANTS"]),
    ("TestRunFlags", "BPF_F_", True, ["BPF_F_TEST_RUN_ON_CPU", "BPF_F_TEST_XDP_LIVE_FRAMES",
                                     "BPF_F_TEST_SKB_CHECKSUM_COMPLETE"]),
    ("QueryFlags", "BPF_F_", True, ["BPF_F_QUERY_EFFECTIVE"]),
]

_FIXED_TYPEDEFS = {
    "__u8": "uint8_t", "__u16": "uint16_t", "__u32": "uint32_t", "__u64": "uint64_t",
    "__s8": "int8_t", "__s16": "int16_t", "__s32": "int32_t", "__s64": "int64_t",
    "__aligned_u64": "uint64_t", "__be16": "uint16_t", "__be32": "uint32_t",
    "__be64": "uint64_t", "__le16": "uint16_t", "__le32": "uint32_t", "__le64": "uint64_t",
    "__wsum": "uint32_t", "__sum16": "uint16_t",
}


class Gen:
    def __init__(self, types: list[BtfType]):
        self.t = types
        self.by_name: dict[tuple[BtfKind, str], BtfType] = {}
        for ty in types:
            if ty.name:
                self.by_name.setdefault((ty.kind, ty.name), ty)
        self.emitted: set[int] = set()
        self.out: list[str] = []

    def strip(self, tid: int) -> BtfType:
        ty = self.t[tid]
        while ty.kind in (BtfKind.CONST, BtfKind.VOLATILE, BtfKind.RESTRICT, BtfKind.TYPE_TAG):
            ty = self.t[ty.type]
        return ty

    def sizeof(self, tid: int) -> int:
        ty = self.strip(tid)
        if ty.kind == BtfKind.TYPEDEF:
            return self.sizeof(ty.type)
        if ty.kind in (BtfKind.INT, BtfKind.STRUCT, BtfKind.UNION, BtfKind.ENUM, BtfKind.ENUM64,
                       BtfKind.FLOAT):
            return ty.size
        if ty.kind == BtfKind.PTR:
            return 8
        if ty.kind == BtfKind.ARRAY:
            return ty.array[2] * self.sizeof(ty.array[0])
        raise ValueError(ty)

    def int_c(self, size: int, signed: bool) -> str:
        return f"{'' if signed else 'u'}int{size * 8}_t"

    def ctype(self, tid: int, name: str, bits: int = 0) -> str:
        """C declaration of member `name` of type `tid`."""
        ty = self.strip(tid)
        suffix = f" : {bits}" if bits else ""
        if ty.kind == BtfKind.TYPEDEF:
            if ty.name in _FIXED_TYPEDEFS:
                return f"{ty.name} {name}{suffix}"
            return self.ctype(ty.type, name, bits)
        if ty.kind == BtfKind.INT:
            if ty.name == "char":
                return f"char {name}{suffix}"
            if ty.name == "_Bool":
                return f"uint8_t {name}{suffix}"
            return f"{self.int_c(ty.size, bool(ty.int_encoding & 1))} {name}{suffix}"
        if ty.kind in (BtfKind.ENUM, BtfKind.ENUM64):
            return f"{self.int_c(ty.size, ty.kind_flag)} {name}{suffix}"
        if ty.kind == BtfKind.PTR:
            return f"void *{name}"
        if ty.kind == BtfKind.ARRAY:
            elem, _idx, n = ty.array
            return self.ctype(elem, f"{name}[{n if n else ''}]")
        if ty.kind in (BtfKind.STRUCT, BtfKind.UNION):
            kw = "struct" if ty.kind == BtfKind.STRUCT else "union"
            if not ty.name:
                return self.body(ty) + (f" {name}" if name else "")
            self.emit(ty)
            return f"{kw} {ty.name} {name}"
        if ty.kind == BtfKind.FLOAT:
            return f"double {name}" if ty.size == 8 else f"float {name}"
        raise ValueError(f"cannot express {ty}")

    def body(self, ty: BtfType, indent: str = "    ") -> str:
        kw = "struct" if ty.kind == BtfKind.STRUCT else "union"
        lines = [f"{kw} {{"]
        pos = 0      # bytes (structs only)
        pad_n = 0
        for m in ty.members:
            if ty.kind == BtfKind.STRUCT and m.bitfield_size == 0:
                off = m.bit_offset // 8
                if m.bit_offset % 8 == 0 and off > pos:
                    lines.append(f"{indent}uint8_t __pad{pad_n}[{off - pos}];")
                    pad_n += 1
                pos = off + self.sizeof(m.type)
            elif ty.kind == BtfKind.STRUCT:
                pos = (m.bit_offset + m.bitfield_size + 7) // 8
            decl = self.ctype(m.type, m.name, m.bitfield_size)
            decl = decl.replace("\n", "\n" + indent)
            lines.append(f"{indent}{decl};")
        lines.append("}")
        return "\n".join(lines)

    def emit(self, ty: BtfType) -> None:
        if ty.id in self.emitted:
            return
        self.emitted.add(ty.id)
        text = self.body(ty)
        kw = "struct" if ty.kind == BtfKind.STRUCT else "union"
        self.out.append(f"{kw} {ty.name} " + text[len(kw) + 1:] + ";\n")

    def find(self, kind: str, name: str) -> BtfType:
        k = BtfKind.STRUCT if kind == "struct" else BtfKind.UNION
        return self.by_name[(k, name)]

    def enum(self, name: str) -> BtfType | None:
        return self.by_name.get((BtfKind.ENUM, name)) or self.by_name.get((BtfKind.ENUM64, name))


def parse_defines(*headers: pathlib.Path) -> dict[str, int]:
    """Object-like integer #defines (values may reference earlier ones)."""
    env: dict[str, int] = {}
    pat = re.compile(r"^#define\s+([A-Z_][A-Z0-9_]*)\s+(.+?)\s*(/\*.*)?$")
    for h in headers:
        for line in h.read_text().splitlines():
            m = pat.match(line)
            if not m:
                continue
            name, expr = m.group(1), m.group(2)
            if name.startswith("__") or "(" in name:
                continue
            expr = re.sub(r"(\d+)U\b", r"\1", expr)
            if not re.fullmatch(r"[A-Z0-9_x|<>()\s+a-f]*", expr):
                continue
            try:
                env[name] = int(eval(expr, {"__builtins__": {}}, dict(env)))  # noqa: S307
            except Exception:  # noqa: BLE001 - not an integer constant
                continue
    return env


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--btf", default="/sys/kernel/btf/vmlinux")
    ap.add_argument("--include", required=True, help="dir with bpf.h and bpf_common.h")
    ap.add_argument("--kernel-release", default="6.18")
    args = ap.parse_args()
    blob = pathlib.Path(args.btf).read_bytes()
    inc = pathlib.Path(args.include)
    hdrs = [inc / "bpf_common.h", inc / "bpf.h"]
    btf_sha = hashlib.sha256(blob).hexdigest()
    hdr_sha = hashlib.sha256(b"".join(h.read_bytes() for h in hdrs)).hexdigest()
    types = decode_btf(blob)
    g = Gen(types)
    for kind, name in STRUCTS:
        g.emit(g.find(kind, name))

    head = ("# GENERATED by tools/gen_uapi.py — DO NOT EDIT\n"
            f'"""cffi declarations of the Linux {args.kernel_release} UAPI structures, from the '
            'kernel\'s BTF."""\n\n')
    typedefs = "".join(f"typedef {c} {n};\n" for n, c in _FIXED_TYPEDEFS.items())
    cdef = typedefs + "\n" + "\n".join(g.out)
    (ROOT / "uapi" / "_bpf_cdef.py").write_text(
        head + f"BTF_SHA256 = {btf_sha!r}\n\nCDEF = r'''\n{cdef}'''\n")

    # ---- enums ----
    py = [("# GENERATED by tools/gen_uapi.py — DO NOT EDIT\n"
           f'"""Linux {args.kernel_release} UAPI constants: enums from the kernel\'s BTF, '
           '#define constants from bpf.h."""\n'),
          "import enum\n",
          f"UAPI_VERSION = {{'kernel': {args.kernel_release!r}, 'btf_sha256': {btf_sha!r}, "
          f"'header_sha256': {hdr_sha!r}}}\n",
          "__all__ = ['UAPI_VERSION']\n"]
    aliases: list[str] = []
    seen_names: set[str] = set()

    def emit_enum(cls: str, prefix: str, values, flag: bool) -> None:
        base = "enum.IntFlag, boundary=enum.KEEP" if flag else "enum.IntEnum"
        py.append(f"\n\nclass {cls}({base}):")
        dunders = []
        for v in values:
            if v.name.startswith("__"):        # __MAX_BPF_CMD and friends: not members
                dunders.append(v)
                continue
            member = v.name[len(prefix):] if v.name.startswith(prefix) else v.name
            if member[:1].isdigit():
                member = "_" + member
            py.append(f"    {member} = {v.value}")
            if v.name not in seen_names:
                seen_names.add(v.name)
                aliases.append(f"{v.name} = {cls}.{member}")
        py.append(f"__all__.append({cls!r})")
        for v in dunders:
            py.append(f"{v.name[2:]} = {v.value}")
            py.append(f"__all__.append({v.name[2:]!r})")

    for ename, cls, prefix in NAMED_ENUMS:
        ty = g.enum(ename)
        if ty is None or cls is None:
            continue
        emit_enum(cls, prefix, ty.enum_values, False)

    anon = {}
    for ty in types:
        if ty.kind in (BtfKind.ENUM, BtfKind.ENUM64) and not ty.name and ty.enum_values:
            anon.setdefault(ty.enum_values[0].name, ty)
    for first, cls, prefix, flag in ANON_ENUMS:
        ty = anon.get(first)
        if ty is None:
            continue
        emit_enum(cls, prefix, ty.enum_values, flag)

    defines = parse_defines(*hdrs)
    grouped: set[str] = set()

    class _V:
        def __init__(self, n, v):
            self.name, self.value = n, v

    for cls, prefix, flag, names in DEFINE_GROUPS:
        vals = [_V(n, defines[n]) for n in names if n in defines]
        grouped.update(names)
        emit_enum(cls, prefix, vals, flag)
    py.append("\n\n# Plain #define constants (opcodes parts, pseudo sources, sizes).")
    for name, val in defines.items():
        if name in grouped or name in seen_names or name.startswith("MAX_"):
            continue
        seen_names.add(name)
        py.append(f"{name} = {val:#x}" if val > 9 else f"{name} = {val}")
        py.append(f"__all__.append({name!r})")
    py.append("\n\n# Kernel spellings of every enum member.")
    for a in aliases:
        py.append(a)
        py.append(f"__all__.append({a.split(' = ')[0]!r})")
    (ROOT / "uapi" / "bpf.py").write_text("\n".join(py) + "\n")
    # ---- capabilities (include/uapi/linux/capability.h) ----
    cap_h = inc / "capability.h"
    caps = {n: v for n, v in parse_defines(cap_h).items()
            if n.startswith("CAP_") and n not in ("CAP_LAST_CAP",) and v < 64}
    lines = ["# GENERATED by tools/gen_uapi.py — DO NOT EDIT",
             '"""Capability numbers — include/uapi/linux/capability.h."""', "import enum", "",
             "__all__ = ['Cap']", "", "", "class Cap(enum.IntEnum):"]
    lines += [f"    {n[4:]} = {v}" for n, v in caps.items()]
    (ROOT / "uapi" / "capability.py").write_text("\n".join(lines) + "\n")
    print(f"wrote uapi/_bpf_cdef.py ({len(g.out)} records) and uapi/bpf.py")


if __name__ == "__main__":
    main()
