"""The simulated network stack — net/ (socket buffers, XDP buffers, devices).

The names below load on first use (PEP 562), so that importing a leaf module such as
`fakekernel.net.checksum` or `fakekernel.net.headers` does not pull in the prog types that
skbuff / xdp depend on (the helpers import those leaves while the prog types import them).
"""
from importlib import import_module

_EXPORTS = {
    "LOOPBACK": "netdev", "NetDevice": "netdev", "dev_get_by_index": "netdev",
    "SkBuff": "skbuff", "Sock": "skbuff", "build_skb_ctx": "skbuff", "sync_back": "skbuff",
    "unmap_skb_ctx": "skbuff", "XdpBuff": "xdp", "build_xdp_ctx": "xdp", "unmap_xdp_ctx": "xdp",
}

__all__ = list(_EXPORTS)


def __getattr__(name: str):
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(import_module(f"{__name__}.{module}"), name)
