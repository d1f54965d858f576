"""Program contexts as the runtime lays them out — net/core/filter.c (bpf_convert_ctx_access,
xdp_convert_ctx_access) and include/linux/filter.h (bpf_ctx_range, bpf_ctx_narrow_access_ok).

As in the kernel, convert_ctx_access rewrites loads of ``__sk_buff`` fields into loads from
``struct sk_buff`` and loads of ``xdp_md`` fields into loads from ``struct xdp_buff`` (layouts in
`fakekernel.kernel_layout`), so the kernel-side ctx of an skb program is a ``struct sk_buff``
image and that of an XDP program a ``struct xdp_buff`` image.  One slot is fakekernel's own:
``__sk_buff.sk`` (a ``struct bpf_sock`` pointer, whose field loads are not rewritten here) is
read from an 8-byte slot right after the sk_buff image (`SKB_SK_SLOT`).  KPROBE programs run
on the raw ``struct pt_regs`` bytes, TRACEPOINT programs on the raw tracepoint record.
Also here: ``enum bpf_access_type`` and the ctx-range helpers the is_valid_access rules use.
"""
from __future__ import annotations

from fakekernel import kernel_layout as kl
from uapi.ffi import ffi

__all__ = ["SKB_UAPI_SIZE", "SKB_PTR_SLOTS", "SKB_SK_SLOT", "SKB_KCTX_SIZE", "XDP_UAPI_SIZE", "XDP_PTR_SLOTS",
           "XDP_KCTX_SIZE", "BPF_READ", "BPF_WRITE", "ctx_range", "ctx_range_till", "ctx_range_ptr",
           "narrow_access_ok", "kernel_convert"]

SKB_UAPI_SIZE = ffi.sizeof("struct __sk_buff")
# where the packet pointers live in the sk_buff image (bpf_compute_data_pointers() keeps data_end
# and data_meta in the control block, struct bpf_skb_data_end)
SKB_PTR_SLOTS = {"data": kl.offsetof("sk_buff.data"),
                 "data_end": kl.offsetof("sk_buff.cb") + kl.offsetof("bpf_skb_data_end.data_end"),
                 "data_meta": kl.offsetof("sk_buff.cb") + kl.offsetof("bpf_skb_data_end.data_meta")}
SKB_SK_SLOT = kl.sizeof("sk_buff")
SKB_KCTX_SIZE = SKB_SK_SLOT + ffi.sizeof("__u64")

XDP_UAPI_SIZE = ffi.sizeof("struct xdp_md")
XDP_PTR_SLOTS = {name: kl.offsetof(f"xdp_buff.{name}") for name in ("data", "data_end", "data_meta")}
XDP_KCTX_SIZE = kl.sizeof("xdp_buff")

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


def kernel_convert(fn):
    """Mark a convert_ctx_access that follows the kernel's calling convention:
    ``fn(access, insn, prog) -> (insns, target_size)``, called by the verifier's
    convert_ctx_accesses after it widened a narrow load (which then masks and shifts the
    result, see `fakekernel.verifier.fixups`).  Unmarked converters take the insn alone."""
    fn.kernel_convention = True
    return fn
