"""SpramStore (the UP5K's SPRAM as the device memory) on Icarus and Verilator with
Yosys's SB_SPRAM256KA model (see verify/spram_tests.py)."""

import pytest

from hetaccel.rtl.ice40_cells import ice40_cell_model
from hetaccel.rtl.spram_store import SpramStore
from hetaccel.spec import AcceleratorConfig
from hetaccel.verify.cocotb_runner import SIMULATORS, build_root, run_cocotb

CONFIG = AcceleratorConfig(rows=4, cols=4, device_memory="spram128k", clock_hz=50_250_000)


@pytest.mark.parametrize("sim", SIMULATORS)
def test_spram_store(sim):
    run_cocotb(SpramStore(CONFIG), toplevel="spram_store", test_module="hetaccel.verify.spram_tests",
               sim=sim, extra_env={"HETACCEL_CONFIG": CONFIG.to_json()},
               extra_sources=(ice40_cell_model("SB_SPRAM256KA", build_root() / "models"),))


def test_spram_store_needs_the_spram_config():
    with pytest.raises(ValueError, match="must be 'spram128k', not 'none'"):
        SpramStore(AcceleratorConfig())
    with pytest.raises(TypeError, match="must be an AcceleratorConfig"):
        SpramStore({"device_memory": "spram128k"})
