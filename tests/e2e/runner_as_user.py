"""Run `fakekernel run ARGS...` as uid/gid 65534 when started as root (else as is).

Everything Python needs is imported *before* the privileges are dropped: the interpreter
and its site-packages may live where `nobody` cannot read (e.g. /root/.pyenv).
Usage: python runner_as_user.py [--trace FILE] -- CMD ARGS...
"""
import importlib
import os
import pathlib
import pkgutil
import sys

REPO = pathlib.Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO))

import fakekernel  # noqa: E402
import uapi  # noqa: E402

for pkg in (fakekernel, uapi):
    for m in pkgutil.walk_packages(pkg.__path__, pkg.__name__ + "."):
        if m.name.endswith("__main__"):
            continue
        try:
            importlib.import_module(m.name)
        except Exception:           # a module another helper is still writing
            pass
import argparse, hashlib, select, shutil, signal, socket, subprocess, tempfile, traceback  # noqa: E401,F401,E402

NOBODY = 65534


def main() -> int:
    if os.getuid() == 0:
        os.setgroups([])
        os.setresgid(NOBODY, NOBODY, NOBODY)
        os.setresuid(NOBODY, NOBODY, NOBODY)
    from fakekernel.runner import main as run_main
    return run_main(sys.argv[1:])


if __name__ == "__main__":
    sys.exit(main())
