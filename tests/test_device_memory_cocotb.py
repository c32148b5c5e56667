"""A whole Device with the SDRAM controller and DMA engine, on Icarus and
Verilator, with the SDRAM chip model on its pins (verify/device_memory_tests.py)."""

import numpy as np
import pytest

from hetaccel.host.accelerator import Accelerator
from hetaccel.host.planner import op_cost
from hetaccel.rtl.device import Device
from hetaccel.spec import DEFAULT_CONFIG, AcceleratorConfig
from hetaccel.spec.device_memory import sdram_timing
from hetaccel.verify.cocotb_runner import SIMULATORS, run_cocotb
from hetaccel.workloads.bert import BertModel
from hetaccel.workloads.encoder import QuantizedEncoder
from hetaccel.workloads.placement import Executor

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


@pytest.mark.slow
def test_minilm_layer_with_resident_weights_on_verilator():
    """A MiniLM layer with its Linear weights resident in the SDRAM, on the
    generated Device (native Verilator harness and its SDRAM model): bit-exact
    with the emulator, and the device's busy cycles (GEMM, ACTIVATE, DMA)
    within 2 % of the planner's.

    The layer runs twice: the first run uploads the weights; the second,
    measured, gets its request bytes no faster than one every 64 cycles.
    Its frames (about 28 bytes a GEMM or LOAD) then arrive further apart than
    any of its instructions runs (a LOAD of 16 weight tiles, about 530
    cycles), so each instruction runs on its own, as at a board's UART pace
    (333 cycles a byte at 3 Mbaud and 100 MHz, five times slower to
    simulate); at the simulator's byte a cycle, GEMMs queue back to back and
    stall less than the planner's GEMM run on its own.  Compute
    instructions are then exact; the planner times every transfer from
    closed banks right after a refresh, while the device keeps rows open (a
    LOAD that continues the previous one's row skips its ACTIVE) and meets
    refreshes on its own timeline: each transfer is within 2 tRP + tRFC + tRCD
    cycles of the planner's."""
    cfg = DEFAULT_CONFIG.replace(device_memory="sdram32m", has_activation=True,
                                 clock_hz=100_000_000)
    model = BertModel.packaged_minilm()
    x0 = model.embed(model.tokenize("A man is playing a guitar.").ids[:8])
    runs = {}
    for backend, kw in (("emu", {}), ("rtl", {"sim": "verilator"})):
        with Accelerator.open(backend, config=cfg, **kw) as acc:
            enc = QuantizedEncoder(model, Executor(acc, "accelerator"))
            enc.layer(0, x0)                     # uploads the layer's weights
            if backend == "rtl":
                acc.transport.pace(64)
            first = len(acc.profile.ops)
            y = enc.layer(0, x0)
            runs[backend] = (y, acc.profile.ops[first:])
    np.testing.assert_array_equal(runs["emu"][0], runs["rtl"][0])
    t = sdram_timing(cfg.memory, cfg.clock_hz)
    per_transfer = 2 * t.rp + t.rfc + t.rcd
    plan_total = rtl_total = resident_ops = dma_plan = dma_rtl = 0
    for emu, rtl in zip(*(r[1] for r in runs.values())):
        assert (emu.op, emu.shape) == (rtl.op, rtl.shape)
        cost = op_cost(cfg, rtl.op, rtl.shape, table=rtl.table_load, resident=rtl.resident)
        plan = cost.busy_cycles + cost.dma_cycles
        assert plan == sum(emu.busy_cycles.values()) + emu.dma_cycles, "planner != emulator"
        assert rtl.busy_cycles == cost.busy, f"{rtl.op} {rtl.shape}: compute busy cycles"
        transfers = cost.instructions.get("LOAD", 0) + cost.instructions.get("STORE", 0)
        assert abs(rtl.dma_cycles - cost.dma_cycles) <= transfers * per_transfer, (
            f"{rtl.op} {rtl.shape}: DMA_BUSY {rtl.dma_cycles}, planner {cost.dma_cycles}: more "
            f"than {per_transfer} per transfer ({transfers}) apart")
        resident_ops += rtl.resident
        plan_total += plan
        rtl_total += sum(rtl.busy_cycles.values()) + rtl.dma_cycles
        dma_plan += cost.dma_cycles
        dma_rtl += rtl.dma_cycles
    # QKV, attention out, FFN up, and FFN down's weight in its hi and lo parts
    assert resident_ops == 5, f"{resident_ops} ops used resident weights, not the layer's 5"
    print(f"MiniLM layer, busy cycles: device {rtl_total}, planner {plan_total} "
          f"({rtl_total / plan_total - 1:+.2%}); DMA: device {dma_rtl}, planner {dma_plan} "
          f"({dma_rtl / dma_plan - 1:+.2%})")
    assert abs(rtl_total / plan_total - 1) <= 0.02
