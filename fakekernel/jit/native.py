"""Native tier: build, cache and load the C of :mod:`fakekernel.jit.cgen` — bpf_int_jit_compile()
(kernel/bpf/core.c) with the system C compiler in place of the in-kernel emitter.

Each program becomes a cffi API-mode extension module named after a hash of its C source (which fixes
the instructions and the generator version), compiled once into a cache directory
(``$FAKEKERNEL_JIT_CACHE``, else ``$XDG_CACHE_HOME/fakekernel/jit``, else ``~/.cache/fakekernel/jit``, else
a temporary directory) and loaded from there by every later process.
"""
from __future__ import annotations

import hashlib
import importlib.util
import os
import shutil
import sys
import tempfile
import threading
from pathlib import Path

import cffi

from fakekernel.interp import InterpreterFault
from fakekernel.interp.run import MAX_BPF_STACK, MAX_CALL_FRAMES
from fakekernel.jit import cgen
from fakekernel.jit.cfg import ANALYSIS_VERSION
from fakekernel.jit.runtime import H_ERROR, H_SET, NREGS, Engine, RunState

__all__ = ["CEngine", "cache_dir", "compiler_works", "load_module"]

_FLAGS = ["-O2", "-g0", "-w"]
_FLAGS_BIG = ["-O1", "-g0", "-w"]  # very large programs: keep gcc's time and memory bounded
_BIG_PROGRAM = 20000
_KEY_PREFIX = f"fkjit:{cgen.CGEN_VERSION}:{ANALYSIS_VERSION}:{sys.version_info[:2]}:{cffi.__version__}"
_MESSAGES = {
    cgen.F_NO_SKB: "LD_ABS/LD_IND without skb data",
    cgen.F_DEPTH: f"the call stack of {MAX_CALL_FRAMES} frames is too deep",
}

_base = cffi.FFI()
_base.cdef(cgen.HEADER)
_U8_ARRAY = _base.typeof("uint8_t[]")
_RUN_T = _base.typeof("struct fk_run *")
_modules: dict[str, object] = {}
_lock = threading.Lock()
_runs: dict[int, RunState] = {}
_tokens = iter(range(1, 1 << 62))


def cache_dir() -> Path:
    env = os.environ.get("FAKEKERNEL_JIT_CACHE")
    if env:
        candidates = [Path(env)]
    else:
        xdg = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
        candidates = [Path(xdg) / "fakekernel" / "jit"]
    candidates.append(Path(tempfile.gettempdir()) / f"fakekernel-jit-{os.getuid()}")
    for path in candidates:
        try:
            path.mkdir(parents=True, exist_ok=True)
            if os.access(path, os.W_OK):
                return path
        except OSError:
            continue
    raise OSError("no writable directory for the native code cache")


def load_module(source: str, flags: list[str] = _FLAGS):
    """Compile (or find in the cache) and import the extension module for ``source``."""
    key = hashlib.sha256(f"{_KEY_PREFIX}:{flags}\n{source}".encode()).hexdigest()[:24]
    name = f"_fkjit_{key}"
    with _lock:
        mod = _modules.get(name)
        if mod is not None:
            return mod
        cache = cache_dir()
        found = sorted(cache.glob(f"{name}.*.so")) + sorted(cache.glob(f"{name}.so"))
        path = found[0] if found else _build(name, source, flags, cache)
        spec = importlib.util.spec_from_file_location(name, path)
        mod = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(mod)
        _bind_callbacks(mod)
        _modules[name] = mod
        return mod


def _build(name: str, source: str, flags: list[str], cache: Path) -> Path:
    ffi = cffi.FFI()
    ffi.cdef(cgen.CDEF)
    ffi.set_source(name, source, extra_compile_args=flags)
    tmp = tempfile.mkdtemp(prefix="build-", dir=cache)
    try:
        built = Path(ffi.compile(tmpdir=tmp, verbose=False))
        dest = cache / built.name
        os.replace(built, dest)  # atomic: concurrent builders of the same module agree
        return dest
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def _bind_callbacks(mod) -> None:
    ffi = mod.ffi

    @ffi.def_extern(name="fk_py_helper")
    def _helper(token, func_id, callx, depth, r1, r2, r3, r4, r5):
        st = _runs[token]
        try:
            ret = st.call_helper(func_id, callx, depth, r1, r2, r3, r4, r5)
            if ret.__class__ is not int:
                c = st.native
                action, ret = st.tail_call(ret, _base.unpack(c.regs, NREGS), depth)
                c.hstatus = action
            if st.slot_regions:
                _revalidate(st)
            return ret
        except BaseException as exc:  # handed back to the driver, raised there with the insn index
            c = st.native
            st.pending = exc
            c.tail_counted = st.tail_counted
            st.tail_counted = 0
            c.hstatus = H_ERROR
            return 0

    @ffi.def_extern(name="fk_py_resolve")
    def _resolve(token, addr, size, write, depth):
        st = _runs[token]
        try:
            region = st.resolve(addr, size, bool(write), depth)
        except BaseException as exc:
            st.pending = exc
            return -1
        c = st.native
        slot = c.next_slot % cgen.NCACHE + 1
        c.next_slot += 1
        c.ncache = min(c.ncache + 1, cgen.NCACHE)
        ptr = st.host_ptrs.get(region)
        if ptr is None:
            ptr = st.host_ptrs[region] = _base.from_buffer(_U8_ARRAY, region.buf)
        st.slot_regions[slot] = region
        c.cache[slot] = (region.base, region.size, ptr, region.writable)
        return slot

    @ffi.def_extern(name="fk_py_stack")
    def _stack(token, depth):
        st = _runs[token]
        try:
            st.stack(depth)
            _sync_stacks(st)
        except BaseException as exc:
            st.pending = exc
            return -1
        return 0


def _revalidate(st: RunState) -> None:
    """After a helper: forget cached regions it unmapped (the program's stale pointers must fault)."""
    generation = getattr(st.mem, "generation", None)  # bumped by every unmap, where AddressSpace has it
    if generation is not None:
        if generation == st.mem_generation:
            return
        st.mem_generation = generation
    # AddressSpace keeps base -> Region in ``_regions``; a dict probe is 10x cheaper than region_at()
    mapped = getattr(st.mem, "_regions", None)
    lookup = mapped.get if mapped is not None else st.mem.region_at
    for slot, region in list(st.slot_regions.items()):
        if lookup(region.base) is not region:
            st.native.cache[slot].size = 0
            del st.slot_regions[slot]


def _sync_stacks(st: RunState) -> None:
    c = st.native
    while st.native_stacks < len(st.stacks):
        d = st.native_stacks
        region = st.stacks[d]
        ptr = _base.from_buffer(_U8_ARRAY, region.buf)
        st.keepalive.append(ptr)
        c.stack_base[d] = region.base
        c.stack_host[d] = ptr
        st.native_stacks += 1


def _release(st: RunState) -> None:
    """End of a run: drop the buffer exports now (a cdata left to the cyclic GC next to the memoryview
    it exports from can be cleared in the wrong order)."""
    _runs.pop(st.native.token, None)
    for ptr in (*st.keepalive, *st.host_ptrs.values()):
        _base.release(ptr)
    st.keepalive.clear()
    st.host_ptrs.clear()
    st.slot_regions.clear()
    st.native = None


def _native(st: RunState):
    c = st.native
    if c is None:
        c = st.native = _base.new(_RUN_T)
        st.host_ptrs = {}
        st.slot_regions = {}
        st.mem_generation = getattr(st.mem, "generation", None)
        token = c.token = next(_tokens)
        _runs[token] = st
        st.release_hooks.append(_release)
        if st.skb is not None:
            data = st.skb.data
            ptr = _base.from_buffer(_U8_ARRAY, data) if data else _base.NULL
            if data:
                st.keepalive.append(ptr)
            c.skb, c.skb_len, c.has_skb = ptr, len(data), 1
            c.net_off = st.skb.network_offset
            c.has_mac = int(st.skb.mac_offset is not None)
            c.mac_off = st.skb.mac_offset or 0
    _sync_stacks(st)
    return c


class CEngine(Engine):
    """The program as native code (one C function per program, compiled with the system compiler)."""

    tier = "c"

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.source = cgen.generate(self.program, self.max_loops)
        flags = _FLAGS_BIG if len(self.insns) > _BIG_PROGRAM else _FLAGS
        self.module = load_module(self.source, flags)
        self._fn = self.module.lib.fk_prog
        self._repeat = self.module.lib.fk_repeat

    def _finish(self, st: RunState, c, status: int) -> int:
        st.env.insn_count += c.count
        if status == cgen.ST_DONE:
            return c.regs[0]
        regs = _base.unpack(c.regs, NREGS)
        if status == cgen.ST_FAULT:
            msg = self.program.ops[c.pc].message if c.fault == cgen.F_STATIC else \
                _MESSAGES[c.fault]
            raise InterpreterFault(c.pc, msg, regs)
        exc, st.pending = st.pending, None
        if isinstance(exc, InterpreterFault):
            if exc.insn_idx is None:
                exc.insn_idx = c.pc
            if exc.registers is None:
                exc.registers = regs[:NREGS - 1]      # the program's r0-r10, not BPF_REG_AX
        else:
            exc.add_note(f"raised while executing insn {c.pc}")
        raise exc

    def invoke(self, st: RunState, regs: list[int], entry: int, depth: int) -> int:
        c = _native(st)
        c.regs[0:len(regs)] = regs
        c.last = 0
        status = self._fn(c, entry, depth)
        c.hstatus = H_SET  # a nested run inside a helper leaves the outer helper call's status alone
        return self._finish(st, c, status)

    def invoke_repeat(self, st: RunState, regs: list[int], n: int) -> int:
        if self.program.calls_helpers:
            return super().invoke_repeat(st, regs, n)
        c = _native(st)
        c.regs[0:len(regs)] = regs
        c.last = 0
        return self._finish(st, c, self._repeat(c, n))


_probe_result: bool | None = None


def compiler_works() -> bool:
    """Whether programs can be compiled here (probed once per process; the probe module is cached)."""
    global _probe_result
    if _probe_result is None:
        try:
            from uapi.insn import BPF_EXIT_INSN, BPF_MOV64_IMM

            eng = CEngine([BPF_MOV64_IMM(0, MAX_BPF_STACK), BPF_EXIT_INSN()])
            from fakekernel.interp import AddressSpace, RunEnv

            mem = AddressSpace()
            _probe_result = eng.run(mem, 0, helpers={}, env=RunEnv(mem=mem)) == MAX_BPF_STACK
        except Exception:
            _probe_result = False
    return _probe_result
