"""Reference model of the device's host link (:class:`hetaccel.rtl.link.HostLink`).

The model applies the parsing rules of :mod:`hetaccel.spec.link` (it uses
the same :class:`~hetaccel.spec.link.FrameParser`) plus the three things
only the device link does:

* **frame buffers** – ``config.link_buffers`` of them.  A frame whose header
  (legal length) completes while every buffer holds a delivered frame the
  consumer has not released is still received to its CRC, but not stored; a
  good CRC is then answered ``BUSY`` by the link and the frame is dropped.
  The decision is taken when the header completes, exactly as in the RTL;
* **own replies** – BAD_LENGTH, BAD_CRC and BUSY are answered by the link
  itself with an empty payload and the frame's (unchecked) sequence number;
* **inter-byte timeout** – ``config.link_timeout_cycles`` or more consecutive
  cycles without a byte abandon a partial frame silently (no reply).

Delivered frames queue in order; :meth:`LinkModel.release` is the consumer's
``frame.ready`` handshake for the oldest one.
"""

from __future__ import annotations

import random
from collections import deque
from dataclasses import dataclass

from ..spec.link import (LINK, Frame, FrameError, FrameParser, Header, crc16,
                             encode_reply, encode_request)
from ..spec import AcceleratorConfig, Status

__all__ = ["LinkModel", "Delivered", "LinkReply", "random_traffic", "CORRUPTIONS"]


@dataclass(frozen=True)
class Delivered:
    """A good frame handed to the consumer on the link's ``frame`` stream."""

    opcode: int
    seq: int
    payload: bytes


@dataclass(frozen=True)
class LinkReply:
    """A reply the link sends by itself (BAD_LENGTH, BAD_CRC or BUSY)."""

    status: Status
    seq: int

    def encode(self) -> bytes:
        return encode_reply(self.status, self.seq, b"")


class LinkModel:
    """Byte-level model of the RTL host link.

    Parameters
    ----------
    config : AcceleratorConfig
    """

    def __init__(self, config: AcceleratorConfig):
        if not isinstance(config, AcceleratorConfig):
            raise TypeError(f"config must be an AcceleratorConfig, not {type(config).__name__}")
        self.config = config
        self._parser = FrameParser(LINK.sync_request, config.max_payload)
        self._busy = False
        #: delivered frames the consumer has not released yet (oldest first)
        self.pending: deque[Delivered] = deque()
        #: counters, the same quantities the fuzz benches report
        self.delivered = 0
        self.rejected = 0
        self.timeouts = 0

    @property
    def free_buffers(self) -> int:
        return self.config.link_buffers - len(self.pending)

    @property
    def in_frame(self) -> bool:
        return self._parser.in_frame

    def feed(self, data) -> list:
        """Feed request bytes (no gaps); return the :class:`Delivered` and
        :class:`LinkReply` events they cause, in order."""
        out = []
        for b in bytes(data):
            item = self._parser.push(b)
            if isinstance(item, Header):
                self._busy = self.free_buffers == 0
            elif isinstance(item, FrameError):
                self.rejected += 1
                out.append(LinkReply(item.status, item.seq))
            elif isinstance(item, Frame):
                if self._busy:
                    self.rejected += 1
                    out.append(LinkReply(Status.BUSY, item.seq))
                else:
                    d = Delivered(item.code, item.seq, item.payload)
                    self.pending.append(d)
                    self.delivered += 1
                    out.append(d)
        return out

    def idle(self, cycles: int) -> bool:
        """``cycles`` consecutive cycles without a byte; True if that abandoned
        a partial frame."""
        if cycles >= self.config.link_timeout_cycles and self._parser.in_frame:
            self._parser.reset()
            self.timeouts += 1
            return True
        return False

    def release(self) -> Delivered:
        """The consumer finished with the oldest delivered frame (``frame.ready``)."""
        if not self.pending:
            raise ValueError("release() with no delivered frame pending")
        return self.pending.popleft()


#: kinds of damage :func:`random_traffic` applies
CORRUPTIONS = ("good", "bitflip", "truncate", "bad_length", "wrong_length", "garbage",
               "random_bytes", "slow_good")


def random_traffic(rng: random.Random, config: AcceleratorConfig, frames: int, *,
                   opcodes=None, payload_fn=None, good_fraction: float = 0.4):
    """Random mix of good and damaged request frames, for fuzzing a link or device.

    Returns a list of ``(data, gap_after)`` chunks: send ``data`` back to back,
    then leave the line idle for ``gap_after`` cycles.  Gaps are either well
    inside ``link_timeout_cycles`` or at/just past it (to exercise the timeout
    at its exact boundary: ``T - 1`` keeps a frame, ``T`` abandons it).
    Truncated frames are always followed by a gap of at least the timeout or by
    a run of ``max_payload + 8`` zero bytes, so the next frame is parsed from
    its sync byte.

    Parameters
    ----------
    opcodes : sequence of int, optional
        Opcodes of good frames (default: any byte).
    payload_fn : callable(rng, opcode) -> bytes, optional
        Payload of a good frame (default: random bytes up to ``max_payload``).
    """
    if not 0.0 <= good_fraction <= 1.0:
        raise ValueError(f"good_fraction must be in [0, 1], got {good_fraction}")
    t = config.link_timeout_cycles
    mp = config.max_payload

    def payload(op):
        if payload_fn is not None:
            return bytes(payload_fn(rng, op))
        n = rng.choice([0, 1, 2, rng.randrange(mp + 1), mp])
        return bytes(rng.randrange(256) for _ in range(n))

    def good():
        op = rng.choice(opcodes) if opcodes else rng.randrange(256)
        return bytearray(encode_request(op, rng.randrange(256), payload(op)))

    chunks = []
    for _ in range(frames):
        kind = "good" if rng.random() < good_fraction else rng.choice(CORRUPTIONS[1:])
        gap = rng.choice([0, 0, 0, 1, rng.randrange(t // 2)])
        f = good()
        if kind == "bitflip":
            for _ in range(rng.randrange(1, 4)):
                f[rng.randrange(1, len(f))] ^= 1 << rng.randrange(8)
        elif kind == "truncate":
            f = f[:rng.randrange(1, len(f))]
            if rng.random() < 0.5:
                gap = t + rng.choice([0, 0, 1, rng.randrange(t)])
            else:
                f += bytes(mp + 8)
        elif kind == "bad_length":
            n = rng.randrange(mp + 1, 0x10000)
            body = bytes((n & 0xFF, n >> 8)) + bytes(f[3:5])
            crc = crc16(body)
            f = bytearray(b"\xa5" + body + bytes((crc & 0xFF, crc >> 8)))
        elif kind == "wrong_length":
            n = (f[1] | f[2] << 8) + rng.choice([-2, -1, 1, 2])
            n = min(max(n, 0), mp)
            f[1], f[2] = n & 0xFF, n >> 8
            f += bytes(mp + 8)         # flush whatever the shorter/longer frame left
        elif kind == "garbage":
            f = bytearray(rng.choice([0x00, 0xFF, 0x5A, 0xA5, 0x13])
                          for _ in range(rng.randrange(1, 40))) + bytes(mp + 8)
        elif kind == "random_bytes":
            f = bytearray(rng.randrange(256) for _ in range(rng.randrange(1, 3 * mp)))
            f += bytes(mp + 8)
        elif kind == "slow_good":
            # a good frame with idle gaps inside it just below the timeout
            for b in f[:-1]:
                chunks.append((bytes([b]), rng.choice([t - 1, rng.randrange(t)])))
            f = f[-1:]
        chunks.append((bytes(f), gap))
    return chunks
