"""Map commands — kernel/bpf/syscall.c (map_create, map_*_elem, map_freeze). PLACEHOLDER: owned by the maps work."""
from fakekernel.errors import Errno, KernelError
from fakekernel.syscall.command import bpf_command
from uapi.bpf import BpfCmd


def _todo(*a):
    raise KernelError(Errno.EINVAL, "not implemented yet")


map_create = bpf_command(BpfCmd.MAP_CREATE, "excl_prog_hash_size")(_todo)
map_lookup_elem = bpf_command(BpfCmd.MAP_LOOKUP_ELEM, "flags")(_todo)
map_update_elem = bpf_command(BpfCmd.MAP_UPDATE_ELEM, "flags")(_todo)
map_delete_elem = bpf_command(BpfCmd.MAP_DELETE_ELEM, "key")(_todo)
map_get_next_key = bpf_command(BpfCmd.MAP_GET_NEXT_KEY, "next_key")(_todo)
map_lookup_and_delete_elem = bpf_command(BpfCmd.MAP_LOOKUP_AND_DELETE_ELEM, "flags")(_todo)
map_freeze = bpf_command(BpfCmd.MAP_FREEZE, "map_fd")(_todo)
