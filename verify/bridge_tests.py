"""cocotb side of the ``rtl`` backend (see :mod:`hetaccel.verify.bridge`).

The ``rtl`` backend's harness on Icarus (and on Verilator with
``harness="cocotb"``; Verilator's default is the faster native harness).

Not a test suite: one cocotb "test" that serves the host over a Unix socket
until the host says ``Q`` or goes away.  Bytes move a whole FIFO word per
simulator call, and while the device computes the simulator runs freely on a
Timer, so Python costs per word, not per cycle.

All reads and writes happen just after a falling clock edge: everything the
rising edge changed has settled, and what is written is sampled on the next
rising edge.
"""

from __future__ import annotations

import os
import socket
import struct

import cocotb
from cocotb.clock import Clock
from cocotb.triggers import FallingEdge, First, RisingEdge, Timer
from cocotb.types import LogicArray

from .device_tests import kick_icarus_comb_blocks

_HDR = struct.Struct("<cI")
PERIOD_NS = 10


def _recv_exact(sock, n):
    buf = bytearray()
    while len(buf) < n:
        chunk = sock.recv(n - len(buf))
        if not chunk:
            return None
        buf += chunk
    return bytes(buf)


class _FrameCounter:
    """Counts complete reply frames in the device's (always well-formed) output."""

    def __init__(self):
        self.buf = bytearray()
        self.frames = 0

    def feed(self, data):
        self.buf += data
        pos = 0
        buf = self.buf
        while True:
            start = buf.find(0x5A, pos)
            if start < 0:
                pos = len(buf)
                break
            if len(buf) - start < 3:
                pos = start
                break
            total = 7 + (buf[start + 1] | buf[start + 2] << 8)
            if len(buf) - start < total:
                pos = start
                break
            self.frames += 1
            pos = start + total
        del buf[:pos]


class Bridge:
    def __init__(self, dut, sock, word_bytes):
        self.dut = dut
        self.sock = sock
        self.W = word_bytes
        self.rx = bytearray()
        self.rx_pos = 0
        self.out = bytearray()
        self.counter = _FrameCounter()

    def cycles(self) -> int:
        return int(self.dut.cycles.value)

    def _pending_rx(self) -> int:
        return len(self.rx) - self.rx_pos

    async def _exchange(self):
        """Push rx words while there is room and pop tx words while there are
        any, one clock per word.  Returns after the FIFOs have been serviced."""
        dut, W = self.dut, self.W
        while True:
            space = int(dut.rx_space.value) if self._pending_rx() else 0
            avail = int(dut.tx_avail.value)
            if not space and not avail:
                return
            if space and self._pending_rx():
                chunk = self.rx[self.rx_pos:self.rx_pos + W]
                self.rx_pos += len(chunk)
                dut.rx_word.value = LogicArray.from_bytes(chunk.ljust(W, b"\0"), range=8 * W,
                                                          byteorder="little")
                dut.rx_count.value = len(chunk)
                dut.rx_push.value = 1
                if self.rx_pos > 1 << 16:
                    del self.rx[:self.rx_pos]
                    self.rx_pos = 0
            else:
                dut.rx_push.value = 0
            if avail:
                n = int(dut.tx_count.value)
                word = dut.tx_word.value.to_bytes(byteorder="little")
                data = word[W - n:]
                self.out += data
                self.counter.feed(data)
                dut.tx_pop.value = 1
            else:
                dut.tx_pop.value = 0
            await FallingEdge(dut.clk)
            dut.rx_push.value = 0
            dut.tx_pop.value = 0

    async def run(self, max_cycles: int, frames: int):
        dut = self.dut
        deadline = self.cycles() + max_cycles
        target = self.counter.frames + frames
        fifo_bytes = int(os.environ.get("HETACCEL_BRIDGE_FIFO_BYTES", "0")) or 2048
        while True:
            await self._exchange()
            now = self.cycles()
            if self.counter.frames >= target or now >= deadline:
                break
            budget = deadline - now
            if self._pending_rx():
                # The receive FIFO is full: let it drain by about half.
                step = min(budget, max(16, fifo_bytes // 2))
            else:
                step = budget
            await First(Timer(step * PERIOD_NS, unit="ns"), RisingEdge(dut.tx_avail))
            await FallingEdge(dut.clk)
        out = bytes(self.out)
        self.out.clear()
        return out

    async def reset_device(self):
        dut = self.dut
        dut.dev_reset.value = 1
        for _ in range(4):
            await FallingEdge(dut.clk)
        dut.dev_reset.value = 0
        await FallingEdge(dut.clk)
        # Whatever the device had not yet consumed is lost with it.
        self.rx = bytearray()
        self.rx_pos = 0


@cocotb.test()
async def bridge(dut):
    """Serve the host until it quits or disconnects."""
    word_bytes = int(os.environ.get("HETACCEL_BRIDGE_WORD_BYTES", "64"))
    path = os.environ["HETACCEL_BRIDGE_SOCKET"]
    if cocotb.SIM_NAME.lower().startswith("icarus"):
        # Icarus leaves some always @* blocks unevaluated at time 0 (see there).
        kick_icarus_comb_blocks(dut)
    Clock(dut.clk, PERIOD_NS, unit="ns").start()
    dut.rst.value = 1
    dut.rx_push.value = 0
    dut.tx_pop.value = 0
    dut.dev_reset.value = 0
    dut.rx_count.value = 0
    dut.rx_word.value = 0
    for _ in range(4):
        await FallingEdge(dut.clk)
    dut.rst.value = 0
    await FallingEdge(dut.clk)
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.connect(path)
    br = Bridge(dut, sock, word_bytes)
    try:
        while True:
            hdr = _recv_exact(sock, _HDR.size)
            if hdr is None:
                return  # the host went away: end the simulation
            cmd, n = _HDR.unpack(hdr)
            body = _recv_exact(sock, n) if n else b""
            if body is None:
                return
            if cmd == b"D":
                br.rx += body
            elif cmd == b"R":
                max_cycles, frames = struct.unpack("<QI", body)
                out = await br.run(max_cycles, frames)
                msg = struct.pack("<Q", br.cycles()) + out
                sock.sendall(_HDR.pack(b"T", len(msg)) + msg)
            elif cmd == b"X":
                await br.reset_device()
            elif cmd == b"Q":
                return
            else:
                raise RuntimeError(f"unknown bridge command {cmd!r}")
    finally:
        sock.close()
