"""Map commands — kernel/bpf/syscall.c (map_create, map_lookup_elem, map_update_elem, map_delete_elem,
map_get_next_key, map_lookup_and_delete_elem, map_freeze).

Checks run in the kernel's order (errno precedence is observable).  Map-type specifics
are methods of the map class (`sys_lookup`, `sys_update`, `map_get_next_key`, ...); this
module never branches on the map type except where the kernel's syscall code itself does.
"""
from __future__ import annotations

from fakekernel.errors import Errno, KernelError
from fakekernel.bpf.map_btf import map_check_btf
from fakekernel.bpf.memcg import memcg_charge_new_map
from fakekernel.fdtable import FMode
from fakekernel.syscall.command import bpf_command
from fakekernel.syscall.fdget import bpf_get_file_flag, bpf_map_get, bpf_map_new_fd
from uapi.bpf import BpfCmd, MapFlags, MapType, UpdateFlags
from uapi.ffi import ffi

__all__ = ["map_create", "map_lookup_elem", "map_update_elem", "map_delete_elem",
           "map_get_next_key", "map_lookup_and_delete_elem", "map_freeze", "bpf_obj_name_cpy",
           "UNPRIVILEGED_MAP_TYPES", "NET_ADMIN_MAP_TYPES"]

BPF_OBJ_NAME_LEN = 16
SHA256_DIGEST_SIZE = 32
LOOPBACK_IFINDEX = 1
NR_NODE_IDS = 1

# map_create(): types any user may create (when unprivileged BPF is enabled) and types
# that need CAP_NET_ADMIN; every other type needs CAP_BPF.
UNPRIVILEGED_MAP_TYPES = frozenset({
    MapType.ARRAY, MapType.PERCPU_ARRAY, MapType.PROG_ARRAY, MapType.PERF_EVENT_ARRAY,
    MapType.CGROUP_ARRAY, MapType.ARRAY_OF_MAPS, MapType.HASH, MapType.PERCPU_HASH,
    MapType.HASH_OF_MAPS, MapType.RINGBUF, MapType.USER_RINGBUF, MapType.CGROUP_STORAGE,
    MapType.PERCPU_CGROUP_STORAGE})
NET_ADMIN_MAP_TYPES = frozenset({
    MapType.SOCKMAP, MapType.SOCKHASH, MapType.DEVMAP, MapType.DEVMAP_HASH, MapType.XSKMAP})
OFFLOADABLE_MAP_TYPES = frozenset({MapType.ARRAY, MapType.HASH})
_ELEM_FLAGS_UNKNOWN = ~int(UpdateFlags.F_LOCK)      # lookup / lookup_and_delete accept only BPF_F_LOCK
_F_LOCK = int(UpdateFlags.F_LOCK)
_CAN_READ, _CAN_WRITE = int(FMode.READ), int(FMode.WRITE)


# lib/ctype.c: isalnum() is true for ASCII letters/digits and the Latin-1 letters
def _isalnum(c: int) -> bool:
    return (0x30 <= c <= 0x39 or 0x41 <= c <= 0x5A or 0x61 <= c <= 0x7A
            or 0xC0 <= c <= 0xFF and c not in (0xD7, 0xF7))


def bpf_obj_name_cpy(raw: bytes) -> bytes:
    """bpf_obj_name_cpy(): [A-Za-z0-9_.] up to a NUL that must come within the field."""
    out = bytearray()
    for c in raw:
        if c == 0:
            return bytes(out)
        if not _isalnum(c) and c not in b"_.":
            raise KernelError(Errno.EINVAL, "invalid character in object name")
        out.append(c)
    raise KernelError(Errno.EINVAL, "object name not NUL-terminated")


def _map_types():
    from fakekernel.bpf_types import MAP_TYPES
    return MAP_TYPES


def _netdev_exists(kern, ifindex: int) -> bool:
    lookup = getattr(kern.world, "dev_get_by_index", None)
    if lookup is not None:
        return lookup(ifindex) is not None
    return ifindex == LOOPBACK_IFINDEX


def _has_spin_lock(bpf_map) -> bool:
    """btf_record_has_field(map->record, BPF_SPIN_LOCK): only BTF-described values have one."""
    return bool(getattr(bpf_map, "spin_lock_off", None) is not None)


def _u32_bit31(v: int) -> int:
    return v - (1 << 32) if v >= 1 << 31 else v


def _map_alloc_check_privilege(kern, task, map_type: int) -> None:
    """The capability part of map_create()."""
    if kern.sysctl("kernel.unprivileged_bpf_disabled") and not task.bpf_capable():
        raise KernelError(Errno.EPERM, "unprivileged BPF is disabled")
    if map_type in UNPRIVILEGED_MAP_TYPES:
        return
    allowed = task.net_admin_capable() if map_type in NET_ADMIN_MAP_TYPES else task.bpf_capable()
    if not allowed:
        raise KernelError(Errno.EPERM, "map type needs privileges")


def _map_offload_alloc(kern, task, attr):
    """bpf_map_offload_map_alloc(): no simulated netdev can offload maps."""
    if not task.net_admin_capable():
        raise KernelError(Errno.EPERM, "offload needs CAP_NET_ADMIN")
    if attr.map_type not in OFFLOADABLE_MAP_TYPES:
        raise KernelError(Errno.EINVAL, "map type cannot be offloaded")
    if not _netdev_exists(kern, attr.map_ifindex):
        raise KernelError(Errno.EINVAL, "no such netdev")
    raise KernelError(Errno.EOPNOTSUPP, "netdev has no ndo_bpf")


def _attach_btf(task, m, attr) -> None:
    """The BTF block of map_create(): the btf fd must name a BTF object."""
    if not (attr.btf_key_type_id or attr.btf_value_type_id or attr.btf_vmlinux_value_type_id):
        return
    f = task.files.fdget(_u32_bit31(attr.btf_fd))
    if f.kind != "btf":
        raise KernelError(Errno.EINVAL, "btf_fd is not a BTF object")
    btf = f.private_data
    if getattr(btf, "kernel_btf", False):
        raise KernelError(Errno.EACCES, "kernel BTF cannot describe a map")
    getter = getattr(btf, "get", None)
    if getter is not None:
        getter()
    m.btf = btf
    if attr.btf_value_type_id:
        map_check_btf(m, btf, attr.btf_key_type_id, attr.btf_value_type_id, task=task)
    m.btf_key_type_id = attr.btf_key_type_id
    m.btf_value_type_id = attr.btf_value_type_id
    m.btf_vmlinux_value_type_id = attr.btf_vmlinux_value_type_id


def _free_unpublished(m) -> None:
    """bpf_map_free() before the map got an id."""
    btf, m.btf = m.btf, None
    if btf is not None and hasattr(btf, "put"):
        btf.put()
    m.freed = True
    m.map_free()


@bpf_command(BpfCmd.MAP_CREATE, last_field="excl_prog_hash_size")
def map_create(kern, task, attr, ctx) -> int:
    """kernel/bpf/syscall.c: map_create(). Returns the new map fd."""
    token_flag = bool(attr.map_flags & MapFlags.TOKEN_FD)
    attr.map_flags &= ~int(MapFlags.TOKEN_FD)
    if attr.btf_vmlinux_value_type_id:
        if attr.map_type != MapType.STRUCT_OPS or attr.btf_key_type_id or attr.btf_value_type_id:
            raise KernelError(Errno.EINVAL, "btf_vmlinux_value_type_id is for struct_ops only")
    elif attr.btf_key_type_id and not attr.btf_value_type_id:
        raise KernelError(Errno.EINVAL, "btf key type without a value type")
    if attr.map_type not in (MapType.BLOOM_FILTER, MapType.ARENA) and attr.map_extra:
        raise KernelError(Errno.EINVAL, "map_extra is for bloom filters and arenas")
    f_flags = bpf_get_file_flag(attr.map_flags)
    if attr.map_flags & MapFlags.NUMA_NODE and attr.numa_node != (1 << 32) - 1 \
            and attr.numa_node >= NR_NODE_IDS:
        raise KernelError(Errno.EINVAL, "numa node offline")

    # find_and_alloc_map(): the registry, then the type's own checks
    map_cls = _map_types().get(attr.map_type)
    if map_cls is None:
        raise KernelError(Errno.EINVAL, f"map type {attr.map_type} not supported")
    map_cls.map_alloc_check(attr, task)

    if token_flag:          # BPF tokens are not emulated: any fd is the wrong kind
        f = task.files.fdget(attr.map_token_fd)
        if f.kind != "bpf-token":
            raise KernelError(Errno.EINVAL, "map_token_fd is not a BPF token")
    _map_alloc_check_privilege(kern, task, attr.map_type)

    if attr.map_ifindex:
        _map_offload_alloc(kern, task, attr)
    m = map_cls.map_alloc(kern, attr, task)
    try:
        memcg_charge_new_map(kern, m)       # __GFP_ACCOUNT allocations over memory.max
        m.name = bpf_obj_name_cpy(ffi.buffer(attr.map_name)[:])
        _attach_btf(task, m, attr)
        if attr.excl_prog_hash:
            if attr.excl_prog_hash_size != SHA256_DIGEST_SIZE:
                raise KernelError(Errno.EINVAL, "excl_prog_hash_size must be a SHA-256 size")
            m.excl_prog_sha = task.mm.copy_from_user(attr.excl_prog_hash, SHA256_DIGEST_SIZE)
        elif attr.excl_prog_hash_size:
            raise KernelError(Errno.EINVAL, "excl_prog_hash_size without excl_prog_hash")
        m.id = kern.map_idr.alloc_cyclic(m)
    except KernelError:
        _free_unpublished(m)
        raise
    return bpf_map_new_fd(kern, task, m, f_flags)


def _map_get_sys_perms(f, bpf_map) -> int:
    """map_get_sys_perms(): the file's FMode bits; a frozen map is read-only from the syscall side."""
    mode = int(f.f_mode)
    if bpf_map.frozen:
        mode &= ~_CAN_WRITE
    return mode


def _copy_key(task, ukey: int, key_size: int) -> bytes | None:
    """__bpf_copy_key()."""
    if key_size:
        return task.mm.copy_from_user(ukey, key_size)
    if ukey:
        raise KernelError(Errno.EINVAL, "key pointer for a map without keys")
    return None


def _check_lock_flag(bpf_map, flags: int) -> None:
    if flags & _F_LOCK and not _has_spin_lock(bpf_map):
        raise KernelError(Errno.EINVAL, "BPF_F_LOCK on a map without bpf_spin_lock")


@bpf_command(BpfCmd.MAP_LOOKUP_ELEM, last_field="flags")
def map_lookup_elem(kern, task, attr, ctx) -> int:
    """kernel/bpf/syscall.c: map_lookup_elem()."""
    if attr.flags & _ELEM_FLAGS_UNKNOWN:
        raise KernelError(Errno.EINVAL, "unknown lookup flags")
    f, m = bpf_map_get(task, attr.map_fd)
    if not _map_get_sys_perms(f, m) & _CAN_READ:
        raise KernelError(Errno.EPERM, "map fd not readable")
    _check_lock_flag(m, attr.flags)
    key = _copy_key(task, attr.key, m.key_size)
    if m.map_type == MapType.BLOOM_FILTER:       # the value is the input: 0 = maybe present
        value = bytearray(task.mm.copy_from_user(attr.value, m.sys_value_size))
        m.map_peek_elem(value)
        return 0
    value = m.sys_lookup(key, attr.flags)
    task.mm.copy_to_user(attr.value, value)
    return 0


@bpf_command(BpfCmd.MAP_UPDATE_ELEM, last_field="flags")
def map_update_elem(kern, task, attr, ctx) -> int:
    """kernel/bpf/syscall.c: map_update_elem()."""
    f, m = bpf_map_get(task, attr.map_fd)
    if not _map_get_sys_perms(f, m) & _CAN_WRITE:
        raise KernelError(Errno.EPERM, "map fd not writable (or map frozen)")
    _check_lock_flag(m, attr.flags)
    key = _copy_key(task, attr.key, m.key_size)
    value = task.mm.copy_from_user(attr.value, m.sys_value_size)
    # bpf_map_update_value(map, map_file, ...): fd arrays whose slots remember the map file
    # the update came through (perf event arrays) take it; every other map ignores it
    if getattr(m, "sys_update_via", None) is not None:
        m.sys_update_via(f, key, value, attr.flags)
    else:
        return m.sys_update(key, value, attr.flags) or 0      # struct_ops can return 1
    return 0


@bpf_command(BpfCmd.MAP_DELETE_ELEM, last_field="key")
def map_delete_elem(kern, task, attr, ctx) -> int:
    """kernel/bpf/syscall.c: map_delete_elem()."""
    f, m = bpf_map_get(task, attr.map_fd)
    if not _map_get_sys_perms(f, m) & _CAN_WRITE:
        raise KernelError(Errno.EPERM, "map fd not writable (or map frozen)")
    key = _copy_key(task, attr.key, m.key_size)
    m.sys_delete(key)
    return 0


@bpf_command(BpfCmd.MAP_GET_NEXT_KEY, last_field="next_key")
def map_get_next_key(kern, task, attr, ctx) -> int:
    """kernel/bpf/syscall.c: map_get_next_key()."""
    f, m = bpf_map_get(task, attr.map_fd)
    if not _map_get_sys_perms(f, m) & _CAN_READ:
        raise KernelError(Errno.EPERM, "map fd not readable")
    key = _copy_key(task, attr.key, m.key_size) if attr.key else None
    next_key = m.map_get_next_key(key)
    task.mm.copy_to_user(attr.next_key, next_key)
    return 0


@bpf_command(BpfCmd.MAP_LOOKUP_AND_DELETE_ELEM, last_field="flags")
def map_lookup_and_delete_elem(kern, task, attr, ctx) -> int:
    """kernel/bpf/syscall.c: map_lookup_and_delete_elem()."""
    if attr.flags & _ELEM_FLAGS_UNKNOWN:
        raise KernelError(Errno.EINVAL, "unknown flags")
    f, m = bpf_map_get(task, attr.map_fd)
    perms = _map_get_sys_perms(f, m)
    if not perms & _CAN_READ or not perms & _CAN_WRITE:
        raise KernelError(Errno.EPERM, "map fd must be readable and writable")
    if attr.flags and m.map_type in (MapType.QUEUE, MapType.STACK):
        raise KernelError(Errno.EINVAL, "queue/stack pop takes no flags")
    _check_lock_flag(m, attr.flags)
    key = _copy_key(task, attr.key, m.key_size)
    value = m.map_lookup_and_delete_elem(key, attr.flags)
    task.mm.copy_to_user(attr.value, value)
    return 0


@bpf_command(BpfCmd.MAP_FREEZE, last_field="map_fd")
def map_freeze(kern, task, attr, ctx) -> int:
    """kernel/bpf/syscall.c: map_freeze()."""
    f, m = bpf_map_get(task, attr.map_fd)
    if m.map_type == MapType.STRUCT_OPS or getattr(m, "record", None):
        raise KernelError(Errno.ENOTSUPP, "map cannot be frozen")
    if not _map_get_sys_perms(f, m) & _CAN_WRITE:
        raise KernelError(Errno.EPERM, "map fd not writable (or already frozen)")
    if m.writecnt or m.frozen:
        raise KernelError(Errno.EBUSY, "map has writable mappings or is frozen")
    m.frozen = True
    return 0
