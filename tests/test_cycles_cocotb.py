"""The model's cycle counts equal the RTL's per instruction (verify/cycles_tests.py)."""

import pytest

from hetaccel.rtl.device import Device
from hetaccel.spec import AcceleratorConfig
from hetaccel.verify.cocotb_runner import run_cocotb

_SMALL = dict(input_depth=16, weight_depth=16, acc_depth=16, output_depth=16, max_k=64,
              acc_bits=24, act_param_depth=4, act_tables=1, max_payload=64)

CONFIGS = {
    # rows > RMW_WINDOW; a 4-entry queue holds three GEMMs behind an ADAM, whose
    # 128 words outlast the frames queued behind it
    "4x4": AcceleratorConfig(rows=4, cols=4, opt_depth=128, cmd_queue_depth=4, **_SMALL),
    # rows <= RMW_WINDOW, two Adam lanes, a 3-entry queue
    "2x3": AcceleratorConfig(rows=2, cols=3, opt_depth=128, adam_lanes=2, cmd_queue_depth=3,
                             **_SMALL),
    # a folded activation unit: 4 channels in 4 beats of one lane
    "2x4f": AcceleratorConfig(rows=2, cols=4, act_lanes=1, opt_depth=128, cmd_queue_depth=3,
                              **_SMALL),
    # a one-entry queue (its weight-job FIFO is a register) and a one-row array
    "1x2": AcceleratorConfig(rows=1, cols=2, opt_depth=8, cmd_queue_depth=1,
                             has_activation=False, has_adam=False, **_SMALL),
}


@pytest.mark.parametrize("name,sim", [("4x4", "verilator"), ("4x4", "icarus"),
                                      ("2x3", "icarus"), ("1x2", "verilator"),
                                      ("2x4f", "verilator"), ("2x4f", "icarus")])
def test_cycle_counts_equal_the_model(name, sim):
    cfg = CONFIGS[name]
    run_cocotb(Device(cfg), toplevel=f"hetaccel_cycles_{name}", sim=sim,
               test_module="hetaccel.verify.cycles_tests", waves=False,
               extra_env={"HETACCEL_CONFIG": cfg.to_json()})
