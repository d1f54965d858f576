"""Map implementations — kernel/bpf/*map*.c, one module per kernel file."""
from fakekernel.maps.arraymap import ArrayMap, PercpuArrayMap
from fakekernel.maps.hashtab import HtabMap, LruHtabMap, LruPercpuHtabMap, PercpuHtabMap

__all__ = ["ArrayMap", "PercpuArrayMap", "HtabMap", "PercpuHtabMap", "LruHtabMap", "LruPercpuHtabMap"]
