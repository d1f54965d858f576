"""Object references held through kfuncs — kernel/bpf/helpers.c (the task_struct rcu_users
and cgroup css reference counts behind bpf_task_acquire/release, bpf_cgroup_acquire/release).

Each referenced object has one memory image in the kernel address space (an `ObjectImages`
of fakekernel/btf_objects.py that outlives the program run), so the program can load its
fields through the pointer it was given.  The image appears with the first reference a kfunc
hands out and is unmapped when the last one is released.
"""
from __future__ import annotations

import weakref

import attrs

from fakekernel.btf_objects import ObjectImages
from fakekernel.btf_vmlinux import btf_index

__all__ = ["RefObjects", "ref_objects"]


@attrs.define(eq=False)
class _Ref:
    obj: object
    refs: int = 0
    kind: str = ""
    addr: int = 0                       # 0 while the object has no image
    images: ObjectImages | None = None


class RefObjects:
    """One kernel's referenced objects: by image address and by object."""

    def __init__(self, kern):
        self.kern = kern
        self.by_addr: dict[int, _Ref] = {}
        self.by_obj: dict[int, _Ref] = {}

    def _ref(self, obj) -> _Ref:
        ref = self.by_obj.get(id(obj))
        if ref is None:
            ref = self.by_obj[id(obj)] = _Ref(obj=obj)
        return ref

    def get(self, obj, kind: str) -> int:
        """Take a reference on `obj`, mapping its `kind` image (ObjectImages.object_image) if it
        has none; the image's address."""
        ref = self._ref(obj)
        if ref.images is None:
            ref.images = ObjectImages(self.kern, btf_index(self.kern.btf_vmlinux))
            ref.kind, ref.addr = kind, ref.images.object_image(kind, obj)
            self.by_addr[ref.addr] = ref
        ref.refs += 1
        return ref.addr

    def hold(self, obj) -> None:
        """Take a reference on an object the program reached through another pointer (an
        opaque handle, another run's image): no image is made for it."""
        self._ref(obj).refs += 1

    def refs(self, obj) -> int:
        ref = self.by_obj.get(id(obj))
        return ref.refs if ref is not None else 0

    def put(self, obj) -> int:
        """Drop one reference; the image goes with the last.  The references left."""
        ref = self.by_obj.get(id(obj))
        if ref is None:
            return 0
        ref.refs -= 1
        if ref.refs > 0:
            return ref.refs
        del self.by_obj[id(obj)]
        if ref.images is not None:
            del self.by_addr[ref.addr]
            ref.images.unmap()
        return 0

    def object_at(self, addr: int, kind: str | None = None):
        """The object whose image starts at `addr` (None if there is none of that kind)."""
        ref = self.by_addr.get(addr)
        if ref is None or (kind is not None and ref.kind != kind):
            return None
        return ref.obj


_PER_KERNEL: "weakref.WeakKeyDictionary" = weakref.WeakKeyDictionary()


def ref_objects(kern) -> RefObjects:
    objs = _PER_KERNEL.get(kern)
    if objs is None:
        objs = _PER_KERNEL[kern] = RefObjects(kern)
    return objs
