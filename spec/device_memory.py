"""Device memory: the board store that keeps tensors resident on the device.

A config names its device memory by :attr:`AcceleratorConfig.device_memory`,
a key of :data:`DEVICE_MEMORIES`:

``"none"``       no device memory: every operand crosses the host link.
``"sdram32m"``   the ULX3S's 16-bit SDR SDRAM (32 MB) behind
                 :class:`hetaccel.rtl.sdram.SdramController`: 16-byte lines
                 (one burst of 8 beats), timed by the controller's schedule
                 (:class:`hetaccel.sim.sdram_model.SdramModel`) for the
                 slowest of the board's chips at the config's clock.
``"spram128k"``  the iCE40UP5K's four SPRAM blocks (128 KB) side by side as
                 one 64-bit memory: 8-byte lines, one a cycle.

The host fills the store through WRITE_MEM / READ_MEM of
:attr:`~hetaccel.spec.MemSpace.DEVICE` (whole lines, once per tensor) and the
device moves words between it and the scratchpads with LOAD and STORE, queued
like GEMM (docs/isa.md, docs/device-memory.md).

A transfer covers whole lines: it moves ``count`` consecutive words of a
scratchpad to or from the bytes ``[dram_addr, dram_addr + count * word)`` of the
store, word ``i`` at byte ``dram_addr + i * word`` in its wire layout
(:func:`hetaccel.spec.pack_words`), and both ends must fall on a line
boundary.  Words of half a line are packed two to a line (a 16-byte line
holds two 8-byte INPUT words), larger ones span consecutive lines, so no
transfer needs a partial-line write; smaller words are not moved
(:func:`hetaccel.spec.dma_spaces`).
"""

from __future__ import annotations

from dataclasses import dataclass

from .sdram import ULX3S_CHIPS, SdramTiming, worst_case

__all__ = ["DeviceMemory", "DEVICE_MEMORIES", "device_memory", "sdram_timing",
           "DMA_LOAD_SPACES", "DMA_STORE_SPACES"]


@dataclass(frozen=True)
class DeviceMemory:
    """One kind of device memory.

    ``kind`` is ``"sdram"`` or ``"spram"``; ``bytes`` its capacity and
    ``line_bytes`` the unit it is read and written in (and the alignment of
    every transfer).  ``chips`` lists the SDRAM parts the controller must work
    with (it is built for the slowest of them in every timing);
    ``read_delay`` the registers between the chip's data pins and the
    controller (the board's input registers), which the controller and its
    model take as given.
    """

    name: str
    kind: str
    bytes: int
    line_bytes: int
    chips: tuple = ()
    read_delay: int = 0

    @property
    def lines(self) -> int:
        return self.bytes // self.line_bytes


DEVICE_MEMORIES: dict[str, DeviceMemory | None] = {
    "none": None,
    "sdram32m": DeviceMemory("sdram32m", "sdram", 32 << 20, 16, tuple(ULX3S_CHIPS),
                             read_delay=1),
    "spram128k": DeviceMemory("spram128k", "spram", 128 << 10, 8),
}

#: Scratchpads LOAD may fill and STORE may empty.  TABLE stays with WRITE_MEM
#: (one-byte words, written once per model).
DMA_LOAD_SPACES = ("INPUT", "WEIGHT", "ACC", "OPT", "ACT_PARAM")
DMA_STORE_SPACES = ("INPUT", "WEIGHT", "ACC", "OUTPUT", "OPT")


def device_memory(name: str) -> DeviceMemory | None:
    """The :class:`DeviceMemory` named ``name`` (None for ``"none"``)."""
    if name not in DEVICE_MEMORIES:
        raise ValueError(f"device_memory must be one of {', '.join(map(repr, DEVICE_MEMORIES))}, "
                         f"not {name!r}")
    return DEVICE_MEMORIES[name]


def sdram_timing(memory: DeviceMemory, clock_hz: float) -> SdramTiming:
    """The timings the SDRAM controller is built with at ``clock_hz``: the
    slowest of ``memory.chips`` in every parameter, CAS latency 3."""
    if memory is None or memory.kind != "sdram":
        raise ValueError(f"{memory!r} is not an SDRAM device memory")
    return worst_case(memory.chips, clock_hz)
