"""Reference model of the device's host link (:class:`hetaccel.rtl.link.HostLink`).

The model applies the parsing rules of :mod:`hetaccel.host.protocol` (it uses
the same :class:`~hetaccel.host.protocol.FrameParser`) plus the three things
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

from collections import deque
from dataclasses import dataclass

from ..host.protocol import LINK, Frame, FrameError, FrameParser, Header, encode_reply
from ..spec import AcceleratorConfig, Status

__all__ = ["LinkModel", "Delivered", "LinkReply"]


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
