"""AdamUnit RTL on Icarus and Verilator, bit-exact against hetaccel.sim.adam_model.

One build per simulator; the cocotb module (hetaccel.verify.adam_tests) runs every
data class, mode and flow-control case in one simulation.
"""

import pytest

from hetaccel.bench.adam import run_adam_cocotb
from hetaccel.verify.cocotb_runner import SIMULATORS
from hetaccel.spec import AcceleratorConfig

# Icarus is ~100x slower than Verilator: it gets the same cases on shorter tensors.
SCALE = {"icarus": "1", "verilator": "4"}


@pytest.mark.parametrize("sim", SIMULATORS)
def test_adam_unit_bit_exact(sim):
    # Waveforms from Icarus only: Verilator's trace code lengthens its build
    # (the dominant cost here); the same cases run on Icarus with waves.
    run_adam_cocotb(AcceleratorConfig(adam_lanes=1), sim, waves=sim == "icarus",
                    extra_env={"HETACCEL_ADAM_SCALE": SCALE[sim],
                               "HETACCEL_ADAM_THROUGHPUT_N": "64"})


@pytest.mark.slow
def test_adam_unit_two_lanes_verilator():
    run_adam_cocotb(AcceleratorConfig(adam_lanes=2), "verilator", waves=False,
                    extra_env={"HETACCEL_ADAM_SCALE": "16", "HETACCEL_ADAM_SEED": "99"})
