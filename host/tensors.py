"""Tensors resident in device memory, and the allocator that places them.

:meth:`hetaccel.host.Accelerator.upload` sends a weight matrix over the link
once, into the device memory (:mod:`hetaccel.spec.device_memory`), and returns
a :class:`DeviceTensor`; ``matmul`` and ``linear`` then fetch its tiles on the
device (LOAD) instead of sending them on every call.  The tensor is laid out
as the right operand of a GEMM in whole ``rows x cols`` tiles
(:func:`hetaccel.host.planner.resident_weight_bytes`).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

__all__ = ["DeviceTensor", "DeviceMemoryAllocator", "DeviceMemoryFull"]


class DeviceMemoryFull(ValueError):
    """An upload needs more contiguous device memory than is free."""


class DeviceMemoryAllocator:
    """First-fit allocation of line-aligned blocks of a device memory.

    Parameters
    ----------
    capacity : int
        Bytes of the memory.
    align : int
        Every block starts on and spans a multiple of this (the memory's line).
    """

    def __init__(self, capacity: int, align: int):
        if capacity <= 0 or align <= 0 or capacity % align:
            raise ValueError(f"capacity must be a positive multiple of align, not "
                             f"{capacity!r} / {align!r}")
        self.capacity, self.align = capacity, align
        self._free: list[list[int]] = [[0, capacity]]     # [start, size], by address
        self._used: dict[int, int] = {}

    @property
    def used_bytes(self) -> int:
        return sum(self._used.values())

    @property
    def free_bytes(self) -> int:
        return self.capacity - self.used_bytes

    def largest_free(self) -> int:
        return max((size for _, size in self._free), default=0)

    def allocate(self, nbytes: int, what: str = "tensor") -> int:
        """Start of a new block of ``nbytes`` (rounded up to ``align``)."""
        if isinstance(nbytes, bool) or not isinstance(nbytes, (int, np.integer)) or nbytes <= 0:
            raise ValueError(f"nbytes must be a positive integer, not {nbytes!r}")
        size = -(-int(nbytes) // self.align) * self.align
        for block in self._free:
            if block[1] >= size:
                start = block[0]
                block[0] += size
                block[1] -= size
                if block[1] == 0:
                    self._free.remove(block)
                self._used[start] = size
                return start
        raise DeviceMemoryFull(
            f"device memory full: the {what} needs {size} bytes, the largest free block is "
            f"{self.largest_free()} of {self.free_bytes} free bytes ({self.capacity} in all, "
            f"{len(self._used)} tensors resident); free tensors with Accelerator.free()")

    def release(self, start: int) -> None:
        size = self._used.pop(start)
        self._free.append([start, size])
        self._free.sort()
        merged: list[list[int]] = []
        for b in self._free:
            if merged and merged[-1][0] + merged[-1][1] == b[0]:
                merged[-1][1] += b[1]
            else:
                merged.append(b)
        self._free = merged


@dataclass(eq=False)
class DeviceTensor:
    """A matrix resident in device memory.

    Made by :meth:`hetaccel.host.Accelerator.upload`; pass it as ``b`` of
    ``matmul`` (``layout="matmul"``: ``shape`` is ``(k, n)``) or as ``w`` of
    ``linear`` (``layout="linear"``: ``shape`` is ``(out_features,
    in_features)``).  ``dtype`` is what was uploaded (int8, or a float
    quantised per output channel with ``scales``).  ``addr`` and ``nbytes``
    locate it in device memory.  Use it as a context manager, or call
    :meth:`free`, to give its memory back.
    """

    shape: tuple
    dtype: np.dtype
    layout: str
    addr: int
    nbytes: int
    scales: np.ndarray | None = None
    _owner: object = field(default=None, repr=False)
    _norms: np.ndarray | None = field(default=None, repr=False)   # int8 rows' L2 norms
    freed: bool = False
    lost: bool = False            # the device reset while it was resident

    @property
    def operand_shape(self) -> tuple:
        """``(k, n)`` of the GEMM right operand it holds."""
        return self.shape if self.layout == "matmul" else self.shape[::-1]

    def free(self) -> None:
        """Give the tensor's device memory back (idempotent)."""
        if not self.freed and self._owner is not None:
            self._owner.free(self)

    def __enter__(self) -> "DeviceTensor":
        return self

    def __exit__(self, *exc) -> None:
        self.free()
