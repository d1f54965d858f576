"""A libbpf skeleton loader, unmodified, under the runner and as root on the real kernel.

`libbpf/loader.c` opens and loads `libbpf/xdp_events.bpf.c` through a `bpftool gen
skeleton` header: global data (.rodata set before load and frozen, .bss/.data read and
written through the skeleton's mmap()s of the maps), a ring buffer consumed with
ring_buffer__poll (epoll) and ring_buffer__consume, an XDP bpf_link on lo, and one
PROG_TEST_RUN.  While it waits, the test sends it one UDP packet to port 47474 — on the
real kernel through lo, on fakekernel as a frame arriving at the simulated lo
(`kern.world.net.receive`).  Both runs must print the same lines.
Needs clang (BPF target), bpftool, gcc and libbpf-dev.
"""
from __future__ import annotations

import os
import pathlib
import shutil
import socket
import subprocess
import tempfile

import pytest

from backends import host_unavailable_reason, unavailable
from fakekernel.pytest_plugin import kernel_lock, runner_popen

pytestmark = pytest.mark.e2e

HERE = pathlib.Path(__file__).resolve().parent / "libbpf"
PORT = 47474
PAYLOAD = b"fakekernel"
LO_IFINDEX = 1
NOBODY = 65534
EXPECTED = """\
loaded: packets=0 last_len=7 magic=0xfeed
ready
event size=16 len=52 magic=0xfeed seq=1
poll: 1
after packet: packets=1 last_len=52
test_run: 0 retval=2
event size=16 len=60 magic=0xfeed seq=2
consume: 1
after test_run: packets=2 last_len=60
detach: 0
"""


@pytest.fixture(scope="module")
def loader():
    clang = shutil.which("clang-19") or shutil.which("clang")
    tools = {"clang": clang, "bpftool": shutil.which("bpftool") or shutil.which("bpftool", path="/usr/sbin"),
             "gcc": shutil.which("gcc")}
    missing = [k for k, v in tools.items() if v is None]
    if missing or not os.path.exists("/usr/include/bpf/libbpf.h"):
        unavailable(f"missing {missing or 'libbpf-dev'} to build the libbpf loader")
    d = pathlib.Path(tempfile.mkdtemp(prefix="fk-libbpf-"))
    os.chmod(d, 0o755)              # the unprivileged run executes the loader from here
    try:
        obj, skel, exe = d / "xdp_events.bpf.o", d / "xdp_events.skel.h", d / "loader"
        subprocess.run([tools["clang"], "-O2", "-g", "-target", "bpf",
                        "-I/usr/include/x86_64-linux-gnu", "-c", str(HERE / "xdp_events.bpf.c"),
                        "-o", str(obj)], check=True)
        with open(skel, "w") as fh:
            subprocess.run([tools["bpftool"], "gen", "skeleton", str(obj), "name",
                            "xdp_events_bpf"], check=True, stdout=fh)
        subprocess.run([tools["gcc"], "-O1", f"-I{d}", "-o", str(exe), str(HERE / "loader.c"),
                        "-lbpf"], check=True)
        yield str(exe)
    finally:
        shutil.rmtree(d)


def udp_frame() -> bytes:
    """What lo's XDP sees for a UDP datagram 127.0.0.1 -> 127.0.0.1:PORT: zero MACs, IPv4."""
    udp_len = 8 + len(PAYLOAD)
    ip = bytes([0x45, 0, 0, 0]) + (20 + udp_len).to_bytes(2, "big")
    ip = bytes([0x45, 0]) + (20 + udp_len).to_bytes(2, "big") + bytes(4) + bytes([64, 17, 0, 0])
    ip += bytes([127, 0, 0, 1]) * 2
    udp = (40000).to_bytes(2, "big") + PORT.to_bytes(2, "big") + udp_len.to_bytes(2, "big") + bytes(2)
    return bytes(12) + b"\x08\x00" + ip + udp + PAYLOAD


def drive(proc, trigger) -> str:
    """Wait for the loader's "ready", fire the packet, let it poll; its whole stdout."""
    out = []
    for line in proc.stdout:
        out.append(line)
        if line == "ready\n":
            break
    else:
        proc.wait(timeout=30)
        raise AssertionError("loader stopped before ready: " + "".join(out) + proc.stderr.read())
    trigger()
    proc.stdin.write("go\n")
    proc.stdin.flush()
    rest, err = proc.communicate(timeout=60)
    assert proc.returncode == 0, "".join(out) + rest + err
    return "".join(out) + rest


def test_libbpf_skeleton_loader_under_runner(kernel, loader):
    """As an unprivileged user: uid 65534 when the tests run as root (setpriv drops the
    privileges after the runner's trampoline has installed the filter)."""
    def fire():
        with kernel_lock(kernel):
            res = kernel.world.net.receive(LO_IFINDEX, udp_frame())
        assert res.xdp_ret is not None          # the loader's XDP link is on lo

    as_nobody = [shutil.which("setpriv") or "setpriv", f"--reuid={NOBODY}", f"--regid={NOBODY}",
                 "--clear-groups"] if os.getuid() == 0 else []
    with runner_popen(kernel) as Popen:
        proc = Popen([*as_nobody, loader], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                     stderr=subprocess.PIPE, text=True, cwd="/")
        out = drive(proc, fire)
    assert out == EXPECTED
    # everything the loader made went away with its fds and mappings (leak check at teardown)
    assert kernel.map_idr.get_next(0) is None and kernel.prog_idr.get_next(0) is None


def test_libbpf_skeleton_loader_real_kernel_agrees(loader):
    reason = host_unavailable_reason()
    if reason is not None:
        unavailable(f"real kernel unavailable: {reason}")

    def send():
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            s.sendto(PAYLOAD, ("127.0.0.1", PORT))

    proc = subprocess.Popen([loader], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    assert drive(proc, send) == EXPECTED
