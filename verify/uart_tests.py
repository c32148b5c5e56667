"""cocotb tests of :class:`hetaccel.rtl.uart.UartPhy` (run by tests/test_uart.py).

The serial input is driven by a time-based bit-banger (not by the DUT's clock)
so senders that are faster or slower than the receiver's baud can be emulated;
the serial output is sampled once a clock and decoded afterwards.
Environment: ``UART_BIT_TIME``, the PHY's bit time in units of
``1 / 2**UART_FRAC_BITS`` clock cycle (:func:`hetaccel.spec.link.uart_bit_time`).
"""

from __future__ import annotations

import math
import os
import random

import cocotb
from cocotb.clock import Clock
from cocotb.triggers import ReadOnly, RisingEdge, Timer, ValueChange
from cocotb.utils import get_sim_time

from ..spec.link import UART_FRAC_BITS

CLK_PS = 10_000
# a bit time in ps is then a whole number: CLK_PS / 2**UART_FRAC_BITS per unit
assert CLK_PS % (1 << UART_FRAC_BITS) == 0


def _bit_time() -> int:
    return int(os.environ["UART_BIT_TIME"])


def _cycles() -> float:
    """Clock cycles per bit (fractional)."""
    return _bit_time() / (1 << UART_FRAC_BITS)


def _bit_ps(factor: float = 1.0) -> int:
    """One bit in ps for a sender at ``factor`` times the receiver's baud."""
    return round(_bit_time() * (CLK_PS >> UART_FRAC_BITS) / factor)


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


async def _send_serial(dut, data, bit_ps, stop_bits=None, gap_bits=0, glitch=None):
    """Bit-bang ``data`` onto rx_pin; ``stop_bits[i]`` overrides byte i's stop bit;
    ``glitch = (offset_ps, length_ps)`` pulls every stop bit low for ``length_ps``
    from ``offset_ps`` after its start."""
    for i, byte in enumerate(data):
        stop = 1 if stop_bits is None else stop_bits[i]
        for b in [0] + [(byte >> k) & 1 for k in range(8)]:
            dut.rx_pin.value = b
            await Timer(bit_ps, unit="ps")
        dut.rx_pin.value = stop
        if glitch is None:
            await Timer(bit_ps, unit="ps")
        else:
            offset, length = glitch
            await Timer(offset, unit="ps")
            dut.rx_pin.value = 0
            await Timer(length, unit="ps")
            dut.rx_pin.value = stop
            await Timer(bit_ps - offset - length, unit="ps")
        dut.rx_pin.value = 1
        if gap_bits:
            await Timer(gap_bits * bit_ps, unit="ps")


class Collector:
    """Bytes the receiver hands over while ``rx.ready`` is held high."""

    def __init__(self, dut):
        self.dut = dut
        self.bytes = []
        cocotb.start_soon(self._run())

    async def _run(self):
        # With ready high, valid is a one-cycle pulse per byte (bytes are at
        # least 40 cycles apart): waking on its edges, not on every clock,
        # keeps the slow bit times cheap to simulate.
        d = self.dut
        while True:
            await RisingEdge(d.rx__valid)
            await ReadOnly()
            assert int(d.rx__ready.value), "Collector needs rx.ready held high"
            self.bytes.append(int(d.rx__payload.value))


@cocotb.test()
async def rx_baud_mismatch_back_to_back(dut):
    cycles = _cycles()
    await _start(dut)
    got = Collector(dut)
    rng = random.Random(1)
    # The boards' host UARTs are within 0.1 %: +-2 % is the requirement, +-3.5 %
    # is near the limit of mid-bit sampling at 8 cycles a bit (see rtl/uart.py).
    for factor in (0.965, 0.98, 1.0, 1.02, 1.035):
        data = [rng.randrange(256) for _ in range(24)] + [0x00, 0xFF, 0x55, 0xAA]
        got.bytes.clear()
        await _send_serial(dut, data, _bit_ps(factor))
        await Timer(round(3 * cycles * CLK_PS), unit="ps")
        assert got.bytes == data, f"sender at {factor} x baud: sent {data}, got {got.bytes}"
    assert int(dut.framing_errors.value) == 0
    assert int(dut.overruns.value) == 0


def _stop_glitch_spots(factor: float) -> dict:
    """Where a one-cycle low pulse fits in a stop bit without covering the
    receiver's stop-bit sample, as ``{half: offset_ps}``.

    The receiver samples the stop bit 9.5 of its own bit times after the start
    edge, i.e. at ``0.5 + 9.5 * (factor - 1)`` of the sender's stop bit, give
    or take one cycle (the edge is seen up to a cycle late, sample positions are
    rounded down to a cycle).  The pulse keeps a quarter cycle from that and
    from the next start bit; in the second half it comes as early as it can, so
    a receiver that only checked the start bit at its middle would take the
    pulse for a start bit and sample the next byte early.
    """
    bit_ps = _bit_ps(factor)
    stop_sample = (0.5 + 9.5 * (factor - 1)) * bit_ps
    first = (CLK_PS, min(bit_ps / 2, stop_sample - CLK_PS) - CLK_PS / 4)
    second = (max(bit_ps / 2, stop_sample + CLK_PS) + CLK_PS / 4, bit_ps - CLK_PS / 2)
    spots = {}
    if first[1] - first[0] >= CLK_PS:
        spots["first"] = round((first[0] + first[1] - CLK_PS) / 2)
    if second[1] - second[0] >= CLK_PS:
        spots["second"] = math.ceil(second[0])
    return spots


@cocotb.test()
async def rx_stop_bit_glitch(dut):
    await _start(dut)
    got = Collector(dut)
    rng = random.Random(4)
    tried = set()
    for factor in (0.98, 1.0, 1.02):
        for half, offset in _stop_glitch_spots(factor).items():
            tried.add(half)
            data = [rng.randrange(256) for _ in range(12)]
            got.bytes.clear()
            await _send_serial(dut, data, _bit_ps(factor), glitch=(offset, CLK_PS))
            await Timer(3 * _bit_ps(), unit="ps")
            assert got.bytes == data, (
                f"sender at {factor} x baud, a one-cycle low pulse {offset} ps into every "
                f"stop bit ({half} half): sent {data}, got {got.bytes}")
            assert int(dut.framing_errors.value) == 0, (
                f"sender at {factor} x baud, pulse in the {half} half of the stop bit: "
                f"{int(dut.framing_errors.value)} framing errors")
    # at the nominal baud a pulse fits in either half even at 8 cycles a bit
    assert tried == {"first", "second"}, tried
    assert int(dut.overruns.value) == 0


@cocotb.test()
async def rx_framing_error_and_glitch(dut):
    cycles = _cycles()
    await _start(dut)
    got = Collector(dut)
    bit = _bit_ps()
    # a stop bit of 0 drops the byte and counts it; the line then idles
    await _send_serial(dut, [0x3C, 0x81], bit, stop_bits=[0, 1], gap_bits=2)
    await Timer(4 * bit, unit="ps")
    assert got.bytes == [0x81], f"0x3C with a low stop bit, then 0x81: got {got.bytes}"
    assert int(dut.framing_errors.value) == 1
    # a break (line held low) gives one framing error and no byte
    dut.rx_pin.value = 0
    await Timer(25 * bit, unit="ps")
    dut.rx_pin.value = 1
    await Timer(3 * bit, unit="ps")
    assert got.bytes == [0x81] and int(dut.framing_errors.value) == 2, (
        f"after a break: bytes {got.bytes}, {int(dut.framing_errors.value)} framing errors")
    # a low pulse that ends before the middle of a bit is not a start bit
    dut.rx_pin.value = 0
    await Timer(CLK_PS * max(1, int(cycles / 2) - 2), unit="ps")
    dut.rx_pin.value = 1
    await Timer(12 * bit, unit="ps")
    assert got.bytes == [0x81], f"a short low pulse was taken for a start bit: got {got.bytes}"
    await _send_serial(dut, [0x42], bit)
    await Timer(2 * bit, unit="ps")
    assert got.bytes == [0x81, 0x42], f"0x42 after a short low pulse: got {got.bytes}"
    assert int(dut.framing_errors.value) == 2


@cocotb.test()
async def rx_overrun_counts_and_keeps_first(dut):
    await _start(dut)
    dut.rx__ready.value = 0
    await _send_serial(dut, [0x11, 0x22], _bit_ps())
    await Timer(2 * _bit_ps(), unit="ps")
    await ReadOnly()
    assert int(dut.rx__valid.value) == 1 and int(dut.rx__payload.value) == 0x11, (
        f"two bytes not taken: valid {int(dut.rx__valid.value)}, "
        f"payload {int(dut.rx__payload.value):#04x}, expected the first, 0x11")
    assert int(dut.overruns.value) == 1, f"{int(dut.overruns.value)} overruns, expected 1"
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


class TxMonitor:
    """tx_pin once a clock (it changes only after clock edges: it is a flip-flop)."""

    def __init__(self, dut):
        self.dut = dut
        self.levels = []
        cocotb.start_soon(self._run())

    async def _run(self):
        while True:
            await RisingEdge(self.dut.clk)
            await ReadOnly()
            self.levels.append(int(self.dut.tx_pin.value))

    def decode(self, cycles: float):
        """Bytes sampled in the middle of each exact (fractional) bit time,
        their start cycles, and every cycle at which the level changed."""
        lv = self.levels
        assert lv and lv[0] == 1, "tx_pin not idle (high) when the monitor started"
        out, starts = [], []
        i = 1
        while i < len(lv):
            if lv[i - 1] == 1 and lv[i] == 0:
                starts.append(i)
                bits = [lv[min(len(lv) - 1, i + math.floor((k + 0.5) * cycles))]
                        for k in range(10)]
                assert bits[0] == 0, f"start bit at cycle {i} not low in its middle"
                assert bits[9] == 1, f"stop bit of the byte starting at cycle {i} not high"
                out.append(sum(b << k for k, b in enumerate(bits[1:9])))
                i += math.floor(9.5 * cycles)
            else:
                i += 1
        changes = [i for i in range(1, len(lv)) if lv[i] != lv[i - 1]]
        return out, starts, changes


@cocotb.test()
async def tx_back_to_back(dut):
    cycles = _cycles()
    await _start(dut)
    mon = TxMonitor(dut)
    rng = random.Random(2)
    data = [rng.randrange(256) for _ in range(30)] + [0x00, 0xFF]
    for _ in range(2):                  # the monitor sees the idle line first
        await RisingEdge(dut.clk)
    for b in data:
        await _push_tx(dut, b)
    dut.tx__valid.value = 0
    await Timer(round(12 * cycles * CLK_PS), unit="ps")
    got, starts, changes = mon.decode(cycles)
    assert got == data, f"sent {data}, decoded {got}"
    # Back to back: a byte is 10 bits, each the floor or the ceiling of the
    # bit time, so byte starts are floor or ceil of 10 bit times apart ...
    frame = 10 * cycles
    gaps = {starts[i + 1] - starts[i] for i in range(len(starts) - 1)}
    assert gaps <= {math.floor(frame), math.ceil(frame)}, (
        f"bytes not back to back: start spacing {sorted(gaps)} cycles, "
        f"expected {math.floor(frame)} or {math.ceil(frame)}")
    # ... on average exactly 10 bit times ...
    span = starts[-1] - starts[0]
    assert abs(span - (len(starts) - 1) * frame) < 1, (
        f"{len(starts)} byte starts span {span} cycles, not {(len(starts) - 1) * frame}")
    # ... and every level change is within a cycle of an exact bit boundary.
    for c in changes:
        if c > starts[-1] + frame:
            break
        x = (c - starts[0]) / cycles
        assert abs(x - round(x)) * cycles < 1, (
            f"tx_pin changed at cycle {c - starts[0]} after the first start, "
            f"{abs(x - round(x)) * cycles:.2f} cycles from bit boundary {round(x)}")


@cocotb.test()
async def loopback(dut):
    cycles = _cycles()
    await _start(dut)
    got = Collector(dut)

    async def wire():
        while True:
            await ValueChange(dut.tx_pin)
            dut.rx_pin.value = dut.tx_pin.value

    cocotb.start_soon(wire())
    data = list(range(256))
    random.Random(3).shuffle(data)
    data = data[:48]
    for b in data:
        await _push_tx(dut, b)
    dut.tx__valid.value = 0
    await Timer(round(15 * cycles * CLK_PS), unit="ps")
    assert got.bytes == data, f"loopback: sent {data}, got {got.bytes}"
