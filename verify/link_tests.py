"""cocotb tests of :class:`hetaccel.rtl.link.HostLink` against :class:`LinkModel`.

Run through ``tests/test_link_cocotb.py`` (both simulators).  One Python loop
per clock cycle plays every agent (request driver, consumer, reply sink) and
steps the model in lock-step with the handshakes the RTL actually made, so
timing-dependent outcomes (BUSY, timeouts) are predicted exactly:

* at each rising edge the handshakes sampled in the previous ``ReadOnly``
  phase are applied: request bytes are fed to the model (after the idle gap
  that preceded them), then the consumer's ``frame`` handshake releases the
  model's oldest frame -- the same order the RTL sees them in;
* the consumer reads each frame's payload through ``payload_addr`` /
  ``payload_data``, holds it a random number of cycles, releases it and
  answers OK echoing the payload, with random gaps on ``reply_data``;
* ``tx.ready`` is random (back-pressure).

Checks: delivered frames equal the model's (opcode, seq, payload); the link's
own replies equal the model's, in order; every delivered frame gets its echo;
the reply byte stream parses with no error; nothing hangs.

Environment: ``HETACCEL_CONFIG`` (config JSON), ``LINK_FUZZ_FRAMES``.
"""

from __future__ import annotations

import os
import random

import cocotb
from cocotb.clock import Clock
from cocotb.triggers import ReadOnly, RisingEdge

from ..spec.link import Frame, ReplyDecoder, encode_request
from ..sim.link_model import Delivered, LinkModel, LinkReply, random_traffic
from ..spec import AcceleratorConfig, Opcode, Status


def _config() -> AcceleratorConfig:
    return AcceleratorConfig.from_json(os.environ["HETACCEL_CONFIG"])


class Bench:
    """All agents around the link, stepped by :meth:`run`."""

    def __init__(self, dut, cfg, rng, *, tx_ready_p=0.7, hold=(0, 0), data_gap_p=0.2):
        self.dut, self.cfg, self.rng = dut, cfg, rng
        self.model = LinkModel(cfg)
        self.tx_ready_p = tx_ready_p
        self.hold = hold
        self.data_gap_p = data_gap_p
        self.chunks = []          # pending (bytes, gap)
        self.cur = None           # (data, index, gap)
        self.gap_left = 0
        self.idle = 0             # cycles with rx.valid low since the last byte taken
        self.expected = []        # model events, in order
        self.delivered = []
        self.tx_bytes = bytearray()
        self.cycle = 0
        self.held_frames = False  # consumer refuses to release (BUSY test)
        # consumer state
        self.c_state = "WAIT"
        self.c_hdr = None
        self.c_buf = bytearray()
        self.c_addr = 0
        self.c_hold = 0
        self.c_out = []           # reply payload bytes still to send

    def send(self, data: bytes, gap: int = 0):
        self.chunks.append((bytes(data), gap))

    # --- per-cycle drive (after the edge) --------------------------------
    def _drive(self):
        d = self.dut
        # request driver
        if self.cur is None and self.gap_left == 0 and self.chunks:
            data, gap = self.chunks.pop(0)
            self.cur = [data, 0, gap]
            if not data:
                self.cur = None
                self.gap_left = gap
        if self.cur is not None and self.gap_left == 0:
            d.rx__valid.value = 1
            d.rx__payload.value = self.cur[0][self.cur[1]]
        else:
            d.rx__valid.value = 0
            if self.gap_left:
                self.gap_left -= 1
        # reply sink
        d.tx__ready.value = int(self.rng.random() < self.tx_ready_p)
        # consumer
        d.frame__ready.value = 0
        d.reply__valid.value = 0
        d.reply_data__valid.value = 0
        if self.c_state == "READ":
            d.payload_addr.value = min(self.c_addr, self.c_hdr[2] - 1)
        elif self.c_state == "RELEASE":
            d.frame__ready.value = 1
        elif self.c_state == "REPLY":
            op, seq, length = self.c_hdr
            d.reply__payload.value = Status.OK | seq << 8 | length << 16
            d.reply__valid.value = 1
        elif self.c_state == "DATA":
            if self.rng.random() >= self.data_gap_p:
                d.reply_data__valid.value = 1
                d.reply_data__payload.value = self.c_out[0]

    # --- per-cycle sample (ReadOnly) and apply at the next edge ----------
    def _sample(self):
        d = self.dut
        s = {
            "rx_take": int(d.rx__valid.value) and int(d.rx__ready.value),
            "rx_valid": int(d.rx__valid.value),
            "rx_byte": int(d.rx__payload.value) if int(d.rx__valid.value) else 0,
            "frame_valid": int(d.frame__valid.value),
            "frame_ready": int(d.frame__ready.value),
            "frame": int(d.frame__payload.value) if int(d.frame__valid.value) else 0,
            "data": int(d.payload_data.value) if self.c_state == "READ" else 0,
            "tx": int(d.tx__valid.value) and int(d.tx__ready.value),
            "tx_byte": int(d.tx__payload.value) if int(d.tx__valid.value) else 0,
            "reply_take": int(d.reply__valid.value) and int(d.reply__ready.value),
            "rdata_take": int(d.reply_data__valid.value) and int(d.reply_data__ready.value),
        }
        return s

    def _apply(self, s):
        # request bytes first, then the release: the order the RTL sees them in
        if s["rx_take"]:
            self.model.idle(self.idle)
            self.expected += self.model.feed([s["rx_byte"]])
            self.idle = 0
            self.cur[1] += 1
            if self.cur[1] == len(self.cur[0]):
                self.gap_left = self.cur[2]
                self.cur = None
        elif not s["rx_valid"]:
            self.idle += 1
        if s["frame_valid"] and s["frame_ready"]:
            self.model.release()
        if s["tx"]:
            self.tx_bytes.append(s["tx_byte"])
        # consumer
        st = self.c_state
        if st == "WAIT":
            if s["frame_valid"] and not self.held_frames:
                f = s["frame"]
                self.c_hdr = (f & 0xFF, (f >> 8) & 0xFF, f >> 16)
                self.c_buf = bytearray()
                self.c_addr = 0
                self.c_state = "READ" if self.c_hdr[2] else "HOLD"
                self.c_hold = self.rng.randint(*self.hold)
        elif st == "READ":
            if self.c_addr > 0:
                self.c_buf.append(s["data"])
            if len(self.c_buf) == self.c_hdr[2]:
                self.c_state = "HOLD"
            else:
                self.c_addr += 1
        elif st == "HOLD":
            if self.c_hold:
                self.c_hold -= 1
            else:
                self.c_state = "RELEASE"
        elif st == "RELEASE":
            self.delivered.append(Delivered(self.c_hdr[0], self.c_hdr[1], bytes(self.c_buf)))
            self.c_out = list(self.c_buf)
            self.c_state = "REPLY"
        elif st == "REPLY":
            if s["reply_take"]:
                self.c_state = "DATA" if self.c_out else "WAIT"
        elif st == "DATA":
            if s["rdata_take"]:
                self.c_out.pop(0)
                if not self.c_out:
                    self.c_state = "WAIT"

    @property
    def quiet(self) -> bool:
        return (self.cur is None and not self.chunks and self.gap_left == 0
                and self.c_state == "WAIT" and not int(self.dut.busy.value)
                and not (int(self.dut.frame__valid.value) and not self.held_frames))

    async def run(self, max_cycles: int):
        """Run until all input is sent and everything is answered."""
        quiet_for = 0
        s = None
        while True:
            await RisingEdge(self.dut.clk)
            self.cycle += 1
            if s is not None:
                self._apply(s)
            self._drive()
            await ReadOnly()
            s = self._sample()
            if self.quiet and not (s["rx_take"] or s["tx"]):
                quiet_for += 1
                if quiet_for > 8:
                    break
            else:
                quiet_for = 0
            if self.cycle > max_cycles:
                raise AssertionError(
                    f"hang: link not quiet after {max_cycles} cycles (consumer {self.c_state}, "
                    f"{len(self.chunks)} chunks unsent, busy={int(self.dut.busy.value)})")
        await RisingEdge(self.dut.clk)
        self._apply(s)
        self.model.idle(self.idle)
        self.idle = 0

    def check(self, what: str):
        """Compare everything the RTL did with the model; return the counts."""
        exp_deliv = [e for e in self.expected if isinstance(e, Delivered)]
        exp_own = [e for e in self.expected if isinstance(e, LinkReply)]
        assert self.delivered == exp_deliv, (
            f"{what}: delivered frames differ from the model: first mismatch "
            f"{_first_diff(exp_deliv, self.delivered)}")
        parsed = ReplyDecoder().feed(bytes(self.tx_bytes))
        bad = [p for p in parsed if not isinstance(p, Frame)]
        assert not bad, f"{what}: reply stream has framing errors: {bad[:3]}"
        own = [LinkReply(Status(p.code), p.seq) for p in parsed if p.code != Status.OK]
        ok = [(p.seq, p.payload) for p in parsed if p.code == Status.OK]
        assert own == exp_own, f"{what}: link replies differ: {_first_diff(exp_own, own)}"
        assert ok == [(d.seq, d.payload) for d in self.delivered], \
            f"{what}: consumer replies differ from the delivered frames"
        return len(exp_deliv), len(exp_own)


def _first_diff(a, b):
    for i, (x, y) in enumerate(zip(a, b)):
        if x != y:
            return f"#{i}: expected {x}, got {y}"
    return f"lengths {len(a)} (expected) vs {len(b)} (got)"


async def _start(dut):
    cocotb.start_soon(Clock(dut.clk, 10, unit="ns").start())
    for name in ("rx__valid", "frame__ready", "reply__valid", "reply_data__valid", "tx__ready",
                 "rx__payload", "reply__payload", "reply_data__payload"):
        getattr(dut, name).value = 0
    dut.payload_addr.value = 0
    dut.rst.value = 1
    for _ in range(3):
        await RisingEdge(dut.clk)
    dut.rst.value = 0


@cocotb.test()
async def good_frames_and_back_pressure(dut):
    cfg = _config()
    await _start(dut)
    rng = random.Random(1)
    b = Bench(dut, cfg, rng, tx_ready_p=0.5, hold=(0, 4))
    lengths = [0, 1, 2, cfg.max_payload - 1, cfg.max_payload] + \
        [rng.randrange(cfg.max_payload + 1) for _ in range(10)]
    for i, n in enumerate(lengths):
        # paced so the consumer (reply at half rate) keeps up: no BUSY here
        b.send(encode_request(rng.randrange(256), i, bytes(rng.randrange(256) for _ in range(n))),
               gap=4 * (n + 7) + 20)
    await b.run(20000)
    n, own = b.check("good frames")
    assert n == len(lengths) and own == 0, (n, own)


@cocotb.test()
async def corrupted_frames_rejected(dut):
    cfg = _config()
    await _start(dut)
    rng = random.Random(2)
    b = Bench(dut, cfg, rng)
    good = encode_request(Opcode.WRITE_MEM, 1, bytes(range(10)))
    flush = bytes(cfg.max_payload + 8)
    for i in range(1, len(good)):                      # every byte, one bit each
        bad = bytearray(good)
        bad[i] ^= 1 << (i % 8)
        b.send(bytes(bad) + flush)
    b.send(good[:6], gap=cfg.link_timeout_cycles)      # truncation ended by the timeout
    b.send(good[:9] + flush)                           # truncation ended by zeros
    n = cfg.max_payload + 1                            # too long, with a valid CRC
    b.send(encode_request(Opcode.WRITE_MEM, 9, bytes(n), max_payload=0xFFFF))
    b.send(bytes(rng.randrange(256) for _ in range(200)) + flush)
    b.send(b"\x00\xff\x13\x5a" * 10)
    b.send(encode_request(Opcode.NOP, 0x77))           # answered after all of that
    await b.run(40000)
    b.check("corrupted frames")
    assert b.delivered == [Delivered(Opcode.NOP, 0x77, b"")], b.delivered
    own = [e for e in b.expected if isinstance(e, LinkReply)]
    assert LinkReply(Status.BAD_LENGTH, 9) in own
    assert sum(r.status == Status.BAD_CRC for r in own) >= len(good) - 5


@cocotb.test()
async def busy_when_buffers_full(dut):
    cfg = _config()
    await _start(dut)
    b = Bench(dut, cfg, random.Random(3))
    b.held_frames = True
    n = cfg.link_buffers + 2
    for i in range(n):
        b.send(encode_request(Opcode.NOP, i, bytes([i])))
    await b.run(5000)
    own = [e for e in b.expected if isinstance(e, LinkReply)]
    assert own == [LinkReply(Status.BUSY, i) for i in range(cfg.link_buffers, n)], own
    b.held_frames = False
    await b.run(5000)                                  # the consumer drains the buffers
    b.send(encode_request(Opcode.NOP, 99))
    await b.run(5000)
    b.check("busy")
    assert [d.seq for d in b.delivered] == list(range(cfg.link_buffers)) + [99]


@cocotb.test()
async def timeout_boundary(dut):
    cfg = _config()
    await _start(dut)
    b = Bench(dut, cfg, random.Random(4), tx_ready_p=1.0)
    t = cfg.link_timeout_cycles
    f = encode_request(Opcode.WRITE_REG, 5, b"abcd")
    b.send(f[:4], gap=t - 1)                           # just inside: still one frame
    b.send(f[4:])
    f = encode_request(Opcode.WRITE_REG, 6, b"efgh")
    b.send(f[:4], gap=t)                               # just past: abandoned, tail is garbage
    b.send(f[4:])
    b.send(encode_request(Opcode.NOP, 7))
    await b.run(5000)
    b.check("timeout")
    assert [d.seq for d in b.delivered] == [5, 7], b.delivered
    assert b.model.timeouts == 1


@cocotb.test()
async def fuzz(dut):
    cfg = _config()
    frames = int(os.environ.get("LINK_FUZZ_FRAMES", "200"))
    await _start(dut)
    rng = random.Random(int(os.environ.get("LINK_FUZZ_SEED", "5")))
    b = Bench(dut, cfg, rng, tx_ready_p=0.8, hold=(0, 40))
    for chunk in random_traffic(rng, cfg, frames):
        b.send(*chunk)
    b.send(bytes(cfg.max_payload + 8) + encode_request(Opcode.NOP, 0xEE))
    await b.run(400 * frames + 20000)
    n, own = b.check("fuzz")
    assert b.delivered and b.delivered[-1] == Delivered(Opcode.NOP, 0xEE, b""), \
        "the link did not answer a good frame after the fuzz"
    dut._log.info("fuzz: %d frames sent, %d delivered, %d rejected by the link, "
                  "%d timeouts, %d cycles", frames, n, own, b.model.timeouts, b.cycle)
