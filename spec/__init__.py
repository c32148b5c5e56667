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
import functools
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
    "MAC_MAPPINGS",
    "AdamMode",
    "ADAM_HYPERPARAMETERS",
    "ActivationFunction",
    "ActivationPrecision",
    "ActivationFormat",
    "ACTIVATION_FORMAT",
    # instruction set (docs/isa.md)
    "DEVICE_MAGIC", "ISA_VERSION", "WordFormat", "mem_present", "mem_word", "mem_depth",
    "pack_words", "unpack_words", "InstructionFormat", "INSTRUCTIONS", "GEMM_ACCUMULATE",
    "opcode_present", "encode_instruction", "mem_readable", "ACT_PRECISION_MASK",
    "ACT_TABLE_SHIFT", "activate_flags", "decode_instruction", "Register",
    "IDENTITY_FIELDS", "COUNTERS", "register_map", "identity_words", "config_from_identity",
    "check_instruction", "validate_instruction", "activation_function_valid", "isa_markdown",
]


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
    OUTPUT = 3      # activation results, ``cols`` int16 LE per word (int8 sign-extended)
    OPT = 4         # fp32 optimizer state: ``adam_lanes`` x (param, grad, m, v) per word
    TABLE = 5       # activation lookup tables, one int8 entry per word, 256 per table
    ACT_PARAM = 6   # per-channel requant parameters, ``cols`` x (bias, multiplier, shift)


class ActivationFunction(enum.IntEnum):
    """Function applied by the activation unit after requantisation, chosen per row.

    In the int8 precision NONE and RELU act on the requantised code directly;
    SIGMOID, TANH and GELU look the code up in a 256-entry table.  In the
    16-bit precision every function is computed in fixed point (docs/numerics.md).
    """

    NONE = 0
    RELU = 1
    SIGMOID = 2
    TANH = 3
    GELU = 4


class ActivationPrecision(enum.IntEnum):
    """Number format of an activation pass (docs/numerics.md).

    INT8: accumulator -> int8 code -> int8 result (table or ReLU/identity).
    FIXED16: accumulator -> Q4.12 -> Q1.14 (sigmoid, tanh) or Q4.12 (none, ReLU, GELU).
    """

    INT8 = 0
    FIXED16 = 1


@dataclass(frozen=True)
class ActivationFormat:
    """Widths of the activation unit's parameters and fixed-point formats.

    One requant parameter per channel: ``bias`` (signed), ``multiplier``
    (unsigned, a Q0.31 fraction when normalised) and ``shift`` (total right
    shift); result = sat(round((sat32(acc + bias) * multiplier) >> shift)).
    """

    bias_bits: int = 32
    multiplier_bits: int = 31
    shift_bits: int = 6          # right shift 0..63
    table_entries: int = 256     # one per int8 code
    out_bits: int = 16           # every result lane is int16 (int8 sign-extended)
    fixed_in_frac: int = 12      # Q4.12 input of the 16-bit path
    fixed_out_frac: int = 14     # Q1.14 sigmoid/tanh output (none/relu/gelu stay Q4.12)


#: The one instance every activation generator, model and host helper uses.
ACTIVATION_FORMAT = ActivationFormat()


class AdamMode(enum.IntFlag):
    """Weight-decay mode bits of the Adam unit (its 2-bit ``mode`` input).

    ``L2`` adds ``weight_decay * p`` to the gradient (``torch.optim.Adam``);
    ``DECOUPLED`` decays the parameter, ``p - (lr*weight_decay)*p``, before the
    update (``torch.optim.AdamW``).  The bits are independent; both set
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
    "lr_wd",            # lr*wd (DECOUPLED mode: p - lr_wd*p)
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
    cmd_queue_depth : int
        Compute instructions (GEMM / ACTIVATE / ADAM) the command processor
        queues, the running one included, 1..16 (see docs/isa.md).
    act_param_depth : int
        Entries of the per-channel requant parameter memory
        (``MemSpace.ACT_PARAM``); one entry holds ``cols`` channels.  Power of two.
    act_tables : int
        256-entry int8 lookup tables in ``MemSpace.TABLE``, 1..16.
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
    mac_mapping: str = "generic"
    lut_multipliers: int = 0
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
        _check_int("cmd_queue_depth", self.cmd_queue_depth, 1, 16)
        _check_int("act_param_depth", self.act_param_depth, 1, 1 << 16)
        _check_pow2("act_param_depth", self.act_param_depth)
        _check_int("act_tables", self.act_tables, 1, 16)
        _check_int("link_buffers", self.link_buffers, 2, 4)
        _check_int("link_timeout_cycles", self.link_timeout_cycles, 16, 1 << 28)
        if self.weight_depth < self.rows:
            raise ValueError(
                f"weight_depth must hold at least one weight tile (rows={self.rows}), "
                f"got {self.weight_depth}")
        if self.mac_mapping not in MAC_MAPPINGS:
            raise ValueError(f"mac_mapping must be one of {', '.join(map(repr, MAC_MAPPINGS))}, "
                             f"got {self.mac_mapping!r}")
        _check_int("lut_multipliers", self.lut_multipliers, 0, self.rows * self.cols)
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


# =============================================================================
# Instruction set, memory word formats and register map.
#
# Everything below is data derived from an AcceleratorConfig; the RTL command
# decoder (rtl/command.py), the device model (sim/device_model.py), the host
# runtime and docs/isa.md (generated by ``isa_markdown``) all read it.  The
# validity rules of ``check_instruction`` are the ones the RTL implements, and
# the fuzz tests hold the two to byte-identical replies.
# =============================================================================

#: ``ID`` register value: ASCII "HACC".
DEVICE_MAGIC = 0x48414343
#: Bumped whenever an instruction layout or the register map changes.
ISA_VERSION = 1


@dataclass(frozen=True)
class WordFormat:
    """Wire layout of one word of a memory space.

    A word is ``elements`` little-endian elements of ``element_bytes`` bytes,
    unpacked to an array of ``shape``.  ``kind`` is ``"int"`` (two's
    complement; the memory keeps the low ``width`` bits of a written element
    and a read sign-extends them) or ``"float"`` (IEEE-754 binary32 bit
    patterns, stored unchanged).
    """

    shape: tuple[int, ...]
    element_bytes: int
    kind: str
    width: int

    @property
    def elements(self) -> int:
        return math.prod(self.shape)

    @property
    def bytes(self) -> int:
        return self.elements * self.element_bytes

    @property
    def dtype(self) -> str:
        if self.kind == "float":
            return "<f4"
        return {1: "<i1", 2: "<i2", 4: "<i4", 8: "<i8"}[self.element_bytes]


def _pow2_bytes(bits: int) -> int:
    return 1 << max(0, math.ceil(math.log2(max(1, (bits + 7) // 8))))


def mem_present(config: AcceleratorConfig, space: MemSpace | int) -> bool:
    """Whether ``space`` exists in this config (OPT needs the Adam unit;
    OUTPUT, TABLE and ACT_PARAM need the activation unit)."""
    try:
        space = MemSpace(space)
    except ValueError:
        return False
    if space == MemSpace.OPT:
        return config.has_adam
    if space in (MemSpace.OUTPUT, MemSpace.TABLE, MemSpace.ACT_PARAM):
        return config.has_activation
    return True


def mem_readable(config: AcceleratorConfig, space: MemSpace | int) -> bool:
    """Whether READ_MEM may read ``space``: TABLE and ACT_PARAM live inside the
    activation unit, which has write ports only."""
    return mem_present(config, space) and MemSpace(space) not in (MemSpace.TABLE,
                                                                   MemSpace.ACT_PARAM)


def mem_word(config: AcceleratorConfig, space: MemSpace | int) -> WordFormat:
    """Word layout of ``space`` (see docs/isa.md, "Memory spaces")."""
    space = MemSpace(space)
    opb = _pow2_bytes(config.operand_bits)
    if space == MemSpace.INPUT:
        return WordFormat((config.rows,), opb, "int", config.operand_bits)
    if space == MemSpace.WEIGHT:
        return WordFormat((config.cols,), opb, "int", config.operand_bits)
    if space == MemSpace.ACC:
        return WordFormat((config.cols,), max(4, _pow2_bytes(config.acc_bits)), "int",
                          config.acc_bits)
    if space == MemSpace.OUTPUT:
        return WordFormat((config.cols,), 2, "int", 16)
    if space == MemSpace.OPT:
        # per lane: param, grad, m, v
        return WordFormat((config.adam_lanes, 4), 4, "float", 32)
    if space == MemSpace.TABLE:
        return WordFormat((1,), 1, "int", 8)
    if space == MemSpace.ACT_PARAM:
        # rows of the word: bias[cols], multiplier[cols], shift[cols]
        return WordFormat((3, config.cols), 4, "int", 32)
    raise ValueError(f"unknown memory space {space!r}")  # pragma: no cover


def mem_depth(config: AcceleratorConfig, space: MemSpace | int) -> int:
    """Words in ``space`` (0 when the space is absent from this config)."""
    if not mem_present(config, space):
        return 0
    space = MemSpace(space)
    return {
        MemSpace.INPUT: config.input_depth,
        MemSpace.WEIGHT: config.weight_depth,
        MemSpace.ACC: config.acc_depth,
        MemSpace.OUTPUT: config.output_depth,
        MemSpace.OPT: config.opt_depth // config.adam_lanes,
        MemSpace.TABLE: 256 * config.act_tables,
        MemSpace.ACT_PARAM: config.act_param_depth,
    }[space]


def pack_words(config: AcceleratorConfig, space: MemSpace | int, values) -> bytes:
    """Wire bytes of whole words of ``space`` (WRITE_MEM data, READ_MEM reply).

    ``values`` has shape ``(n, *word.shape)`` or any shape with a multiple of
    ``word.elements`` elements.  Integers must fit in ``word.width`` signed bits
    (ValueError otherwise, naming the first bad value); floats are cast to
    float32.
    """
    import numpy as np

    word = mem_word(config, space)
    arr = np.asarray(values)
    if arr.size % word.elements:
        raise ValueError(f"{MemSpace(space).name} words hold {word.elements} elements; "
                         f"got {arr.size} values (shape {arr.shape})")
    if word.kind == "float":
        if arr.dtype == np.uint32:
            return arr.astype("<u4").tobytes()
        return arr.astype("<f4").tobytes()
    if arr.dtype.kind not in "iub":
        raise ValueError(f"{MemSpace(space).name} words hold integers, got dtype {arr.dtype}")
    lo, hi = -(1 << (word.width - 1)), (1 << (word.width - 1)) - 1
    bad = (arr < lo) | (arr > hi)
    if bad.any():
        i = tuple(int(x) for x in np.argwhere(bad)[0])
        raise ValueError(f"{MemSpace(space).name} value {arr[i]} at index {i} does not fit "
                         f"in {word.width} signed bits [{lo}, {hi}]")
    return arr.astype(word.dtype).tobytes()


def unpack_words(config: AcceleratorConfig, space: MemSpace | int, data: bytes):
    """Array of shape ``(n, *word.shape)`` from the wire bytes of ``n`` words."""
    import numpy as np

    word = mem_word(config, space)
    if len(data) % word.bytes:
        raise ValueError(f"{MemSpace(space).name} words are {word.bytes} bytes; "
                         f"got {len(data)} bytes")
    arr = np.frombuffer(bytes(data), dtype=word.dtype)
    return arr.reshape((-1,) + word.shape)


@dataclass(frozen=True)
class InstructionFormat:
    """Payload layout of one opcode.

    ``fields`` are little-endian unsigned integers, in order.  ``tail`` says
    what follows them: ``"none"`` (nothing: the payload is exactly the fields),
    ``"words"`` (one or more whole words of the addressed space) or
    ``"repeat"`` (the fields repeat, one or more times; the payload is a whole
    number of records).
    """

    opcode: Opcode
    fields: tuple[tuple[str, int], ...]
    tail: str
    compute: bool
    doc: str

    @property
    def fixed_bytes(self) -> int:
        return sum(n for _, n in self.fields)

    def offsets(self) -> dict[str, tuple[int, int]]:
        """``name -> (byte offset, bytes)`` within one record."""
        out, at = {}, 0
        for name, n in self.fields:
            out[name] = (at, n)
            at += n
        return out


#: GEMM ``flags`` bit 0: add to the accumulator rows instead of overwriting them.
GEMM_ACCUMULATE = 0x01
#: ACTIVATE ``flags``: bit 0 is the :class:`ActivationPrecision`, bits 4..7 the
#: table slot used by SIGMOID / TANH / GELU in the INT8 precision.
ACT_PRECISION_MASK = 0x01
ACT_TABLE_SHIFT = 4


def activate_flags(precision: int = 0, table: int = 0) -> int:
    """ACTIVATE ``flags`` byte for ``precision`` and table slot ``table``."""
    _check_int("precision", int(precision), 0, 1)
    _check_int("table", int(table), 0, 15)
    return int(precision) | int(table) << ACT_TABLE_SHIFT

INSTRUCTIONS: dict[Opcode, InstructionFormat] = {f.opcode: f for f in (
    InstructionFormat(Opcode.NOP, (), "none", False,
                      "Reply OK with the ID and VERSION registers (8 bytes)."),
    InstructionFormat(Opcode.WRITE_MEM, (("space", 1), ("addr", 4)), "words", False,
                      "Write the data words to `space` from word `addr` on."),
    InstructionFormat(Opcode.READ_MEM, (("space", 1), ("addr", 4), ("count", 2)), "none",
                      False, "Reply with `count` words of `space` from word `addr` on."),
    InstructionFormat(Opcode.WRITE_REG, (("reg", 2), ("value", 4)), "repeat", False,
                      "Write each register; all are checked before any is written."),
    InstructionFormat(Opcode.READ_REG, (("reg", 2),), "repeat", False,
                      "Reply with each register's u32 value, in request order."),
    InstructionFormat(Opcode.GEMM, (("a_addr", 4), ("w_addr", 4), ("acc_addr", 4), ("m", 2),
                                    ("flags", 1)), "none", True,
                      "ACC[acc_addr+i] (+)= INPUT[a_addr+i] @ WEIGHT[w_addr : w_addr+rows] "
                      "for i < m; flags bit 0 accumulates."),
    InstructionFormat(Opcode.ACTIVATE, (("acc_addr", 4), ("out_addr", 4), ("m", 2),
                                        ("param_entry", 2), ("function", 1), ("flags", 1)),
                      "none", True,
                      "OUTPUT[out_addr+i] = activation(ACC[acc_addr+i], "
                      "ACT_PARAM[param_entry], function, flags) for i < m."),
    InstructionFormat(Opcode.ADAM, (("addr", 4), ("count", 4)), "none", True,
                      "Adam step on OPT words addr .. addr+count-1 (param, m, v rewritten) "
                      "with the ADAM_* registers."),
    InstructionFormat(Opcode.SYNC, (), "none", False,
                      "Reply OK once every queued compute instruction has retired."),
)}


def opcode_present(config: AcceleratorConfig, opcode: int) -> bool:
    """Whether the device built from ``config`` executes ``opcode``."""
    try:
        op = Opcode(opcode)
    except ValueError:
        return False
    if op == Opcode.ACTIVATE:
        return config.has_activation
    if op == Opcode.ADAM:
        return config.has_adam
    return op in INSTRUCTIONS


def encode_instruction(opcode: Opcode | int, *records: Mapping[str, int] | None,
                       data: bytes = b"", **fields: int) -> bytes:
    """Payload bytes of one instruction.

    Fixed-layout opcodes take the fields as keywords
    (``encode_instruction(Opcode.GEMM, a_addr=0, w_addr=0, acc_addr=0, m=4,
    flags=0)``); WRITE_MEM adds ``data`` (packed words, see :func:`pack_words`);
    WRITE_REG / READ_REG take one mapping per record.  Raises ValueError naming
    a missing, unknown or out-of-range field.
    """
    fmt = INSTRUCTIONS.get(Opcode(opcode))
    if fmt is None:  # pragma: no cover - every Opcode has a format
        raise ValueError(f"no instruction format for opcode {opcode!r}")
    if fmt.tail == "repeat":
        if fields:
            raise ValueError(f"{fmt.opcode.name} takes one mapping per record, "
                             f"not keyword fields {sorted(fields)}")
        if not records:
            raise ValueError(f"{fmt.opcode.name} needs at least one record")
    else:
        if records:
            raise ValueError(f"{fmt.opcode.name} takes keyword fields, not records")
        records = (fields,)
    if data and fmt.tail != "words":
        raise ValueError(f"{fmt.opcode.name} carries no data")
    out = bytearray()
    for rec in records:
        names = [n for n, _ in fmt.fields]
        extra = set(rec) - set(names)
        if extra:
            raise ValueError(f"{fmt.opcode.name} has no field(s) {sorted(extra)}; "
                             f"its fields are {names}")
        for name, nbytes in fmt.fields:
            if name not in rec:
                raise ValueError(f"{fmt.opcode.name} needs field {name!r}")
            value = rec[name]
            _check_int(f"{fmt.opcode.name}.{name}", int(value) if not isinstance(value, bool)
                       else value, 0, (1 << (8 * nbytes)) - 1)
            out += int(value).to_bytes(nbytes, "little")
    return bytes(out) + bytes(data)


@functools.lru_cache(maxsize=None)
def _layout_struct(opcode: Opcode):
    import struct

    fmt = INSTRUCTIONS[opcode]
    code = "<" + "".join({1: "B", 2: "H", 4: "I"}[n] for _, n in fmt.fields)
    return tuple(n for n, _ in fmt.fields), struct.Struct(code).unpack


def decode_instruction(opcode: Opcode | int, payload: bytes) -> dict:
    """Fields of a payload (no validity checks beyond the layout).

    Returns a dict of the fields; WRITE_MEM adds ``"data"`` (the word bytes),
    WRITE_REG / READ_REG return ``{"records": [dict, ...]}``.  Raises ValueError
    when the payload cannot hold the layout.
    """
    fmt = INSTRUCTIONS[Opcode(opcode)]
    payload = bytes(payload)
    names, unpack = _layout_struct(fmt.opcode)

    def one(buf: bytes) -> dict:
        return dict(zip(names, unpack(buf)))

    size = fmt.fixed_bytes
    if fmt.tail == "repeat":
        if not payload or len(payload) % size:
            raise ValueError(f"{fmt.opcode.name} payload must be a positive multiple of "
                             f"{size} bytes, got {len(payload)}")
        return {"records": [one(payload[i:i + size]) for i in range(0, len(payload), size)]}
    if fmt.tail == "words":
        if len(payload) <= size:
            raise ValueError(f"{fmt.opcode.name} payload must be more than {size} bytes, "
                             f"got {len(payload)}")
        return {**one(payload[:size]), "data": payload[size:]}
    if len(payload) != size:
        raise ValueError(f"{fmt.opcode.name} payload must be {size} bytes, got {len(payload)}")
    return one(payload)


# --- register map -------------------------------------------------------------

@dataclass(frozen=True)
class Register:
    """One 32-bit device register.

    ``access`` is ``"r"`` (read-only; writes are rejected with ADDR_RANGE),
    ``"rw"`` or ``"w"`` (a command: reads as 0).
    """

    name: str
    addr: int
    access: str
    doc: str
    bits: int = 32   # a write keeps the low ``bits``; reads return them zero-extended


#: Identity registers and the config fields packed into them: (register,
#: ((field, bits, encoding), ...)) with encoding "raw", "log2", "minus1" or
#: "choice" (index into MAC_MAPPINGS).
IDENTITY_FIELDS: tuple[tuple[str, tuple[tuple[str, int, str], ...]], ...] = (
    ("CONFIG0", (("rows", 8, "raw"), ("cols", 8, "raw"), ("operand_bits", 8, "raw"),
                 ("acc_bits", 8, "raw"))),
    ("CONFIG1", (("input_depth", 5, "log2"), ("weight_depth", 5, "log2"),
                 ("acc_depth", 5, "log2"), ("output_depth", 5, "log2"),
                 ("opt_depth", 5, "log2"), ("adam_lanes", 4, "minus1"),
                 ("has_activation", 1, "raw"), ("has_adam", 1, "raw"))),
    ("CONFIG2", (("max_payload", 16, "raw"), ("cmd_queue_depth", 5, "minus1"),
                 ("act_param_depth", 5, "log2"), ("act_tables", 4, "minus1"),
                 ("link_buffers", 2, "minus1"))),
    ("CONFIG3", (("max_k", 21, "raw"),)),
    ("CLOCK_HZ", (("clock_hz", 32, "raw"),)),
    ("BAUD", (("baud", 32, "raw"),)),
    ("CONFIG4", (("mac_mapping", 2, "choice"), ("lut_multipliers", 13, "raw"))),
)

#: Performance counters (32 bits, wrapping; cleared by CONTROL bit 0 and reset).
#: The model predicts CYCLES and the busy/stall counters; BYTES_IN, BYTES_OUT
#: and FRAMES are exact in both.
COUNTERS: tuple[tuple[str, str], ...] = (
    ("CYCLES", "core clock cycles"),
    ("BYTES_IN", "bytes accepted on rx"),
    ("BYTES_OUT", "bytes sent on tx"),
    ("FRAMES", "good frames the link delivered to the command processor"),
    ("GEMM_BUSY", "cycles a GEMM was executing"),
    ("GEMM_STALL", "cycles a GEMM waited on the matmul engine's backpressure"),
    ("ACT_BUSY", "cycles an ACTIVATE was executing"),
    ("ACT_STALL", "cycles an ACTIVATE waited on the activation unit's backpressure"),
    ("ADAM_BUSY", "cycles an ADAM was executing"),
    ("ADAM_STALL", "cycles an ADAM waited on the Adam unit's backpressure"),
    ("QUEUE_FULL", "cycles a compute instruction waited for a free queue slot"),
    ("HAZARD_WAIT", "cycles a load/store/register write waited on queued compute"),
)

_REGISTER_BASES = {"identity": 0x000, "control": 0x040, "counter": 0x080, "adam": 0x100}


def register_map(config: AcceleratorConfig) -> dict[str, Register]:
    """Name -> :class:`Register` of the device built from ``config``.

    Addresses are stable across configs (groups at fixed bases); registers of
    an absent unit are simply missing (ADDR_RANGE on access).
    """
    regs: list[Register] = []

    def group(base: int, items):
        for i, (name, access, doc, *bits) in enumerate(items):
            regs.append(Register(name, base + i, access, doc, *bits))

    group(_REGISTER_BASES["identity"],
          [("ID", "r", f"0x{DEVICE_MAGIC:08X} (ASCII 'HACC')"),
           ("VERSION", "r", "ISA version")] +
          [(name, "r", ", ".join(f"{f}:{b}{'' if e == 'raw' else ' (' + e + ')'}"
                                 for f, b, e in fields))
           for name, fields in IDENTITY_FIELDS])
    group(_REGISTER_BASES["control"],
          [("CONTROL", "w", "bit 0: clear the performance counters")])
    group(_REGISTER_BASES["counter"], [(n, "r", d) for n, d in COUNTERS])
    if config.has_adam:
        group(_REGISTER_BASES["adam"],
              [(f"ADAM_{n.upper()}", "rw", f"Adam hyperparameter {n} (fp32 bits)")
               for n in ADAM_HYPERPARAMETERS] +
              [("ADAM_MODE", "rw", "AdamMode bits (1: L2, 2: decoupled)", 2)])
    return {r.name: r for r in regs}


def identity_words(config: AcceleratorConfig) -> dict[str, int]:
    """Values of the identity registers (ID, VERSION, CONFIG0..., CLOCK_HZ, BAUD)."""
    out = {"ID": DEVICE_MAGIC, "VERSION": ISA_VERSION}
    for reg, fields in IDENTITY_FIELDS:
        word, at = 0, 0
        for name, bits, enc in fields:
            v = getattr(config, name)
            v = MAC_MAPPINGS.index(v) if enc == "choice" else int(v)
            v = {"raw": v, "choice": v, "log2": v.bit_length() - 1, "minus1": v - 1}[enc]
            if not 0 <= v < (1 << bits):  # pragma: no cover - config validation prevents it
                raise ValueError(f"{name}={getattr(config, name)} does not fit {reg}")
            word |= v << at
            at += bits
        out[reg] = word
    return out


def config_from_identity(words: Mapping[str, int]) -> AcceleratorConfig:
    """The config a device reports in its identity registers (host side)."""
    if words.get("ID") != DEVICE_MAGIC:
        raise ValueError(f"ID register is {words.get('ID')!r}, not 0x{DEVICE_MAGIC:08X}: "
                         f"not a hetaccel device")
    if words.get("VERSION") != ISA_VERSION:
        raise ValueError(f"device ISA version {words.get('VERSION')} != {ISA_VERSION}")
    fields: dict[str, Any] = {}
    for reg, layout in IDENTITY_FIELDS:
        word, at = int(words[reg]), 0
        for name, bits, enc in layout:
            v = (word >> at) & ((1 << bits) - 1)
            at += bits
            if enc == "choice":
                if v >= len(MAC_MAPPINGS):
                    raise ValueError(f"{reg}: {name} index {v} is not one of {MAC_MAPPINGS}")
                v = MAC_MAPPINGS[v]
            else:
                v = {"raw": v, "log2": 1 << v, "minus1": v + 1}[enc]
            fields[name] = bool(v) if name.startswith("has_") else v
    return AcceleratorConfig(**fields)


def check_instruction(config: AcceleratorConfig, opcode: int, payload: bytes) -> Status:
    """The status the device answers a delivered frame with.

    Checks, in this order (the first failing one decides):

    1. UNKNOWN_OPCODE: ``opcode`` is not an :class:`Opcode`, or names a unit
       this config does not have (ACTIVATE without activation, ADAM without Adam).
    2. BAD_LENGTH: the payload does not fit the opcode's layout
       (:data:`INSTRUCTIONS`).
    3. ADDR_RANGE: WRITE_MEM / READ_MEM name an absent or unknown space, or
       READ_MEM a write-only one (TABLE, ACT_PARAM).
    4. BAD_LENGTH: WRITE_MEM data is not a whole number of words; READ_MEM
       ``count`` is 0 or its reply would exceed ``max_payload``; a READ_REG
       reply would exceed ``max_payload``.
    5. ADDR_RANGE: any word range is empty or leaves its memory; an unknown
       register, or a write to a read-only one; an ACTIVATE ``param_entry``,
       ``function`` or table slot (``flags >> 4``) out of range.

    A frame that fails any check has no effect besides its reply.
    """
    return validate_instruction(config, opcode, payload)[0]


@dataclass(frozen=True)
class _IsaTables:
    present_ops: frozenset
    depth: dict
    word_bytes: dict
    writable_spaces: frozenset
    readable_spaces: frozenset
    regs: dict
    functions: frozenset


@functools.lru_cache(maxsize=64)
def _isa_tables(config: AcceleratorConfig) -> _IsaTables:
    spaces = [s for s in MemSpace if mem_present(config, s)]
    return _IsaTables(
        present_ops=frozenset(int(o) for o in Opcode if opcode_present(config, o)),
        depth={int(s): mem_depth(config, s) for s in spaces},
        word_bytes={int(s): mem_word(config, s).bytes for s in spaces},
        writable_spaces=frozenset(int(s) for s in spaces),
        readable_spaces=frozenset(int(s) for s in spaces if mem_readable(config, s)),
        regs={r.addr: r for r in register_map(config).values()},
        functions=frozenset(int(f) for f in ActivationFunction))


def validate_instruction(config: AcceleratorConfig, opcode: int,
                         payload: bytes) -> tuple[Status, dict | None]:
    """``(status, fields)``: :func:`check_instruction`'s status and, when the
    layout fits, the decoded fields (:func:`decode_instruction`)."""
    t = _isa_tables(config)
    if opcode not in t.present_ops:
        return Status.UNKNOWN_OPCODE, None
    op = Opcode(opcode)
    try:
        f = decode_instruction(op, payload)
    except ValueError:
        return Status.BAD_LENGTH, None
    depth = t.depth

    def inside(space, addr, n):
        d = depth.get(int(space), 0)
        return n >= 1 and addr < d and n <= d - addr

    def result(ok):
        return (Status.OK if ok else Status.ADDR_RANGE), f

    if op in (Opcode.WRITE_MEM, Opcode.READ_MEM):
        ok_spaces = t.writable_spaces if op == Opcode.WRITE_MEM else t.readable_spaces
        if f["space"] not in ok_spaces:
            return Status.ADDR_RANGE, f
        wb = t.word_bytes[f["space"]]
        if op == Opcode.WRITE_MEM:
            if len(f["data"]) % wb:
                return Status.BAD_LENGTH, f
            n = len(f["data"]) // wb
        else:
            n = f["count"]
            if n == 0 or n * wb > config.max_payload:
                return Status.BAD_LENGTH, f
        return result(inside(f["space"], f["addr"], n))
    if op == Opcode.WRITE_REG:
        for rec in f["records"]:
            r = t.regs.get(rec["reg"])
            if r is None or "w" not in r.access:
                return Status.ADDR_RANGE, f
        return Status.OK, f
    if op == Opcode.READ_REG:
        if 4 * len(f["records"]) > config.max_payload:
            return Status.BAD_LENGTH, f
        return result(all(rec["reg"] in t.regs for rec in f["records"]))
    if op == Opcode.GEMM:
        return result(inside(MemSpace.INPUT, f["a_addr"], f["m"])
                      and inside(MemSpace.WEIGHT, f["w_addr"], config.rows)
                      and inside(MemSpace.ACC, f["acc_addr"], f["m"]))
    if op == Opcode.ACTIVATE:
        return result(inside(MemSpace.ACC, f["acc_addr"], f["m"])
                      and inside(MemSpace.OUTPUT, f["out_addr"], f["m"])
                      and f["param_entry"] < config.act_param_depth
                      and f["function"] in t.functions
                      and (f["flags"] >> ACT_TABLE_SHIFT) < config.act_tables)
    if op == Opcode.ADAM:
        return result(inside(MemSpace.OPT, f["addr"], f["count"]))
    return Status.OK, f  # NOP, SYNC


def activation_function_valid(config: AcceleratorConfig, function: int, flags: int) -> bool:
    """Whether ACTIVATE's ``function`` is an :class:`ActivationFunction` and
    its table slot ``flags >> 4`` is below ``config.act_tables`` (bit 0 is the
    :class:`ActivationPrecision`; bits 1..3 are reserved and ignored)."""
    return (function in set(int(f) for f in ActivationFunction)
            and (flags >> ACT_TABLE_SHIFT) < config.act_tables)


def isa_markdown(config: AcceleratorConfig = None) -> str:
    """docs/isa.md, generated from the tables above (tests keep the file in sync)."""
    import inspect

    config = config or DEFAULT_CONFIG
    out = ["# hetaccel instruction set and register map", "",
           "<!-- Generated by hetaccel.spec.isa_markdown(); edit spec/__init__.py, then run",
           "     `python -c 'import hetaccel.spec as s; print(s.isa_markdown(), end=\"\")' > docs/isa.md`",
           "     (tests/test_device.py fails when this file is stale). -->", "",
           "One instruction per host-link frame (framing: docs/protocol.md). Every field is a",
           "little-endian unsigned integer. Every frame gets exactly one reply; a frame",
           "that fails a check has no effect besides its reply.", "",
           "## Instructions", "",
           "| opcode | name | payload | tail | queued | meaning |",
           "|---|---|---|---|---|---|"]
    for op, fmt in INSTRUCTIONS.items():
        layout = ", ".join(f"{n} u{8 * b}" for n, b in fmt.fields) or "(empty)"
        tail = {"none": "-", "words": "data words", "repeat": "record repeats"}[fmt.tail]
        out.append(f"| 0x{int(op):02X} | {op.name} | {layout} | {tail} | "
                   f"{'yes' if fmt.compute else 'no'} | {fmt.doc} |")
    out += ["", "GEMM `flags` bit 0 = accumulate. ACTIVATE `flags` bit 0 = precision",
            "(0 INT8, 1 FIXED16), bits 4..7 = table slot. Reserved flag bits are ignored.", "",
            "## Checks and statuses", "",
            "```", inspect.cleandoc(check_instruction.__doc__ or ""), "```", "",
            "## Ordering and hazards", "",
            "Compute instructions (GEMM, ACTIVATE, ADAM) reply OK when they enter the",
            f"command queue (`cmd_queue_depth` = {config.cmd_queue_depth} entries including the running",
            "one) and retire strictly in order, so loads and stores of other rows overlap",
            "compute. Before a WRITE_MEM / READ_MEM touches a scratchpad the hardware waits",
            "while a queued or running instruction conflicts with it:", "",
            "| queued | waits for it |", "|---|---|",
            "| GEMM | WRITE_MEM of INPUT/WEIGHT rows it reads; any READ_MEM of INPUT/WEIGHT "
            "(shared read port); READ_MEM of ACC rows it writes; any WRITE_MEM of ACC |",
            "| ACTIVATE | any access to ACC, TABLE, ACT_PARAM; any WRITE_MEM of OUTPUT; "
            "READ_MEM of OUTPUT rows it writes |",
            "| ADAM | any access to OPT |", "",
            "Every ACC access also waits until the matmul engine is idle (all GEMM results",
            "written). ACTIVATE starts only once the engine is idle. WRITE_REG waits until the",
            "queue is empty (Adam hyperparameters stay stable during a pass); SYNC replies",
            "once the queue is empty and the engine idle. A full queue stalls the command",
            "processor; the link then answers BUSY to frames it has no buffer for. The",
            "waits change timing only, never results: the device model executes every",
            "instruction at once and predicts the same bytes.", "",
            "Counters: BYTES_IN counts every byte accepted on rx; BYTES_OUT and FRAMES count",
            "the command processor's replies (7 + payload bytes) and frames once each reply",
            "is complete, so a READ_REG sees all earlier frames but not itself; the link's",
            "own error replies are not counted. CYCLES and the busy/stall counters are",
            "exact on the RTL and predicted by the model.", "",
            "## Memory spaces", "",
            f"Word formats for the default config ({config.rows}x{config.cols}); "
            "`int` words keep the low `width` bits of each element and read back sign-extended.", "",
            "| space | id | word shape | element | width | bytes/word | depth (words) |",
            "|---|---|---|---|---|---|---|"]
    for sp in MemSpace:
        w = mem_word(config, sp)
        out.append(f"| {sp.name} | {int(sp)} | {w.shape} | {w.kind}{8 * w.element_bytes} | "
                   f"{w.width} | {w.bytes} | {mem_depth(config, sp)} |")
    out += ["", "OPT words are `adam_lanes` x (param, grad, m, v); ADAM rewrites param, m",
            "and v and leaves grad. ACT_PARAM words are bias[cols], multiplier[cols],",
            "shift[cols]; the unit keeps the low bits of each (bias 32, multiplier 31,",
            "shift 6; `ActivationFormat`). TABLE word `t*256 + code` is entry `code` (the",
            "int8 input as an unsigned byte) of table slot `t`. TABLE and ACT_PARAM are",
            "write-only (they live in the activation unit).", "",
            "## Registers", "",
            "Registers keep the low `bits` of a write; `w` registers read as 0; registers",
            "of an absent unit do not exist (ADDR_RANGE).", "",
            "| addr | name | access | bits | meaning |", "|---|---|---|---|---|"]
    for r in register_map(config).values():
        out.append(f"| 0x{r.addr:03X} | {r.name} | {r.access} | {r.bits} | {r.doc} |")
    return "\n".join(out) + "\n"


if __name__ == "__main__":  # pragma: no cover
    import sys

    if sys.argv[1:] == ["isa"]:
        sys.stdout.write(isa_markdown())
    else:
        sys.exit("usage: python -m hetaccel.spec isa")
