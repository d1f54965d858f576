#!/usr/bin/env python3
"""XDP on lo: count packets per IP protocol in an ARRAY map, drop UDP to port 9 (discard).

The example's code lives in fakekernel/examples/xdp_counter.py (shipped with the package);
this script runs it and exits non-zero if its own assertions fail.
"""
import pathlib
import sys

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent.parent))

from fakekernel.examples.xdp_counter import main  # noqa: E402

if __name__ == "__main__":
    raise SystemExit(main())
