"""PROG_BIND_MAP and ENABLE_STATS, fake vs the real kernel: errnos in the kernel's order,
the prog's map ids after binding (libbpf's probe included), and run_cnt / run_time_ns
counting only while a stats fd is held.

Map ids are compared as indexes into the ids the scenario created.  The run-time checks
assume nothing else on the host enables BPF stats (kernel.bpf_stats_enabled = 0)."""
from __future__ import annotations

from uapi import calls
from uapi.bpf import BpfCmd, MapFlags, MapType, ProgType
from uapi.ffi import ffi
from uapi.insn import BPF_EXIT_INSN, BPF_MOV64_IMM, assemble_insns


def load(b, ptype, ret=2):
    return calls.prog_load(b, ptype, assemble_insns([BPF_MOV64_IMM(0, ret), BPF_EXIT_INSN()]))


def closed(b, ret):
    if ret >= 0:
        b.close(ret)
        return "fd"
    return ret


def map_ids(b, prog, known):
    ids = ffi.new("uint32_t[]", 8)
    info, _ = calls.obj_get_info_by_fd(b, prog, "prog", prefill={
        "nr_map_ids": 8, "map_ids": int(ffi.cast("uintptr_t", ids))})
    return info.nr_map_ids, [known.index(ids[i]) if ids[i] in known else "?"
                             for i in range(min(info.nr_map_ids, 8))]


def bind(b, prog, m, flags=0, **kw):
    return calls.raw(b, BpfCmd.PROG_BIND_MAP, None, prog_bind_map__prog_fd=prog,
                     prog_bind_map__map_fd=m, prog_bind_map__flags=flags, **kw)[0]


def scenario_prog_bind_map(b):
    m1 = calls.map_create(b, MapType.ARRAY, 4, 8, 1)
    m2 = calls.map_create(b, MapType.HASH, 4, 8, 4)
    known = [calls.obj_get_info_by_fd(b, m, "map")[0].id for m in (m1, m2)]
    p = load(b, ProgType.XDP)
    sk = load(b, ProgType.SOCKET_FILTER, 0)
    out = [bind(b, p, m1, 1), bind(b, 999, m1, 1), bind(b, 999, 999), bind(b, m1, m1),
           bind(b, 0, m1), bind(b, p, 999), bind(b, p, p), bind(b, p, 0),
           bind(b, p, m1, link_create__target_btf_id=1), map_ids(b, p, known)]
    out += [bind(b, p, m1), map_ids(b, p, known), bind(b, p, m1), map_ids(b, p, known),
            bind(b, p, m2), map_ids(b, p, known)]
    # a read-only map fd binds as well; the binding keeps the map alive
    ro = calls.map_get_fd_by_id(b, known[0], open_flags=MapFlags.RDONLY)
    out += [bind(b, sk, ro), map_ids(b, sk, known)]
    b.close(ro)
    b.close(m1)
    again = calls.raw(b, BpfCmd.MAP_GET_FD_BY_ID, None, map_id=known[0])[0]
    out.append(closed(b, again))
    b.close(p)
    out.append(closed(b, calls.raw(b, BpfCmd.MAP_GET_FD_BY_ID, None, map_id=known[0])[0]))
    b.close(sk)          # (the last prog's maps go after an RCU grace period on Linux)
    b.close(m2)
    return out


def scenario_libbpf_probe_prog_bind_map(b):
    """libbpf probe_prog_bind_map(): ARRAY map, SOCKET_FILTER prog, bind -> 0."""
    m = calls.map_create(b, MapType.ARRAY, 4, 8, 1)
    p = calls.prog_load(b, ProgType.SOCKET_FILTER,
                        assemble_insns([BPF_MOV64_IMM(0, 0), BPF_EXIT_INSN()]))
    ret = calls.raw(b, BpfCmd.PROG_BIND_MAP, "prog_bind_map.flags",
                    prog_bind_map__prog_fd=p, prog_bind_map__map_fd=m)[0]
    b.close(p)
    b.close(m)
    return ret


def stats(b, t=0, **kw):
    return calls.raw(b, BpfCmd.ENABLE_STATS, None, enable_stats__type=t, **kw)[0]


def run_counts(b, p):
    info, _ = calls.obj_get_info_by_fd(b, p, "prog")
    return info.run_cnt, info.run_time_ns > 0


def scenario_enable_stats(b):
    out = [stats(b, 1), stats(b, 0xFFFFFFFF), stats(b, 0, link_create__target_fd=1)]
    p = load(b, ProgType.XDP)
    pkt = bytes(64)
    calls.prog_test_run(b, p, pkt, repeat=2)
    out.append(run_counts(b, p))
    s1 = stats(b)
    out.append(s1 >= 0)
    calls.prog_test_run(b, p, pkt, repeat=3)
    out.append(run_counts(b, p))
    s2 = stats(b)                      # two holders: closing one keeps stats on
    b.close(s1)
    calls.prog_test_run(b, p, pkt)
    out.append(run_counts(b, p)[0])
    b.close(s2)
    calls.prog_test_run(b, p, pkt, repeat=5)
    out.append(run_counts(b, p)[0])
    b.close(p)
    return out


def test_prog_bind_map_errnos_and_map_ids(both):
    fake, host = both
    assert scenario_prog_bind_map(fake) == scenario_prog_bind_map(host)


def test_prog_bind_map_libbpf_probe(both):
    fake, host = both
    assert scenario_libbpf_probe_prog_bind_map(fake) == scenario_libbpf_probe_prog_bind_map(host) == 0


def test_enable_stats_run_cnt_only_while_held(both):
    fake, host = both
    assert scenario_enable_stats(fake) == scenario_enable_stats(host)
