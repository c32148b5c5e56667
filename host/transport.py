"""Byte transports under the host runtime: the only part that differs per backend.

Every backend carries the same request/reply frames (built and parsed by
:mod:`hetaccel.spec.link`); a transport only moves bytes:

* :class:`EmuTransport` feeds them to the bit-exact
  :class:`hetaccel.sim.device_model.DeviceModel` in this process.
* :class:`RtlTransport` (in :mod:`hetaccel.host.rtl_transport`) feeds them to
  the generated ``Device`` running in Icarus or Verilator in a subprocess.
* :class:`SerialTransport` writes them to a UART with pyserial.
* :class:`FaultyTransport` wraps any of them and drops, corrupts or delays
  bytes, or resets the device, so the runtime's recovery can be tested.

Timeouts are in seconds of *device* time: a simulated backend converts them to
a cycle budget at ``config.clock_hz`` so a timeout means the same thing (and is
deterministic) whether the device is emulated, simulated or real.
"""

from __future__ import annotations

import random
import time
from dataclasses import dataclass, field

from ..sim.device_model import DeviceModel

__all__ = [
    "Transport",
    "EmuTransport",
    "SerialTransport",
    "FaultyTransport",
    "FaultPlan",
    "parse_serial_url",
]


class Transport:
    """Moves bytes between the host and one device.

    Subclasses implement :meth:`send`, :meth:`receive` and :meth:`close`.

    Attributes
    ----------
    kind : str
        ``"emu"``, ``"rtl"`` or ``"serial"``: where the work runs (reported by
        the profiler so nothing silently runs elsewhere).
    simulated : bool
        True when :attr:`device_cycles` is exact (emulator / simulator).
    """

    kind = "abstract"
    simulated = False

    def send(self, data: bytes) -> None:
        """Queue ``data`` towards the device (never blocks on the reply)."""
        raise NotImplementedError

    def receive(self, timeout: float, frames: int = 1) -> bytes:
        """Bytes from the device.

        Waits up to ``timeout`` seconds of device time for at least ``frames``
        more reply frames' worth of bytes (a hint: a transport may return
        earlier with fewer bytes, or ``b""`` on timeout).
        """
        raise NotImplementedError

    def close(self) -> None:
        """Release the device (stop the simulator, close the port).  Idempotent."""

    @property
    def device_cycles(self) -> int | None:
        """Core cycles the device has run, when the backend knows it exactly."""
        return None

    @property
    def bulk_device(self):
        """The emulated device, when frames may reach it without their bytes
        (:class:`EmuTransport` with ``bulk=True`` on an idle link); else None."""
        return None

    def reset_device(self) -> None:
        """Reset the device as a power glitch would (simulated backends only)."""
        raise NotImplementedError(f"{self.kind} transport cannot reset its device")

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
        return False


class EmuTransport(Transport):
    """The bit-exact device model in this process.

    Bytes are executed as they are sent; replies wait in a buffer until
    :meth:`receive`.  So a request that never completes (a dropped byte)
    yields ``b""`` immediately: no wall time is spent waiting for a timeout
    that the model could not change.

    With ``bulk=True`` (the default) the runtime may also skip the bytes:
    :attr:`bulk_device` hands it the model, whose bulk methods have exactly
    the effect of the frames they stand for (see
    :mod:`hetaccel.sim.device_model`).  ``bulk=False`` keeps every frame on
    the byte path (the reference the bulk path is tested against).
    """

    kind = "emu"
    simulated = True

    def __init__(self, config, *, bulk: bool = True):
        if not isinstance(bulk, bool):
            raise TypeError(f"bulk must be True or False, not {bulk!r}")
        self.config = config
        self.bulk = bulk
        self._model_cls = DeviceModel
        self.model = DeviceModel(config)
        self._out = bytearray()
        self._closed = False
        self._base_cycles = 0

    @property
    def bulk_device(self):
        # only between whole frames, with every reply collected: then a frame
        # that skips the bytes meets the link exactly as a fed one would
        if self.bulk and not self._closed and not self._out and self.model.link_idle:
            return self.model
        return None

    def send(self, data: bytes) -> None:
        if self._closed:
            raise ConnectionError("emu transport is closed")
        reply = self.model.feed(bytes(data))
        if reply:
            self._out += reply

    def receive(self, timeout: float, frames: int = 1) -> bytes:
        if self._closed:
            raise ConnectionError("emu transport is closed")
        out = bytes(self._out)
        self._out.clear()
        return out

    @property
    def device_cycles(self) -> int | None:
        return self._base_cycles + int(self.model.compute_cycles)

    def reset_device(self) -> None:
        # A reset loses every scratchpad, register and queued instruction; the
        # cycle counter keeps running (it is the host's clock, not the device's).
        cycles = self.device_cycles
        self.model = self._model_cls(self.config)
        self._base_cycles = cycles
        self._out.clear()

    def close(self) -> None:
        self._closed = True


def parse_serial_url(url: str) -> tuple[str, int | None]:
    """``"serial:/dev/ttyUSB1@3000000"`` -> ``("/dev/ttyUSB1", 3000000)``.

    The baud part is optional (``None`` then: the config's baud is used).
    """
    if not isinstance(url, str) or not url.startswith("serial:"):
        raise ValueError(f"serial device must look like 'serial:/dev/ttyUSB1@3000000', got {url!r}")
    rest = url[len("serial:"):]
    port, sep, baud = rest.rpartition("@")
    if not sep:
        port, baud = rest, ""
    if not port:
        raise ValueError(f"serial device {url!r} names no port")
    if baud == "":
        return port, None
    try:
        rate = int(baud)
    except ValueError:
        raise ValueError(f"baud rate in {url!r} must be an integer, got {baud!r}") from None
    if rate <= 0:
        raise ValueError(f"baud rate in {url!r} must be positive, got {rate}")
    return port, rate


class SerialTransport(Transport):
    """A board on a UART (pyserial).  ``port`` is a device path or pyserial URL."""

    kind = "serial"
    simulated = False

    def __init__(self, port: str, baud: int, *, serial_factory=None):
        if serial_factory is None:
            import serial  # pyserial

            serial_factory = serial.serial_for_url
        self.port_name = port
        self.baud = baud
        self._ser = serial_factory(port, baudrate=baud, timeout=0.0, write_timeout=None)
        self._closed = False

    def send(self, data: bytes) -> None:
        self._ser.write(bytes(data))

    def receive(self, timeout: float, frames: int = 1) -> bytes:
        deadline = time.monotonic() + max(0.0, timeout)
        out = bytearray()
        while True:
            waiting = getattr(self._ser, "in_waiting", 0)
            if waiting:
                out += self._ser.read(waiting)
                # A reply is short; a little more may still be on the wire.
                continue
            if out or time.monotonic() >= deadline:
                return bytes(out)
            self._ser.timeout = min(0.01, max(0.0, deadline - time.monotonic()))
            chunk = self._ser.read(1)
            if chunk:
                out += chunk

    def close(self) -> None:
        if not self._closed:
            self._closed = True
            self._ser.close()


@dataclass
class FaultPlan:
    """What :class:`FaultyTransport` does to the bytes it carries.

    Rates are per byte; ``to_device`` faults hit requests, ``to_host`` faults
    hit replies.  ``max_faults`` bounds the total so a retrying runtime can
    eventually get through; ``events`` injects faults at exact byte offsets:
    ``(direction, kind, byte_index)`` with direction ``"to_device"`` /
    ``"to_host"`` and kind ``"drop"``, ``"corrupt"``, ``"delay"`` or
    ``"reset"`` (the device resets just before that request byte arrives).
    A delayed byte arrives only after the host has timed out once, after the
    bytes that followed it — so the runtime sees a stale, out-of-order tail.
    """

    drop: float = 0.0
    corrupt: float = 0.0
    delay: float = 0.0
    directions: tuple[str, ...] = ("to_device", "to_host")
    max_faults: int | None = None
    seed: int = 0
    events: list = field(default_factory=list)

    def __post_init__(self):
        for name in ("drop", "corrupt", "delay"):
            value = getattr(self, name)
            if not isinstance(value, (int, float)) or not 0.0 <= value <= 1.0:
                raise ValueError(f"FaultPlan.{name} must be a probability in [0, 1], got {value!r}")
        for d in self.directions:
            if d not in ("to_device", "to_host"):
                raise ValueError(f"FaultPlan direction must be 'to_device' or 'to_host', got {d!r}")
        for ev in self.events:
            if (not isinstance(ev, tuple) or len(ev) != 3 or ev[0] not in ("to_device", "to_host")
                    or ev[1] not in ("drop", "corrupt", "delay", "reset")
                    or not isinstance(ev[2], int) or ev[2] < 0):
                raise ValueError(f"FaultPlan event must be (direction, kind, byte_index), got {ev!r}")


class FaultyTransport(Transport):
    """Wraps a transport and damages the bytes it carries according to a :class:`FaultPlan`.

    The log of injected faults is :attr:`faults` (``(direction, kind, byte_index)``).
    """

    def __init__(self, inner: Transport, plan: FaultPlan | None = None, **plan_kwargs):
        self.inner = inner
        self.plan = plan if plan is not None else FaultPlan(**plan_kwargs)
        self.kind = inner.kind
        self.simulated = inner.simulated
        self._rng = random.Random(self.plan.seed)
        self._count = {"to_device": 0, "to_host": 0}
        self._held = {"to_device": bytearray(), "to_host": bytearray()}
        self._events = {}
        for d, k, i in self.plan.events:
            self._events.setdefault((d, i), []).append(k)
        self.faults: list[tuple[str, str, int]] = []

    @property
    def config(self):
        return getattr(self.inner, "config", None)

    def _budget_left(self) -> bool:
        return self.plan.max_faults is None or len(self.faults) < self.plan.max_faults

    def _damage(self, direction: str, data: bytes) -> bytes:
        out = bytearray()
        random_on = direction in self.plan.directions
        p = self.plan
        for b in data:
            i = self._count[direction]
            self._count[direction] += 1
            kinds = self._events.pop((direction, i), [])
            if not kinds and random_on and self._budget_left() and (p.drop or p.corrupt or p.delay):
                r = self._rng.random()
                if r < p.drop:
                    kinds = ["drop"]
                elif r < p.drop + p.corrupt:
                    kinds = ["corrupt"]
                elif r < p.drop + p.corrupt + p.delay:
                    kinds = ["delay"]
            for kind in kinds:
                self.faults.append((direction, kind, i))
            if "reset" in kinds:
                if out and direction == "to_device":
                    self.inner.send(bytes(out))
                    out.clear()
                self.inner.reset_device()
            if "drop" in kinds:
                continue
            if "delay" in kinds:
                self._held[direction].append(b)
                continue
            if "corrupt" in kinds:
                b ^= 1 << self._rng.randrange(8)
            out.append(b)
        return bytes(out)

    def send(self, data: bytes) -> None:
        self.inner.send(self._damage("to_device", data))

    def receive(self, timeout: float, frames: int = 1) -> bytes:
        data = self._damage("to_host", self.inner.receive(timeout, frames))
        if not data:
            # The host timed out: now the held-back bytes trickle in, late.
            for direction in ("to_device", "to_host"):
                held = bytes(self._held[direction])
                self._held[direction].clear()
                if held and direction == "to_device":
                    self.inner.send(held)
                elif held:
                    data += held
        return data

    def reset_device(self) -> None:
        self.inner.reset_device()

    @property
    def device_cycles(self):
        return self.inner.device_cycles

    def close(self) -> None:
        self.inner.close()
