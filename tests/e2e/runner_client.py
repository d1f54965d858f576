"""A ctypes bpf() client (no fakekernel, no cffi: runs on any python3).

Prints one line per step; under `fakekernel run` and on the real kernel the output must
be the same.
"""
import ctypes
import errno
import os

libc = ctypes.CDLL(None, use_errno=True)
libc.syscall.restype = ctypes.c_long
NR_BPF = 321
MAP_CREATE, MAP_LOOKUP_ELEM, MAP_UPDATE_ELEM, MAP_DELETE_ELEM, MAP_GET_NEXT_KEY = 0, 1, 2, 3, 4
ARRAY, HASH = 2, 1
ATTR = 128


def bpf(cmd, fields):
    """fields: {offset: (value, size)}"""
    buf = ctypes.create_string_buffer(ATTR)
    for off, (v, n) in fields.items():
        ctypes.memmove(ctypes.addressof(buf) + off, v.to_bytes(n, "little"), n)
    r = libc.syscall(ctypes.c_long(NR_BPF), ctypes.c_long(cmd), buf, ctypes.c_long(ATTR))
    return r if r >= 0 else -ctypes.get_errno()


def res(r):
    return str(r) if r >= 0 else f"-1 {errno.errorcode[-r]}"


def elem(cmd, fd, key, value=None, flags=0):
    k = ctypes.c_uint32(key)
    v = ctypes.c_uint64(value or 0)
    fields = {0: (fd, 4), 8: (ctypes.addressof(k), 8), 24: (flags, 8)}
    if cmd != MAP_DELETE_ELEM:
        fields[16] = (ctypes.addressof(v), 8)
    r = bpf(cmd, fields)
    return r, v.value


fd = bpf(MAP_CREATE, {0: (HASH, 4), 4: (4, 4), 8: (8, 4), 12: (16, 4)})
print("create hash", res(fd), "bpf-map" in os.readlink(f"/proc/self/fd/{fd}"))
for k in (3, 1, 2):
    print("update", k, res(elem(MAP_UPDATE_ELEM, fd, k, k * 100)[0]))
print("update full? no:", res(elem(MAP_UPDATE_ELEM, fd, 9, 1, flags=2)[0]))   # BPF_EXIST
r, v = elem(MAP_LOOKUP_ELEM, fd, 2)
print("lookup 2", res(r), v)
print("lookup 42", res(elem(MAP_LOOKUP_ELEM, fd, 42)[0]))
print("delete 1", res(elem(MAP_DELETE_ELEM, fd, 1)[0]))
print("delete 1 again", res(elem(MAP_DELETE_ELEM, fd, 1)[0]))
keys, cur = [], None
while True:
    k = ctypes.c_uint32(cur or 0)
    nk = ctypes.c_uint32(0)
    r = bpf(MAP_GET_NEXT_KEY, {0: (fd, 4), 8: (ctypes.addressof(k) if cur is not None else 0, 8),
                               16: (ctypes.addressof(nk), 8)})
    if r < 0:
        print("get_next_key end", res(r))
        break
    keys.append(nk.value)
    cur = nk.value
print("keys", sorted(keys))
r, w = os.pipe()
print("lookup on pipe", res(elem(MAP_LOOKUP_ELEM, r, 1)[0]))
os.close(r)
os.close(w)
r = libc.syscall(ctypes.c_long(NR_BPF), ctypes.c_long(MAP_CREATE), ctypes.c_void_p(8),
                 ctypes.c_long(ATTR))
print("bad attr pointer", res(r if r >= 0 else -ctypes.get_errno()))
os.close(fd)
