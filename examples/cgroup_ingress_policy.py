#!/usr/bin/env python3
"""cgroup skb ingress policy: deny UDP from 10.0.0.66 and TCP to port 23, count denials.

The example's code lives in fakekernel/examples/cgroup_ingress_policy.py (shipped with the package);
this script runs it and exits non-zero if its own assertions fail.
"""
import pathlib
import sys

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent.parent))

from fakekernel.examples.cgroup_ingress_policy import main  # noqa: E402

if __name__ == "__main__":
    raise SystemExit(main())
