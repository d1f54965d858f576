"""The user/kernel ABI of Linux 6.18's bpf(): enums, struct layouts, instruction codec."""
from uapi.bpf import UAPI_VERSION

__all__ = ["UAPI_VERSION"]
