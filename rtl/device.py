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

Clock and reset are the ``sync`` domain's ``clk`` / ``rst``.
"""

from __future__ import annotations

from amaranth import Module
from amaranth.lib import stream, wiring
from amaranth.lib.wiring import In, Out

from ..spec import AcceleratorConfig
from .command import CommandProcessor
from .contract import check_generated
from .link import HostLink

__all__ = ["Device"]


class Device(wiring.Component):
    """Host link, command processor, scratchpads and compute units (see module doc).

    Parameters
    ----------
    config : AcceleratorConfig
    """

    def __init__(self, config: AcceleratorConfig):
        if not isinstance(config, AcceleratorConfig):
            raise TypeError(f"config must be an AcceleratorConfig, not {type(config).__name__}")
        check_generated(config)
        self.config = config
        super().__init__({
            "rx": In(stream.Signature(8)),
            "tx": Out(stream.Signature(8)),
            "decoder_idle": Out(1),
            "queue_empty": Out(1),
        })

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
        return m
