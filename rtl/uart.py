"""8N1 UART PHY for the boards' host link.

:class:`UartRx` and :class:`UartTx` convert between a serial pin and byte
streams; :class:`UartPhy` pairs them with the port names the board top wires
to :class:`hetaccel.rtl.device.Device` (``rx`` bytes out of the PHY into the
device, ``tx`` bytes from the device into the PHY).

Timing: one bit lasts ``divisor = round(clock_hz / baud)`` clock cycles.  The
receiver synchronises the pin through two flip-flops, detects the start bit's
falling edge, checks that the line is still low half a bit later (a shorter
glitch is ignored) and then samples every data bit and the stop bit in the
middle of its bit time, i.e. it oversamples by ``divisor``.  Sampling in the
middle leaves about +-4.5 % of baud-rate mismatch over a 10-bit frame (the
error accumulated by the stop bit must stay under half a bit); the receiver
re-arms at the middle of the stop bit so back-to-back bytes from a slightly
faster sender are not lost.  A stop bit that reads 0 is a framing error: the
byte is dropped, ``framing_errors`` counts it, and the receiver waits for the
line to go idle (high) before hunting for the next start bit, so a break or a
misaligned stream cannot produce bytes.  A byte that completes while the
previous one has not been taken is dropped and counted in ``overruns`` (a UART
cannot be back-pressured).
"""

from __future__ import annotations

from amaranth import Cat, Module, Signal
from amaranth.lib import stream, wiring
from amaranth.lib.cdc import FFSynchronizer
from amaranth.lib.wiring import In, Out

from ..spec import AcceleratorConfig

__all__ = ["uart_divisor", "UartRx", "UartTx", "UartPhy", "MAX_BAUD_ERROR"]

#: largest accepted relative error between the requested and the generated baud
MAX_BAUD_ERROR = 0.025


def uart_divisor(clock_hz: int, baud: int) -> int:
    """Clock cycles per bit for ``baud`` at ``clock_hz``.

    Raises
    ------
    ValueError
        If fewer than 4 cycles per bit (too coarse for mid-bit sampling) or if
        the rounded divisor misses ``baud`` by more than :data:`MAX_BAUD_ERROR`.
    """
    for name, v in (("clock_hz", clock_hz), ("baud", baud)):
        if isinstance(v, bool) or not isinstance(v, int) or v <= 0:
            raise ValueError(f"{name} must be a positive integer, got {v!r}")
    divisor = round(clock_hz / baud)
    if divisor < 4:
        raise ValueError(f"baud={baud} needs at least 4 clock cycles per bit, "
                         f"clock_hz={clock_hz} gives {clock_hz / baud:.2f}")
    error = abs(clock_hz / divisor - baud) / baud
    if error > MAX_BAUD_ERROR:
        raise ValueError(f"baud={baud} at clock_hz={clock_hz}: divisor {divisor} gives "
                         f"{clock_hz / divisor:.0f} baud, {100 * error:.2f}% off "
                         f"(at most {100 * MAX_BAUD_ERROR:.1f}% allowed)")
    return divisor


def _resolve_divisor(config, divisor):
    if (config is None) == (divisor is None):
        raise TypeError("pass exactly one of config (an AcceleratorConfig) or divisor=")
    if config is not None:
        if not isinstance(config, AcceleratorConfig):
            raise TypeError(f"config must be an AcceleratorConfig, not {type(config).__name__}")
        return uart_divisor(config.clock_hz, config.baud)
    if isinstance(divisor, bool) or not isinstance(divisor, int) or not 4 <= divisor <= 1 << 24:
        raise ValueError(f"divisor must be an integer in [4, {1 << 24}], got {divisor!r}")
    return divisor


class UartRx(wiring.Component):
    """8N1 receiver.

    Parameters
    ----------
    config : AcceleratorConfig, optional
        Divisor from ``config.clock_hz / config.baud``.
    divisor : int, optional
        Clock cycles per bit (instead of ``config``).

    Attributes
    ----------
    pin : In(1)
        Serial input (idle high); asynchronous, synchronised inside.
    data : Out(stream.Signature(8))
        Received bytes.
    framing_errors, overruns : Out(16)
        Saturating counts of dropped bytes.
    """

    def __init__(self, config: AcceleratorConfig | None = None, *, divisor: int | None = None):
        self.divisor = _resolve_divisor(config, divisor)
        super().__init__({
            "pin": In(1, init=1),
            "data": Out(stream.Signature(8)),
            "framing_errors": Out(16),
            "overruns": Out(16),
        })

    def elaborate(self, platform):
        m = Module()
        d = self.divisor
        pin = Signal(init=1)
        m.submodules.sync = FFSynchronizer(self.pin, pin, init=1)

        timer = Signal(range(d))
        # timer == 0, kept in a flip-flop beside the timer (set from the
        # values loaded): the byte's register enable below is then one LUT
        # after data.ready, which comes from the host link's receiver state
        timer0 = Signal(init=1)
        bit = Signal(range(9))
        shreg = Signal(8)

        def load(value):
            m.d.sync += [timer.eq(value), timer0.eq(value == 0)]

        def count_down():
            m.d.sync += [timer.eq(timer - 1), timer0.eq(timer == 1)]

        with m.If(self.data.valid & self.data.ready):
            m.d.sync += self.data.valid.eq(0)

        def count_sat(counter):
            with m.If(counter != (1 << len(counter)) - 1):
                m.d.sync += counter.eq(counter + 1)

        with m.FSM():
            with m.State("IDLE"):
                with m.If(~pin):
                    load(d // 2 - 1)
                    m.next = "START"
            with m.State("START"):
                with m.If(timer0):
                    with m.If(pin):                 # glitch, not a start bit
                        m.next = "IDLE"
                    with m.Else():
                        load(d - 1)
                        m.d.sync += bit.eq(0)
                        m.next = "DATA"
                with m.Else():
                    count_down()
            with m.State("DATA"):
                with m.If(timer0):
                    load(d - 1)
                    m.d.sync += [shreg.eq(Cat(shreg[1:], pin)), bit.eq(bit + 1)]
                    with m.If(bit == 7):
                        m.next = "STOP"
                with m.Else():
                    count_down()
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
                    count_down()
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

    Attributes
    ----------
    data : In(stream.Signature(8))
    pin : Out(1)
        Serial output, idle high.
    """

    def __init__(self, config: AcceleratorConfig | None = None, *, divisor: int | None = None):
        self.divisor = _resolve_divisor(config, divisor)
        super().__init__({
            "data": In(stream.Signature(8)),
            "pin": Out(1, init=1),
        })

    def elaborate(self, platform):
        m = Module()
        d = self.divisor
        timer = Signal(range(d))
        shreg = Signal(10, init=0x3FF)       # stop, data[7:0], start -- LSB first
        left = Signal(range(11))

        # left == 0, left == 1 and timer == 0 are kept in flip-flops beside the
        # counters (set from the values loaded), so `ready` and every enable
        # here are one LUT from flip-flops: `ready` reaches the host link's
        # reply CRC through its transmitter state.
        left0 = Signal(init=1)
        left1 = Signal()
        timer0 = Signal(init=1)
        # The next byte is taken as the stop bit ends, so bytes go out back to back.
        # `ready` (left0 | left1 & timer0) is itself a flip-flop, set from the
        # next values of those three, so the link's `sent` (its transmitter's
        # CRC and state enables) is one LUT from flip-flops.
        ready = Signal(init=1)
        m.d.comb += self.data.ready.eq(ready)
        with m.If(self.data.valid & self.data.ready):
            m.d.sync += [shreg.eq(Cat(0, self.data.payload, 1)), left.eq(10), timer.eq(d - 1),
                         left0.eq(0), left1.eq(0), timer0.eq(d == 1), ready.eq(0)]
        with m.Elif(~left0):
            with m.If(timer0):
                m.d.sync += [shreg.eq(Cat(shreg[1:], 1)), left.eq(left - 1), timer.eq(d - 1),
                             left0.eq(left1), left1.eq(left == 2), timer0.eq(d == 1),
                             ready.eq(left1 | ((left == 2) & (d == 1)))]
            with m.Else():
                m.d.sync += [timer.eq(timer - 1), timer0.eq(timer == 1),
                             ready.eq(left1 & (timer == 1))]
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
    """

    def __init__(self, config: AcceleratorConfig | None = None, *, divisor: int | None = None):
        self.divisor = _resolve_divisor(config, divisor)
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
        m.submodules.receiver = rx = UartRx(divisor=self.divisor)
        m.submodules.transmitter = tx = UartTx(divisor=self.divisor)
        m.d.comb += [
            rx.pin.eq(self.rx_pin),
            self.tx_pin.eq(tx.pin),
            self.framing_errors.eq(rx.framing_errors),
            self.overruns.eq(rx.overruns),
        ]
        wiring.connect(m, wiring.flipped(self.rx), rx.data)
        wiring.connect(m, tx.data, wiring.flipped(self.tx))
        return m
