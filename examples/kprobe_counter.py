#!/usr/bin/env python3
"""kprobe_multi on do_sys_openat2: count calls per pid in a HASH map.

The example's code lives in fakekernel/examples/kprobe_counter.py (shipped with the package);
this script runs it and exits non-zero if its own assertions fail.
"""
import pathlib
import sys

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent.parent))

from fakekernel.examples.kprobe_counter import main  # noqa: E402

if __name__ == "__main__":
    raise SystemExit(main())
