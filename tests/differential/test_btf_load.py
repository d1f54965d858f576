"""BPF_BTF_LOAD, BTF_GET_FD_BY_ID, BTF_GET_NEXT_ID and OBJ_GET_INFO_BY_FD(btf) on fakekernel
and on the real 6.18: same verdict, errno, log bytes (btf_log_level=1) and log_true_size.

The log is compared byte for byte with no normalisation: BTF logs carry no kernel pointers,
and every size they print comes from the blob itself.  Ids are compared relative to the
first id a scenario gets (the real kernel has allocated others before, and other processes
may load BTF concurrently, so id walks keep only the scenario's own ids).
"""
from __future__ import annotations

import os
import shutil
import subprocess

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from btfgen import btf_blobs, mutated_blobs, wellformed_writers
from btfutil import (LIBBPF_PROBE_ATTR_SIZE, LIBBPF_PROBES, BtfWriter, btf_load, elf_sections,
                     fixup_datasec_sizes, raw_btf)
from uapi import calls
from uapi.attr import Attr
from uapi.bpf import BpfCmd, MapFlags
from uapi.ffi import ffi

CLANG = shutil.which("clang-19") or shutil.which("clang")
def _hyp(n: int):
    return settings(max_examples=n, deadline=None, suppress_health_check=list(HealthCheck))


def _verdict(b, blob: bytes, **kw):
    kw.setdefault("log_level", 1)
    kw.setdefault("log_size", 1 << 16)
    r = btf_load(b, blob, **kw)
    if r.ret >= 0:
        b.close(r.ret)
    return ("fd" if r.ret >= 0 else r.ret, r.log, r.log_true_size)


# ---------------------------------------------------------------- libbpf's probes

@pytest.mark.parametrize("probe", sorted(LIBBPF_PROBES))
def test_btf_load_libbpf_probe_fd(both, probe):
    """libbpf 1.1 sends each probe with attr size 28 and no log; both kernels give an fd."""
    fake, host = both
    out = []
    for b in (fake, host):
        r = btf_load(b, LIBBPF_PROBES[probe], size=LIBBPF_PROBE_ATTR_SIZE)
        out.append(b.sym(r.ret))
        if r.ret >= 0:
            b.close(r.ret)
    assert out[0] == out[1] == "fd0"


@pytest.mark.parametrize("probe", sorted(LIBBPF_PROBES))
def test_btf_load_libbpf_probe_log(both, probe):
    fake, host = both
    assert _verdict(fake, LIBBPF_PROBES[probe]) == _verdict(host, LIBBPF_PROBES[probe])


# ---------------------------------------------------------------- hypothesis blobs

@_hyp(300)
@given(st.data())
def test_btf_load_random_types_same_verdict_and_log(both, data):
    fake, host = both
    blob = data.draw(btf_blobs())
    assert _verdict(fake, blob) == _verdict(host, blob)


@_hyp(300)
@given(st.data())
def test_btf_load_wellformed_same_verdict_and_log(both, data):
    fake, host = both
    blob = data.draw(wellformed_writers()).blob()
    assert _verdict(fake, blob) == _verdict(host, blob)


@_hyp(500)
@given(st.data())
def test_btf_load_mutated_same_verdict_and_log(both, data):
    fake, host = both
    blob = data.draw(mutated_blobs())
    assert _verdict(fake, blob) == _verdict(host, blob)


@_hyp(150)
@given(st.data())
def test_btf_load_log_sizes_and_levels(both, data):
    """Rotating and BPF_LOG_FIXED logs of every size, ENOSPC and log_true_size."""
    fake, host = both
    blob = data.draw(st.one_of(wellformed_writers(6).map(lambda w: w.blob()), mutated_blobs(4)))
    level = data.draw(st.sampled_from([1, 2, 3, 4, 8, 9, 15, 16]))
    size = data.draw(st.sampled_from([1, 2, 16, 100, 255, 300, 1000]))
    assert _verdict(fake, blob, log_level=level, log_size=size) == \
        _verdict(host, blob, log_level=level, log_size=size)


def test_btf_load_long_name_log_line_truncated_at_1023(both):
    """One log call formats into a 1024-byte buffer: a 2000-byte INT name is cut there."""
    fake, host = both
    w = BtfWriter()
    w.int_("n" * 2000, 4)
    w.ptr(5)
    assert _verdict(fake, w.blob()) == _verdict(host, w.blob())


# ---------------------------------------------------------------- attr-level rules

def _attr_cases():
    good = LIBBPF_PROBES["btf"]
    full = Attr.size("btf_token_fd")
    return {
        "flags_beyond_attr_size_ignored": dict(blob=good, btf_flags=1),
        "flags_unknown": dict(blob=good, btf_flags=1, size=full),
        "flags_unknown_bit31": dict(blob=good, btf_flags=1 << 31, size=full),
        "token_flag_bad_fd": dict(blob=good, btf_flags=int(MapFlags.TOKEN_FD), btf_token_fd=999,
                                  size=full),
        "token_flag_not_token": dict(blob=good, btf_flags=int(MapFlags.TOKEN_FD), btf_token_fd=0,
                                     size=full),
        "token_fd_without_flag": dict(blob=good, btf_token_fd=5, size=full),
        "size_over_max": dict(blob=good, btf_size=16 * 1024 * 1024 + 1),
        "size_max_efault": dict(blob=good, btf_size=16 * 1024 * 1024),
        "size_zero": dict(blob=good, btf_size=0),
        "null_btf": dict(blob=good, btf_addr=0),
        "bad_ptr": dict(blob=good, btf_addr=8),
        "log_buf_no_level": dict(blob=good, log_level=0, log_size=64),
        "log_level_no_buf": dict(blob=good, log_level=1, log_size=64, log_buf=False),
        "log_level_unknown": dict(blob=good, log_level=32, log_size=64),
        "log_size_huge": dict(blob=good, log_level=1, log_size=(1 << 30) + 1, log_buf=False),
        "short_attr_no_true_size": dict(blob=good, log_level=1, log_size=64, size=28),
        "bad_blob_short_attr": dict(blob=b"\x9f\xeb", log_level=1, log_size=64, size=28),
    }


@pytest.mark.parametrize("case", sorted(_attr_cases()))
def test_btf_load_attr_rules(both, case):
    fake, host = both
    kw = dict(_attr_cases()[case])
    blob = kw.pop("blob")
    assert _verdict(fake, blob, **kw) == _verdict(host, blob, **kw)


def test_btf_load_nonzero_after_last_field_einval(both):
    """CHECK_ATTR(BPF_BTF_LOAD): the last field is btf_token_fd."""
    out = []
    for b in both:
        data = bytearray(LIBBPF_PROBES["btf"])
        a = Attr()
        a.set("btf", data)
        a.set("btf_size", len(data))
        size = Attr.size("btf_token_fd") + 4
        buf = bytearray(bytes(ffi.buffer(a.c))[:size])
        buf[-1] = 1
        ret = b.bpf(BpfCmd.BTF_LOAD, buf, size)
        if ret >= 0:
            b.close(ret)
        out.append(ret)
    assert out[0] == out[1] == -22


# ---------------------------------------------------------------- ids and info

def _info(b, fd, info_len=None, **prefill):
    info, n = calls.obj_get_info_by_fd(b, fd, "btf", info_len, prefill=prefill)
    return info, n


def _scenario_ids_and_walk(b):
    """Load three BTFs, walk BTF_GET_NEXT_ID, reopen by id, close one, walk again."""
    fds = [btf_load(b, LIBBPF_PROBES[p]).ret for p in ("btf", "btf_func", "btf_float")]
    ids = [_info(b, fd)[0].id for fd in fds]
    base = ids[0]

    def walk():
        seen, cur = [], ids[0] - 1
        while True:
            ret, a = calls.raw(b, BpfCmd.BTF_GET_NEXT_ID, "next_id", start_id=cur)
            if ret < 0:
                return seen, ret
            cur = a.get("next_id")
            if cur in ids:
                seen.append(cur - base)
    out = [[i - base for i in ids], walk()]
    ret, _ = calls.raw(b, BpfCmd.BTF_GET_FD_BY_ID, "btf_id", btf_id=ids[1])
    info = _info(b, ret)[0]
    out.append((b.sym(ret), info.id - base, info.btf_size, info.kernel_btf))
    b.close(ret)
    b.close(fds[1])
    out.append(walk())
    out.append(calls.raw(b, BpfCmd.BTF_GET_FD_BY_ID, "btf_id", btf_id=ids[1])[0])
    out.append(calls.raw(b, BpfCmd.BTF_GET_FD_BY_ID, "btf_id", btf_id=0)[0])
    for extra in ({"open_flags": 1}, {"open_flags": int(MapFlags.TOKEN_FD), "fd_by_id_token_fd": 999}):
        out.append(calls.raw(b, BpfCmd.BTF_GET_FD_BY_ID, "fd_by_id_token_fd", btf_id=ids[0], **extra)[0])
    out.append(calls.raw(b, BpfCmd.BTF_GET_NEXT_ID, "next_id", start_id=0x7FFFFFFF)[0])
    for fd in (fds[0], fds[2]):
        b.close(fd)
    return out


def test_btf_get_next_id_and_fd_by_id(both):
    fake, host = both
    assert _scenario_ids_and_walk(fake) == _scenario_ids_and_walk(host)


def _scenario_info(b):
    fd = btf_load(b, LIBBPF_PROBES["btf_datasec"]).ret
    out = []
    for info_len in (0, 4, 8, 12, ffi.sizeof("struct bpf_btf_info"), 64):
        info, n = _info(b, fd, info_len)
        out.append((n, info.btf_size, info.name_len, info.kernel_btf, info.id != 0))
    # two-pass raw data: size first, then the buffer; and a short buffer
    info, _ = _info(b, fd)
    buf = ffi.new("char[]", info.btf_size)
    info2, _ = _info(b, fd, btf=ffi.cast("uintptr_t", buf), btf_size=info.btf_size)
    out.append(bytes(ffi.buffer(buf)) == LIBBPF_PROBES["btf_datasec"])
    short = ffi.new("char[]", 10)
    _info(b, fd, btf=ffi.cast("uintptr_t", short), btf_size=10)
    out.append(bytes(ffi.buffer(short)))
    name = ffi.new("char[]", b"xxxx")
    info, _ = _info(b, fd, name=ffi.cast("uintptr_t", name), name_len=4)
    out.append((info.name_len, bytes(ffi.buffer(name))))
    for bad in ({"name_len": 4}, {"name": ffi.cast("uintptr_t", name)}, {"btf_size": 8}):
        try:
            _info(b, fd, **bad)
            out.append(0)
        except calls.BpfError as e:
            out.append(-e.errno)
    nonzero = ffi.new("char[]", 64)
    nonzero[40] = b"\x01"
    ret, _ = calls.raw(b, BpfCmd.OBJ_GET_INFO_BY_FD, "info.info", info__bpf_fd=fd,
                       info__info_len=64, info__info=nonzero)
    out.append(ret)
    b.close(fd)
    return out


def test_obj_get_info_by_fd_btf(both):
    fake, host = both
    assert _scenario_info(fake) == _scenario_info(host)


def _scenario_vmlinux(b):
    fd = calls.raw(b, BpfCmd.BTF_GET_FD_BY_ID, "btf_id", btf_id=1)[0]
    name = ffi.new("char[]", 16)
    info, _ = _info(b, fd, name=ffi.cast("uintptr_t", name), name_len=16)
    short = ffi.new("char[]", 4)
    try:
        _info(b, fd, name=ffi.cast("uintptr_t", short), name_len=4)
        short_ret = 0
    except calls.BpfError as e:
        short_ret = -e.errno
    head = ffi.new("char[]", 64)
    _info(b, fd, btf=ffi.cast("uintptr_t", head), btf_size=64)
    out = (info.id, info.kernel_btf, ffi.string(name), info.name_len, info.btf_size,
           short_ret, ffi.string(short), bytes(ffi.buffer(head)))
    b.close(fd)
    return out


def test_btf_vmlinux_is_id_1(both):
    if not os.access("/sys/kernel/btf/vmlinux", os.R_OK):
        pytest.skip("no /sys/kernel/btf/vmlinux to mirror")
    fake, host = both
    assert _scenario_vmlinux(fake) == _scenario_vmlinux(host)


def test_map_create_with_kernel_btf_eacces(both):
    """The vmlinux BTF cannot describe a map value: EACCES as on the real kernel."""
    fake, host = both
    out = []
    for b in (fake, host):
        fd = calls.raw(b, BpfCmd.BTF_GET_FD_BY_ID, "btf_id", btf_id=1)[0]
        try:
            m = calls.map_create(b, 2, 4, 4, 1, btf_fd=fd, btf_key_type_id=1, btf_value_type_id=1)
            b.close(m)
            out.append(0)
        except calls.BpfError as e:
            out.append(-e.errno)
        b.close(fd)
    assert out[0] == out[1]


# ---------------------------------------------------------------- clang objects

_PROG = r"""
typedef unsigned int __u32;
struct __sk_buff { __u32 len; };
struct pair { int a; long b; char c[3]; unsigned int bf:3, bg:5; struct pair *next;
              const volatile float f; double d; union { int i; char ch; } u; };
enum color { RED, GREEN = 5, BLUE = -1 };
enum big { HUGE = 0x100000000ULL };
typedef int (*cb_t)(struct pair *, ...);
int counter __attribute__((section(".bss")));
int value __attribute__((section(".data"))) = 3;
static __attribute__((noinline)) int helper(struct pair *p, enum color c) { return p ? p->a + c : 0; }
__attribute__((section("socket"), used)) int prog(struct __sk_buff *skb)
{
	struct pair p = { .a = skb->len };
	enum big b = HUGE;
	counter++;
	return helper(&p, GREEN) + value + (int)b;
}
char _license[] __attribute__((section("license"), used)) = "GPL";
"""


@pytest.fixture(scope="module")
def clang_btf(tmp_path_factory):
    if CLANG is None:
        pytest.skip("clang is not installed")
    d = tmp_path_factory.mktemp("btfobj")
    (d / "p.c").write_text(_PROG)
    subprocess.run([CLANG, "-target", "bpf", "-g", "-O2", "-c", str(d / "p.c"), "-o",
                    str(d / "p.o")], check=True)
    return elf_sections((d / "p.o").read_bytes())


@pytest.mark.parametrize("fixed", [False, True], ids=["raw", "libbpf_fixed"])
def test_btf_load_clang_object(both, clang_btf, fixed):
    """Raw .BTF (DATASEC sizes 0: rejected) and after libbpf's DATASEC fixup (an fd)."""
    fake, host = both
    blob = clang_btf[".BTF"]
    if fixed:
        blob = fixup_datasec_sizes(blob, clang_btf)
    v = _verdict(fake, blob)
    assert v == _verdict(host, blob)
    assert (v[0] == "fd") == fixed


def test_btf_load_header_variants(both):
    """hdr_len shorter/longer than struct btf_header, with zero and non-zero tails."""
    fake, host = both
    types = LIBBPF_PROBES["btf"][24:40]
    strs = b"\0int\0"
    blobs = [raw_btf(types, strs, hdr_len=32, hdr_tail=bytes(8)),
             raw_btf(types, strs, hdr_len=32, hdr_tail=b"\0\0\0\0\1\0\0\0"),
             raw_btf(types, strs, hdr_len=16)[:24] + types + strs,
             raw_btf(types, strs, hdr_len=10),
             raw_btf(types, strs, type_off=4, str_off=0, str_len=5),
             raw_btf(types, strs, str_off=16, str_len=4)]
    for blob in blobs:
        assert _verdict(fake, blob) == _verdict(host, blob)


_VERIFIER_PROGS = ["xdp_parse", "tc_mark", "sockfilter", "cgroup_egress", "kprobe_open", "tp_enter"]


@pytest.fixture(scope="module")
def verifier_objs(tmp_path_factory):
    if CLANG is None:
        pytest.skip("clang is not installed")
    import pathlib
    progs = pathlib.Path(__file__).resolve().parent.parent / "verifier" / "progs"
    d = tmp_path_factory.mktemp("btfprogs")
    out = {}
    for name in _VERIFIER_PROGS:
        subprocess.run([CLANG, "-target", "bpf", "-g", "-O2", f"-I{progs}", "-c",
                        str(progs / f"{name}.c"), "-o", str(d / f"{name}.o")], check=True)
        out[name] = elf_sections((d / f"{name}.o").read_bytes())
    return out


@pytest.mark.parametrize("name", _VERIFIER_PROGS)
def test_btf_load_clang_verifier_progs(both, verifier_objs, name):
    """The BTF clang -g emits for the verifier suite's programs, raw and DATASEC-fixed."""
    fake, host = both
    secs = verifier_objs[name]
    for blob in (secs[".BTF"], fixup_datasec_sizes(secs[".BTF"], secs)):
        assert _verdict(fake, blob) == _verdict(host, blob)
