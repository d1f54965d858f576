"""bpffs — kernel/bpf/inode.c. PLACEHOLDER: owned by the bpffs/objects work."""
from fakekernel.errors import Errno, KernelError


class BpfFs:
    def __init__(self, kern, mountpoint="/sys/fs/bpf"):
        self.kern = kern
        self.mountpoint = mountpoint

    def mkdir(self, path, mode, task):
        raise KernelError(Errno.EPERM, "todo")

    def unlink(self, path, task):
        raise KernelError(Errno.ENOENT, "todo")

    def rmdir(self, path, task):
        raise KernelError(Errno.ENOENT, "todo")

    def rm_tree(self, path):
        pass

    def pinned_objects(self):
        return set()
