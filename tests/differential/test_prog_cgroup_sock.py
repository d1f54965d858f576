"""The cgroup program family, fakekernel vs the real kernel, at load time: CGROUP_SOCK,
CGROUP_SOCK_ADDR, SOCK_OPS, CGROUP_SOCKOPT, CGROUP_SYSCTL and CGROUP_DEVICE.

For each type and expected_attach_type: every ctx offset × access size × read/write gives the
same verdict, errno and log lines (is_valid_access and its attach-type rules); the return ranges
(check_return_code); which expected_attach_types a type loads with (bpf_prog_load_check_attach);
and the helper sets (get_func_proto, with the attach-type dependent helpers).
"""
from __future__ import annotations

import pytest

from uapi import calls
from uapi.bpf import BPF_B, BPF_DW, BPF_H, BPF_W, AttachType as A, ProgType
from uapi.errno import Errno
from uapi.ffi import ffi
from uapi.insn import BPF_EXIT_INSN, BPF_LDX_MEM, BPF_MOV64_IMM, BPF_STX_MEM, assemble_insns
from verifier.test_verifier_cases import error_lines

pytestmark = pytest.mark.differential

SIZES = (BPF_B, BPF_H, BPF_W, BPF_DW)
CTX = {
    ProgType.CGROUP_SOCK: "struct bpf_sock",
    ProgType.CGROUP_SOCK_ADDR: "struct bpf_sock_addr",
    ProgType.SOCK_OPS: "struct bpf_sock_ops",
    ProgType.CGROUP_SOCKOPT: "struct bpf_sockopt",
    ProgType.CGROUP_SYSCTL: "struct bpf_sysctl",
    ProgType.CGROUP_DEVICE: "struct bpf_cgroup_dev_ctx",
}
SOCK_ADDR_TYPES = (A.CGROUP_INET4_BIND, A.CGROUP_INET6_BIND, A.CGROUP_INET4_CONNECT, A.CGROUP_INET6_CONNECT,
                   A.CGROUP_UNIX_CONNECT, A.CGROUP_INET4_GETPEERNAME, A.CGROUP_INET6_GETPEERNAME,
                   A.CGROUP_UNIX_GETPEERNAME, A.CGROUP_INET4_GETSOCKNAME, A.CGROUP_INET6_GETSOCKNAME,
                   A.CGROUP_UNIX_GETSOCKNAME, A.CGROUP_UDP4_SENDMSG, A.CGROUP_UDP6_SENDMSG,
                   A.CGROUP_UNIX_SENDMSG, A.CGROUP_UDP4_RECVMSG, A.CGROUP_UDP6_RECVMSG, A.CGROUP_UNIX_RECVMSG)
SOCK_TYPES = (A.CGROUP_INET_SOCK_CREATE, A.CGROUP_INET_SOCK_RELEASE, A.CGROUP_INET4_POST_BIND,
              A.CGROUP_INET6_POST_BIND)
# (prog type, expected_attach_type) pairs that load
PAIRS = ([(ProgType.CGROUP_SOCK, a) for a in SOCK_TYPES]
         + [(ProgType.CGROUP_SOCK_ADDR, a) for a in SOCK_ADDR_TYPES]
         + [(ProgType.SOCK_OPS, 0), (ProgType.CGROUP_SOCKOPT, A.CGROUP_GETSOCKOPT),
            (ProgType.CGROUP_SOCKOPT, A.CGROUP_SETSOCKOPT), (ProgType.CGROUP_SYSCTL, 0),
            (ProgType.CGROUP_DEVICE, 0)])


def pair_id(p):
    t, a = p
    return f"{t.name}-{A(a).name if a else 0}"


def load(b, ptype, eat, insns, license=b"GPL"):
    return calls.prog_load(b, ptype, assemble_insns(insns), license, log_level=1, log_size=1 << 16,
                           expected_attach_type=eat, strict=False)


def verdict(b, ptype, eat, insns, license=b"GPL"):
    """(True or -errno, the log's error lines); closes what loaded."""
    r = load(b, ptype, eat, insns, license)
    if r.ret >= 0:
        b.close(r.ret)
    return (r.ret >= 0 or r.ret, error_lines(r.log))


def ret(v):
    return [BPF_MOV64_IMM(0, v), BPF_EXIT_INSN()]


def access_prog(off, size, write):
    if write:
        return [BPF_MOV64_IMM(2, 0), BPF_STX_MEM(size, 1, 2, off)] + ret(1)
    return [BPF_LDX_MEM(size, 2, 1, off)] + ret(1)


def ctx_matrix(b, ptype, eat):
    size = ffi.sizeof(CTX[ptype])
    out = {}
    for off in range(-1, size + 1):
        for sz in SIZES:
            for write in (False, True):
                out[(off, sz, write)] = verdict(b, ptype, eat, access_prog(off, sz, write))
    return out


@pytest.mark.parametrize("pair", PAIRS, ids=pair_id)
def test_cgroup_family_ctx_access_matrix(both, pair):
    """Every offset, size and direction: same verdict and log line as the kernel."""
    fake, host = both
    f, h = ctx_matrix(fake, *pair), ctx_matrix(host, *pair)
    assert {k: (v, h[k]) for k, v in f.items() if v != h[k]} == {}


RETS = (-1, 0, 1, 2, 3, 4)


@pytest.mark.parametrize("pair", PAIRS, ids=pair_id)
def test_cgroup_family_return_range(both, pair):
    fake, host = both
    assert [verdict(fake, *pair, ret(v)) for v in RETS] == [verdict(host, *pair, ret(v)) for v in RETS]


ALL_EATS = list(range(0, max(A) + 2))


@pytest.mark.parametrize("ptype", list(CTX), ids=lambda t: t.name)
def test_cgroup_family_expected_attach_type_rules(both, ptype):
    """Which expected_attach_type each type loads with (EINVAL otherwise; 0 for CGROUP_SOCK
    means INET_SOCK_CREATE)."""
    fake, host = both
    f = [load(fake, ptype, a, ret(1)).ret for a in ALL_EATS]
    h = [load(host, ptype, a, ret(1)).ret for a in ALL_EATS]
    for b, rets in ((fake, f), (host, h)):
        for r in rets:
            if r >= 0:
                b.close(r)
    assert [r >= 0 or r for r in f] == [r >= 0 or r for r in h]


def test_cgroup_sock_default_attach_type_is_sock_create(both):
    """expected_attach_type 0 becomes BPF_CGROUP_INET_SOCK_CREATE (bpf_prog_load_fixup_attach_type):
    the program attaches as sock_create and nothing else."""
    from differential.test_attach_cmds import Cg, Ops
    out = []
    for b in both:
        fd = load(b, ProgType.CGROUP_SOCK, 0, ret(1)).ret
        o = Ops(b, [fd])
        with Cg(b) as (P, C, D):
            out.append([o.att(fd, P, at=A.CGROUP_INET4_POST_BIND), o.att(fd, P, at=A.CGROUP_INET_SOCK_RELEASE),
                        o.att(fd, P, at=A.CGROUP_INET_SOCK_CREATE), o.q(P, at=A.CGROUP_INET_SOCK_CREATE),
                        o.det(fd, P, at=A.CGROUP_INET_SOCK_CREATE)])
        b.close(fd)
    assert out[0] == out[1]
    assert out[0][0] == -Errno.EINVAL and out[0][2] == 0


def _helper_verdicts(b, ptype, eat):
    from differential.test_prog_load_verifier import _helper_verdicts as hv
    return hv(b, ptype, eat)


@pytest.mark.parametrize("pair", PAIRS, ids=pair_id)
def test_cgroup_family_helper_set_matches_kernel(both, pair):
    fake, host = both
    f, h = _helper_verdicts(fake, *pair), _helper_verdicts(host, *pair)
    assert {k: (v, h[k]) for k, v in f.items() if v != h[k]} == {}


@pytest.mark.parametrize("pair", PAIRS, ids=pair_id)
def test_cgroup_family_prog_test_run_enotsupp(both, pair):
    """No bpf_prog_ops.test_run for these types: PROG_TEST_RUN answers ENOTSUPP."""
    out = []
    for b in both:
        fd = load(b, *pair, ret(1)).ret
        out.append(calls.prog_test_run(b, fd, bytes(64), strict=False).ret if fd >= 0 else fd)
        b.close(fd)
    assert out[0] == out[1] == -Errno.ENOTSUPP
