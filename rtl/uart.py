"""8N1 UART PHY for the boards' host link.

:class:`UartRx` and :class:`UartTx` convert between a serial pin and byte
streams; :class:`UartPhy` pairs them with the port names the board top wires
to :class:`hetaccel.rtl.device.Device` (``rx`` bytes out of the PHY into the
device, ``tx`` bytes from the device into the PHY).

Timing: the bit time is a fixed-point number of clock cycles,
:func:`hetaccel.spec.link.uart_bit_time` (units of 1/16 cycle), so a baud that
does not divide the clock is still generated exactly on average: 6 Mbaud at
50.25 MHz is 8.375 cycles a bit, 3 Mbaud at 100 MHz 33.3125 (0.06 % fast).  A
four-bit phase accumulator beside each bit timer adds the fraction at every
bit boundary and makes the next bit one cycle longer when it carries, so each
bit lasts the floor or the ceiling of the bit time and every bit boundary lies
within one cycle of its exact position.

The receiver synchronises the pin through two flip-flops and hunts for the
start bit's falling edge.  The line must then stay low until the middle of the
start bit: if it goes high at any point before, the edge was a glitch and the
receiver hunts again at once (so a glitch late in a stop bit cannot hold it
while the next start bit goes by).  Every data bit and the stop bit is sampled
in the middle of its fractional bit time, counted from the start edge.  Each
sample lands within one cycle of the exact middle (the edge is seen up to a
cycle late, each position is rounded down to a cycle), so at 8 cycles a bit
1/8 of a bit is lost to sampling and the drift between sender and receiver
accumulated over the 9.5 bits up to the stop bit's middle must stay under the
remaining 3/8 of a bit: the receiver tolerates about +-3.9 % of baud mismatch
at 8 cycles a bit (+-4.9 % at 33 cycles), and the boards' host UARTs are
within 0.1 %.  The receiver re-arms at the middle of the stop bit, so
back-to-back bytes from a faster sender are not lost.  A stop bit that reads 0
is a framing error: the byte is dropped, ``framing_errors`` counts it, and the
receiver waits for the line to go idle (high) before hunting for the next
start bit, so a break or a misaligned stream cannot produce bytes.  A byte
that completes while the previous one has not been taken is dropped and
counted in ``overruns`` (a UART cannot be back-pressured).
"""

from __future__ import annotations

from amaranth import Cat, Module, Mux, Signal
from amaranth.lib import stream, wiring
from amaranth.lib.cdc import FFSynchronizer
from amaranth.lib.wiring import In, Out

from ..spec import AcceleratorConfig
from ..spec.link import (UART_FRAC_BITS, UART_MAX_CLOCKS_PER_BIT, UART_MIN_CLOCKS_PER_BIT,
                         check_uart_bit_time, uart_bit_time)

__all__ = ["UartRx", "UartTx", "UartPhy"]


def _resolve_bit_time(config, divisor, bit_time) -> int:
    given = [v is not None for v in (config, divisor, bit_time)]
    if sum(given) != 1:
        raise TypeError("pass exactly one of config (an AcceleratorConfig), divisor= "
                        "(whole clock cycles per bit) or bit_time= (in 1/"
                        f"{1 << UART_FRAC_BITS} cycles)")
    if config is not None:
        if not isinstance(config, AcceleratorConfig):
            raise TypeError(f"config must be an AcceleratorConfig, not {type(config).__name__}")
        return uart_bit_time(config.clock_hz, config.baud)
    if divisor is not None:
        if isinstance(divisor, bool) or not isinstance(divisor, int) \
                or not UART_MIN_CLOCKS_PER_BIT <= divisor <= UART_MAX_CLOCKS_PER_BIT:
            raise ValueError(f"divisor must be an integer in [{UART_MIN_CLOCKS_PER_BIT}, "
                             f"{UART_MAX_CLOCKS_PER_BIT}], not {divisor!r}")
        return divisor << UART_FRAC_BITS
    return check_uart_bit_time(bit_time)


class _BitClock:
    """A bit timer with a phase accumulator: ``load()`` starts a bit that lasts
    the floor or the ceiling of the bit time so the average is exact.

    ``timer0`` (timer == 0) is a flip-flop set from the values loaded, and the
    next bit's length is a flip-flop (``long``) computed from the phase one
    bit ahead, so neither a load nor ``timer0`` waits on the phase adder.
    """

    def __init__(self, m: Module, bit_time: int, name: str):
        self.m = m
        self.whole = bit_time >> UART_FRAC_BITS
        self.frac = bit_time & ((1 << UART_FRAC_BITS) - 1)
        # a long bit loads `whole`, a short one (or any bit without a fraction) whole - 1
        self.timer = Signal(range(self.whole + 1 if self.frac else self.whole),
                            name=f"{name}_timer")
        self.timer0 = Signal(init=1, name=f"{name}_timer0")
        if self.frac:
            self.phase = Signal(UART_FRAC_BITS, name=f"{name}_phase")
            self.long = Signal(name=f"{name}_long")

    def _carry(self, phase):
        if isinstance(phase, int):
            return (phase + self.frac) >> UART_FRAC_BITS
        return (phase + self.frac)[UART_FRAC_BITS]

    def set_phase(self, phase: int):
        """Make the bits from the next ``load()`` on start at fixed-point ``phase``."""
        if self.frac:
            self.m.d.sync += [self.phase.eq(phase), self.long.eq(self._carry(phase))]

    def load(self, cycles: int | None = None):
        """Start a bit (or, with ``cycles``, an interval of that many whole cycles)."""
        m = self.m
        if cycles is not None:
            assert cycles >= 2, cycles          # timer0 stays 0 below
            m.d.sync += self.timer.eq(cycles - 1)
        elif self.frac:
            m.d.sync += self.timer.eq(Mux(self.long, self.whole, self.whole - 1))
            nxt = (self.phase + self.frac)[:UART_FRAC_BITS]
            m.d.sync += [self.phase.eq(nxt), self.long.eq(self._carry(nxt))]
        else:
            m.d.sync += self.timer.eq(self.whole - 1)
        # every bit and half bit is at least 2 cycles, so no load is 0
        m.d.sync += self.timer0.eq(0)

    def count_down(self):
        self.m.d.sync += [self.timer.eq(self.timer - 1), self.timer0.eq(self.timer == 1)]


class UartRx(wiring.Component):
    """8N1 receiver.

    Parameters
    ----------
    config : AcceleratorConfig, optional
        Bit time from ``config.clock_hz`` and ``config.baud``.
    divisor : int, optional
        Whole clock cycles per bit (instead of ``config``).
    bit_time : int, optional
        Clock cycles per bit in units of ``1 / 2**UART_FRAC_BITS`` (instead
        of ``config``; see :func:`hetaccel.spec.link.uart_bit_time`).

    Attributes
    ----------
    bit_time : int
        The fixed-point bit time in use.
    pin : In(1)
        Serial input (idle high); asynchronous, synchronised inside.
    data : Out(stream.Signature(8))
        Received bytes.
    framing_errors, overruns : Out(16)
        Saturating counts of dropped bytes.
    """

    def __init__(self, config: AcceleratorConfig | None = None, *, divisor: int | None = None,
                 bit_time: int | None = None):
        self.bit_time = _resolve_bit_time(config, divisor, bit_time)
        super().__init__({
            "pin": In(1, init=1),
            "data": Out(stream.Signature(8)),
            "framing_errors": Out(16),
            "overruns": Out(16),
        })

    def elaborate(self, platform):
        m = Module()
        pin = Signal(init=1)
        m.submodules.sync = FFSynchronizer(self.pin, pin, init=1)

        # Samples at (k + 1/2) bit times after the start edge: the first
        # interval is the half bit's whole cycles, its fraction starts the phase.
        half = self.bit_time // 2
        clock = _BitClock(m, self.bit_time, "bit")
        # timer0 beside the timer keeps the byte's register enable below one
        # LUT after data.ready, which comes from the host link's receiver state
        timer0 = clock.timer0
        bit = Signal(range(9))
        shreg = Signal(8)

        with m.If(self.data.valid & self.data.ready):
            m.d.sync += self.data.valid.eq(0)

        def count_sat(counter):
            with m.If(counter != (1 << len(counter)) - 1):
                m.d.sync += counter.eq(counter + 1)

        with m.FSM():
            with m.State("IDLE"):
                clock.set_phase(half & ((1 << UART_FRAC_BITS) - 1))
                with m.If(~pin):
                    clock.load(half >> UART_FRAC_BITS)
                    m.next = "START"
            with m.State("START"):
                with m.If(pin):             # high before the middle: a glitch, hunt again
                    m.next = "IDLE"
                with m.Elif(timer0):
                    clock.load()
                    m.d.sync += bit.eq(0)
                    m.next = "DATA"
                with m.Else():
                    clock.count_down()
            with m.State("DATA"):
                with m.If(timer0):
                    clock.load()
                    m.d.sync += [shreg.eq(Cat(shreg[1:], pin)), bit.eq(bit + 1)]
                    with m.If(bit == 7):
                        m.next = "STOP"
                with m.Else():
                    clock.count_down()
            with m.State("STOP"):
                with m.If(timer0):
                    with m.If(pin):
                        with m.If(self.data.valid & ~self.data.ready):
                            count_sat(self.overruns)
                        with m.Else():
                            m.d.sync += [self.data.payload.eq(shreg), self.data.valid.eq(1)]
                        m.next = "IDLE"
                    with m.Else():
                        count_sat(self.framing_errors)
                        m.next = "BREAK"
                with m.Else():
                    clock.count_down()
            with m.State("BREAK"):
                with m.If(pin):
                    m.next = "IDLE"
        return m


class UartTx(wiring.Component):
    """8N1 transmitter; bytes queued on ``data`` go out back to back.

    Parameters
    ----------
    config : AcceleratorConfig, optional
    divisor : int, optional
    bit_time : int, optional
        As for :class:`UartRx`.

    Attributes
    ----------
    bit_time : int
    data : In(stream.Signature(8))
    pin : Out(1)
        Serial output, idle high.
    """

    def __init__(self, config: AcceleratorConfig | None = None, *, divisor: int | None = None,
                 bit_time: int | None = None):
        self.bit_time = _resolve_bit_time(config, divisor, bit_time)
        super().__init__({
            "data": In(stream.Signature(8)),
            "pin": Out(1, init=1),
        })

    def elaborate(self, platform):
        m = Module()
        clock = _BitClock(m, self.bit_time, "bit")
        timer, timer0 = clock.timer, clock.timer0
        shreg = Signal(10, init=0x3FF)       # stop, data[7:0], start -- LSB first
        left = Signal(range(11))

        # left == 0, left == 1 and timer == 0 are kept in flip-flops beside the
        # counters (set from the values loaded), so `ready` and every enable
        # here are one LUT from flip-flops: `ready` reaches the host link's
        # reply CRC through its transmitter state.  The phase runs on across
        # back-to-back bytes, so their average spacing is exactly 10 bit times.
        left0 = Signal(init=1)
        left1 = Signal()
        # The next byte is taken as the stop bit ends, so bytes go out back to back.
        # `ready` (left0 | left1 & timer0) is itself a flip-flop, set from the
        # next values of those three, so the link's `sent` (its transmitter's
        # CRC and state enables) is one LUT from flip-flops.
        ready = Signal(init=1)
        m.d.comb += self.data.ready.eq(ready)
        with m.If(self.data.valid & self.data.ready):
            clock.load()
            m.d.sync += [shreg.eq(Cat(0, self.data.payload, 1)), left.eq(10),
                         left0.eq(0), left1.eq(0), ready.eq(0)]
        with m.Elif(~left0):
            with m.If(timer0):
                # a bit lasts at least 4 cycles, so `ready` never rises with a load
                clock.load()
                m.d.sync += [shreg.eq(Cat(shreg[1:], 1)), left.eq(left - 1),
                             left0.eq(left1), left1.eq(left == 2), ready.eq(left1)]
            with m.Else():
                clock.count_down()
                m.d.sync += ready.eq(left1 & (timer == 1))
        m.d.comb += self.pin.eq(shreg[0])
        return m


class UartPhy(wiring.Component):
    """Receiver and transmitter with the byte-stream names of the host link.

    Attributes
    ----------
    rx_pin : In(1)
    tx_pin : Out(1)
    rx : Out(stream.Signature(8))
        Bytes received from the host (connect to ``Device.rx``).
    tx : In(stream.Signature(8))
        Bytes to send to the host (connect from ``Device.tx``).
    framing_errors, overruns : Out(16)

    Parameters and ``bit_time`` as for :class:`UartRx`.
    """

    def __init__(self, config: AcceleratorConfig | None = None, *, divisor: int | None = None,
                 bit_time: int | None = None):
        self.bit_time = _resolve_bit_time(config, divisor, bit_time)
        super().__init__({
            "rx_pin": In(1, init=1),
            "tx_pin": Out(1, init=1),
            "rx": Out(stream.Signature(8)),
            "tx": In(stream.Signature(8)),
            "framing_errors": Out(16),
            "overruns": Out(16),
        })

    def elaborate(self, platform):
        m = Module()
        m.submodules.receiver = rx = UartRx(bit_time=self.bit_time)
        m.submodules.transmitter = tx = UartTx(bit_time=self.bit_time)
        m.d.comb += [
            rx.pin.eq(self.rx_pin),
            self.tx_pin.eq(tx.pin),
            self.framing_errors.eq(rx.framing_errors),
            self.overruns.eq(rx.overruns),
        ]
        wiring.connect(m, wiring.flipped(self.rx), rx.data)
        wiring.connect(m, tx.data, wiring.flipped(self.tx))
        return m
