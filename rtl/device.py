"""The whole accelerator behind a byte stream: host link + command processor.

:class:`Device` is what a board wraps with a UART PHY (and a PLL) and what the
simulation tests drive byte by byte.  Everything it contains is generated from
one :class:`hetaccel.spec.AcceleratorConfig`:

* :class:`hetaccel.rtl.link.HostLink` -- framing, CRC, the link's own replies;
* :class:`hetaccel.rtl.command.CommandProcessor` -- instruction decoder, command
  queue, executor, scratchpads (INPUT, WEIGHT, OUTPUT, OPT as
  :class:`amaranth.lib.memory.Memory`, so they map to block RAM), the
  :class:`~hetaccel.rtl.engine.MatmulEngine` (ACC memory inside), the
  :class:`~hetaccel.rtl.activation.ActivationUnit` (TABLE and ACT_PARAM inside)
  when ``config.has_activation``, the :class:`~hetaccel.rtl.adam.AdamUnit` when
  ``config.has_adam``, and the performance counters.

The instruction set is in docs/isa.md; the bit-exact reference of the whole
device is :class:`hetaccel.sim.device_model.DeviceModel`.

Ports
-----
``rx`` : In(stream.Signature(8))
    Request bytes (from the UART receiver, or injected in simulation).
``tx`` : Out(stream.Signature(8))
    Reply bytes.
``decoder_idle`` : Out(1)
    The command decoder waits for a frame (for formal checks and monitors).
``queue_empty`` : Out(1)
    No compute instruction queued or running.
``sdram`` : Out(:data:`~hetaccel.rtl.sdram.SdramPins`)
    With ``device_memory="sdram32m"`` only: the SDRAM chip's pins, driven by
    an :class:`~hetaccel.rtl.sdram.SdramController` built for the slowest of
    the board's chips at ``config.clock_hz``.  ``dq_i`` is the chip's data
    pins as sampled by the board's input buffer; the Device registers it once
    more (the device memory's ``read_delay``), so the pins' timing does not
    reach into the controller.

Clock and reset are the ``sync`` domain's ``clk`` / ``rst``.
"""

from __future__ import annotations

from amaranth import Module, Signal
from amaranth.lib import stream, wiring
from amaranth.lib.wiring import In, Out

from ..spec import AcceleratorConfig
from ..spec.device_memory import sdram_timing
from ..spec.sdram import CHIPS
from .command import CommandProcessor
from .contract import check_generated
from .link import HostLink
from .sdram import SdramController, SdramPins

__all__ = ["Device"]


class Device(wiring.Component):
    """Host link, command processor, scratchpads and compute units (see module doc).

    Parameters
    ----------
    config : AcceleratorConfig
    sdram_power_up : int, optional
        Cycles the SDRAM controller waits after reset before initialising the
        chip (default: the chips' datasheet wait).  Simulations shorten it,
        and tell their chip model the same.
    """

    def __init__(self, config: AcceleratorConfig, *, sdram_power_up: int | None = None):
        if not isinstance(config, AcceleratorConfig):
            raise TypeError(f"config must be an AcceleratorConfig, not {type(config).__name__}")
        check_generated(config)
        self.config = config
        members = {
            "rx": In(stream.Signature(8)),
            "tx": Out(stream.Signature(8)),
            "decoder_idle": Out(1),
            "queue_empty": Out(1),
        }
        self.sdram_timing = None
        if config.memory is not None:
            timing = sdram_timing(config.memory, config.clock_hz)
            if sdram_power_up is not None:
                timing = timing.with_power_up(sdram_power_up, "sdram_power_up")
            self.sdram_timing = timing
            members["sdram"] = Out(SdramPins)
        elif sdram_power_up is not None:
            raise ValueError("sdram_power_up needs a config with device_memory='sdram32m'")
        super().__init__(members)

    def elaborate(self, platform):
        m = Module()
        m.submodules.link = link = HostLink(self.config)
        m.submodules.cmd = cmd = CommandProcessor(self.config)
        wiring.connect(m, wiring.flipped(self.rx), link.rx)
        wiring.connect(m, link.tx, wiring.flipped(self.tx))
        wiring.connect(m, link.frame, cmd.frame)
        wiring.connect(m, cmd.reply, link.reply)
        wiring.connect(m, cmd.reply_data, link.reply_data)
        m.d.comb += [
            link.payload_addr.eq(cmd.payload_addr),
            cmd.payload_data.eq(link.payload_data),
            cmd.rx_byte.eq(self.rx.valid & self.rx.ready),
            self.decoder_idle.eq(cmd.decoder_idle),
            self.queue_empty.eq(cmd.queue_empty),
        ]
        mem = self.config.memory
        if mem is not None:
            m.submodules.sdram = ctrl = SdramController(
                self.sdram_timing, CHIPS[mem.chips[0]], read_delay=mem.read_delay)
            wiring.connect(m, cmd.mem_cmd, ctrl.cmd)
            wiring.connect(m, cmd.mem_wdata, ctrl.wdata)
            wiring.connect(m, ctrl.rdata, cmd.mem_rdata)
            m.d.comb += cmd.mem_ready.eq(ctrl.ready)
            for name in ("cke", "cs_n", "ras_n", "cas_n", "we_n", "ba", "a", "dqm", "dq_o",
                         "dq_oe"):
                m.d.comb += getattr(self.sdram, name).eq(getattr(ctrl.sdram, name))
            # the board's input register (read_delay = 1)
            assert mem.read_delay == 1, "Device registers dq_i once"
            dq = Signal(16, name="sdram_dq_i_r")
            m.d.sync += dq.eq(self.sdram.dq_i)
            m.d.comb += ctrl.sdram.dq_i.eq(dq)
        return m
