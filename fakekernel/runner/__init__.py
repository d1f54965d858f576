"""`fakekernel run` — unmodified loaders talking to the simulated kernel (seccomp user notification).

launch.py starts the command behind a seccomp filter (filter.py) and receives the
listener; supervisor.py answers the trapped syscalls from one `Kernel`, with the
target's real fds (remote_files.py) and memory; cli.py is the command line.
"""
from fakekernel.runner.cli import main, run

__all__ = ["main", "run"]
