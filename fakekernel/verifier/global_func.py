"""Global subprograms — kernel/bpf/verifier.c: the global branch of check_func_call,
btf_check_func_arg_match (scalar arguments), do_check_subprogs and the subprog part of
do_check_common.

A call to a global function (BTF FUNC linkage global) checks the arguments against the
function's BTF prototype, is "assumed valid" and returns an unknown scalar; each called global
function is then verified on its own, its parameters unknown scalars.  Prototypes with pointer
parameters (ctx, memory, BTF objects) are not modelled: such programs are accepted unwalked.
"""
from __future__ import annotations

from fakekernel.verifier.env import GiveUp
from fakekernel.verifier.func_call import clear_caller_saved_regs
from fakekernel.verifier.log import BPF_LOG_LEVEL, BPF_LOG_LEVEL2
from fakekernel.verifier.regs import Reg
from uapi.errno import Errno

__all__ = ["call_global_func", "do_check_subprogs"]


def call_global_func(env, state, subprog: int, args_ok: bool) -> None:
    """check_func_call() for a global function (btf_check_subprog_call already ran)."""
    sub = env.subprogs[subprog]
    if sub.struct_args or (sub.nargs is None and not sub.unreliable):
        raise GiveUp("global function prototype not modelled")
    if state.active_lock is not None:
        raise env.fail(state, Errno.EINVAL, "global function calls are not allowed while holding a lock,\n"
                                            "use static function instead\n")
    if not args_ok:
        if sub.nargs is None:
            raise GiveUp("global function prototype not modelled")
        raise env.fail(state, Errno.EINVAL, f"Caller passes invalid args into func#{subprog} ('{sub.name}')\n")
    env.verbose(f"Func#{subprog} ('{sub.name}') is global and assumed valid.\n")
    sub.called = True
    clear_caller_saved_regs(env, state.regs)
    state.regs[0] = Reg.unknown()


def do_check_subprogs(env) -> None:
    """do_check_subprogs(): verify every called global function, until no new one is called."""
    from fakekernel.verifier.check import do_check
    verified = set()
    while True:
        new = 0
        for i, sub in enumerate(env.subprogs):
            if not i or not sub.is_global or not sub.called or i in verified:
                continue
            if sub.nargs is None:
                raise GiveUp("global function prototype not modelled")
            for aux in env.aux:         # free_states()
                aux.states.clear()
            env.verbose(f"Validating {sub.name}() func#{i}...\n")
            do_check(env, i)
            if not env.log.level & BPF_LOG_LEVEL2:
                env.log.reset(0)
            if env.log.level & BPF_LOG_LEVEL:
                env.verbose(f"Func#{i} ('{sub.name}') is safe for any args that match its prototype\n")
            verified.add(i)
            new += 1
        if not new:
            return
