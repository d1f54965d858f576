"""The `fakekernel` command: `demo`, `run`, `conformance` (bpf_conformance plugin), `version`."""
from __future__ import annotations

import argparse
import sys

__all__ = ["main"]


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["run"]:        # before argparse: REMAINDER would eat the runner's own options
        from fakekernel.runner import main as run_main
        return run_main(argv[1:])
    ap = argparse.ArgumentParser(prog="fakekernel",
                                 description="A simulated Linux 6.18 kernel answering bpf().")
    sub = ap.add_subparsers(dest="cmd", required=True)
    sub.add_parser("demo", help="load an XDP packet counter into a fresh simulated kernel and "
                                "send it packets")
    conf = sub.add_parser("conformance", help="bpf_conformance plugin: program as hex on "
                                              "stdin, r0 as hex on stdout")
    conf.add_argument("rest", nargs=argparse.REMAINDER)
    sub.add_parser("run", help="run CMD with its bpf() answered by a simulated kernel: "
                               "run [--trace FILE] -- CMD ARGS...")
    sub.add_parser("version", help="print the emulated kernel and UAPI version")
    args = ap.parse_args(argv)
    if args.cmd == "demo":
        from fakekernel.demo import main as demo_main
        return demo_main()
    if args.cmd == "conformance":
        from fakekernel.conformance import main as conf_main
        return conf_main(args.rest)
    if args.cmd == "version":
        from uapi import UAPI_VERSION
        print(f"fakekernel emulating Linux {UAPI_VERSION['kernel']} "
              f"(UAPI from BTF sha256 {UAPI_VERSION['btf_sha256'][:12]})")
        return 0
    return 2


if __name__ == "__main__":
    raise SystemExit(main())
