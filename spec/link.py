"""Host-link framing: the one Python implementation of CRC, encoding and parsing.

The host runtime, the device model, the link model and every test import this
module; nothing else in Python computes a frame CRC or parses a frame.  The
byte layout comes from :class:`hetaccel.spec.LinkFormat` (see docs/protocol.md)::

    request:  0xA5 | len u16 LE | seq u8 | opcode u8 | payload[len] | crc16 LE
    reply:    0x5A | len u16 LE | seq u8 | status u8 | payload[len] | crc16 LE

The CRC is CRC-16/CCITT-FALSE (poly 0x1021, init 0xFFFF, MSB first, no final
xor) over every byte after the sync byte and before the CRC.

Parsing rules (shared with the RTL link, :mod:`hetaccel.rtl.link`, and its
model, :mod:`hetaccel.sim.link_model`):

1. Bytes other than the sync byte are skipped while hunting for a frame.
2. After the sync byte come the four header bytes.  Once the header is
   complete a length above ``max_payload`` is reported as a
   :class:`FrameError` with :attr:`~hetaccel.spec.Status.BAD_LENGTH`, and the
   parser hunts again from the byte after the header (the rest of the bad frame
   is treated as garbage).
3. Otherwise ``len`` payload bytes and two CRC bytes follow; a CRC mismatch is a
   :class:`FrameError` with :attr:`~hetaccel.spec.Status.BAD_CRC`, a match a
   :class:`Frame`.  Either way the parser hunts again.

So a run of ``max_payload + 8`` bytes that are not the sync byte (zeros, say)
always brings any parser back to hunting.

The boards carry the frames over an 8N1 UART whose bit time is defined here
too (:func:`uart_bit_time`): a fixed-point number of clock cycles, so a baud
that is not a whole fraction of the clock (6 Mbaud at 50.25 MHz is 8.375
cycles a bit) is generated on average exactly by bits of alternating length.
"""

from __future__ import annotations

import binascii
import enum
from dataclasses import dataclass
from typing import Iterable

from .codes import Opcode, Status


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

__all__ = [
    "LINK",
    "crc16",
    "crc16_update",
    "encode_request",
    "encode_reply",
    "Frame",
    "FrameError",
    "Header",
    "FrameParser",
    "RequestDecoder",
    "ReplyDecoder",
    "frame_bytes",
    "UART_FRAC_BITS",
    "UART_MIN_CLOCKS_PER_BIT",
    "UART_MAX_CLOCKS_PER_BIT",
    "UART_MAX_BAUD_ERROR",
    "uart_bit_time",
    "uart_baud",
    "uart_baud_error",
    "check_uart_bit_time",
]

#: The frame layout every encoder and parser here uses.
LINK = LinkFormat()


def crc16_update(crc: int, byte: int, poly: int = LINK.crc_poly) -> int:
    """One byte of CRC-16/CCITT-FALSE, bit-serially, MSB first.

    This is the reference the byte table and the RTL's XOR network are derived
    from (the RTL evaluates it symbolically), so there is one definition.
    """
    crc ^= (byte & 0xFF) << 8
    for _ in range(8):
        crc = ((crc << 1) ^ poly) if crc & 0x8000 else (crc << 1)
        crc &= 0xFFFF
    return crc


_TABLE = tuple(crc16_update(0, b) for b in range(256))


def crc16(data: bytes | bytearray | Iterable[int], init: int = LINK.crc_init) -> int:
    """CRC-16/CCITT-FALSE of ``data``; ``crc16(b"123456789") == 0x29B1``."""
    if LINK.crc_poly == 0x1021 and isinstance(data, (bytes, bytearray, memoryview)):
        # binascii's CRC-CCITT is the same polynomial without reflection or
        # final xor; it runs in C, which is what lets a host stream megabytes.
        return binascii.crc_hqx(data, init)
    crc = init
    for b in bytes(data):
        crc = ((crc << 8) & 0xFFFF) ^ _TABLE[((crc >> 8) ^ b) & 0xFF]
    return crc


def _check_u8(name: str, value) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= 0xFF:
        raise ValueError(f"{name} must be an integer in [0, 255], got {value!r}")
    return int(value)


def _payload_bytes(payload, max_payload: int) -> bytes:
    if isinstance(payload, str) or not isinstance(payload, (bytes, bytearray, memoryview)):
        try:
            payload = bytes(payload)
        except (TypeError, ValueError) as exc:
            raise TypeError(f"payload must be bytes (or an iterable of byte values), "
                            f"not {type(payload).__name__}") from exc
    payload = bytes(payload)
    if len(payload) > max_payload:
        raise ValueError(f"payload of {len(payload)} bytes exceeds max_payload={max_payload}")
    return payload


def _encode(sync: int, code: int, seq: int, payload, max_payload: int) -> bytes:
    payload = _payload_bytes(payload, max_payload)
    body = bytes((len(payload) & 0xFF, len(payload) >> 8, seq, code)) + payload
    crc = crc16(body)
    return bytes((sync,)) + body + bytes((crc & 0xFF, crc >> 8))


def encode_request(opcode: int, seq: int, payload=b"", *, max_payload: int = 0xFFFF) -> bytes:
    """Request frame carrying ``opcode`` (any byte; :class:`~hetaccel.spec.Opcode`
    values are the defined ones) with sequence number ``seq``.

    ``max_payload`` is the receiving device's limit (``config.max_payload``);
    a longer payload raises :class:`ValueError` rather than producing a frame
    the device would refuse.
    """
    return _encode(LINK.sync_request, _check_u8("opcode", opcode), _check_u8("seq", seq),
                   payload, max_payload)


def encode_reply(status: int, seq: int, payload=b"", *, max_payload: int = 0xFFFF) -> bytes:
    """Reply frame with ``status`` (a :class:`~hetaccel.spec.Status`) for ``seq``."""
    return _encode(LINK.sync_reply, _check_u8("status", status), _check_u8("seq", seq),
                   payload, max_payload)


def frame_bytes(payload_len: int) -> int:
    """Bytes on the wire of a frame with ``payload_len`` payload bytes."""
    return LINK.header_bytes + payload_len + LINK.crc_bytes


@dataclass(frozen=True)
class Frame:
    """A frame whose CRC checked.  ``code`` is the opcode (requests) or the status
    (replies); :attr:`opcode` and :attr:`status` name it as an enum when known."""

    seq: int
    code: int
    payload: bytes

    @property
    def opcode(self):
        try:
            return Opcode(self.code)
        except ValueError:
            return self.code

    @property
    def status(self):
        try:
            return Status(self.code)
        except ValueError:
            return self.code


@dataclass(frozen=True)
class FrameError:
    """A frame the parser rejected: ``status`` is BAD_LENGTH or BAD_CRC, ``seq``
    and ``length`` are the (unchecked) header fields it carried."""

    status: Status
    seq: int
    length: int


@dataclass(frozen=True)
class Header:
    """Emitted by :class:`FrameParser` when a header with a legal length is
    complete (the link decides here whether a frame buffer is free)."""

    seq: int
    code: int
    length: int


class _State(enum.Enum):
    HUNT = 0
    LEN_LO = 1
    LEN_HI = 2
    SEQ = 3
    CODE = 4
    PAYLOAD = 5
    CRC_LO = 6
    CRC_HI = 7


class FrameParser:
    """Byte-at-a-time parser implementing the rules in the module docstring.

    Parameters
    ----------
    sync : int
        The sync byte to hunt for (0xA5 requests, 0x5A replies).
    max_payload : int
        Longest legal payload; longer headers give ``FrameError(BAD_LENGTH)``.
    """

    def __init__(self, sync: int, max_payload: int):
        self.sync = _check_u8("sync", sync)
        if isinstance(max_payload, bool) or not isinstance(max_payload, int) \
                or not 0 <= max_payload <= 0xFFFF:
            raise ValueError(f"max_payload must be an integer in [0, 65535], got {max_payload!r}")
        self.max_payload = max_payload
        self.reset()

    def reset(self) -> None:
        """Abandon any partial frame and hunt for the sync byte."""
        self._state = _State.HUNT
        self._length = self._seq = self._code = self._crc_lo = 0
        self._payload = bytearray()
        self._crc = LINK.crc_init

    @property
    def in_frame(self) -> bool:
        """True between a sync byte and the end of its frame."""
        return self._state is not _State.HUNT

    def push(self, byte: int):
        """Consume one byte; return a :class:`Header`, :class:`Frame`,
        :class:`FrameError` or None."""
        s = self._state
        if s is _State.HUNT:
            if byte == self.sync:
                self._state = _State.LEN_LO
                self._crc = LINK.crc_init
                self._payload = bytearray()
            return None
        if s in (_State.LEN_LO, _State.LEN_HI, _State.SEQ, _State.CODE, _State.PAYLOAD):
            self._crc = crc16([byte], self._crc)
        if s is _State.LEN_LO:
            self._length = byte
            self._state = _State.LEN_HI
        elif s is _State.LEN_HI:
            self._length |= byte << 8
            self._state = _State.SEQ
        elif s is _State.SEQ:
            self._seq = byte
            self._state = _State.CODE
        elif s is _State.CODE:
            self._code = byte
            if self._length > self.max_payload:
                self._state = _State.HUNT
                return FrameError(Status.BAD_LENGTH, self._seq, self._length)
            self._state = _State.PAYLOAD if self._length else _State.CRC_LO
            return Header(self._seq, self._code, self._length)
        elif s is _State.PAYLOAD:
            self._payload.append(byte)
            if len(self._payload) == self._length:
                self._state = _State.CRC_LO
        elif s is _State.CRC_LO:
            self._crc_lo = byte
            self._state = _State.CRC_HI
        elif s is _State.CRC_HI:
            self._state = _State.HUNT
            if (byte << 8 | self._crc_lo) != self._crc:
                return FrameError(Status.BAD_CRC, self._seq, self._length)
            return Frame(self._seq, self._code, bytes(self._payload))
        return None


class _Decoder:
    def __init__(self, sync: int, max_payload: int):
        self._parser = FrameParser(sync, max_payload)

    @property
    def max_payload(self) -> int:
        return self._parser.max_payload

    @property
    def in_frame(self) -> bool:
        return self._parser.in_frame

    def reset(self) -> None:
        """Drop a partial frame (e.g. after a host-side timeout)."""
        self._parser.reset()

    def feed(self, data) -> list:
        """Parse ``data``; return the :class:`Frame` and :class:`FrameError`
        items it completed, in order.  Partial frames carry over to the next call."""
        out = []
        data = bytes(data)
        parser = self._parser
        i, n = 0, len(data)
        head, tail = LINK.header_bytes, LINK.crc_bytes
        while i < n:
            if not parser.in_frame:
                # Whole frames at the hunt position are parsed in bulk; anything
                # else (partial, over-long) goes through the byte rules below,
                # which the bulk path mirrors exactly.
                i = data.find(bytes((parser.sync,)), i)
                if i < 0:
                    break
                if i + head <= n:
                    length = data[i + 1] | data[i + 2] << 8
                    end = i + head + length + tail
                    if length <= parser.max_payload and end <= n:
                        body = data[i + 1:end - tail]
                        seq, code = data[i + 3], data[i + 4]
                        if crc16(body) == (data[end - 2] | data[end - 1] << 8):
                            out.append(Frame(seq, code, bytes(body[head - 1:])))
                        else:
                            out.append(FrameError(Status.BAD_CRC, seq, length))
                        i = end
                        continue
            item = parser.push(data[i])
            i += 1
            if item is not None and not isinstance(item, Header):
                out.append(item)
        return out


class RequestDecoder(_Decoder):
    """Incremental parser of request frames (what the device receives)."""

    def __init__(self, max_payload: int = 0xFFFF):
        super().__init__(LINK.sync_request, max_payload)


class ReplyDecoder(_Decoder):
    """Incremental parser of reply frames (what the host receives)."""

    def __init__(self, max_payload: int = 0xFFFF):
        super().__init__(LINK.sync_reply, max_payload)


# --- UART bit time -------------------------------------------------------------------

#: fraction bits of a UART bit time: bit times are in units of 1/16 clock cycle,
#: which makes 6 Mbaud at 50.25 MHz (8.375 cycles) exact and keeps the RTL's
#: phase accumulator at four flip-flops (one LUT4 for its carry)
UART_FRAC_BITS = 4
#: fewest clock cycles per bit: mid-bit sampling needs a middle to sample
UART_MIN_CLOCKS_PER_BIT = 4
#: most clock cycles per bit (bounds the RTL's bit timer at 24 bits)
UART_MAX_CLOCKS_PER_BIT = 1 << 24
#: largest accepted relative error between the requested and the generated baud
UART_MAX_BAUD_ERROR = 0.02


def _check_positive_int(name: str, value) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
        raise ValueError(f"{name} must be a positive integer, not {value!r}")
    return value


def check_uart_bit_time(bit_time) -> int:
    """Check a fixed-point bit time (units of ``1 / 2**UART_FRAC_BITS`` clock
    cycle) and return it; the RTL's constructors take one directly."""
    lo = UART_MIN_CLOCKS_PER_BIT << UART_FRAC_BITS
    hi = UART_MAX_CLOCKS_PER_BIT << UART_FRAC_BITS
    if isinstance(bit_time, bool) or not isinstance(bit_time, int) or not lo <= bit_time <= hi:
        raise ValueError(f"bit_time must be an integer number of 1/{1 << UART_FRAC_BITS} clock "
                         f"cycles in [{lo}, {hi}] ({UART_MIN_CLOCKS_PER_BIT} to "
                         f"{UART_MAX_CLOCKS_PER_BIT} cycles), not {bit_time!r}")
    return bit_time


def _bit_time(clock_hz: int, baud: int) -> int:
    _check_positive_int("clock_hz", clock_hz)
    _check_positive_int("baud", baud)
    # round(clock_hz * 2**F / baud) in integers: exact for any clock and baud
    return ((clock_hz << (UART_FRAC_BITS + 1)) + baud) // (2 * baud)


def uart_baud(clock_hz: int, bit_time: int) -> float:
    """The baud a UART generates at ``clock_hz`` with the fixed-point ``bit_time``."""
    _check_positive_int("clock_hz", clock_hz)
    _check_positive_int("bit_time", bit_time)
    return clock_hz * (1 << UART_FRAC_BITS) / bit_time


def uart_baud_error(clock_hz: int, baud: int) -> float:
    """Relative error ``(generated - baud) / baud`` of the nearest bit time
    (not checked against :data:`UART_MAX_BAUD_ERROR`)."""
    bit_time = _bit_time(clock_hz, baud)
    if bit_time == 0:
        raise ValueError(f"baud={baud} is too fast for clock_hz={clock_hz}: under "
                         f"1/{1 << UART_FRAC_BITS} clock cycle per bit")
    return (uart_baud(clock_hz, bit_time) - baud) / baud


def uart_bit_time(clock_hz: int, baud: int) -> int:
    """UART bit time for ``baud`` at ``clock_hz``, in units of
    ``1 / 2**UART_FRAC_BITS`` clock cycle (rounded to the nearest).

    ``uart_bit_time(50_250_000, 6_000_000) == 134`` (8.375 cycles, exact);
    ``uart_bit_time(100_000_000, 3_000_000) == 533`` (33.3125 cycles, 0.06 %
    fast).  The RTL makes each bit last the floor or the ceiling of this many
    cycles, so the average is exact.

    Raises
    ------
    ValueError
        If a bit would last fewer than :data:`UART_MIN_CLOCKS_PER_BIT` cycles
        or more than :data:`UART_MAX_CLOCKS_PER_BIT`, or if the generated baud
        misses ``baud`` by more than :data:`UART_MAX_BAUD_ERROR`.
    """
    bit_time = _bit_time(clock_hz, baud)
    if bit_time < UART_MIN_CLOCKS_PER_BIT << UART_FRAC_BITS:
        raise ValueError(f"baud={baud} needs at least {UART_MIN_CLOCKS_PER_BIT} clock cycles "
                         f"per bit, clock_hz={clock_hz} gives {clock_hz / baud:.2f}")
    if bit_time > UART_MAX_CLOCKS_PER_BIT << UART_FRAC_BITS:
        raise ValueError(f"baud={baud} at clock_hz={clock_hz} is {clock_hz / baud:.0f} clock "
                         f"cycles per bit, more than the {UART_MAX_CLOCKS_PER_BIT} a bit "
                         f"timer holds")
    error = (uart_baud(clock_hz, bit_time) - baud) / baud
    if abs(error) > UART_MAX_BAUD_ERROR:
        raise ValueError(f"baud={baud} at clock_hz={clock_hz}: a bit time of "
                         f"{bit_time / (1 << UART_FRAC_BITS):g} cycles gives "
                         f"{uart_baud(clock_hz, bit_time):.0f} baud, {100 * error:+.2f}% off "
                         f"(at most {100 * UART_MAX_BAUD_ERROR:g}% allowed)")
    return bit_time
