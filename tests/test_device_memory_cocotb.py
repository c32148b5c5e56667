"""A whole Device with the SDRAM controller and DMA engine, on Icarus and
Verilator, with the SDRAM chip model on its pins (verify/device_memory_tests.py)."""

import pytest

from hetaccel.rtl.device import Device
from hetaccel.spec import AcceleratorConfig
from hetaccel.verify.cocotb_runner import SIMULATORS, run_cocotb

#: 8x8: INPUT / WEIGHT words of half a line (two a line), ACC words of two
#: lines, OUTPUT and OPT words of one, ACT_PARAM of six; every unit
MEM_CONFIG = AcceleratorConfig(rows=8, cols=8, input_depth=16, weight_depth=16, acc_depth=16,
                               output_depth=16, opt_depth=16, max_k=64, act_param_depth=4,
                               act_tables=2, max_payload=128, cmd_queue_depth=12,
                               device_memory="sdram32m",
                               clock_hz=100_000_000)
#: a short power-up wait (the chip model is told the same)
SHORT_POWER_UP = 64
#: each simulator plays another of the board's parts
CHIP_FOR = {"icarus": "IS42S16160G-7", "verilator": "MT48LC16M16A2-75"}


@pytest.mark.parametrize("sim", SIMULATORS)
def test_device_with_sdram(sim):
    run_cocotb(Device(MEM_CONFIG, sdram_power_up=SHORT_POWER_UP),
               toplevel="hetaccel_device_sdram", sim=sim,
               test_module="hetaccel.verify.device_memory_tests", waves=sim != "verilator",
               extra_env={"HETACCEL_CONFIG": MEM_CONFIG.to_json(), "SDRAM_CHIP": CHIP_FOR[sim],
                          "SDRAM_POWER_UP": str(SHORT_POWER_UP)})
