"""The friendly layer — libbpf-like conveniences built on `Kernel.bpf` / `Kernel.mmap` (tools/lib/bpf).

Nothing here reaches into kernel objects: every step goes through the syscall-level API,
so the same code drives fakekernel and the real kernel.
"""
from fakekernel.friendly.ringbuf import RingBuffer

__all__ = ["RingBuffer"]
