"""The byte codes the link and the instruction set share: opcodes, reply
statuses and memory spaces (docs/isa.md, docs/protocol.md)."""

from __future__ import annotations

import enum

__all__ = ["Opcode", "Status", "MemSpace"]


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
    LOAD = 0x13           # device memory -> scratchpad (queued)
    STORE = 0x14          # scratchpad -> device memory (queued)
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
    """Memories addressable by WRITE_MEM / READ_MEM: the scratchpads and the
    device memory."""

    INPUT = 0       # int8 activation rows, ``rows`` bytes per word
    WEIGHT = 1      # int8 weight rows, ``cols`` bytes per word
    ACC = 2         # int32 accumulator rows, ``cols`` words of acc_bits per word
    OUTPUT = 3      # activation results, ``cols`` int16 LE per word (int8 sign-extended)
    OPT = 4         # fp32 optimizer state: ``adam_lanes`` x (param, grad, m, v) per word
    TABLE = 5       # activation lookup tables, one int8 entry per word, 256 per table
    ACT_PARAM = 6   # per-channel requant parameters, ``cols`` x (bias, multiplier, shift)
    DEVICE = 7      # device memory (SDRAM / SPRAM), raw bytes, one line per word
