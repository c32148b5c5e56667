"""ActivationUnit RTL on Icarus and Verilator, bit-exact against hetaccel.sim.activation_model.

One build per simulator (3 lanes, so a row is not a power of two); the cocotb
module (hetaccel.verify.activation_tests) runs every function, precision,
requant corner and flow-control case in one simulation.  Folded units
(``act_lanes`` < ``cols``) run the same cases at a smaller scale.
"""

import pytest

from hetaccel.rtl.activation import ActivationUnit
from hetaccel.verify.cocotb_runner import SIMULATORS, run_cocotb
from hetaccel.spec import AcceleratorConfig

CONFIG = AcceleratorConfig(rows=2, cols=3, act_param_depth=16, act_tables=4)
# Icarus is much slower than Verilator: same cases, fewer random rows.
SCALE = {"icarus": "0.5", "verilator": "3"}


@pytest.mark.parametrize("sim", SIMULATORS)
def test_activation_unit_bit_exact(sim):
    run_cocotb(ActivationUnit(CONFIG), toplevel="activation_unit_l3",
               test_module="hetaccel.verify.activation_tests", sim=sim,
               extra_env={"HETACCEL_CONFIG": CONFIG.to_json(), "HETACCEL_ACT_SCALE": SCALE[sim]})


FOLDED = {
    # 8 channels in 4 beats of 2 lanes
    "l8_on_2": AcceleratorConfig(rows=2, cols=8, act_lanes=2, act_param_depth=16, act_tables=4),
    # 4 channels in 4 beats of 1 lane, 40-bit accumulators
    "l4_on_1": AcceleratorConfig(rows=2, cols=4, act_lanes=1, acc_bits=40, act_param_depth=4,
                                 act_tables=3),
}


@pytest.mark.parametrize("name,sim", [("l8_on_2", "icarus"), ("l8_on_2", "verilator"),
                                      ("l4_on_1", "verilator")])
def test_folded_activation_unit_bit_exact(name, sim):
    cfg = FOLDED[name]
    run_cocotb(ActivationUnit(cfg), toplevel=f"activation_unit_{name}",
               test_module="hetaccel.verify.activation_tests", sim=sim,
               extra_env={"HETACCEL_CONFIG": cfg.to_json(), "HETACCEL_ACT_SCALE": "0.3"})


@pytest.mark.slow
def test_activation_unit_wide_acc_verilator():
    """8 lanes and 40-bit accumulators: the bias add saturates values beyond int32."""
    cfg = AcceleratorConfig(rows=2, cols=8, acc_bits=40, act_param_depth=16, act_tables=3)
    run_cocotb(ActivationUnit(cfg), toplevel="activation_unit_l8_a40",
               test_module="hetaccel.verify.activation_tests", sim="verilator",
               extra_env={"HETACCEL_CONFIG": cfg.to_json(), "HETACCEL_ACT_SCALE": "10"})
