"""Sockets of the simulated world (fakekernel/net/socket.py, af_inet.py, af_unix.py) and what
the socket maps hang on them: creation errnos, TCP connection states on close, cookies,
the family registry, local delivery through net.sockets, psock / reuseport / sk-storage
release when a socket closes."""
from __future__ import annotations

import socket

import pytest

from fakekernel.errors import KernelError
from fakekernel.net.af_inet import InetSocket
from fakekernel.net.socket import (SOCKET_FILE_KIND, Socket, TcpState, register_family,
                                   sockfd_lookup)
from uapi import calls
from uapi.bpf import MapType
from uapi.errno import Errno

SOL, SO_ERROR, SO_COOKIE = socket.SOL_SOCKET, socket.SO_ERROR, 57
LO = "127.0.0.1"


def sk_of(kernel, fd) -> Socket:
    return kernel.current.files.fdget(fd).private_data


def conn(kernel, accept=True):
    lst = kernel.socket(socket.AF_INET, socket.SOCK_STREAM)
    assert kernel.bind(lst, (LO, 0)) == 0 and kernel.listen(lst) == 0
    cl = kernel.socket(socket.AF_INET, socket.SOCK_STREAM)
    assert kernel.connect(cl, kernel.getsockname(lst)) == 0
    acc = kernel.accept(lst) if accept else None
    return lst, cl, acc


def test_socket_create_errnos(kernel):
    assert kernel.socket(99, socket.SOCK_STREAM) == -Errno.EAFNOSUPPORT
    assert kernel.socket(socket.AF_INET, 11) == -Errno.EINVAL
    assert kernel.socket(socket.AF_INET, socket.SOCK_STREAM | 0x100) == -Errno.EINVAL
    assert kernel.socket(socket.AF_INET, socket.SOCK_SEQPACKET) == -Errno.ESOCKTNOSUPPORT
    assert kernel.socket(socket.AF_INET, socket.SOCK_STREAM, 17) == -Errno.EPROTONOSUPPORT
    assert kernel.socket(socket.AF_UNIX, socket.SOCK_STREAM, 6) == -Errno.EPROTONOSUPPORT
    fd = kernel.socket(socket.AF_INET, socket.SOCK_DGRAM | socket.SOCK_NONBLOCK)
    f = kernel.current.files.fdget(fd)
    assert f.kind == SOCKET_FILE_KIND and f.private_data.sk_is_udp()
    assert kernel.close(fd) == 0


def test_sockfd_lookup_ebadf_enotsock(kernel):
    m = calls.map_create(kernel_backend(kernel), MapType.ARRAY, 4, 4, 1)
    with pytest.raises(KernelError) as e:
        sockfd_lookup(kernel.current, 77)
    assert e.value.errno == Errno.EBADF
    with pytest.raises(KernelError) as e:
        sockfd_lookup(kernel.current, m)
    assert e.value.errno == Errno.ENOTSOCK
    kernel.close(m)


def kernel_backend(kernel):
    class B:
        def bpf(self, cmd, attr, size):
            return kernel.bpf(cmd, attr, size)
    return B()


def test_tcp_close_fin_then_close_wait(kernel):
    lst, cl, acc = conn(kernel)
    assert sk_of(kernel, cl).state == sk_of(kernel, acc).state == TcpState.ESTABLISHED
    kernel.close(cl)
    assert sk_of(kernel, acc).state == TcpState.CLOSE_WAIT
    assert kernel.getsockopt(acc, SOL, SO_ERROR) == bytes(4)
    for fd in (lst, acc):
        kernel.close(fd)
    assert kernel.world.net.socktab.socks == []


def test_tcp_listener_close_resets_unaccepted(kernel):
    lst, cl, _ = conn(kernel, accept=False)
    kernel.close(lst)
    sk = sk_of(kernel, cl)
    assert sk.state == TcpState.CLOSE
    assert kernel.getsockopt(cl, SOL, SO_ERROR) == int(Errno.ECONNRESET).to_bytes(4, "little")
    assert kernel.getsockopt(cl, SOL, SO_ERROR) == bytes(4)          # read clears it
    kernel.close(cl)


def test_cookie_made_on_first_use(kernel):
    a, b = (kernel.socket(socket.AF_INET, socket.SOCK_DGRAM) for _ in range(2))
    assert sk_of(kernel, a).cookie == 0
    cb = int.from_bytes(kernel.getsockopt(b, SOL, SO_COOKIE, 8), "little")
    ca = int.from_bytes(kernel.getsockopt(a, SOL, SO_COOKIE, 8), "little")
    assert ca == cb + 1 and sk_of(kernel, a).cookie == ca
    assert kernel.getsockopt(a, SOL, SO_COOKIE, 4) == -Errno.EINVAL
    for fd in (a, b):
        kernel.close(fd)


def test_register_family_plugs_in_a_socket_class(kernel):
    made = []

    class Toy(Socket):
        def bind(self, addr):
            made.append(addr)

    def create(net, sock_type, protocol):
        if protocol:
            raise KernelError(Errno.EPROTONOSUPPORT, "toy takes protocol 0")
        return Toy(net=net, family=40, type=sock_type, protocol=protocol)

    register_family(40, create)
    try:
        assert kernel.socket(40, socket.SOCK_RAW, 1) == -Errno.EPROTONOSUPPORT
        fd = kernel.socket(40, socket.SOCK_RAW)
        assert kernel.bind(fd, ("x", 1)) == 0 and made == [("x", 1)]
        assert kernel.listen(fd) == -Errno.EOPNOTSUPP
        assert kernel.getsockopt(fd, SOL, socket.SO_DOMAIN) == (40).to_bytes(4, "little")
        kernel.close(fd)
    finally:
        from fakekernel.net import socket as socket_mod
        socket_mod._FAMILIES.pop(40)


def _udp_frame(dport: int) -> bytes:
    eth = bytes(12) + (0x0800).to_bytes(2, "big")
    ip = bytes([0x45, 0]) + (20 + 8).to_bytes(2, "big") + bytes(4) + bytes([64, 17]) + \
        bytes(2) + bytes([127, 0, 0, 1]) * 2
    return eth + ip + (40000).to_bytes(2, "big") + dport.to_bytes(2, "big") + bytes(4)


def test_bound_udp_socket_receives_frames(kernel):
    fd = kernel.socket(socket.AF_INET, socket.SOCK_DGRAM)
    assert kernel.bind(fd, (LO, 5353)) == 0
    res = kernel.world.net.receive(1, _udp_frame(5353))
    assert res.delivered and res.socket is sk_of(kernel, fd).rx_entry
    kernel.close(fd)
    assert kernel.world.net.sockets == []
    assert not kernel.world.net.receive(1, _udp_frame(5353)).delivered


def test_bind_conflicts_eaddrinuse(kernel):
    a, b = (kernel.socket(socket.AF_INET, socket.SOCK_DGRAM) for _ in range(2))
    assert kernel.bind(a, (LO, 4000)) == 0
    assert kernel.bind(b, ("0.0.0.0", 4000)) == -Errno.EADDRINUSE
    assert kernel.bind(b, (LO, 4001)) == 0
    assert kernel.bind(b, (LO, 4002)) == -Errno.EINVAL               # already bound
    assert kernel.bind(kernel.socket(socket.AF_INET, socket.SOCK_DGRAM), ("8.8.8.8", 1)) == \
        -Errno.EADDRNOTAVAIL
    kernel.shutdown()


def test_sockmap_psock_released_with_last_link(kernel):
    b = kernel_backend(kernel)
    m1 = calls.map_create(b, MapType.SOCKMAP, 4, 8, 2)
    m2 = calls.map_create(b, MapType.SOCKHASH, 4, 8, 2)
    fd = kernel.socket(socket.AF_INET, socket.SOCK_DGRAM)
    kernel.bind(fd, (LO, 0))
    sk = sk_of(kernel, fd)
    key, val = (0).to_bytes(4, "little"), fd.to_bytes(8, "little")
    calls.map_update_elem(b, m1, key, val)
    calls.map_update_elem(b, m2, key, val)
    assert sk.psock is not None and sk.psock.refcnt == 2 and len(sk.psock.links) == 2
    calls.map_delete_elem(b, m1, key)
    assert sk.psock.refcnt == 1
    kernel.close(fd)
    assert sk.psock is None and sk.user_data is None
    m2_obj = kernel.current.files.fdget(m2).private_data
    assert m2_obj.sockets() == []
    kernel.close(m1)
    kernel.close(m2)


def test_reuseport_slot_cleared_on_close(kernel):
    b = kernel_backend(kernel)
    m = calls.map_create(b, MapType.REUSEPORT_SOCKARRAY, 4, 8, 2)
    fd = kernel.socket(socket.AF_INET, socket.SOCK_STREAM)
    kernel.setsockopt(fd, SOL, socket.SO_REUSEPORT, 1)
    kernel.bind(fd, (LO, 0))
    kernel.listen(fd)
    sk = sk_of(kernel, fd)
    calls.map_update_elem(b, m, (1).to_bytes(4, "little"), fd.to_bytes(8, "little"))
    arr = kernel.current.files.fdget(m).private_data
    assert arr.ptrs == {1: sk} and sk.user_data is not None
    kernel.close(fd)
    assert arr.ptrs == {} and sk.user_data is None and isinstance(sk, InetSocket)
    kernel.close(m)


def test_psock_program_references(kernel):
    """A socket's psock references the programs it took from each map; unlinking from a map
    with verdict programs stops them; everything is released when socket, maps, fds go."""
    from uapi.bpf import AttachType, ProgType
    from uapi.calls import raw
    from uapi.bpf import BpfCmd
    b = kernel_backend(kernel)
    msg = calls.prog_load(b, ProgType.SK_MSG, ret_prog_bytes())
    skb = calls.prog_load(b, ProgType.SK_SKB, ret_prog_bytes())
    m1 = calls.map_create(b, MapType.SOCKMAP, 4, 8, 2)
    m2 = calls.map_create(b, MapType.SOCKHASH, 4, 8, 2)
    for prog, m, at in ((msg, m1, AttachType.SK_MSG_VERDICT), (skb, m2, AttachType.SK_SKB_VERDICT)):
        assert raw(b, BpfCmd.PROG_ATTACH, None, target_fd=m, attach_bpf_fd=prog,
                   attach_type=at)[0] == 0
    _, cl, acc = conn(kernel)
    key, val = (0).to_bytes(4, "little"), cl.to_bytes(8, "little")
    calls.map_update_elem(b, m1, key, val)
    calls.map_update_elem(b, m2, key, val)
    pmsg, pskb = sk_of(kernel, msg), sk_of(kernel, skb)
    assert (pmsg.refcnt, pskb.refcnt) == (3, 3)         # fd + map + psock
    calls.map_delete_elem(b, m2, key)                  # the skb verdict stops
    assert (pmsg.refcnt, pskb.refcnt) == (3, 2)
    kernel.close(cl)                                   # psock gone
    assert (pmsg.refcnt, pskb.refcnt) == (2, 2)
    kernel.close(m1)
    kernel.close(m2)
    assert (pmsg.refcnt, pskb.refcnt) == (1, 1)
    kernel.shutdown()


def ret_prog_bytes() -> bytes:
    from uapi.insn import BPF_EXIT_INSN, BPF_MOV64_IMM, assemble_insns
    return assemble_insns([BPF_MOV64_IMM(0, 1), BPF_EXIT_INSN()])


def test_cgroup_ingress_prog_reaches_socket_storage_and_cookie(kernel):
    """A frame delivered to a socket(2) socket runs its cgroup ingress program on an skb
    whose sk is that socket: bpf_sk_storage_get lands in the storage userspace reads through
    the socket fd, and bpf_get_socket_cookie is the socket's SO_COOKIE."""
    import os
    import sys
    from pathlib import Path
    sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
    from btfutil import BtfWriter, btf_load
    from uapi.bpf import (BPF_DW, BPF_JEQ, BPF_W, AttachType, BpfCmd, FuncId, MapFlags,
                          ProgType)
    from uapi.ffi import ffi
    from uapi.insn import (BPF_ALU64_IMM, BPF_CALL_HELPER, BPF_EXIT_INSN, BPF_JMP_IMM,
                           BPF_LD_MAP_FD, BPF_LDX_MEM, BPF_MOV64_IMM, BPF_MOV64_REG,
                           BPF_STX_MEM, assemble_insns)
    b = kernel_backend(kernel)
    w = BtfWriter()
    i32 = w.int_("int", 4, encoding=1)
    val = w.array(w.int_("char", 1), i32, 16)
    btf = btf_load(b, w.blob()).ret
    m = calls.raw(b, BpfCmd.MAP_CREATE, None, map_type=MapType.SK_STORAGE, key_size=4,
                  value_size=16, max_entries=0, map_flags=MapFlags.NO_PREALLOC, btf_fd=btf,
                  btf_key_type_id=i32, btf_value_type_id=val)[0]
    assert m >= 0
    # v = sk ? bpf_sk_storage_get(m, sk, NULL, F_CREATE) : NULL; if v: v->count++,
    # v->cookie = bpf_get_socket_cookie(skb); return 1 (both NULL checks jump to insn 16)
    sk_off = ffi.offsetof("struct __sk_buff", "sk")
    insns = [BPF_MOV64_REG(6, 1), BPF_LDX_MEM(BPF_DW, 2, 6, sk_off),
             BPF_JMP_IMM(BPF_JEQ, 2, 0, 13), *BPF_LD_MAP_FD(1, m), BPF_MOV64_IMM(3, 0),
             BPF_MOV64_IMM(4, 1), BPF_CALL_HELPER(FuncId.sk_storage_get),
             BPF_JMP_IMM(BPF_JEQ, 0, 0, 7), BPF_MOV64_REG(7, 0),
             BPF_LDX_MEM(BPF_W, 1, 7, 0), BPF_ALU64_IMM(0x00, 1, 1), BPF_STX_MEM(BPF_W, 7, 1, 0),
             BPF_MOV64_REG(1, 6), BPF_CALL_HELPER(FuncId.get_socket_cookie),
             BPF_STX_MEM(BPF_DW, 7, 0, 8), BPF_MOV64_IMM(0, 1), BPF_EXIT_INSN()]
    r = calls.prog_load(b, ProgType.CGROUP_SKB, assemble_insns(insns), strict=False,
                        expected_attach_type=AttachType.CGROUP_INET_INGRESS)
    assert r.ret >= 0, r.log
    cg = kernel.open("/sys/fs/cgroup/unified", os.O_RDONLY | os.O_DIRECTORY)
    calls.prog_attach(b, r.ret, cg, AttachType.CGROUP_INET_INGRESS)
    fd = kernel.socket(socket.AF_INET, socket.SOCK_DGRAM)
    assert kernel.bind(fd, (LO, 5353)) == 0
    for _ in range(3):
        assert kernel.world.net.receive(1, _udp_frame(5353)).delivered
    got = calls.map_lookup_elem(b, m, fd.to_bytes(4, "little"), 16)
    assert int.from_bytes(got[:4], "little") == 3
    assert got[8:] == kernel.getsockopt(fd, SOL, SO_COOKIE, 8)
    calls.prog_detach(b, r.ret, cg, AttachType.CGROUP_INET_INGRESS)
    for x in (fd, r.ret, m, btf, cg):
        kernel.close(x)
