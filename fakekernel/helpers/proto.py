"""Helper prototypes — struct bpf_func_proto, enum bpf_arg_type / bpf_return_type (include/linux/bpf.h).

A type is a base type in the low ``BPF_BASE_TYPE_BITS`` bits plus `TypeFlag` modifier bits, as in
the kernel; the ``*_OR_NULL`` / ``UNINIT_MEM`` / ``FIXED_SIZE_MEM`` spellings are aliases for
those compositions.  Values are internal to fakekernel (no ABI), only the structure mirrors Linux.
"""
from __future__ import annotations

import enum
from typing import Callable

import attrs

__all__ = ["BPF_BASE_TYPE_BITS", "TypeFlag", "ArgType", "RetType", "FuncProto", "base_type", "type_flags"]

BPF_BASE_TYPE_BITS = 8
_BASE_MASK = (1 << BPF_BASE_TYPE_BITS) - 1


class TypeFlag(enum.IntFlag, boundary=enum.KEEP):
    """enum bpf_type_flag."""

    PTR_MAYBE_NULL = 1 << (0 + BPF_BASE_TYPE_BITS)
    MEM_RDONLY = 1 << (1 + BPF_BASE_TYPE_BITS)
    MEM_RINGBUF = 1 << (2 + BPF_BASE_TYPE_BITS)
    MEM_USER = 1 << (3 + BPF_BASE_TYPE_BITS)
    MEM_PERCPU = 1 << (4 + BPF_BASE_TYPE_BITS)
    OBJ_RELEASE = 1 << (5 + BPF_BASE_TYPE_BITS)
    PTR_UNTRUSTED = 1 << (6 + BPF_BASE_TYPE_BITS)
    MEM_UNINIT = 1 << (7 + BPF_BASE_TYPE_BITS)
    DYNPTR_TYPE_LOCAL = 1 << (8 + BPF_BASE_TYPE_BITS)
    DYNPTR_TYPE_RINGBUF = 1 << (9 + BPF_BASE_TYPE_BITS)
    MEM_FIXED_SIZE = 1 << (10 + BPF_BASE_TYPE_BITS)
    MEM_ALLOC = 1 << (11 + BPF_BASE_TYPE_BITS)
    PTR_TRUSTED = 1 << (12 + BPF_BASE_TYPE_BITS)
    MEM_RCU = 1 << (13 + BPF_BASE_TYPE_BITS)
    NON_OWN_REF = 1 << (14 + BPF_BASE_TYPE_BITS)
    DYNPTR_TYPE_SKB = 1 << (15 + BPF_BASE_TYPE_BITS)
    DYNPTR_TYPE_XDP = 1 << (16 + BPF_BASE_TYPE_BITS)
    MEM_ALIGNED = 1 << (17 + BPF_BASE_TYPE_BITS)
    MEM_WRITE = 1 << (18 + BPF_BASE_TYPE_BITS)


_NULL = int(TypeFlag.PTR_MAYBE_NULL)


class ArgType(enum.IntEnum):
    """enum bpf_arg_type (base types, then the kernel's composite aliases)."""

    DONTCARE = 0
    CONST_MAP_PTR = 1
    PTR_TO_MAP_KEY = 2
    PTR_TO_MAP_VALUE = 3
    PTR_TO_MEM = 4
    PTR_TO_ARENA = 5
    CONST_SIZE = 6
    CONST_SIZE_OR_ZERO = 7
    PTR_TO_CTX = 8
    ANYTHING = 9
    PTR_TO_SPIN_LOCK = 10
    PTR_TO_SOCK_COMMON = 11
    PTR_TO_SOCKET = 12
    PTR_TO_BTF_ID = 13
    PTR_TO_RINGBUF_MEM = 14
    CONST_ALLOC_SIZE_OR_ZERO = 15
    PTR_TO_BTF_ID_SOCK_COMMON = 16
    PTR_TO_PERCPU_BTF_ID = 17
    PTR_TO_FUNC = 18
    PTR_TO_STACK = 19
    PTR_TO_CONST_STR = 20
    PTR_TO_TIMER = 21
    KPTR_XCHG_DEST = 22
    PTR_TO_DYNPTR = 23
    SCALAR = 24
    # composites
    PTR_TO_MAP_VALUE_OR_NULL = 3 | _NULL
    PTR_TO_MEM_OR_NULL = 4 | _NULL
    PTR_TO_CTX_OR_NULL = 8 | _NULL
    PTR_TO_SOCKET_OR_NULL = 12 | _NULL
    PTR_TO_STACK_OR_NULL = 19 | _NULL
    PTR_TO_BTF_ID_OR_NULL = 13 | _NULL
    PTR_TO_UNINIT_MEM = 4 | int(TypeFlag.MEM_UNINIT) | int(TypeFlag.MEM_WRITE)
    PTR_TO_FIXED_SIZE_MEM = 4 | int(TypeFlag.MEM_FIXED_SIZE)


class RetType(enum.IntEnum):
    """enum bpf_return_type."""

    INTEGER = 0
    VOID = 1
    PTR_TO_MAP_VALUE = 2
    PTR_TO_SOCKET = 3
    PTR_TO_TCP_SOCK = 4
    PTR_TO_SOCK_COMMON = 5
    PTR_TO_MEM = 6
    PTR_TO_MEM_OR_BTF_ID = 7
    PTR_TO_BTF_ID = 8
    # composites
    PTR_TO_MAP_VALUE_OR_NULL = 2 | _NULL
    PTR_TO_SOCKET_OR_NULL = 3 | _NULL
    PTR_TO_TCP_SOCK_OR_NULL = 4 | _NULL
    PTR_TO_SOCK_COMMON_OR_NULL = 5 | _NULL
    PTR_TO_RINGBUF_MEM_OR_NULL = 6 | int(TypeFlag.MEM_RINGBUF) | _NULL
    PTR_TO_DYNPTR_MEM_OR_NULL = 6 | _NULL
    PTR_TO_BTF_ID_OR_NULL = 8 | _NULL
    PTR_TO_BTF_ID_TRUSTED = 8 | int(TypeFlag.PTR_TRUSTED)


def base_type(t: int) -> int:
    return t & _BASE_MASK


def type_flags(t: int) -> int:
    return t & ~_BASE_MASK


@attrs.frozen
class FuncProto:
    """struct bpf_func_proto: the helper id it implements, licence rule, return and argument types.

    ``func`` is the helper's FuncId (the runtime implementation is looked up by id in
    `fakekernel.helpers.HELPERS`); ``might_sleep`` helpers are refused in non-sleepable programs.
    """

    func: int
    gpl_only: bool = False
    ret_type: int = RetType.INTEGER
    arg_types: tuple = ()
    might_sleep: bool = False
    pkt_access: bool = False
    allowed: Callable | None = None        # (prog) -> bool, "helper call is not allowed in probe"

    def arg(self, i: int) -> int:
        """argN_type (0-based), DONTCARE past the declared ones."""
        return self.arg_types[i] if i < len(self.arg_types) else ArgType.DONTCARE
