"""bpffs and the little VFS around it — kernel/bpf/inode.c (+ the fs/namei.c rules it relies on).

A `Kernel` owns one `BpfFs`: a tree of `Inode`s shared by every task of that kernel.  The
bpf filesystem is mounted at ``kern.bpffs_mount``; the rest of the tree is a minimal host
(``/``, ``/sys/fs/cgroup``, ``/tmp``, ``/proc`` ...) so that paths outside bpffs fail the
way they do on Linux: pinning into a host directory is EPERM, into a missing one ENOENT.

Pins are regular files whose inode holds one reference on the object (a map pin holds a
user reference too, as ``bpf_map_inc_with_uref``); unlinking the pin drops it.
"""
from __future__ import annotations

import attrs

from fakekernel.errors import Errno, KernelError
from fakekernel.fdtable import O_ACCMODE, O_RDONLY, O_RDWR, O_WRONLY, File
from uapi.capability import Cap

__all__ = ["BpfFs", "Inode", "PATH_MAX", "NAME_MAX", "BPF_TYPE_PROG", "BPF_TYPE_MAP",
           "BPF_TYPE_LINK", "DIR_FILE_KIND"]

PATH_MAX = 4096          # include/uapi/linux/limits.h (counts the NUL)
NAME_MAX = 255

# enum bpf_type of kernel/bpf/inode.c, spelled as the pin kinds
BPF_TYPE_PROG = "prog"
BPF_TYPE_MAP = "map"
BPF_TYPE_LINK = "link"
_OBJ_KINDS = (BPF_TYPE_PROG, BPF_TYPE_MAP, BPF_TYPE_LINK)

DIR_FILE_KIND = "dir"    # File.kind of an opened directory (usable as a path_fd)

# include/uapi/linux/stat.h
S_IFMT, S_IFDIR, S_IFREG, S_IFLNK = 0o170000, 0o040000, 0o100000, 0o120000
SYMLINK = "symlink"       # Inode.kind of a symbolic link (bpf_symlink)
MAXSYMLINKS = 40          # include/linux/namei.h
S_ISVTX = 0o1000
S_IRWXUGO = 0o777
S_IRUSR, S_IWUSR = 0o400, 0o200
# include/linux/fs.h MAY_*
MAY_EXEC, MAY_WRITE, MAY_READ = 0x1, 0x2, 0x4
_DEFAULT_UMASK = 0o022

# filesystems of the host tree
FS_BPF = "bpf"
FS_HOST = "tmpfs"        # any ordinary filesystem: lookups succeed or are negative
FS_PROC = "proc"         # negative lookups in procfs fail with ENOENT
_HOST_DIRS = {"/": FS_HOST, "/sys": FS_HOST, "/sys/fs": FS_HOST, "/sys/fs/cgroup": FS_HOST,
              "/tmp": FS_HOST, "/dev": FS_HOST, "/etc": FS_HOST, "/run": FS_HOST,
              "/var": FS_HOST, "/root": FS_HOST, "/home": FS_HOST, "/proc": FS_PROC}
_HOST_MODES = {"/tmp": S_ISVTX | S_IRWXUGO}


@attrs.define(eq=False)
class Inode:
    """struct inode + its dentry name: a directory, or a pin of a prog/map/link."""

    mode: int
    fs: str
    uid: int = 0
    gid: int = 0
    kind: str = "dir"                      # "dir" or one of _OBJ_KINDS
    obj: object = None                     # the pinned object (holds a reference)
    parent: "Inode | None" = None
    name: str = ""
    children: dict = attrs.field(factory=dict)
    mountpoint: bool = False               # a mount or a host skeleton dir: rmdir is EBUSY
    link: str = ""                         # a symlink's target

    @property
    def is_dir(self) -> bool:
        return self.kind == "dir"

    @property
    def is_bpf_dir(self) -> bool:
        """dir->i_op == &bpf_dir_iops."""
        return self.is_dir and self.fs == FS_BPF

    def file_release(self, file) -> None:
        """An opened directory holds no reference worth dropping."""


@attrs.frozen
class _Walk:
    """The result of a parent walk (≈ struct nameidata after path_parentat)."""

    parent: Inode
    last: str            # the final component, "" for "/"
    last_type: str       # "norm", "dot", "dotdot", "root"
    trailing_slash: bool


def _any_get(obj, kind: str) -> None:
    """bpf_any_get()."""
    if kind == BPF_TYPE_MAP:
        obj.get(uref=True)
    else:
        obj.get()


def _any_put(obj, kind: str) -> None:
    """bpf_any_put()."""
    if kind == BPF_TYPE_MAP:
        obj.put(uref=True)
    else:
        obj.put()


class BpfFs:
    """The kernel's view of paths: the host skeleton plus the bpffs mount."""

    def __init__(self, kern, mountpoint: str = "/sys/fs/bpf"):
        self.kern = kern
        self.mountpoint = mountpoint
        self.umask = _DEFAULT_UMASK
        self.root = Inode(mode=S_IFDIR | 0o755, fs=FS_HOST)
        self.root.parent = self.root
        for path, fs in _HOST_DIRS.items():
            self._make_skeleton(path, fs, _HOST_MODES.get(path, 0o755))
        mnt = self._make_skeleton(mountpoint, FS_BPF, S_ISVTX | S_IRWXUGO)   # bpf_fill_super
        mnt.fs, mnt.mode, mnt.mountpoint = FS_BPF, S_IFDIR | S_ISVTX | S_IRWXUGO, True

    def _make_skeleton(self, path: str, fs: str, perm: int) -> Inode:
        node = self.root
        for part in [p for p in path.split("/") if p]:
            child = node.children.get(part)
            if child is None:
                child = Inode(mode=S_IFDIR | perm, fs=fs, parent=node, name=part,
                              mountpoint=True)
                node.children[part] = child
            node = child
        return node

    # ---------------------------------------------------------------- path walking (fs/namei.c)

    def _start(self, path: str, task, dirfd: int | None) -> Inode:
        if path.startswith("/"):
            return self.root
        if dirfd is None:           # AT_FDCWD: every task's cwd is "/"
            return self.root
        f = task.files.fdget(dirfd)
        if f.kind != DIR_FILE_KIND:
            raise KernelError(Errno.ENOTDIR, f"path_fd {dirfd} is not a directory")
        return f.private_data

    @staticmethod
    def _check_name_len(path: str) -> None:
        if len(path.encode()) >= PATH_MAX:
            raise KernelError(Errno.ENAMETOOLONG, "path longer than PATH_MAX")
        if not path:
            raise KernelError(Errno.ENOENT, "empty path")

    def _lookup_one(self, task, dir_: Inode, name: str) -> Inode | None:
        """lookup_one + the filesystem's ->lookup: None for a negative dentry."""
        if len(name.encode()) > NAME_MAX:
            raise KernelError(Errno.ENAMETOOLONG, "path component longer than NAME_MAX")
        if dir_.fs == FS_BPF and "." in name and dir_.mode & S_IRWXUGO:
            raise KernelError(Errno.EPERM, "bpf_lookup: dots are reserved in bpffs names")
        child = dir_.children.get(name)
        if child is None and dir_.fs == FS_PROC:
            raise KernelError(Errno.ENOENT, "procfs has no such entry")
        return child

    def _walk_parent(self, path: str, task, dirfd: int | None = None) -> _Walk:
        """path_parentat(): resolve all but the last component."""
        self._check_name_len(path)
        node = self._start(path, task, dirfd)
        parts = path.split("/")
        trailing = len(parts) > 1 and parts[-1] == "" and any(parts)
        comps = [p for p in parts if p]
        if not comps:
            return _Walk(self.root if path.startswith("/") else node, "", "root", False)
        for comp in comps[:-1]:
            node = self._step(task, node, comp)
        last = comps[-1]
        if not node.is_dir:
            raise KernelError(Errno.ENOTDIR, "a path component is not a directory")
        self._may(task, node, MAY_EXEC)
        kind = {".": "dot", "..": "dotdot"}.get(last, "norm")
        return _Walk(node, last, kind, trailing)

    def _step(self, task, node: Inode, comp: str, follow: bool = True, depth: list | None = None) -> Inode:
        if not node.is_dir:
            raise KernelError(Errno.ENOTDIR, "a path component is not a directory")
        self._may(task, node, MAY_EXEC)
        if comp == ".":
            return node
        if comp == "..":
            return node.parent
        child = self._lookup_one(task, node, comp)
        if child is None:
            raise KernelError(Errno.ENOENT, f"no such file or directory: {comp}")
        if child.kind == SYMLINK and follow:
            return self._follow(task, node, child, depth if depth is not None else [0])
        return child

    def _follow(self, task, dir_: Inode, link: Inode, depth: list) -> Inode:
        """pick_link(): walk the link's target from the directory holding the link (or from
        the root for an absolute one); ELOOP past MAXSYMLINKS links on one walk."""
        depth[0] += 1
        if depth[0] > MAXSYMLINKS:
            raise KernelError(Errno.ELOOP, "too many levels of symbolic links")
        target = link.link
        node = self.root if target.startswith("/") else dir_
        comps = [c for c in target.split("/") if c]
        for comp in comps:
            node = self._step(task, node, comp, True, depth)
        if target.endswith("/") and not node.is_dir:
            raise KernelError(Errno.ENOTDIR, "trailing slash on a non-directory")
        return node

    def lookup(self, path: str, task, dirfd: int | None = None, *, follow: bool = True) -> Inode:
        """user_path_at(): the inode `path` names (LOOKUP_FOLLOW unless follow=False, which is
        how lstat and AT_SYMLINK_NOFOLLOW see a final symlink itself)."""
        w = self._walk_parent(path, task, dirfd)
        if w.last_type == "root":
            return w.parent
        node = self._step(task, w.parent, w.last, follow or w.trailing_slash)
        if w.trailing_slash and not node.is_dir:
            raise KernelError(Errno.ENOTDIR, "trailing slash on a non-directory")
        return node

    def symlink(self, target: str, path: str, task, dirfd: int | None = None) -> None:
        """symlinkat(2) in a bpffs directory: bpf_symlink() keeps the target string."""
        if not target:
            raise KernelError(Errno.ENOENT, "empty symlink target")
        w = self._create(path, task, dirfd, is_dir=False)
        if not w.parent.is_bpf_dir:
            raise KernelError(Errno.EPERM, "symlinks here only in bpffs directories")
        w.parent.children[w.last] = Inode(mode=S_IFLNK | S_IRWXUGO, fs=w.parent.fs, uid=task.creds.uid,
                                          gid=task.creds.gid, kind=SYMLINK, parent=w.parent,
                                          name=w.last, link=target)

    def readlink(self, path: str, task, dirfd: int | None = None) -> str:
        """readlinkat(2): the target of the symlink `path` names (EINVAL for anything else)."""
        node = self.lookup(path, task, dirfd, follow=False)
        if node.kind != SYMLINK:
            raise KernelError(Errno.EINVAL, "not a symbolic link")
        return node.link

    def _create(self, path: str, task, dirfd: int | None, is_dir: bool) -> _Walk:
        """filename_create(): the parent of a new entry (EEXIST / ENOENT rules)."""
        w = self._walk_parent(path, task, dirfd)
        if w.last_type != "norm":
            raise KernelError(Errno.EEXIST, "cannot create '/', '.' or '..'")
        existing = self._lookup_one(task, w.parent, w.last)
        if existing is not None:
            raise KernelError(Errno.EEXIST, "file exists")
        if w.trailing_slash and not is_dir:
            raise KernelError(Errno.ENOENT, "trailing slash names no directory")
        self._may(task, w.parent, MAY_WRITE | MAY_EXEC)
        return w

    # ---------------------------------------------------------------- permissions (fs/namei.c)

    def _may(self, task, inode: Inode, mask: int) -> None:
        """inode_permission() with the DAC override capabilities."""
        if self._permitted(task, inode, mask):
            return
        raise KernelError(Errno.EACCES, "permission denied")

    @staticmethod
    def _permitted(task, inode: Inode, mask: int) -> bool:
        creds = task.creds
        if creds.uid == inode.uid:
            bits = (inode.mode >> 6) & 0o7
        elif creds.gid == inode.gid:
            bits = (inode.mode >> 3) & 0o7
        else:
            bits = inode.mode & 0o7
        if mask & ~bits & 0o7 == 0:
            return True
        # capable_wrt_inode_uidgid(): CAP_DAC_OVERRIDE / CAP_DAC_READ_SEARCH
        if inode.is_dir:
            if creds.capable(Cap.DAC_OVERRIDE):
                return True
            return not (mask & MAY_WRITE) and creds.capable(Cap.DAC_READ_SEARCH)
        if not (mask & MAY_EXEC) and creds.capable(Cap.DAC_OVERRIDE):
            return True
        return mask == MAY_READ and creds.capable(Cap.DAC_READ_SEARCH)

    def _may_delete(self, task, dir_: Inode, victim: Inode) -> None:
        """may_delete(): write+exec on the directory, and the sticky-bit rule."""
        self._may(task, dir_, MAY_WRITE | MAY_EXEC)
        uid = task.creds.uid
        if (dir_.mode & S_ISVTX and uid not in (dir_.uid, victim.uid)
                and not task.creds.capable(Cap.FOWNER)):
            raise KernelError(Errno.EPERM, "sticky directory")

    # ---------------------------------------------------------------- bpf(): pin / get

    def pin(self, obj, kind: str, path: str, task, dirfd: int | None = None) -> None:
        """bpf_obj_do_pin(): a new pin at `path` holding its own reference on `obj`."""
        w = self._create(path, task, dirfd, is_dir=False)
        if not w.parent.is_bpf_dir:
            raise KernelError(Errno.EPERM, "pins live only in bpffs directories")
        if kind not in _OBJ_KINDS:
            raise KernelError(Errno.EPERM, f"cannot pin a {kind}")
        mode = S_IFREG | ((S_IRUSR | S_IWUSR) & ~self.umask)
        _any_get(obj, kind)
        w.parent.children[w.last] = Inode(mode=mode, fs=FS_BPF, uid=task.creds.uid,
                                          gid=task.creds.gid, kind=kind, obj=obj,
                                          parent=w.parent, name=w.last)

    def get(self, path: str, task, f_flags: int = O_RDWR,
            dirfd: int | None = None) -> tuple[str, object]:
        """bpf_obj_do_get(): (kind, obj) of the pin at `path`, with a new reference taken.

        `f_flags` is the open mode (O_RDONLY / O_WRONLY / O_RDWR) checked against the pin's
        permissions.  The caller owns the reference (hand it to a new fd or put it).
        """
        node = self.lookup(path, task, dirfd)
        acc = f_flags & O_ACCMODE
        mask = {O_RDONLY: MAY_READ, O_WRONLY: MAY_WRITE}.get(acc, MAY_READ | MAY_WRITE)
        self._may(task, node, mask)
        if node.kind not in _OBJ_KINDS:
            raise KernelError(Errno.EACCES, "bpf_inode_type: not a bpf object")
        _any_get(node.obj, node.kind)
        return node.kind, node.obj

    # ---------------------------------------------------------------- VFS syscalls

    def mkdir(self, path: str, mode: int, task) -> None:
        """mkdir(2): a bpffs directory inside bpffs, a plain host directory elsewhere."""
        w = self._create(path, task, None, is_dir=True)
        perm = mode & (S_IRWXUGO | S_ISVTX) & ~self.umask
        w.parent.children[w.last] = Inode(mode=S_IFDIR | perm, fs=w.parent.fs,
                                          uid=task.creds.uid, gid=task.creds.gid,
                                          parent=w.parent, name=w.last)

    def unlink(self, path: str, task) -> None:
        """unlink(2): removing a pin drops the reference it held."""
        w = self._walk_parent(path, task)
        if w.last_type != "norm":
            raise KernelError(Errno.EISDIR, "cannot unlink '/', '.' or '..'")
        victim = self._lookup_one(task, w.parent, w.last)
        if w.trailing_slash:
            if victim is None:
                raise KernelError(Errno.ENOENT, "no such file or directory")
            raise KernelError(Errno.EISDIR if victim.is_dir else Errno.ENOTDIR, "trailing slash")
        if victim is None:
            raise KernelError(Errno.ENOENT, "no such file or directory")
        self._may_delete(task, w.parent, victim)
        if victim.is_dir:
            raise KernelError(Errno.EISDIR, "is a directory")
        self._detach(w.parent, victim)

    def rmdir(self, path: str, task) -> None:
        """rmdir(2)."""
        w = self._walk_parent(path, task)
        errs = {"dotdot": Errno.ENOTEMPTY, "dot": Errno.EINVAL, "root": Errno.EBUSY}
        if w.last_type in errs:
            raise KernelError(errs[w.last_type], "cannot rmdir '/', '.' or '..'")
        victim = self._lookup_one(task, w.parent, w.last)
        if victim is None:
            raise KernelError(Errno.ENOENT, "no such file or directory")
        self._may_delete(task, w.parent, victim)
        if not victim.is_dir:
            raise KernelError(Errno.ENOTDIR, "not a directory")
        if victim.mountpoint or victim.fs != w.parent.fs:
            raise KernelError(Errno.EBUSY, "mount point")
        if victim.children:
            raise KernelError(Errno.ENOTEMPTY, "directory not empty")
        del w.parent.children[w.last]

    def open(self, path: str, flags: int, task) -> int:
        """open(2) of a directory (O_RDONLY | O_DIRECTORY), e.g. for BPF_F_PATH_FD."""
        node = self.lookup(path, task)
        if not node.is_dir:
            raise KernelError(Errno.ENXIO, "only directories can be opened here")
        self._may(task, node, MAY_READ)
        return task.files.install(File(kind=DIR_FILE_KIND, private_data=node, f_flags=flags))

    def _detach(self, parent: Inode, victim: Inode) -> None:
        del parent.children[victim.name]
        if victim.kind in _OBJ_KINDS:
            obj, victim.obj = victim.obj, None
            _any_put(obj, victim.kind)

    # ---------------------------------------------------------------- tests and leak check

    def rm_tree(self, path: str) -> None:
        """Remove `path` and everything below it, dropping the pins' references; never fails."""
        try:
            node = self.lookup(path, self.kern.current)
        except KernelError:
            return
        self._rm_node(node)

    def _rm_node(self, node: Inode) -> None:
        if node.mountpoint:
            for child in list(node.children.values()):
                self._rm_node(child)
            return
        for child in list(node.children.values()):
            self._rm_node(child)
        self._detach(node.parent, node)

    def pinned_objects(self) -> set:
        """Every object some pin currently holds."""
        out, stack = set(), [self.root]
        while stack:
            node = stack.pop()
            if node.obj is not None:
                out.add(node.obj)
            stack.extend(node.children.values())
        return out

    def pins(self) -> dict[str, tuple[str, object]]:
        """path -> (kind, obj) of every pin (debugging, tests)."""
        out, stack = {}, [(self.root, "")]
        while stack:
            node, p = stack.pop()
            for name, child in node.children.items():
                cp = f"{p}/{name}"
                if child.obj is not None:
                    out[cp] = (child.kind, child.obj)
                stack.append((child, cp))
        return out
