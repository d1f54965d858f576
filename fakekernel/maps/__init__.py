"""Map implementations — kernel/bpf/*map*.c, one module per kernel file."""
from fakekernel.maps.arraymap import ArrayMap
from fakekernel.maps.hashtab import HtabMap

__all__ = ["ArrayMap", "HtabMap"]
