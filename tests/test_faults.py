"""Link faults: dropped, corrupted and delayed bytes, device resets, error statuses.

The runtime must either return the exact result (after bounded retries) or
raise a clear exception; never a wrong result.
"""

import numpy as np
import pytest

from hetaccel.host import Accelerator, DeviceResetError, DeviceStatusError, LinkError
from hetaccel.host.transport import EmuTransport, FaultPlan, FaultyTransport
from hetaccel.spec import AcceleratorConfig, MemSpace, Opcode, encode_instruction

SMALL = AcceleratorConfig(rows=4, cols=4, input_depth=32, weight_depth=32, acc_depth=32,
                          output_depth=32, opt_depth=32, max_k=256, acc_bits=24,
                          act_param_depth=4, act_tables=3, max_payload=128)

RNG = np.random.default_rng(11)
A = RNG.integers(-128, 128, (12, 40), dtype=np.int8)
B = RNG.integers(-128, 128, (40, 10), dtype=np.int8)
REF = A.astype(np.int64) @ B.astype(np.int64)


def _faulty(plan, config=SMALL, retries=6, **kw):
    t = FaultyTransport(EmuTransport(config), plan)
    return Accelerator(t, config, retries=retries, **kw), t


@pytest.mark.parametrize("kind", ["drop", "corrupt", "delay"])
@pytest.mark.parametrize("direction", ["to_device", "to_host"])
def test_random_byte_faults_are_retried_to_the_exact_result(kind, direction):
    """K spans many tiles, so most GEMMs accumulate: a replayed accumulate must
    not be applied twice."""
    retried = 0
    for seed in range(4):
        acc, t = _faulty(FaultPlan(**{kind: 3e-4}, directions=(direction,), seed=seed,
                                   max_faults=4))
        c = acc.matmul(A, B)
        np.testing.assert_array_equal(c, REF)
        rec = acc.profile.last
        assert rec.retries >= (1 if rec.faults else 0)
        retried += rec.retries
        assert len(t.faults) <= 4
    assert retried > 0, "the fault rate injected nothing; the test tests nothing"


def test_every_op_survives_faults():
    acc, t = _faulty(FaultPlan(drop=1e-4, corrupt=1e-4, delay=1e-4, seed=5, max_faults=12))
    clean = Accelerator.open("emu", config=SMALL)
    x = RNG.standard_normal((5, 20)).astype(np.float32)
    w = RNG.standard_normal((9, 20)).astype(np.float32)
    np.testing.assert_array_equal(acc.linear(x, w, None, "gelu"), clean.linear(x, w, None, "gelu"))
    xa = RNG.uniform(-4, 4, 50).astype(np.float32)
    np.testing.assert_array_equal(acc.activation("tanh", xa), clean.activation("tanh", xa))
    p, g = RNG.standard_normal(70).astype(np.float32), RNG.standard_normal(70).astype(np.float32)
    s1 = [p.copy(), g, np.zeros(70, np.float32), np.zeros(70, np.float32)]
    s2 = [p.copy(), g, np.zeros(70, np.float32), np.zeros(70, np.float32)]
    acc.adam_step(*s1, lr=1e-2, step=1, weight_decay=0.1, decoupled=True)
    clean.adam_step(*s2, lr=1e-2, step=1, weight_decay=0.1, decoupled=True)
    for u, v in zip(s1, s2):
        np.testing.assert_array_equal(u.view(np.uint32), v.view(np.uint32))
    assert acc.profile.totals()["retries"] > 0


def test_retry_budget_then_a_clear_link_error():
    acc, t = _faulty(FaultPlan(corrupt=0.02, directions=("to_host",), seed=1), retries=6)
    acc.link.retries = 2
    with pytest.raises(LinkError, match="giving up after 3 attempts"):
        acc.matmul(A, B)


def test_device_reset_mid_operation_raises_and_session_recovers():
    acc, t = _faulty(FaultPlan())
    t._events[("to_device", t._count["to_device"] + 600)] = ["reset"]
    with pytest.raises(DeviceResetError, match="reset"):
        acc.matmul(A, B)
    # the session re-baselines: the next operation runs on the fresh device
    np.testing.assert_array_equal(acc.matmul(A, B), REF)


def test_device_reset_between_frames_of_the_result_readout():
    """A reset after the compute but before every result row is read back."""
    acc, t = _faulty(FaultPlan())
    sent_before = t._count["to_device"]
    acc.matmul(A, B)
    total = t._count["to_device"] - sent_before
    acc2, t2 = _faulty(FaultPlan())
    t2._events[("to_device", t2._count["to_device"] + total - 40)] = ["reset"]
    with pytest.raises(DeviceResetError):
        acc2.matmul(A, B)


def test_persistent_error_status_raises_device_status_error():
    acc, _ = _faulty(FaultPlan(), retries=2)
    bad = encode_instruction(Opcode.READ_MEM, space=int(MemSpace.ACC), addr=10_000, count=1)
    with pytest.raises(DeviceStatusError, match="ADDR_RANGE"):
        acc.link.run([(Opcode.READ_MEM, bad)])


def test_rtl_backend_recovers_from_link_faults():
    """Corrupted, dropped and delayed bytes on the way to the generated Device."""
    plan = FaultPlan(events=[("to_device", "corrupt", 900), ("to_device", "drop", 2500),
                             ("to_host", "corrupt", 700), ("to_device", "delay", 4000),
                             ("to_host", "drop", 1500)])
    with Accelerator.open("rtl", config=SMALL, sim="verilator", timeout=0.0005,
                          faults=plan, native_opt="-O0") as acc:
        np.testing.assert_array_equal(acc.matmul(A, B), REF)
        assert len(acc.transport.faults) == 5
        assert acc.profile.last.retries >= 3
        # and a reset of the simulated device mid-operation is detected
        acc.transport._events[("to_device", acc.transport._count["to_device"] + 500)] = ["reset"]
        with pytest.raises(DeviceResetError):
            acc.matmul(A, B)
        np.testing.assert_array_equal(acc.matmul(A, B), REF)
