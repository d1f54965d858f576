"""Core BPF object types — include/linux/bpf.h."""
