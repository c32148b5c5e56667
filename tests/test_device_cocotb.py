"""Whole-device cocotb tests (verify/device_tests.py) on Icarus and Verilator."""


import pytest

from hetaccel.rtl.device import Device
from hetaccel.verify.cocotb_runner import SIMULATORS, run_cocotb
from hetaccel.spec import AcceleratorConfig

#: small enough for CI, big enough for two K tiles, queueing and every unit
CI_CONFIG = AcceleratorConfig(rows=4, cols=4, input_depth=16, weight_depth=16, acc_depth=16,
                              output_depth=16, opt_depth=16, max_k=64, acc_bits=24,
                              act_param_depth=4, act_tables=3, max_payload=64)


@pytest.mark.parametrize("sim", SIMULATORS)
def test_device_through_byte_protocol(sim):
    # Verilator traces of this design cost more than the simulation itself:
    # no waveform there (re-run on Icarus, which keeps one, to debug).
    run_cocotb(Device(CI_CONFIG), toplevel="hetaccel_device_ci", sim=sim,
               test_module="hetaccel.verify.device_tests", waves=sim != "verilator",
               extra_env={"HETACCEL_CONFIG": CI_CONFIG.to_json()})


#: CI_CONFIG with its activation unit folded onto one lane (a row in 4 beats)
FOLDED_CONFIG = CI_CONFIG.replace(act_lanes=1)


def test_folded_activation_device_icarus():
    run_cocotb(Device(FOLDED_CONFIG), toplevel="hetaccel_device_folded", sim="icarus",
               test_module="hetaccel.verify.device_tests", testcase="gemm_activation_pipeline",
               waves=False, extra_env={"HETACCEL_CONFIG": FOLDED_CONFIG.to_json()})


#: no activation or Adam unit, odd word sizes (3 columns, 6-bit operands, 20-bit
#: accumulators) and a 2-entry queue: the decoder's divider, absent-unit statuses
BARE_CONFIG = AcceleratorConfig(rows=2, cols=3, operand_bits=6, acc_bits=20, max_k=32,
                                input_depth=16, weight_depth=8, acc_depth=16, output_depth=8,
                                opt_depth=8, has_activation=False, has_adam=False,
                                max_payload=40, cmd_queue_depth=2)


def test_bare_device_icarus():
    run_cocotb(Device(BARE_CONFIG), toplevel="hetaccel_device_bare", sim="icarus",
               test_module="hetaccel.verify.device_tests", waves=False,
               extra_env={"HETACCEL_CONFIG": BARE_CONFIG.to_json()})
