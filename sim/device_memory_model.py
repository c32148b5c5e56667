"""Golden model of the device memory: its bytes and the time its transfers take.

:class:`DeviceMemoryModel` is the store behind the DEVICE memory space and the
LOAD / STORE instructions (:mod:`hetaccel.spec.device_memory`):

* the SDRAM (``"sdram32m"``) is :class:`hetaccel.sim.sdram_model.SdramModel`
  -- its contents, 16-bit beats little-endian, are the bytes here, so a line
  is where the controller and the chip put it -- and its cycles are the
  controller's schedule for the line stream;
* the SPRAM (``"spram128k"``) is a byte array read and written a line a
  cycle (:func:`hetaccel.spec.timing.spram_cycles`).
"""

from __future__ import annotations

import numpy as np

from ..spec import AcceleratorConfig
from ..spec.device_memory import sdram_timing
from ..spec.sdram import CHIPS
from ..spec.timing import spram_cycles
from .sdram_model import SdramModel, Sequential

__all__ = ["DeviceMemoryModel"]


class DeviceMemoryModel:
    """The device memory of ``config`` (which must have one).

    Attributes
    ----------
    memory : hetaccel.spec.device_memory.DeviceMemory
    sdram : SdramModel or None
        The SDRAM's contents and schedule (None for the SPRAM).
    """

    def __init__(self, config: AcceleratorConfig):
        if not isinstance(config, AcceleratorConfig):
            raise TypeError(f"config must be an AcceleratorConfig, not {type(config).__name__}")
        if config.memory is None:
            raise ValueError("this config has no device memory (device_memory='none')")
        self.config = config
        self.memory = config.memory
        self.sdram = None
        self._spram = None
        if self.memory.kind == "sdram":
            self.sdram = SdramModel(CHIPS[self.memory.chips[0]],
                                    sdram_timing(self.memory, config.clock_hz),
                                    read_delay=self.memory.read_delay)
        self._cycle_cache: dict = {}

    @property
    def data(self) -> np.ndarray:
        """Every byte of the store (uint8, a view: writes go to the store)."""
        if self.sdram is not None:
            return self.sdram.memory.view(np.uint8)
        if self._spram is None:
            self._spram = np.zeros(self.memory.bytes, dtype=np.uint8)
        return self._spram

    def _check(self, addr: int, n: int) -> None:
        if not (0 <= addr and 0 <= n and addr + n <= self.memory.bytes):
            raise ValueError(f"bytes [{addr}, {addr + n}) leave the {self.memory.name} "
                             f"device memory of {self.memory.bytes} bytes")

    def read(self, addr: int, n: int) -> bytes:
        """``n`` bytes from byte ``addr``."""
        self._check(addr, n)
        return self.data[addr:addr + n].tobytes()

    def write(self, addr: int, data) -> None:
        """Store ``data`` (bytes) from byte ``addr``."""
        data = bytes(data)
        self._check(addr, len(data))
        self.data[addr:addr + len(data)] = np.frombuffer(data, dtype=np.uint8)

    def transfer_cycles(self, first_line: int, lines: int, write: bool) -> int:
        """Cycles the store takes for ``lines`` consecutive lines from
        ``first_line``, requested back to back from cycle 0 (the
        ``memory_cycles`` of :func:`hetaccel.spec.timing.dma_cycles`)."""
        if self.sdram is None:
            return spram_cycles(lines, write)
        # From closed banks the schedule depends only on where the stream
        # crosses bank and row boundaries: the lines repeat their bank and
        # row-change pattern every banks x (lines per row) lines.
        period = self.sdram.chip.cols // 8 * self.sdram.chip.banks
        key = (first_line % period, lines, write)
        hit = self._cycle_cache.get(key)
        if hit is None:
            hit = self.sdram.transfer_cycles(Sequential(first_line, lines, write))
            if len(self._cycle_cache) > 4096:
                self._cycle_cache.clear()
            self._cycle_cache[key] = hit
        return hit
