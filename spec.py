"""The one source of truth for an accelerator instance.

Every parameter the RTL generator, the bit-exact model and the host runtime need
lives in :class:`AcceleratorConfig`.  Nothing else in the project hard-codes an
array shape, a width, a memory size, an opcode or a register address: it asks the
config.  A config is validated when it is built, so an impossible accelerator is
rejected with a :class:`ValueError` that names the field and the allowed range
instead of being generated and silently wrapping.
"""

from __future__ import annotations

import dataclasses
import enum
import json
import math
from dataclasses import dataclass, field
from typing import Any, Mapping

__all__ = [
    "AcceleratorConfig",
    "DEFAULT_CONFIG",
    "Opcode",
    "Status",
    "MemSpace",
    "LinkFormat",
    "min_acc_bits",
    "AdamMode",
    "ADAM_HYPERPARAMETERS",
]


def min_acc_bits(operand_bits: int, max_k: int) -> int:
    """Smallest signed accumulator that holds any sum of ``max_k`` products.

    The largest product magnitude of two signed ``operand_bits`` numbers is
    ``2**(2*operand_bits - 2)`` (from ``-2**(b-1) * -2**(b-1)``), which needs
    ``2*operand_bits`` signed bits; summing ``max_k`` of them adds
    ``ceil(log2(max_k))`` bits.
    """
    return 2 * operand_bits + max(0, math.ceil(math.log2(max_k)))


class Opcode(enum.IntEnum):
    """Instruction opcodes.  One frame on the host link carries one instruction.

    The numbering is assigned here and nowhere else; RTL decoders, the device
    model and the host runtime all import this enum.
    """

    NOP = 0x00            # answers OK; used to probe and to resynchronise
    WRITE_MEM = 0x01      # link -> scratchpad
    READ_MEM = 0x02       # scratchpad -> link
    WRITE_REG = 0x03      # register file write (scales, tables, hyperparameters)
    READ_REG = 0x04       # register file / counter read
    GEMM = 0x10           # one weight tile times a block of activation rows
    ACTIVATE = 0x11       # requantisation + activation pass
    ADAM = 0x12           # optimizer update pass
    SYNC = 0x20           # fence: reply only once every queued instruction retired


class Status(enum.IntEnum):
    """Status byte of every reply frame."""

    OK = 0x00
    BAD_CRC = 0x01
    BAD_LENGTH = 0x02
    UNKNOWN_OPCODE = 0x03
    ADDR_RANGE = 0x04
    BUSY = 0x05


class MemSpace(enum.IntEnum):
    """Scratchpad memories addressable by WRITE_MEM / READ_MEM."""

    INPUT = 0       # int8 activation rows, ``rows`` bytes per word
    WEIGHT = 1      # int8 weight rows, ``cols`` bytes per word
    ACC = 2         # int32 accumulator rows, ``cols`` words of acc_bits per word
    OUTPUT = 3      # int8 post-activation rows, ``cols`` bytes per word
    OPT = 4         # fp32 optimizer state (param, grad, m, v), 4 bytes per word
    TABLE = 5       # activation lookup tables, one byte per entry


class AdamMode(enum.IntFlag):
    """Weight-decay mode bits of the Adam unit (its 2-bit ``mode`` input).

    ``L2`` adds ``weight_decay * p`` to the gradient (``torch.optim.Adam``);
    ``DECOUPLED`` scales the parameter by ``decay = 1 - lr*weight_decay`` before
    the update (``torch.optim.AdamW``).  The bits are independent; both set
    applies both (L2 reads the parameter before the decoupled scaling).
    """

    NONE = 0
    L2 = 1
    DECOUPLED = 2


#: fp32 hyperparameter inputs of the Adam unit, in register order.  The host
#: computes every one of them from (lr, betas, eps, weight_decay, step) with
#: ``hetaccel.sim.adam_model.hyperparameters``; the RTL port names, the model's
#: dict keys and the device registers all come from this tuple (plus ``mode``,
#: an :class:`AdamMode` value).  See docs/adam.md.
ADAM_HYPERPARAMETERS: tuple[str, ...] = (
    "beta1",            # b1
    "one_minus_beta1",  # 1 - b1
    "beta2",            # b2
    "one_minus_beta2",  # 1 - b2
    "eps",              # eps
    "weight_decay",     # wd (L2 mode)
    "decay",            # 1 - lr*wd (DECOUPLED mode)
    "bc2_rsqrt",        # 1 / sqrt(1 - b2**step)
    "step_size",        # lr / (1 - b1**step)
)


@dataclass(frozen=True)
class LinkFormat:
    """Byte layout of host-link frames (see docs/protocol.md).

    Request::  SYNC_REQ | len (u16 LE) | seq (u8) | opcode (u8) | payload[len] | crc16 (LE)
    Reply::    SYNC_REP | len (u16 LE) | seq (u8) | status (u8) | payload[len] | crc16 (LE)

    The CRC is CRC-16/CCITT-FALSE (poly 0x1021, init 0xFFFF, no reflection, no
    final xor) over every byte after the sync byte and before the CRC.
    """

    sync_request: int = 0xA5
    sync_reply: int = 0x5A
    crc_poly: int = 0x1021
    crc_init: int = 0xFFFF
    header_bytes: int = 5   # sync, len lo, len hi, seq, opcode/status
    crc_bytes: int = 2


def _check_int(name: str, value: Any, lo: int, hi: int) -> None:
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
    link: LinkFormat = field(default_factory=LinkFormat, compare=True)

    def __post_init__(self) -> None:
        _check_int("rows", self.rows, 1, 64)
        _check_int("cols", self.cols, 1, 64)
        _check_int("operand_bits", self.operand_bits, 2, 16)
        _check_int("acc_bits", self.acc_bits, 4, 64)
        _check_int("max_k", self.max_k, 1, 1 << 20)
        need = min_acc_bits(self.operand_bits, self.max_k)
        if self.acc_bits < need:
            raise ValueError(
                f"acc_bits must be at least 2*operand_bits + ceil(log2(max_k)) = "
                f"2*{self.operand_bits} + {math.ceil(math.log2(self.max_k))} = {need} "
                f"so a reduction of max_k={self.max_k} cannot wrap; got {self.acc_bits}")
        for name in ("input_depth", "weight_depth", "acc_depth", "output_depth", "opt_depth"):
            _check_int(name, getattr(self, name), 2, 1 << 20)
            _check_pow2(name, getattr(self, name))
        _check_int("adam_lanes", self.adam_lanes, 1, 16)
        for name in ("has_activation", "has_adam"):
            if not isinstance(getattr(self, name), bool):
                raise ValueError(f"{name} must be a bool, not {getattr(self, name)!r}")
        _check_int("clock_hz", self.clock_hz, 1_000_000, 2_000_000_000)
        _check_int("baud", self.baud, 9600, 100_000_000)
        _check_int("max_payload", self.max_payload, 16, 65535)
        _check_int("link_buffers", self.link_buffers, 2, 4)
        _check_int("link_timeout_cycles", self.link_timeout_cycles, 16, 1 << 28)
        if self.weight_depth < self.rows:
            raise ValueError(
                f"weight_depth must hold at least one weight tile (rows={self.rows}), "
                f"got {self.weight_depth}")

    # --- derived quantities -------------------------------------------------

    @property
    def macs(self) -> int:
        """Multiply-accumulates per cycle of the systolic array."""
        return self.rows * self.cols

    @property
    def lanes(self) -> int:
        """Lanes of the requant/activation unit: one per array column."""
        return self.cols

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
