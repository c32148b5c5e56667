"""Protocol fuzz of the whole device (verify/fuzz_tests.py) in CI: >= 1000 frames."""

import json

from hetaccel.rtl.device import Device
from hetaccel.verify.cocotb_runner import run_cocotb

from .test_device_cocotb import CI_CONFIG


def test_fuzz_1000_frames_verilator(tmp_path):
    # Same toplevel and config as the device tests: the Verilator build is shared.
    result = tmp_path / "fuzz.json"
    run_cocotb(Device(CI_CONFIG), toplevel="hetaccel_device_ci", sim="verilator",
               test_module="hetaccel.verify.fuzz_tests", waves=False,
               extra_env={"HETACCEL_CONFIG": CI_CONFIG.to_json(), "HETACCEL_FUZZ_FRAMES": "1000",
                          "HETACCEL_FUZZ_SEED": "7", "HETACCEL_FUZZ_RESULT": str(result)})
    stats = json.loads(result.read_text())
    assert stats["frames"] == 1000 and stats["hangs"] == 0
    assert stats["silent_corruptions"] == 0 and stats["mismatches"] == 0
    assert stats["rejected"] > 100 and stats["accepted"] > 100, stats
