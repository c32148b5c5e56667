"""cocotb tests of :class:`hetaccel.rtl.uart.UartPhy` (run by tests/test_uart.py).

The serial side is driven and decoded by time-based bit-bangers (not by the
DUT's clock) so senders that are faster or slower than the receiver's baud
can be emulated.  Environment: ``UART_DIVISOR`` (clock cycles per bit).
"""

from __future__ import annotations

import os
import random

import cocotb
from cocotb.clock import Clock
from cocotb.triggers import FallingEdge, ReadOnly, RisingEdge, Timer

CLK_PS = 10_000


def _divisor() -> int:
    return int(os.environ["UART_DIVISOR"])


async def _start(dut):
    cocotb.start_soon(Clock(dut.clk, CLK_PS, unit="ps").start())
    dut.rx_pin.value = 1
    dut.rx__ready.value = 1
    dut.tx__valid.value = 0
    dut.tx__payload.value = 0
    dut.rst.value = 1
    for _ in range(3):
        await RisingEdge(dut.clk)
    dut.rst.value = 0
    for _ in range(3):
        await RisingEdge(dut.clk)


async def _send_serial(dut, data, bit_ps, stop_bits=None, gap_bits=0):
    """Bit-bang ``data`` onto rx_pin; ``stop_bits[i]`` overrides byte i's stop bit."""
    for i, byte in enumerate(data):
        stop = 1 if stop_bits is None else stop_bits[i]
        for b in [0] + [(byte >> k) & 1 for k in range(8)] + [stop]:
            dut.rx_pin.value = b
            await Timer(bit_ps, unit="ps")
        dut.rx_pin.value = 1
        if gap_bits:
            await Timer(gap_bits * bit_ps, unit="ps")


class Collector:
    def __init__(self, dut):
        self.dut = dut
        self.bytes = []
        cocotb.start_soon(self._run())

    async def _run(self):
        d = self.dut
        while True:
            await RisingEdge(d.clk)
            await ReadOnly()
            if int(d.rx__valid.value) and int(d.rx__ready.value):
                self.bytes.append(int(d.rx__payload.value))


@cocotb.test()
async def rx_baud_mismatch_back_to_back(dut):
    div = _divisor()
    await _start(dut)
    got = Collector(dut)
    rng = random.Random(1)
    # +-4 % sender error, bytes back to back (no idle between stop and start)
    for factor in (0.96, 0.98, 1.0, 1.02, 1.04):
        data = [rng.randrange(256) for _ in range(24)] + [0x00, 0xFF, 0x55, 0xAA]
        got.bytes.clear()
        await _send_serial(dut, data, round(div * CLK_PS / factor))
        await Timer(3 * div * CLK_PS, unit="ps")
        assert got.bytes == data, f"sender at {factor} x baud: sent {data}, got {got.bytes}"
    assert int(dut.framing_errors.value) == 0
    assert int(dut.overruns.value) == 0


@cocotb.test()
async def rx_framing_error_and_glitch(dut):
    div = _divisor()
    await _start(dut)
    got = Collector(dut)
    bit = div * CLK_PS
    # a stop bit of 0 drops the byte and counts it; the line then idles
    await _send_serial(dut, [0x3C, 0x81], bit, stop_bits=[0, 1], gap_bits=2)
    await Timer(4 * bit, unit="ps")
    assert got.bytes == [0x81], got.bytes
    assert int(dut.framing_errors.value) == 1
    # a break (line held low) gives one framing error and no byte
    dut.rx_pin.value = 0
    await Timer(25 * bit, unit="ps")
    dut.rx_pin.value = 1
    await Timer(3 * bit, unit="ps")
    assert got.bytes == [0x81] and int(dut.framing_errors.value) == 2
    # a glitch shorter than half a bit is not a start bit
    dut.rx_pin.value = 0
    await Timer(CLK_PS * max(1, div // 2 - 3), unit="ps")
    dut.rx_pin.value = 1
    await Timer(12 * bit, unit="ps")
    assert got.bytes == [0x81], got.bytes
    await _send_serial(dut, [0x42], bit)
    await Timer(2 * bit, unit="ps")
    assert got.bytes == [0x81, 0x42], got.bytes


@cocotb.test()
async def rx_overrun_counts_and_keeps_first(dut):
    div = _divisor()
    await _start(dut)
    dut.rx__ready.value = 0
    await _send_serial(dut, [0x11, 0x22], div * CLK_PS)
    await Timer(2 * div * CLK_PS, unit="ps")
    await ReadOnly()
    assert int(dut.rx__valid.value) == 1 and int(dut.rx__payload.value) == 0x11
    assert int(dut.overruns.value) == 1
    await RisingEdge(dut.clk)
    dut.rx__ready.value = 1


async def _push_tx(dut, byte):
    """Offer ``byte`` on the tx stream until the handshake (call right after an edge)."""
    dut.tx__valid.value = 1
    dut.tx__payload.value = byte
    while True:
        await ReadOnly()
        taken = int(dut.tx__ready.value)
        await RisingEdge(dut.clk)
        if taken:
            return


async def _decode_serial(dut, n, bit_ps, starts):
    """Decode ``n`` bytes from tx_pin by mid-bit sampling; record start times."""
    out = []
    for _ in range(n):
        while int(dut.tx_pin.value):
            await FallingEdge(dut.tx_pin)
        starts.append(cocotb.utils.get_sim_time("ps"))
        await Timer(bit_ps // 2, unit="ps")
        assert int(dut.tx_pin.value) == 0, "start bit not low in its middle"
        byte = 0
        for k in range(8):
            await Timer(bit_ps, unit="ps")
            byte |= int(dut.tx_pin.value) << k
        await Timer(bit_ps, unit="ps")
        assert int(dut.tx_pin.value) == 1, "stop bit not high"
        out.append(byte)
    return out


@cocotb.test()
async def tx_back_to_back(dut):
    div = _divisor()
    await _start(dut)
    rng = random.Random(2)
    data = [rng.randrange(256) for _ in range(20)] + [0x00, 0xFF]
    starts = []
    decoder = cocotb.start_soon(_decode_serial(dut, len(data), div * CLK_PS, starts))
    for b in data:
        await _push_tx(dut, b)
    dut.tx__valid.value = 0
    got = await decoder
    assert got == data, f"sent {data}, decoded {got}"
    gaps = {starts[i + 1] - starts[i] for i in range(len(starts) - 1)}
    assert gaps == {10 * div * CLK_PS}, f"bytes not back to back: start spacing {gaps}"


@cocotb.test()
async def loopback(dut):
    div = _divisor()
    await _start(dut)
    got = Collector(dut)

    async def wire():
        while True:
            await RisingEdge(dut.clk)
            dut.rx_pin.value = dut.tx_pin.value

    cocotb.start_soon(wire())
    data = list(range(256))
    random.Random(3).shuffle(data)
    data = data[:48]
    for b in data:
        await _push_tx(dut, b)
    dut.tx__valid.value = 0
    await Timer(15 * div * CLK_PS, unit="ps")
    assert got.bytes == data, f"loopback: sent {data}, got {got.bytes}"
