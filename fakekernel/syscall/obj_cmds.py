"""Object commands — kernel/bpf/syscall.c. PLACEHOLDER: owned by the bpffs/objects work."""
from fakekernel.errors import Errno, KernelError
from fakekernel.syscall.command import bpf_command
from uapi.bpf import BpfCmd


def _todo(*a):
    raise KernelError(Errno.EINVAL, "not implemented yet")


bpf_obj_pin = bpf_command(BpfCmd.OBJ_PIN, "path_fd")(_todo)
bpf_obj_get = bpf_command(BpfCmd.OBJ_GET, "path_fd")(_todo)
bpf_prog_get_next_id = bpf_command(BpfCmd.PROG_GET_NEXT_ID, "next_id")(_todo)
bpf_map_get_next_id = bpf_command(BpfCmd.MAP_GET_NEXT_ID, "next_id")(_todo)
bpf_prog_get_fd_by_id = bpf_command(BpfCmd.PROG_GET_FD_BY_ID, "prog_id")(_todo)
bpf_map_get_fd_by_id = bpf_command(BpfCmd.MAP_GET_FD_BY_ID, "open_flags")(_todo)
bpf_obj_get_info_by_fd = bpf_command(BpfCmd.OBJ_GET_INFO_BY_FD, "info.info")(_todo)
