"""The link session: one conversation with a device over a transport.

:class:`Session` sends request frames (:mod:`hetaccel.spec.link` framing) with
up to ``config.link_buffers`` outstanding, checks every reply (CRC, sequence
number, status), and retries a failed list of requests as the runtime's
fault rules require: it resumes at the first unacknowledged frame when
replaying the frames that may have run unseen cannot change the result, else
it replays the whole list.  After each fault it drains the link, resynchronises
the device's parser and checks the device's ``FRAMES`` counter, so a device
that reset (and lost its memories) raises :class:`DeviceResetError` instead of
returning a result.  The policy is described in :mod:`hetaccel.host.accelerator`.
"""

from __future__ import annotations

import struct
from collections import deque

from ..spec import GEMM_ACCUMULATE, AcceleratorConfig, Opcode, Status, encode_instruction
from ..spec.link import FrameError, ReplyDecoder, encode_request
from .transport import Transport

__all__ = ["Session", "AcceleratorError", "LinkError", "DeviceStatusError", "DeviceResetError"]


class AcceleratorError(RuntimeError):
    """Base class of the runtime's device errors."""


class LinkError(AcceleratorError):
    """The device did not answer correctly within the retry budget."""


class DeviceStatusError(AcceleratorError):
    """The device kept rejecting a frame with an error status."""


class DeviceResetError(AcceleratorError):
    """The device reset during an operation; its result is lost."""


class _Fault(Exception):
    def __init__(self, kind: str, detail: str, status: int | None = None):
        super().__init__(f"{kind}: {detail}")
        self.kind = kind
        self.status = status


def _accumulates(req: tuple) -> bool:
    """Whether executing ``req`` twice differs from executing it once."""
    op, payload = req
    if op == Opcode.ADAM:
        return True
    return op == Opcode.GEMM and bool(payload[-1] & GEMM_ACCUMULATE)


class Session:
    """Frames in, replies out, with bounded retries of whole segments."""

    def __init__(self, transport: Transport, config: AcceleratorConfig, *, timeout: float,
                 retries: int):
        self.t = transport
        self.config = config
        self.timeout = timeout
        self.retries = retries
        self.window = config.link_buffers
        self.decoder = ReplyDecoder(0xFFFF)
        self.seq = 0
        self.frames_ok = 0           # OK replies since the FRAMES baseline
        self.frames_base = 0         # FRAMES register at the baseline
        self.bytes_sent = 0
        self.bytes_received = 0
        self.frames_sent = 0
        self.retry_count = 0
        self.fault_log: list[str] = []
        self._frames_reg: int | None = None   # FRAMES register, once baselined
        self._read_payloads: dict = {}
        self._progress = (0, 0)

    def _next_seq(self) -> int:
        self.seq = (self.seq + 1) & 0xFF
        return self.seq

    def _send(self, data: bytes) -> None:
        self.bytes_sent += len(data)
        self.t.send(data)

    def _receive(self, frames: int) -> list:
        data = self.t.receive(self.timeout, frames)
        self.bytes_received += len(data)
        return self.decoder.feed(data) if data else None

    def _attempt(self, reqs: list, start: int, replies: list) -> list:
        n = len(reqs)
        outstanding: deque = deque()
        nxt = start
        done = start
        maxp = self.config.max_payload
        # On a fault, frames before ``done`` were acknowledged (executed once, in
        # order); those in [done, nxt) may or may not have executed.
        self._progress = (done, nxt)
        while done < n:
            if nxt < n and len(outstanding) < self.window:
                out = bytearray()
                while nxt < n and len(outstanding) < self.window:
                    op, payload = reqs[nxt]
                    seq = self._next_seq()
                    out += encode_request(op, seq, payload, max_payload=maxp)
                    outstanding.append((nxt, seq))
                    nxt += 1
                    self.frames_sent += 1
                self._progress = (done, nxt)
                self._send(bytes(out))
            items = self._receive(1)
            if items is None:
                idx, seq = outstanding[0]
                raise _Fault("timeout", f"no reply to {Opcode(reqs[idx][0]).name} "
                                        f"(seq {seq}) within {self.timeout:g} s")
            for item in items:
                if isinstance(item, FrameError):
                    raise _Fault("corrupt reply", f"reply failed its {item.status.name} check")
                live = [s for _, s in outstanding]
                if item.seq not in live:
                    continue  # a late reply from an abandoned attempt
                idx, seq = outstanding[0]
                if item.seq != seq:
                    raise _Fault("lost reply", f"reply to seq {seq} missing "
                                               f"(got seq {item.seq})")
                if item.code != Status.OK:
                    name = Status(item.code).name if item.code in Status._value2member_map_ \
                        else f"0x{item.code:02X}"
                    raise _Fault("status", f"{Opcode(reqs[idx][0]).name} answered {name}",
                                 status=item.code)
                replies[idx] = item.payload
                outstanding.popleft()
                self.frames_ok += 1
                done += 1
                self._progress = (done, nxt)
        return replies

    @property
    def bulk_device(self):
        """The emulated device when frames may skip their bytes (see
        :attr:`hetaccel.host.transport.Transport.bulk_device`), else None."""
        return self.t.bulk_device

    def bulk_account(self, device, since: list) -> None:
        """Count the frames ``device`` took through its bulk path since its
        ``bulk_traffic`` was ``since`` as sent, acknowledged and answered, as
        if they had crossed the link (sequence numbers included); ``since``
        is brought up to date."""
        now = device.bulk_traffic
        frames, sent, received = now[0] - since[0], now[1] - since[1], now[2] - since[2]
        self.seq = (self.seq + frames) & 0xFF
        self.frames_sent += frames
        self.frames_ok += frames
        self.bytes_sent += sent
        self.bytes_received += received
        since[:] = now

    def run(self, reqs: list) -> list:
        """Execute ``reqs`` (``(opcode, payload)``) in order; their reply payloads.

        On an emulated device (:attr:`bulk_device`) a list the device answers
        OK throughout skips the bytes, with the same effect; any other list,
        and every list on another backend, crosses the link as frames.

        After a fault the list resumes at the first unacknowledged frame when
        every frame that may have executed without its reply being seen
        overwrites what it writes (loads, reads, GEMM without accumulate,
        ACTIVATE, register writes): executing it again, in order, gives the
        same state.  If one of them accumulates (GEMM with accumulate, ADAM),
        the whole list is replayed from its start, so the list must be
        idempotent as a whole (see the module docstring).
        """
        dev = self.t.bulk_device
        if dev is not None and all(dev.request_ok(op, payload) for op, payload in reqs):
            since = list(dev.bulk_traffic)
            replies = [dev.bulk_request(op, payload) for op, payload in reqs]
            self.bulk_account(dev, since)
            return replies
        last: _Fault | None = None
        replies: list = [None] * len(reqs)
        start = 0
        for attempt in range(self.retries + 1):
            try:
                return self._attempt(reqs, start, replies)
            except _Fault as fault:
                last = fault
                self.fault_log.append(str(fault))
                if attempt == self.retries:
                    break
                self.retry_count += 1
                first, end = self._progress
                self.recover()
                start = 0 if any(_accumulates(r) for r in reqs[first:end]) else first
        if last.kind == "status" and last.status not in (Status.BUSY, Status.BAD_CRC):
            raise DeviceStatusError(f"device rejected a frame {self.retries + 1} times: {last}")
        raise LinkError(f"giving up after {self.retries + 1} attempts: {last}")

    def _single(self, op: int, payload: bytes = b"") -> bytes:
        """One frame, one reply, no retry (used while recovering)."""
        seq = self._next_seq()
        self._send(encode_request(op, seq, payload, max_payload=self.config.max_payload))
        self.frames_sent += 1
        while True:
            items = self._receive(1)
            if items is None:
                raise _Fault("timeout", f"no reply to {Opcode(op).name} while resynchronising")
            for item in items:
                if isinstance(item, FrameError) or item.seq != seq:
                    continue
                if item.code != Status.OK:
                    raise _Fault("status", f"{Opcode(op).name} answered {item.code}", item.code)
                self.frames_ok += 1
                return item.payload

    def recover(self) -> None:
        """Drain, resynchronise the device's parser, and check it did not reset."""
        while self._receive(self.window) is not None:
            pass
        self.decoder.reset()
        for _ in range(self.retries + 1):
            # max_payload + 8 non-sync bytes end any partial frame in the device.
            self._send(bytes(self.config.max_payload + 8))
            try:
                self._single(Opcode.NOP)
                # The frame-count check is a frame too: a fault in its reply is
                # one more resync attempt, never an internal error for the caller.
                self.check_frames()
                return
            except _Fault as fault:
                self.fault_log.append(f"resync: {fault}")
                while self._receive(self.window) is not None:
                    pass
                self.decoder.reset()
        raise LinkError(f"device does not answer after {self.retries + 1} resync attempts")

    def read_regs(self, addrs: list[int]) -> list[int]:
        key = tuple(addrs)
        payload = self._read_payloads.get(key)
        if payload is None:
            payload = self._read_payloads[key] = encode_instruction(
                Opcode.READ_REG, *({"reg": a} for a in addrs))
        (reply,) = self.run([(Opcode.READ_REG, payload)])
        return list(struct.unpack_from(f"<{len(addrs)}I", reply))

    def baseline(self, frames_reg: int) -> None:
        """Start counting acknowledged frames from the device's FRAMES now."""
        self._frames_reg = frames_reg
        (value,) = self.read_regs([frames_reg])
        self.frames_base = value
        self.frames_ok = 0

    def check_frames(self, frames_value: int | None = None) -> None:
        """Raise DeviceResetError if the device delivered fewer frames than
        the host saw acknowledged since the baseline."""
        if self._frames_reg is None:
            return
        if frames_value is None:
            payload = encode_instruction(Opcode.READ_REG, {"reg": self._frames_reg})
            before = self.frames_ok
            frames_value = int.from_bytes(self._single(Opcode.READ_REG, payload)[:4], "little")
            acked = before
        else:
            acked = self.frames_ok - 1  # the READ_REG that returned the value
        delivered = (frames_value - self.frames_base) & 0xFFFFFFFF
        if delivered >= 1 << 31:
            delivered -= 1 << 32  # the counter went backwards: cleared by a reset
        if delivered < acked:
            raise DeviceResetError(
                f"the device reset: it reports {delivered} frames delivered since the session "
                f"baseline but acknowledged {acked}; scratchpad contents are lost")

