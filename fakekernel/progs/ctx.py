"""Program contexts as the runtime lays them out — the uapi struct followed by kernel pointer slots.

The kernel's convert_ctx_access rewrites loads of ``__sk_buff.data`` etc. into loads from
``struct sk_buff``; fakekernel's kernel-side ctx is the uapi struct itself followed by 8-byte
slots holding the packet pointers, and the verifier rewrites the u32 uapi pointer loads into
64-bit loads from those slots (see `fakekernel.verifier.fixups`).  KPROBE programs run on the
raw ``struct pt_regs`` bytes, TRACEPOINT programs on the raw tracepoint record.
Also here: ``enum bpf_access_type`` and the ctx-range helpers the is_valid_access rules use.
"""
from __future__ import annotations

from uapi.ffi import ffi

__all__ = ["SKB_UAPI_SIZE", "SKB_PTR_SLOTS", "SKB_KCTX_SIZE", "XDP_UAPI_SIZE", "XDP_PTR_SLOTS",
           "XDP_KCTX_SIZE", "BPF_READ", "BPF_WRITE", "ctx_range", "ctx_range_till", "ctx_range_ptr",
           "narrow_access_ok"]

SKB_UAPI_SIZE = ffi.sizeof("struct __sk_buff")
SKB_PTR_SLOTS = {"data": SKB_UAPI_SIZE, "data_end": SKB_UAPI_SIZE + 8, "data_meta": SKB_UAPI_SIZE + 16}
SKB_KCTX_SIZE = SKB_UAPI_SIZE + 24

XDP_UAPI_SIZE = ffi.sizeof("struct xdp_md")
XDP_PTR_SLOTS = {"data": XDP_UAPI_SIZE, "data_end": XDP_UAPI_SIZE + 8, "data_meta": XDP_UAPI_SIZE + 16}
XDP_KCTX_SIZE = XDP_UAPI_SIZE + 24

# enum bpf_access_type (include/linux/bpf.h)
BPF_READ = 1
BPF_WRITE = 2

_PTR_SIZE = ffi.sizeof("void *")


def _field(spec: str | tuple) -> tuple:
    """"name" or ("name", index) for an array element."""
    return (spec,) if isinstance(spec, str) else tuple(spec)


def _end(struct: str, spec) -> int:
    field = _field(spec)
    ftype = dict(ffi.typeof(struct).fields)[field[0]].type
    if len(field) > 1:
        ftype = ftype.item
    return ffi.offsetof(struct, *field) + ffi.sizeof(ftype)


def ctx_range(struct: str, field) -> range:
    """bpf_ctx_range(): the byte offsets of one field (``"mark"`` or ``("cb", 0)``)."""
    return range(ffi.offsetof(struct, *_field(field)), _end(struct, field))


def ctx_range_till(struct: str, first, last) -> range:
    """bpf_ctx_range_till(): from the first field's start to the last one's end."""
    return range(ffi.offsetof(struct, *_field(first)), _end(struct, last))


def ctx_range_ptr(struct: str, field: str) -> range:
    """bpf_ctx_range_ptr(): a __bpf_md_ptr field (8 bytes whatever the arch)."""
    start = ffi.offsetof(struct, field)
    return range(start, start + _PTR_SIZE)


def narrow_access_ok(off: int, size: int, size_default: int) -> bool:
    """bpf_ctx_narrow_access_ok()."""
    return size <= size_default and (size & (size - 1)) == 0
