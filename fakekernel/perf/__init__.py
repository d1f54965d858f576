"""perf events — kernel/events/ (core.c, ring_buffer.c) and the BPF side of kernel/trace/bpf_trace.c.

`sys_perf_event_open` (core.py), `sys_ioctl` (ioctl.py), `perf_mmap` + the ring buffer
(ring_buffer.py), programs on events and perf links (bpf_event.py), the PMUs (pmu.py).
The `Kernel` methods ``perf_event_open``, ``ioctl`` and ``mmap`` are the syscall entries.
"""
# The submodules are imported where used (fakekernel.helpers imports ring_buffer while the
# helper tables are being built, so this package imports nothing at import time).
