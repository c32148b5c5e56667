"""MatmulEngine on Icarus and Verilator against the NumPy models (see verify/systolic_tests.py).

Each (simulator, array) pair builds once and runs every check of the cocotb
module: random shapes that are not multiples of the array, corners at K =
max_k with the narrowest legal accumulator (all -128 x all -128 included),
random input gaps and read back-pressure, and the cycle model checked exactly
at full rate (including K-tiles of 1 and 2 accumulating rows, where the 2x2
array meets the engine's read-modify-write hazard stall).  The "4x8" array uses every multiplier mapping at once: 28 PEs
in 14 iCE40 SB_MAC16s (dual signed 8x8 mode, simulated with Yosys's own
SB_MAC16 model compiled in) and 4 LUT multipliers.  The "4x4_mult18" array has
13 PEs on instantiated ECP5 MULT18X18Ds (input and output registers used,
simulated with hetaccel.rtl.ecp5_dsp's model) and 3 LUT multipliers.

The engine never back-pressures its array, so the DSP mappings also run as a
bare SystolicArray with random result back-pressure (the array's enable low,
which is every DSP register's clock enable).
"""

import pytest

from hetaccel.rtl.multiplier import simulation_models
from hetaccel.rtl.engine import MatmulEngine
from hetaccel.rtl.systolic import SystolicArray
from hetaccel.verify.cocotb_runner import SIMULATORS, build_root, run_cocotb
from hetaccel.spec import AcceleratorConfig, min_acc_bits


def _config(rows, cols, max_k, **kw):
    # acc_bits = min_acc_bits makes K = max_k the real accumulator limit.
    return AcceleratorConfig(rows=rows, cols=cols, max_k=max_k,
                             acc_bits=min_acc_bits(8, max_k), acc_depth=32, **kw)


CONFIGS = {
    "2x2": _config(2, 2, 32),
    "4x4_mult18": _config(4, 4, 64, mac_mapping="ecp5_mult18", lut_multipliers=3),
    "8x8": _config(8, 8, 100),
    "4x8": _config(4, 8, 40, mac_mapping="ice40_dual", lut_multipliers=4),
}

ARRAYS = {
    # 5 LUT PEs (row-major from the end: (1, 3) and the whole last row, column 0
    # included) between MULT18X18Ds, under input gaps and result back-pressure
    "3x4_mult18": _config(3, 4, 24, mac_mapping="ecp5_mult18", lut_multipliers=5),
    "3x4_dual": _config(3, 4, 24, mac_mapping="ice40_dual", lut_multipliers=2),
}


def _sources(cfg):
    # Models of the vendor cells the array instantiates (SB_MAC16, MULT18X18D).
    return simulation_models(cfg, build_root() / "models")


def _waves(sim):
    # Tracing makes every Verilator build compile the VCD writer and trace code;
    # the same checks on Icarus leave an FST to debug a failure with.
    return sim == "icarus"


@pytest.mark.parametrize("name", CONFIGS)
@pytest.mark.parametrize("sim", SIMULATORS)
def test_matmul_engine(sim, name):
    cfg = CONFIGS[name]
    run_cocotb(MatmulEngine(cfg), toplevel=f"matmul_{name}", test_module="hetaccel.verify.systolic_tests",
               sim=sim, extra_env={"HETACCEL_CONFIG": cfg.to_json()}, waves=_waves(sim),
               extra_sources=_sources(cfg))


@pytest.mark.slow
@pytest.mark.parametrize("sim", SIMULATORS)
def test_matmul_engine_16x16_and_odd_shape(sim):
    for name, cfg in {"16x16": _config(16, 16, 300, lut_multipliers=100),
                      "3x5": _config(3, 5, 50),
                      "4x4_dual": _config(4, 4, 4096, mac_mapping="ice40_dual")}.items():
        run_cocotb(MatmulEngine(cfg), toplevel=f"matmul_{name}",
                   test_module="hetaccel.verify.systolic_tests", sim=sim,
                   extra_env={"HETACCEL_CONFIG": cfg.to_json()}, waves=_waves(sim),
                   extra_sources=_sources(cfg))


def _run_array(sim, name):
    cfg = ARRAYS[name]
    run_cocotb(SystolicArray(cfg), toplevel=f"array_{name}",
               test_module="hetaccel.verify.systolic_tests", sim=sim,
               extra_env={"HETACCEL_CONFIG": cfg.to_json(), "HETACCEL_DUT": "array"},
               waves=_waves(sim), extra_sources=_sources(cfg))


@pytest.mark.parametrize("name", ARRAYS)
def test_array_backpressure_icarus(name):
    _run_array("icarus", name)


@pytest.mark.slow
@pytest.mark.parametrize("name", ARRAYS)
def test_array_backpressure_verilator(name):
    _run_array("verilator", name)
