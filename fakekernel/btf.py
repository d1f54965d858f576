"""BTF objects and BTF_LOAD validation — kernel/bpf/btf.c: struct btf, btf_get/btf_put,
btf_alloc_id, btf_parse() (btf_parse_hdr, btf_check_sec_info, btf_parse_str_sec,
btf_parse_type_sec with btf_check_all_metas, btf_resolve, btf_check_all_types,
btf_func_proto_check, then btf_check_type_tags), btf_new_fd(), btf_get_fd_by_id(),
btf_get_info_by_fd() and the kernel's own vmlinux BTF.

The per-kind checks (btf_kind_operations) live in `fakekernel.btf_check`, the verifier
environment and log in `fakekernel.btf_env`.  The vmlinux BTF is read lazily from its source (by default the
host's /sys/kernel/btf/vmlinux, which describes the same 6.18) the first time its bytes
are needed: booting a `Kernel` never touches it.
"""
from __future__ import annotations

import os

import attrs

from fakekernel.btf_check import KIND_OPS, reject_type
from fakekernel.btf_env import (BTF_MAX_NAME_OFFSET, BTF_MAX_SIZE, BTF_MAX_TYPE, CHECK_TYPE,
                                MAX_RESOLVE_DEPTH, NOT_VISITED, RESOLVE_TBD, U32_MAX, VOID, BtfEnv,
                                BtfLog, BtfT, fail, is_modifier, is_resolve_source_only, is_struct,
                                needs_resolve, u32_at)
from fakekernel.errors import Errno, KernelError
from fakekernel.fdtable import O_CLOEXEC, O_RDONLY, File
from uapi.btf import BTF_MAGIC, BTF_VERSION, BtfKind
from uapi.ffi import ffi, offsetofend

__all__ = ["Btf", "btf_parse", "btf_new_fd", "btf_get_fd_by_id", "btf_get_info_by_fd",
           "btf_vmlinux_init", "BTF_FILE_KIND", "VMLINUX_BTF_PATH", "BTF_MAX_SIZE"]

BTF_FILE_KIND = "btf"                       # anon_inode:btf
VMLINUX_BTF_PATH = "/sys/kernel/btf/vmlinux"
_HDR = "struct btf_header"
_HDR_SIZE = ffi.sizeof(_HDR)
_HDR_FIELDS = ("magic", "version", "flags", "hdr_len", "type_off", "type_len", "str_off", "str_len")
_LOG_TRUE_SIZE_END = offsetofend("union bpf_attr", "btf_log_true_size")
_TYPE_SIZE = ffi.sizeof("struct btf_type")
_INFO_MASK = 0x9F00FFFF             # kind_flag | kind | vlen
_MAX_TYPE_TAG_CHAIN = 32


@attrs.define(eq=False)
class Btf:
    """struct btf: the raw data, its parsed types, refcount and id."""

    kern: object
    _data: bytes | None = None
    name: bytes = b""
    kernel_btf: bool = False
    id: int = 0
    refcnt: int = 1
    env: BtfEnv | None = None            # the parsed types (user BTF)
    _source: object = None               # vmlinux: bytes or a path, read on first use
    freed: bool = False

    @property
    def data(self) -> bytes:
        if self._data is None:
            src = self._source
            if isinstance(src, (str, os.PathLike)):
                with open(src, "rb") as f:
                    src = f.read()
            self._data = bytes(src or b"")
        return self._data

    @property
    def data_size(self) -> int:
        if self._data is None and isinstance(self._source, (str, os.PathLike)):
            return os.stat(self._source).st_size
        return len(self.data)

    # ---- refcounts: btf_get / btf_put ----
    def get(self) -> "Btf":
        self.refcnt += 1
        return self

    def put(self) -> None:
        self.refcnt -= 1
        if self.refcnt == 0:
            self.freed = True
            if self.id:
                self.kern.btf_idr.remove(self.id)     # btf_free_id()
                self.id = 0

    def file_release(self, file) -> None:
        """btf_release(): the last fd of a "btf" file closed."""
        self.put()


# ---------------------------------------------------------------- type passes (≈ btf_check_all_metas ... btf_check_type_tags)

def _func_proto_check(env: BtfEnv, t: BtfT) -> None:
    """btf_func_proto_check(): return and argument types resolve to sized types."""
    if t.type:
        ret_id = t.type
        rt = env.type_by_id(ret_id)
        if rt is None or is_resolve_source_only(rt):
            reject_type(env, t, b"Invalid return type")
        if needs_resolve(rt) and not env.is_resolved(ret_id):
            btf_resolve(env, rt, ret_id)
        if env.type_id_size(ret_id) is None:
            reject_type(env, t, b"Invalid return type")
    args = t.records(2)
    if not args:
        return
    if not args[-1][1]:
        if args[-1][0]:
            reject_type(env, t, b"Invalid arg#%u" % len(args))
        args = args[:-1]
    for i, (name_off, arg_id) in enumerate(args):
        at = env.type_by_id(arg_id)
        if at is None or is_resolve_source_only(at):
            reject_type(env, t, b"Invalid arg#%u" % (i + 1))
        if name_off and (not env.name_offset_valid(name_off)
                         or not env.name_valid_identifier(name_off)):
            reject_type(env, t, b"Invalid arg#%u" % (i + 1))
        if needs_resolve(at) and not env.is_resolved(arg_id):
            btf_resolve(env, at, arg_id)
        if env.type_id_size(arg_id) is None:
            reject_type(env, t, b"Invalid arg#%u" % (i + 1))





def _check_meta(env: BtfEnv, off: int, meta_left: int) -> tuple[BtfT, int]:
    """btf_check_meta(): the btf_type header, then the kind's own check_meta."""
    if meta_left < _TYPE_SIZE:
        env.vlog(b"[%u] meta_left:%u meta_needed:%u" % (env.log_type_id, meta_left, _TYPE_SIZE))
        fail(Errno.EINVAL, "btf_type truncated")
    t = BtfT.at(env.data, off)
    if t.info & ~_INFO_MASK:
        env.vlog(b"[%u] Invalid btf_info:%x" % (env.log_type_id, t.info))
        fail(Errno.EINVAL, "btf_info")
    if t.kind > max(BtfKind) or t.kind == BtfKind.UNKN:
        env.vlog(b"[%u] Invalid kind:%u" % (env.log_type_id, t.kind))
        fail(Errno.EINVAL, "kind")
    if not env.name_offset_valid(t.name_off):
        env.vlog(b"[%u] Invalid name_offset:%u" % (env.log_type_id, t.name_off))
        fail(Errno.EINVAL, "name_off")
    extra = KIND_OPS[t.kind].check_meta(env, t, meta_left - _TYPE_SIZE)
    return t, _TYPE_SIZE + extra


def btf_check_all_metas(env: BtfEnv, start: int, end: int) -> None:
    env.log_type_id = 1
    cur = start
    while cur < end:
        t, size = _check_meta(env, cur, end - cur)
        if len(env.types) == BTF_MAX_TYPE:          # btf_add_type()
            env.vlog(b"Exceeded max num of types")
        else:
            env.types.append(t)
        cur += size
        env.log_type_id += 1


def _resolve_valid(env: BtfEnv, t: BtfT, type_id: int) -> bool:
    """btf_resolve_valid(): the final sanity check of one resolved type."""
    if not env.is_resolved(type_id):
        return False
    rid, rsize = env.resolved_ids[type_id], env.resolved_sizes[type_id]
    if is_struct(t) or t.kind == BtfKind.DATASEC:
        return not rid and not rsize
    if t.kind in (BtfKind.DECL_TAG, BtfKind.FUNC):
        return bool(rid) and not rsize
    if is_modifier(t) or t.kind in (BtfKind.PTR, BtfKind.VAR):
        rt = env.type_by_id(rid)
        return rt is not None and not is_modifier(rt) and not (
            rt is not VOID and rt.kind in (BtfKind.VAR, BtfKind.DATASEC))
    if t.kind == BtfKind.ARRAY:
        r = env.type_id_size(t.word(0))
        return r is not None and not is_modifier(r[0]) and (t.word(2) * r[2]) & U32_MAX == rsize
    return False


def btf_resolve(env: BtfEnv, t: BtfT, type_id: int) -> None:
    """btf_resolve(): depth-first resolution of `type_id` with loop and depth detection."""
    saved = env.log_type_id
    env.resolve_mode = RESOLVE_TBD
    env.push(t, type_id)
    err = None
    try:
        while env.stack:
            v = env.stack[-1]
            env.log_type_id = v.type_id
            KIND_OPS[v.t.kind].resolve(env, v)
    except KernelError as e:
        err = e
    env.log_type_id = type_id
    if err is not None and err.errno == Errno.E2BIG:
        env.log_type(t, b"Exceeded max resolving depth:%u" % MAX_RESOLVE_DEPTH)
    elif err is not None and err.errno == Errno.EEXIST:
        env.log_type(t, b"Loop detected")
    if err is None and not _resolve_valid(env, t, type_id):
        env.log_type(t, b"Invalid resolve state")
        err = KernelError(Errno.EINVAL, "invalid resolve state")
    env.log_type_id = saved
    if err is not None:
        raise err


def btf_check_all_types(env: BtfEnv) -> None:
    n = env.nr_types
    env.resolved_ids = [0] * n
    env.resolved_sizes = [0] * n
    env.visit_states = [NOT_VISITED] * n
    env.phase = CHECK_TYPE
    for type_id in range(1, n):
        t = env.types[type_id]
        env.log_type_id = type_id
        if needs_resolve(t) and not env.is_resolved(type_id):
            env.stack.clear()
            btf_resolve(env, t, type_id)
        if t.kind == BtfKind.FUNC_PROTO:
            _func_proto_check(env, t)


def btf_check_type_tags(env: BtfEnv) -> None:
    """btf_check_type_tags(): TYPE_TAGs come first in a modifier chain; chains stay short."""
    good_id = 0
    for i in range(1, env.nr_types):
        t = env.types[i]
        if not is_modifier(t):
            continue
        cur_id = i
        in_tags = t.kind == BtfKind.TYPE_TAG
        limit = _MAX_TYPE_TAG_CHAIN
        while is_modifier(t):
            if not limit:
                env.vlog(b"Max chain length or cycle detected")
                fail(Errno.ELOOP, "modifier chain")
            limit -= 1
            if t.kind == BtfKind.TYPE_TAG:
                if not in_tags:
                    env.vlog(b"Type tags don't precede modifiers")
                    fail(Errno.EINVAL, "type tag after modifier")
            else:
                in_tags = False
            if cur_id <= good_id:
                break
            cur_id = t.type
            t = env.type_by_id(cur_id)
            if t is None:
                fail(Errno.EINVAL, "dangling modifier")
        good_id = i


# ---------------------------------------------------------------- parsing

def _hdr_field(data: bytes, name: str, hdr_copy: int) -> int:
    """One btf_header field as the kernel sees it after memcpy(min(hdr_len, sizeof)) into a
    zeroed header: bytes beyond a short hdr_len read as 0."""
    off = ffi.offsetof(_HDR, name)
    size = ffi.sizeof(dict(ffi.typeof(_HDR).fields)[name].type)
    return int.from_bytes(data[off:min(off + size, hdr_copy)], "little") if off < hdr_copy else 0


def _parse_hdr(env: BtfEnv) -> None:
    """btf_parse_hdr() + btf_verifier_log_hdr() + btf_check_sec_info()."""
    data = env.data
    size = len(data)
    if size < offsetofend(_HDR, "hdr_len"):
        env.vlog(b"hdr_len not found")
        raise KernelError(Errno.EINVAL, "hdr_len not found")
    hdr_len = u32_at(data, ffi.offsetof(_HDR, "hdr_len"))
    if size < hdr_len:
        env.vlog(b"btf_header not found")
        raise KernelError(Errno.EINVAL, "btf_header not found")
    if hdr_len > _HDR_SIZE and any(data[_HDR_SIZE:hdr_len]):
        env.vlog(b"Unsupported btf_header")
        raise KernelError(Errno.E2BIG, "non-zero bytes in an unknown header tail")
    hdr_copy = min(hdr_len, _HDR_SIZE)
    hdr = {name: _hdr_field(data, name, hdr_copy) for name in _HDR_FIELDS}
    env.hdr = hdr
    for name in _HDR_FIELDS:
        fmt = b"%s: 0x%x\n" if name in ("magic", "flags") else b"%s: %u\n"
        env.vlog(fmt % (name.encode(), hdr[name]))
    env.vlog(b"btf_total_size: %u\n" % size)
    if hdr["magic"] != BTF_MAGIC:
        env.vlog(b"Invalid magic")
        raise KernelError(Errno.EINVAL, "magic")
    if hdr["version"] != BTF_VERSION:
        env.vlog(b"Unsupported version")
        raise KernelError(Errno.ENOTSUPP, "version")
    if hdr["flags"]:
        env.vlog(b"Unsupported flags")
        raise KernelError(Errno.ENOTSUPP, "flags")
    if size == hdr["hdr_len"]:
        env.vlog(b"No data")
        raise KernelError(Errno.EINVAL, "no data")
    _check_sec_info(env, size)


def _s32(v: int) -> int:
    v &= 0xFFFFFFFF
    return v - (1 << 32) if v >> 31 else v


def _check_sec_info(env: BtfEnv, size: int) -> None:
    """btf_check_sec_info(): the type and string sections tile the data after the header."""
    hdr = env.hdr
    secs = [(hdr["type_off"], hdr["type_len"]), (hdr["str_off"], hdr["str_len"])]
    # sort() with btf_sec_info_cmp, whose differences are taken as s32
    a, b = secs
    if (_s32(a[0] - b[0]) or _s32(a[1] - b[1])) >= 0:
        secs = [b, a]
    total = 0
    expected_total = size - hdr["hdr_len"]
    for off, length in secs:
        msg = None
        if expected_total < off:
            msg = b"Invalid section offset"
        elif total < off:
            msg = b"Unsupported section found"
        elif total > off:
            msg = b"Section overlap found"
        elif expected_total - total < length:
            msg = b"Total section length too long"
        if msg:
            env.vlog(msg)
            raise KernelError(Errno.EINVAL, msg.decode())
        total += length
    if expected_total != total:
        env.vlog(b"Unsupported section found")
        raise KernelError(Errno.EINVAL, "trailing data")


def _parse_str_sec(env: BtfEnv) -> None:
    hdr = env.hdr
    start = hdr["hdr_len"] + hdr["str_off"]
    end = start + hdr["str_len"]
    if end != len(env.data):
        env.vlog(b"String section is not at the end")
        raise KernelError(Errno.EINVAL, "string section not last")
    strs = env.data[start:end]
    if not strs or len(strs) - 1 > BTF_MAX_NAME_OFFSET or strs[-1] or strs[0]:
        env.vlog(b"Invalid string section")
        raise KernelError(Errno.EINVAL, "string section")
    env.strings = strs


def _parse_type_sec(env: BtfEnv) -> None:
    hdr = env.hdr
    if hdr["type_off"] % 4:
        env.vlog(b"Unaligned type_off")
        raise KernelError(Errno.EINVAL, "unaligned type_off")
    if not hdr["type_len"]:
        env.vlog(b"No type found")
        raise KernelError(Errno.EINVAL, "no type")
    start = hdr["hdr_len"] + hdr["type_off"]
    btf_check_all_metas(env, start, start + hdr["type_len"])
    btf_check_all_types(env)


def btf_parse(kern, task, attr, ctx) -> Btf:
    """btf_parse(): copy the user's blob, validate it, write the log back."""
    if attr.btf_size > BTF_MAX_SIZE:
        raise KernelError(Errno.E2BIG, "btf_size over BTF_MAX_SIZE")
    log = BtfLog.init(int(attr.btf_log_level), int(attr.btf_log_buf), int(attr.btf_log_size))
    data = task.mm.copy_from_user(int(attr.btf), int(attr.btf_size)) if attr.btf_size else b""
    env = BtfEnv(data=bytes(data), log=log)
    err = None
    try:
        _parse_hdr(env)
        _parse_str_sec(env)
        _parse_type_sec(env)
        btf_check_type_tags(env)
        from fakekernel.btf_fields import btf_parse_struct_metas   # btf_fields <- maps <- btf
        btf_parse_struct_metas(kern, env)
    except KernelError as e:
        err = e
    # finalize_log(): ENOSPC / EFAULT override the verdict
    try:
        true_size = log.finalize(task)
        if ctx.size >= _LOG_TRUE_SIZE_END:
            ctx.put_attr_field("btf_log_true_size", true_size)
        if log.truncated():
            err = KernelError(Errno.ENOSPC, "btf log truncated")
    except KernelError:
        err = KernelError(Errno.EFAULT, "btf log not writable")
    if err is not None:
        raise err
    return Btf(kern, data=env.data, env=env)


# ---------------------------------------------------------------- fds, ids, info

def _btf_new_fd(task, btf: Btf) -> int:
    """__btf_new_fd(): a read-only "btf" file owning the caller's reference."""
    return task.files.install(File(kind=BTF_FILE_KIND, private_data=btf,
                                   f_flags=O_RDONLY | O_CLOEXEC))


def btf_new_fd(kern, task, attr, ctx) -> int:
    btf = btf_parse(kern, task, attr, ctx)
    btf.id = kern.btf_idr.alloc_cyclic(btf)
    return _btf_new_fd(task, btf)


def btf_get_fd_by_id(kern, task, btf_id: int) -> int:
    btf = kern.btf_idr.find(btf_id)
    if btf is None or btf.refcnt == 0:
        raise KernelError(Errno.ENOENT, f"no BTF with id {btf_id}")
    return _btf_new_fd(task, btf.get())


def btf_get_info_by_fd(kern, task, btf: Btf, attr, ctx) -> int:
    """btf_get_info_by_fd(): id, the raw data (up to btf_size), name, kernel_btf."""
    ctype = "struct bpf_btf_info"
    uinfo = int(attr.info.info)
    info_copy = min(int(attr.info.info_len), ffi.sizeof(ctype))
    info = ffi.new(ctype + " *")
    ffi.memmove(info, task.mm.copy_from_user(uinfo, info_copy), info_copy)
    info.id = btf.id
    btf_copy = min(btf.data_size, info.btf_size)
    if btf_copy:
        task.mm.copy_to_user(int(info.btf), btf.data[:btf_copy])
    info.btf_size = btf.data_size
    info.kernel_btf = int(btf.kernel_btf)
    uname, uname_len = int(info.name), int(info.name_len)
    if bool(uname) != bool(uname_len):
        raise KernelError(Errno.EINVAL, "name and name_len must be given together")
    info.name_len = len(btf.name)
    ret = 0
    if uname:
        if uname_len >= len(btf.name) + 1:
            task.mm.copy_to_user(uname, btf.name + b"\0")
        else:
            task.mm.copy_to_user(uname, btf.name[:uname_len - 1] + b"\0")
            ret = -Errno.ENOSPC
    task.mm.copy_to_user(uinfo, bytes(ffi.buffer(info))[:info_copy])
    ctx.put_attr_field("info.info_len", info_copy)
    if ret:
        raise KernelError(Errno.ENOSPC, "name buffer too short")
    return 0


# ---------------------------------------------------------------- vmlinux

def btf_vmlinux_init(kern, source=VMLINUX_BTF_PATH) -> Btf | None:
    """The kernel's own BTF at boot: id 1, "vmlinux", kernel_btf.

    `source` is raw BTF bytes or a path (read on first use); a path that is not readable
    or None means a kernel built without BTF — id 1 is still consumed, so user BTF ids
    start at 2 as on the measured 6.18 (vmlinux = 1, no module BTFs).
    """
    if isinstance(source, (str, os.PathLike)) and not os.access(source, os.R_OK):
        source = None
    if source is None:
        placeholder = kern.btf_idr.alloc_cyclic(object())
        kern.btf_idr.remove(placeholder)
        return None
    btf = Btf(kern, name=b"vmlinux", kernel_btf=True, source=source)
    btf.id = kern.btf_idr.alloc_cyclic(btf)
    return btf
