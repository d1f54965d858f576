"""The bpf_map_elem iterator, fake vs the real kernel: which maps it attaches to, the elements
it walks (order, key and value contents, per-CPU value copies), writes through the value of a
plain map landing in the map, the final NULL call, and reads in small chunks."""
from __future__ import annotations

import pytest

from iterutil import iter_create, iter_link, linfo_map, load_iter, read
from maputil import possible_cpus
from uapi import calls
from uapi.asm import assemble
from uapi.bpf import MapType

pytestmark = pytest.mark.differential


def _imm(b: bytes) -> str:
    return "0x%x" % int.from_bytes(b.ljust(8, b"\0"), "little")


def elem_printer(write: bool, second_slot: bool) -> bytes:
    """Print "key value [value2]\\n" per element ("end\\n" at the end); add 1000 to the value
    in place when `write`."""
    fmt = b"%u %llu %llu\n" if second_slot else b"%u %llu\n"
    lines = ["r6 = *(u64 *)(r1 +0)", "r7 = *(u64 *)(r1 +16)", "r8 = *(u64 *)(r1 +24)",
             f"r2 = {_imm(fmt[:8])} ll", "*(u64 *)(r10 -48) = r2",
             f"r2 = {_imm(fmt[8:16])} ll", "*(u64 *)(r10 -40) = r2"]
    body = ["r2 = *(u32 *)(r7 +0)", "*(u64 *)(r10 -24) = r2", "r2 = *(u64 *)(r8 +0)", "*(u64 *)(r10 -16) = r2"]
    if second_slot:
        body += ["r2 = *(u64 *)(r8 +8)", "*(u64 *)(r10 -8) = r2"]
    if write:
        body += ["r2 = *(u64 *)(r8 +0)", "r2 += 1000", "*(u64 *)(r8 +0) = r2"]
    body += ["r1 = *(u64 *)(r6 +0)", "r2 = r10", "r2 += -48", f"r3 = {len(fmt) + 1}", "r4 = r10", "r4 += -24",
             f"r5 = {24 if second_slot else 16}", "call bpf_seq_printf#126", "r0 = 0", "exit"]
    end = [f"r2 = {_imm(b'end' + bytes([10]))} ll", "*(u64 *)(r10 -48) = r2", "r1 = *(u64 *)(r6 +0)", "r2 = r10",
           "r2 += -48", "r3 = 5", "r4 = 0", "r5 = 0", "call bpf_seq_printf#126", "r0 = 0", "exit"]
    lines += [f"if r7 == 0x0 goto pc+{len(body) + 1}", f"if r8 == 0x0 goto pc+{len(body)}"] + body + end
    return assemble("\n".join(lines))


def _fill(b, fd, map_type, n):
    ncpu = possible_cpus()
    for k in range(n):
        v = (k * 7 + 3)
        val = b"".join((v + 100 * c).to_bytes(8, "little") for c in range(ncpu)) \
            if map_type in (MapType.PERCPU_HASH, MapType.LRU_PERCPU_HASH, MapType.PERCPU_ARRAY) \
            else v.to_bytes(8, "little")
        calls.map_update_elem(b, fd, k.to_bytes(4, "little"), val)


def _next_key_order(b, m) -> list[int]:
    keys, key = [], None
    while True:
        try:
            key = calls.map_get_next_key(b, m, key, 4)
        except calls.BpfError:
            return keys
        keys.append(int.from_bytes(key, "little"))


@pytest.mark.parametrize("map_type,write", [
    (MapType.HASH, True), (MapType.LRU_HASH, False), (MapType.ARRAY, True),
    (MapType.PERCPU_HASH, False), (MapType.PERCPU_ARRAY, False), (MapType.LRU_PERCPU_HASH, False)])
def test_map_elem_walk_matches_kernel(both, map_type, write):
    percpu = map_type in (MapType.PERCPU_HASH, MapType.LRU_PERCPU_HASH, MapType.PERCPU_ARRAY)

    def s(b):
        m = calls.map_create(b, map_type, 4, 8, 24)
        _fill(b, m, map_type, 20)
        p = load_iter(b, "bpf_iter_bpf_map_elem", elem_printer(write, second_slot=percpu))
        link = iter_link(b, p, linfo_map(m))
        it = iter_create(b, link)
        text, after = read(b, it, 1 << 16), read(b, it, 1 << 16)
        # a hash walks in bucket order, which depends on the map's random seed: compare the
        # lines as a set, and that the order is MAP_GET_NEXT_KEY's on the same kernel
        keys = [int(line.split()[0]) for line in text.splitlines()[:-1]]
        out = [sorted(text.splitlines()), after, keys == _next_key_order(b, m)]
        small = iter_create(b, link)
        chunks = [read(b, small, 7), read(b, small, 30)]
        while chunks[-1]:
            chunks.append(read(b, small, 1 << 16))
        ordered = map_type in (MapType.ARRAY, MapType.PERCPU_ARRAY)    # chunk sizes follow the line order
        out += [[len(c) for c in chunks] if ordered else None, sorted(b"".join(chunks).splitlines())]
        out.append(sorted(calls.map_lookup_elem(b, m, k.to_bytes(4, "little"), 8 * (possible_cpus() if percpu else 1))
                          for k in range(20)))
        for fd in (small, it, link, p, m):
            b.close(fd)
        return out
    fake, host = both
    assert s(fake) == s(host)


@pytest.mark.parametrize("map_type", [MapType.LPM_TRIE, MapType.QUEUE, MapType.RINGBUF, MapType.PROG_ARRAY,
                                      MapType.BLOOM_FILTER, MapType.SK_STORAGE])
def test_map_elem_attach_to_unsupported_map_einval(both, map_type):
    def s(b):
        sizes = {MapType.LPM_TRIE: (8, 8, 4, 1), MapType.QUEUE: (0, 8, 4, 0), MapType.RINGBUF: (0, 0, 4096, 0),
                 MapType.PROG_ARRAY: (4, 4, 4, 0), MapType.BLOOM_FILTER: (0, 8, 4, 0), MapType.SK_STORAGE: None}
        if sizes[map_type] is None:
            return None
        k, v, n, lpm = sizes[map_type]
        m = calls.map_create(b, map_type, k, v, n, map_flags=1 if lpm else 0)
        p = load_iter(b, "bpf_iter_bpf_map_elem", elem_printer(False, False))
        out = [iter_link(b, p, linfo_map(m))]
        b.close(p)
        b.close(m)
        return out
    fake, host = both
    assert s(fake) == s(host)
