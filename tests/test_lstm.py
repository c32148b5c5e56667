"""LSTM cell with sigmoid/tanh gates on the activation unit vs float64."""

import numpy as np
import pytest

from hetaccel.workloads.lstm import LSTMCell, lstm_reference, run_lstm
from hetaccel.workloads.placement import Executor


def test_lstm_close_to_float64():
    r = run_lstm(Executor(None, "cpu"), steps=6)
    assert r["max_abs_error_h"] < 5e-3
    assert r["mean_abs_error_h"] < 1e-3
    assert r["max_abs_error_c"] < 1e-2


def test_lstm_gates_on_device_bit_identical():
    from hetaccel.host import Accelerator

    with Accelerator.open("emu") as acc:
        ex = Executor(acc, "accelerator")
        dev = run_lstm(ex, steps=2, batch=2, hidden=8, inputs=4)
    cpu = run_lstm(Executor(None, "cpu"), steps=2, batch=2, hidden=8, inputs=4)
    # 4 gates + tanh(c) per step, all on the activation unit
    assert dev["activation_passes_on_device"] == 10
    assert {d.shape.get("function") for d in ex.ops if d.kind == "activation"} == \
        {"sigmoid", "tanh"}
    assert dev["max_abs_error_h"] == cpu["max_abs_error_h"]


def test_reference_is_a_real_lstm():
    cell = LSTMCell.random(3, 2, seed=1)
    xs = np.zeros((1, 1, 3), np.float32)
    hs, c = lstm_reference(cell, xs)
    z = cell.bias.astype(np.float64)
    sig = lambda v: 1 / (1 + np.exp(-v))  # noqa: E731
    c_want = sig(z[:2]) * np.tanh(z[4:6])
    np.testing.assert_allclose(c[0], c_want)
    np.testing.assert_allclose(hs[0, 0], sig(z[6:]) * np.tanh(c_want))


def test_bad_shapes():
    with pytest.raises(ValueError, match="w_ih must be"):
        LSTMCell(np.zeros((7, 3)), np.zeros((8, 2)))
    cell = LSTMCell.random(3, 2)
    with pytest.raises(ValueError, match="xs must be"):
        cell.run(Executor(None, "cpu"), np.zeros((2, 3)))
    with pytest.raises(ValueError, match="steps"):
        run_lstm(Executor(None, "cpu"), steps=0)
