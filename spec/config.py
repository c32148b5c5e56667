"""``AcceleratorConfig``: the parameters of one generated accelerator.

A config is validated when it is built, so an impossible accelerator is
rejected with a :class:`ValueError` that names the field and the allowed range
instead of being generated and silently wrapping.
"""

from __future__ import annotations

import dataclasses
import json
import math
from dataclasses import dataclass, field
from typing import Any, Mapping

from .device_memory import DEVICE_MEMORIES, device_memory, sdram_timing
from .link import LinkFormat

__all__ = ["AcceleratorConfig", "DEFAULT_CONFIG", "MAC_MAPPINGS", "min_acc_bits"]


#: Values of ``AcceleratorConfig.mac_mapping`` (identity register CONFIG4
#: reports the index).
MAC_MAPPINGS: tuple[str, ...] = ("generic", "ice40_dual", "ecp5_mult18")


def min_acc_bits(operand_bits: int, max_k: int) -> int:
    """Smallest signed accumulator that holds any sum of ``max_k`` products.

    The largest product magnitude of two signed ``operand_bits`` numbers is
    ``2**(2*operand_bits - 2)`` (from ``-2**(b-1) * -2**(b-1)``), which needs
    ``2*operand_bits`` signed bits; summing ``max_k`` of them adds
    ``ceil(log2(max_k))`` bits.
    """
    return 2 * operand_bits + max(0, math.ceil(math.log2(max_k)))


def check_int(name: str, value: Any, lo: int, hi: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int):
        raise ValueError(f"{name} must be an integer in [{lo}, {hi}], not {value!r}")
    if not lo <= value <= hi:
        raise ValueError(f"{name} must be in [{lo}, {hi}], got {value}")


def _check_pow2(name: str, value: int) -> None:
    if value & (value - 1):
        raise ValueError(f"{name} must be a power of two, got {value}")


@dataclass(frozen=True)
class AcceleratorConfig:
    """Parameters of one generated accelerator.

    Parameters
    ----------
    rows, cols : int
        Systolic array shape.  ``rows`` is the reduction (K) dimension of one
        weight tile, ``cols`` the output (N) dimension.  1..64 each.
    operand_bits : int
        Width of the signed activation and weight operands (int8 by default).
    acc_bits : int
        Width of the signed accumulators.  Must be at least
        ``min_acc_bits(operand_bits, max_k)`` so no legal reduction can wrap.
    max_k : int
        Longest reduction, in elements, that one accumulator may sum (a long K is
        split into ``ceil(K / rows)`` tiles accumulated into the same rows).
    input_depth, weight_depth, acc_depth, output_depth : int
        Scratchpad depths in rows (words).  An input row holds ``rows`` operands,
        a weight row ``cols`` operands, an accumulator row ``cols`` accumulators,
        an output row ``cols`` int8 results.  Powers of two.
    opt_depth : int
        fp32 optimizer-state scratchpad depth in parameters (each parameter
        keeps param, grad, m and v).
    adam_lanes : int
        Parameters the Adam unit retires per cycle.
    has_activation, has_adam : bool
        Whether the requant/activation unit and the Adam unit are generated, so a
        small FPGA can carry only the units that fit.
    clock_hz : int
        Target core clock.
    baud : int
        Host UART baud rate on boards.
    max_payload : int
        Largest payload, in bytes, of one link frame.
    link_buffers : int
        Frame buffers in the host link (2..4): one frame can arrive while
        another executes; with none free the link answers BUSY itself.
    link_timeout_cycles : int
        Inter-byte timeout of the host link in core cycles: a partial frame
        is abandoned after this many cycles without a byte (16..2**28).
    cmd_queue_depth : int
        Compute instructions (GEMM / ACTIVATE / ADAM) the command processor
        queues, the running one included, 1..16 (see docs/isa.md).
    act_param_depth : int
        Entries of the per-channel requant parameter memory
        (``MemSpace.ACT_PARAM``); one entry holds ``cols`` channels.  Power of two.
    act_tables : int
        256-entry int8 lookup tables in ``MemSpace.TABLE``, 1..16.
    act_lanes : int
        Physical lanes of the activation unit: 0 (the default) builds one per
        array column; otherwise a divisor of ``cols`` that leaves a power of
        two :attr:`act_fold`, and the unit processes each row of ``cols``
        channels in ``act_fold`` consecutive beats of ``act_lanes`` channels
        (cycles: :func:`hetaccel.spec.timing.instruction_cycles`).  Its
        arithmetic and multipliers shrink with the lane count; results do not
        change.  Identity register CONFIG4 reports it as given (0 included).
    mac_mapping : str
        How the array's products are built (one of :data:`MAC_MAPPINGS`, see
        docs/matmul.md): ``"generic"`` -- ``a * w``, Yosys infers one hard
        multiplier per product; ``"ice40_dual"`` -- two PEs share one iCE40
        SB_MAC16 in its dual signed 8x8 mode (needs ``operand_bits = 8`` and an
        even number of DSP PEs); ``"ecp5_mult18"`` -- each PE instantiates one
        ECP5 MULT18X18D whose input and output registers are the PE's
        operand and product registers (any ``operand_bits``, at most 18).  It
        changes the netlist, never a result or a cycle.
    lut_multipliers : int
        PEs (the last ones in row-major order) whose product is an explicit
        LUT adder tree instead of a hard multiplier, 0..rows*cols, so an array
        can exceed the device's DSP count.
    device_memory : str
        The store tensors stay resident in (a key of
        :data:`hetaccel.spec.device_memory.DEVICE_MEMORIES`): ``"none"``,
        ``"sdram32m"`` (the ULX3S SDRAM) or ``"spram128k"`` (the UP5K's
        SPRAM).  With one, the device has the DEVICE memory space and the
        LOAD / STORE instructions (docs/device-memory.md).
    """

    rows: int = 8
    cols: int = 8
    operand_bits: int = 8
    acc_bits: int = 32
    max_k: int = 4096
    input_depth: int = 512
    weight_depth: int = 512
    acc_depth: int = 512
    output_depth: int = 512
    opt_depth: int = 1024
    adam_lanes: int = 1
    has_activation: bool = True
    has_adam: bool = True
    clock_hz: int = 50_000_000
    baud: int = 3_000_000
    max_payload: int = 1024
    link_buffers: int = 2
    link_timeout_cycles: int = 1 << 20
    cmd_queue_depth: int = 4
    act_param_depth: int = 64
    act_tables: int = 4
    act_lanes: int = 0
    mac_mapping: str = "generic"
    lut_multipliers: int = 0
    device_memory: str = "none"
    link: LinkFormat = field(default_factory=LinkFormat, compare=True)

    def __post_init__(self) -> None:
        check_int("rows", self.rows, 1, 64)
        check_int("cols", self.cols, 1, 64)
        check_int("operand_bits", self.operand_bits, 2, 16)
        check_int("acc_bits", self.acc_bits, 4, 64)
        check_int("max_k", self.max_k, 1, 1 << 20)
        need = min_acc_bits(self.operand_bits, self.max_k)
        if self.acc_bits < need:
            raise ValueError(
                f"acc_bits must be at least 2*operand_bits + ceil(log2(max_k)) = "
                f"2*{self.operand_bits} + {math.ceil(math.log2(self.max_k))} = {need} "
                f"so a reduction of max_k={self.max_k} cannot wrap; got {self.acc_bits}")
        for name in ("input_depth", "weight_depth", "acc_depth", "output_depth", "opt_depth"):
            check_int(name, getattr(self, name), 2, 1 << 20)
            _check_pow2(name, getattr(self, name))
        check_int("adam_lanes", self.adam_lanes, 1, 16)
        for name in ("has_activation", "has_adam"):
            if not isinstance(getattr(self, name), bool):
                raise ValueError(f"{name} must be a bool, not {getattr(self, name)!r}")
        check_int("clock_hz", self.clock_hz, 1_000_000, 2_000_000_000)
        check_int("baud", self.baud, 9600, 100_000_000)
        check_int("max_payload", self.max_payload, 16, 65535)
        check_int("cmd_queue_depth", self.cmd_queue_depth, 1, 16)
        check_int("act_param_depth", self.act_param_depth, 1, 1 << 16)
        _check_pow2("act_param_depth", self.act_param_depth)
        check_int("act_tables", self.act_tables, 1, 16)
        check_int("act_lanes", self.act_lanes, 0, 64)
        fold = self.cols // self.act_lanes if self.act_lanes else 1
        if self.cols % (self.act_lanes or 1) or fold & (fold - 1):
            fits = [self.cols >> i for i in range(self.cols.bit_length())
                    if self.cols % (1 << i) == 0]
            raise ValueError(
                f"act_lanes must divide cols={self.cols} into a power-of-two number of beats "
                f"per row (0 for one lane per column, or {', '.join(map(str, fits))}), "
                f"not {self.act_lanes}")
        check_int("link_buffers", self.link_buffers, 2, 4)
        check_int("link_timeout_cycles", self.link_timeout_cycles, 16, 1 << 28)
        if self.weight_depth < self.rows:
            raise ValueError(
                f"weight_depth must hold at least one weight tile (rows={self.rows}), "
                f"got {self.weight_depth}")
        if self.mac_mapping not in MAC_MAPPINGS:
            raise ValueError(f"mac_mapping must be one of {', '.join(map(repr, MAC_MAPPINGS))}, "
                             f"got {self.mac_mapping!r}")
        check_int("lut_multipliers", self.lut_multipliers, 0, self.rows * self.cols)
        mem = device_memory(self.device_memory)
        if mem is not None and mem.kind == "sdram":
            try:
                sdram_timing(mem, self.clock_hz)
            except ValueError as e:
                raise ValueError(f"device_memory={self.device_memory!r} cannot run at "
                                 f"clock_hz={self.clock_hz}: {e}") from None
        if self.mac_mapping == "ice40_dual":
            if self.operand_bits != 8:
                raise ValueError(f"mac_mapping='ice40_dual' needs operand_bits=8 (SB_MAC16 dual "
                                 f"8x8 mode), got operand_bits={self.operand_bits}")
            if (self.rows * self.cols - self.lut_multipliers) % 2:
                raise ValueError(
                    f"mac_mapping='ice40_dual' pairs PEs on SB_MAC16s: rows*cols - lut_multipliers "
                    f"= {self.rows}*{self.cols} - {self.lut_multipliers} must be even")

    # --- derived quantities -------------------------------------------------

    @property
    def macs(self) -> int:
        """Multiply-accumulates per cycle of the systolic array."""
        return self.rows * self.cols

    @property
    def lanes(self) -> int:
        """Channels of the requant/activation unit's rows: one per array column
        (it may process them on fewer physical lanes, :attr:`act_physical_lanes`)."""
        return self.cols

    @property
    def act_physical_lanes(self) -> int:
        """Lanes the activation unit is built with: ``act_lanes``, or ``cols`` for 0."""
        return self.act_lanes or self.cols

    @property
    def act_fold(self) -> int:
        """Beats the activation unit takes per row: ``cols // act_physical_lanes``."""
        return self.cols // self.act_physical_lanes

    @property
    def memory(self):
        """The :class:`~hetaccel.spec.device_memory.DeviceMemory` (None without one)."""
        return DEVICE_MEMORIES[self.device_memory]

    @property
    def operand_min(self) -> int:
        return -(1 << (self.operand_bits - 1))

    @property
    def operand_max(self) -> int:
        return (1 << (self.operand_bits - 1)) - 1

    @property
    def peak_ops_per_cycle(self) -> int:
        """Counting a MAC as two operations, as GOPS figures conventionally do."""
        return 2 * self.macs

    # --- (de)serialisation -------------------------------------------------

    def replace(self, **changes: Any) -> "AcceleratorConfig":
        """A copy with ``changes`` applied, validated like a new config."""
        return dataclasses.replace(self, **changes)

    def to_dict(self) -> dict:
        d = dataclasses.asdict(self)
        d.pop("link")
        return d

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), sort_keys=True)

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> "AcceleratorConfig":
        known = {f.name for f in dataclasses.fields(cls)} - {"link"}
        unknown = set(d) - known
        if unknown:
            raise ValueError(f"unknown config field(s): {', '.join(sorted(unknown))}; "
                             f"known fields are {', '.join(sorted(known))}")
        return cls(**d)

    @classmethod
    def from_json(cls, text: str) -> "AcceleratorConfig":
        return cls.from_dict(json.loads(text))


DEFAULT_CONFIG = AcceleratorConfig()
