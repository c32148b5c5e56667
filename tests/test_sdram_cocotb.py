"""SdramController on Icarus and Verilator against the chip model and SdramModel
(see verify/sdram_tests.py)."""

import dataclasses
import json

import pytest
from amaranth import Module, Signal
from amaranth.lib import wiring

from hetaccel.rtl.sdram import SdramController
from hetaccel.spec.sdram import CHIPS, ULX3S_CHIPS, worst_case
from hetaccel.verify.cocotb_runner import SIMULATORS, run_cocotb

TIMING = worst_case(ULX3S_CHIPS, 100e6)
GEOMETRY = CHIPS[ULX3S_CHIPS[0]]
# A short power-up wait (the chip model is told the same) keeps every test's
# initialisation cheap; test_power_up runs the datasheet's 200 us once.
SHORT_POWER_UP = 64
# each simulator checks the controller against another part of the board
CHIP_FOR = {"icarus": "IS42S16160G-7", "verilator": "MT48LC16M16A2-75"}


def _env(timing, chip, **extra):
    return {"SDRAM_TIMING": json.dumps(dataclasses.asdict(timing)), "SDRAM_CHIP": chip,
            "SDRAM_POWER_UP": str(timing.power_up), **{k: str(v) for k, v in extra.items()}}


@pytest.mark.parametrize("sim", SIMULATORS)
def test_sdram_controller(sim):
    timing = dataclasses.replace(TIMING, power_up=SHORT_POWER_UP)
    run_cocotb(SdramController(timing, GEOMETRY), toplevel="sdram_t",
               test_module="hetaccel.verify.sdram_tests", sim=sim,
               extra_env=_env(timing, CHIP_FOR[sim]))


def test_power_up():
    # the datasheet wait (20000 cycles at 100 MHz for the IS42S16160G's 200 us)
    run_cocotb(SdramController(TIMING, GEOMETRY), toplevel="sdram_full",
               test_module="hetaccel.verify.sdram_tests", sim="icarus",
               extra_env=_env(TIMING, "IS42S16160G-7", SDRAM_FULL_INIT=1))


def test_chip_model_catches_early_read():
    # A controller built with tRCD one cycle short issues each READ/WRITE one
    # cycle after its ACTIVE; the chip model must stop the test on it.
    broken = dataclasses.replace(TIMING, power_up=SHORT_POWER_UP, rcd=TIMING.rcd - 1)
    run = run_cocotb(SdramController(broken, GEOMETRY), toplevel="sdram_rcd",
                     test_module="hetaccel.verify.sdram_tests", sim="icarus",
                     testcase="write_then_read_everywhere", check=False,
                     extra_env=_env(broken, "IS42S16160G-7"))
    assert not run.passed and len(run.failures) == 1, run.failures
    message = run.failures[0][1]
    assert "SDRAM rule tRCD broken at cycle" in message and "is 1 cycles after the ACTIVE" \
        in message, message


class _BoardInputRegisters(wiring.Component):
    """The controller behind ``stages`` registers on ``dq_i``, as a board's
    input flip-flops put them (the controller is built with read_delay=stages)."""

    def __init__(self, controller, stages):
        self.controller, self.stages = controller, stages
        super().__init__(dict(controller.signature.members))

    def elaborate(self, platform):
        m = Module()
        m.submodules.ctrl = c = self.controller
        for name in ("cmd", "wdata"):
            wiring.connect(m, wiring.flipped(getattr(self, name)), getattr(c, name))
        wiring.connect(m, c.rdata, wiring.flipped(self.rdata))
        for name in ("init_done", "ready", "busy_cycles", "bus_cycles", "refreshes",
                     "row_misses"):
            m.d.comb += getattr(self, name).eq(getattr(c, name))
        for name in ("cke", "cs_n", "ras_n", "cas_n", "we_n", "ba", "a", "dqm", "dq_o",
                     "dq_oe"):
            m.d.comb += getattr(self.sdram, name).eq(getattr(c.sdram, name))
        dq = self.sdram.dq_i
        for i in range(self.stages):
            r = Signal(16, name=f"dq_i_r{i}")
            m.d.sync += r.eq(dq)
            dq = r
        m.d.comb += c.sdram.dq_i.eq(dq)
        return m


def test_read_delay_on_board_registers():
    # Icarus only: the read path's extra latency is the same logic on both.
    timing = dataclasses.replace(TIMING, power_up=SHORT_POWER_UP)
    dut = _BoardInputRegisters(SdramController(timing, GEOMETRY, read_delay=2), 2)
    run_cocotb(dut, toplevel="sdram_rd2", test_module="hetaccel.verify.sdram_tests",
               sim="icarus", extra_env=_env(timing, "MT48LC16M16A2-6A", SDRAM_READ_DELAY=2,
                                            SDRAM_BW_BURSTS=256))
