"""ActivationUnit RTL on Icarus and Verilator, bit-exact against hetaccel.sim.activation_model.

One build per simulator (3 lanes, so a row is not a power of two); the cocotb
module (hetaccel.verify.activation_tests) runs every function, precision,
requant corner and flow-control case in one simulation.
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


@pytest.mark.slow
def test_activation_unit_wide_acc_verilator():
    """8 lanes and 40-bit accumulators: the bias add saturates values beyond int32."""
    cfg = AcceleratorConfig(rows=2, cols=8, acc_bits=40, act_param_depth=16, act_tables=3)
    run_cocotb(ActivationUnit(cfg), toplevel="activation_unit_l8_a40",
               test_module="hetaccel.verify.activation_tests", sim="verilator",
               extra_env={"HETACCEL_CONFIG": cfg.to_json(), "HETACCEL_ACT_SCALE": "10"})
