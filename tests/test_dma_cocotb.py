"""DmaEngine with the SdramController on Icarus and Verilator, against the chip
model and the golden models (see verify/dma_tests.py)."""

import dataclasses
import gc
import json

import pytest
from amaranth import Module, Signal
from amaranth.hdl import Fragment
from amaranth.lib import wiring
from amaranth.lib.wiring import Out

from hetaccel.rtl.dma import DmaEngine
from hetaccel.rtl.sdram import SdramController, SdramPins
from hetaccel.spec import AcceleratorConfig
from hetaccel.spec.device_memory import sdram_timing
from hetaccel.spec.sdram import CHIPS
from hetaccel.verify.cocotb_runner import SIMULATORS, run_cocotb

#: ULX3S-like configs: 16-byte INPUT/WEIGHT words (one a line) and 8-byte ones
#: (two a line), multi-line ACC, OUTPUT, OPT and ACT_PARAM words; and small
#: arrays, whose words of less than half a line stay out of LOAD / STORE
#: (hetaccel.spec.dma_spaces) while the others move.
CONFIGS = {
    "16x16": AcceleratorConfig(rows=16, cols=16, device_memory="sdram32m", clock_hz=100_000_000),
    "8x8": AcceleratorConfig(rows=8, cols=8, device_memory="sdram32m", clock_hz=100_000_000),
    # 8-byte OUTPUT words (two a line), 3-line ACT_PARAM
    "4x4": AcceleratorConfig(rows=4, cols=4, device_memory="sdram32m", clock_hz=100_000_000),
    # odd word sizes: OPT of three lanes (3 lines)
    "1x2": AcceleratorConfig(rows=1, cols=2, adam_lanes=3, device_memory="sdram32m",
                             clock_hz=100_000_000),
}
# A short power-up wait (the chip model is told the same) keeps initialisation cheap.
SHORT_POWER_UP = 64
# each simulator plays another part of the board
CHIP_FOR = {"icarus": "IS42S16160G-7", "verilator": "MT48LC16M16A2-75"}


class DmaTop(wiring.Component):
    """DmaEngine -> SdramController -> pins, with the board's input register on
    ``dq_i`` (the controller is built with the device memory's read_delay)."""

    def __init__(self, config, power_up=SHORT_POWER_UP):
        mem = config.memory
        self.timing = sdram_timing(mem, config.clock_hz).with_power_up(power_up)
        self.dma = DmaEngine(config)
        self.ctrl = SdramController(self.timing, CHIPS[mem.chips[0]], read_delay=mem.read_delay)
        members = {name: member for name, member in self.dma.signature.members.items()
                   if not name.startswith("mem_")}
        super().__init__({**members, "sdram": Out(SdramPins), "init_done": Out(1)})

    def elaborate(self, platform):
        m = Module()
        m.submodules.dma = dma = self.dma
        m.submodules.ctrl = ctrl = self.ctrl
        wiring.connect(m, dma.mem_cmd, ctrl.cmd)
        wiring.connect(m, dma.mem_wdata, ctrl.wdata)
        wiring.connect(m, ctrl.rdata, dma.mem_rdata)
        m.d.comb += [dma.mem_ready.eq(ctrl.ready), self.init_done.eq(ctrl.init_done)]
        wiring.connect(m, wiring.flipped(self.job), dma.job)
        for name, member in self.signature.members.items():
            if name in ("job", "sdram", "init_done"):
                continue
            if member.flow == Out:
                m.d.comb += getattr(self, name).eq(getattr(dma, name))
            else:
                m.d.comb += getattr(dma, name).eq(getattr(self, name))
        for name in ("cke", "cs_n", "ras_n", "cas_n", "we_n", "ba", "a", "dqm", "dq_o", "dq_oe"):
            m.d.comb += getattr(self.sdram, name).eq(getattr(ctrl.sdram, name))
        dq = Signal(16, name="dq_i_r")
        m.d.sync += dq.eq(self.sdram.dq_i)
        m.d.comb += ctrl.sdram.dq_i.eq(dq)
        return m


def _run(sim, name, *, suite, testcase=None, seed=0):
    config = CONFIGS[name]
    top = DmaTop(config)
    run_cocotb(top, toplevel=f"dma_{name.replace('x', '_')}", test_module="hetaccel.verify.dma_tests",
               sim=sim, testcase=testcase,
               extra_env={"DMA_CONFIG": config.to_json(),
                          "SDRAM_TIMING": json.dumps(dataclasses.asdict(top.timing)),
                          "SDRAM_CHIP": CHIP_FOR[sim], "SDRAM_POWER_UP": str(SHORT_POWER_UP),
                          "DMA_SUITE": suite, "DMA_SEED": str(seed)})


@pytest.mark.parametrize("sim", SIMULATORS)
def test_dma_quick(sim):
    # packed 8-byte words and multi-line words, every space, each direction,
    # on its own and back to back
    _run(sim, "8x8", suite="quick", testcase=["every_space_on_its_own", "back_to_back"])


@pytest.mark.slow
@pytest.mark.parametrize("name", sorted(CONFIGS))
@pytest.mark.parametrize("sim", SIMULATORS)
def test_dma_full(sim, name):
    _run(sim, name, suite="full", seed=1)


@pytest.mark.filterwarnings("ignore::amaranth.hdl.UnusedElaboratable")
def test_dma_refuses_config_without_sdram():
    for memory in ("none", "spram128k"):
        config = AcceleratorConfig(device_memory=memory)
        with pytest.raises(ValueError, match="device_memory must be 'sdram32m'"):
            DmaEngine(config)
    with pytest.raises(TypeError, match="config must be an AcceleratorConfig"):
        DmaEngine({"device_memory": "sdram32m"})
    gc.collect()        # the refused components warn here, not in the next test


def test_dma_elaborates_for_every_word_shape():
    # packed words of 2 to 16 per line, words of 1 to 12 lines
    for config in (*CONFIGS.values(),
                   AcceleratorConfig(rows=4, cols=4, acc_bits=20, max_k=16,
                                     device_memory="sdram32m", clock_hz=100_000_000),
                   AcceleratorConfig(rows=1, cols=2, acc_bits=16, max_k=1, adam_lanes=3,
                                     device_memory="sdram32m", clock_hz=100_000_000)):
        dma = DmaEngine(config)
        Fragment.get(dma, None).prepare()
        assert len(dma.sp_wr_data) == 8 * max(s.word_bytes for s in dma.load_spaces.values())
