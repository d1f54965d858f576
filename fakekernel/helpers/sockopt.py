"""bpf_setsockopt / bpf_getsockopt on a socket — net/core/filter.c (bpf_sk_setsockopt_proto,
bpf_sk_getsockopt_proto, __bpf_setsockopt, __bpf_getsockopt, sol_socket_sockopt).

The cgroup hooks' ctx objects (`fakekernel.cgroup_run`) call `bpf_sock_setsockopt` /
`bpf_sock_getsockopt` for their socket.  SOL_SOCKET options go through the simulated socket's
own option code (`fakekernel.net.socket.Socket.setsockopt`); the IP, IPv6 and TCP levels are
not modelled for programs (HelperNotImplemented, never a guessed errno).
"""
from __future__ import annotations

from fakekernel.errors import KernelError
from fakekernel.helpers.base import neg_errno
from fakekernel.helpers.proto import ArgType, FuncProto, RetType, TypeFlag
from fakekernel.net.socket import SO_REUSEADDR, SO_REUSEPORT, SO_RCVBUF, SOL_SOCKET
from uapi.bpf import FuncId
from uapi.errno import Errno
from uapi.ffi import ffi

__all__ = ["SK_SETSOCKOPT", "SK_GETSOCKOPT", "bpf_sock_setsockopt", "bpf_sock_getsockopt"]

SK_SETSOCKOPT = FuncProto(func=FuncId.setsockopt, ret_type=RetType.INTEGER,
                          arg_types=(ArgType.PTR_TO_BTF_ID_SOCK_COMMON, ArgType.ANYTHING, ArgType.ANYTHING,
                                     ArgType.PTR_TO_MEM | TypeFlag.MEM_RDONLY, ArgType.CONST_SIZE))
SK_GETSOCKOPT = FuncProto(func=FuncId.getsockopt, ret_type=RetType.INTEGER,
                          arg_types=(ArgType.PTR_TO_BTF_ID_SOCK_COMMON, ArgType.ANYTHING, ArgType.ANYTHING,
                                     ArgType.PTR_TO_UNINIT_MEM, ArgType.CONST_SIZE))
_INT = ffi.sizeof("int")
# include/uapi/asm-generic/socket.h: the int-valued SOL_SOCKET options bpf may touch
_SO_SNDBUF, _SO_KEEPALIVE, _SO_PRIORITY, _SO_RCVLOWAT, _SO_MARK = 7, 9, 12, 18, 36
_SO_MAX_PACING_RATE, _SO_BINDTOIFINDEX, _SO_TXREHASH, _SO_BINDTODEVICE = 47, 62, 74, 25
_SOL_SOCKET_INT_OPTS = frozenset({SO_REUSEADDR, _SO_SNDBUF, SO_RCVBUF, _SO_KEEPALIVE, _SO_PRIORITY,
                                  SO_REUSEPORT, _SO_RCVLOWAT, _SO_MARK, _SO_MAX_PACING_RATE,
                                  _SO_BINDTOIFINDEX, _SO_TXREHASH})
# include/linux/socket.h
_SOL_IP, _SOL_TCP, _SOL_IPV6 = 0, 6, 41


def _check_sol_socket(optname: int, optlen: int, getopt: bool) -> None:
    """sol_socket_sockopt(): the allowed options and their size."""
    if optname in _SOL_SOCKET_INT_OPTS:
        if optlen != _INT:
            raise KernelError(Errno.EINVAL, "an int option needs sizeof(int)")
    elif optname != _SO_BINDTODEVICE or getopt:
        raise KernelError(Errno.EINVAL, "option not available to programs")


def _level(func_id: int, level: int) -> None:
    if level in (_SOL_IP, _SOL_TCP, _SOL_IPV6):
        from fakekernel.helpers import HelperNotImplemented
        raise HelperNotImplemented(func_id)
    raise KernelError(Errno.EINVAL, "unknown level")


def bpf_sock_setsockopt(env, sk, level: int, optname: int, optval: int, optlen: int) -> int:
    """__bpf_setsockopt(): 0 or -errno."""
    try:
        if sk is None or not sk.sk_fullsock():
            raise KernelError(Errno.EINVAL, "not a full socket")
        if level != SOL_SOCKET:
            _level(FuncId.setsockopt, level)
        _check_sol_socket(optname, optlen, False)
        sk.setsockopt(level, optname, bytes(env.mem.read(optval, optlen)))
    except KernelError as e:
        return neg_errno(e.errno)
    return 0


def bpf_sock_getsockopt(env, sk, level: int, optname: int, optval: int, optlen: int) -> int:
    """__bpf_getsockopt(): 0 or -errno; the buffer past what was written is zeroed."""
    out = b""
    try:
        if sk is None or not sk.sk_fullsock():
            raise KernelError(Errno.EINVAL, "not a full socket")
        if level != SOL_SOCKET:
            _level(FuncId.getsockopt, level)
        _check_sol_socket(optname, optlen, True)
        out = sk.getsockopt(level, optname, optlen)
        ret = 0
    except KernelError as e:
        out, ret = b"", neg_errno(e.errno)
    env.mem.write(optval, bytes(out[:optlen]) + bytes(optlen - min(len(out), optlen)))
    return ret
