"""`fakekernel demo`: the XDP example end to end, with a readable summary."""
from __future__ import annotations

__all__ = ["main"]


def main() -> int:
    from fakekernel.examples import xdp_counter
    from fakekernel import Kernel

    kern = Kernel()
    r = xdp_counter.run(kern)
    print("XDP on lo (ifindex 1): count packets per IP protocol, drop UDP to port 9")
    print("  frames : udp/53, udp/9, tcp/80, udp/9, tcp/443")
    print(f"  verdict: {', '.join(r['verdicts'])}")
    print(f"  counts : udp={r['udp']} tcp={r['tcp']}  (read back with BPF_MAP_LOOKUP_ELEM)")
    ok = r["verdicts"] == ["PASS", "DROP", "PASS", "DROP", "PASS"] and r["udp"] == 3 and r["tcp"] == 2
    print("  result :", "as the kernel would do" if ok else "UNEXPECTED")
    return 0 if ok else 1
