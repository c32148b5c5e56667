"""The seed's training example: device forward matmuls + Adam vs float64."""

import numpy as np
import pytest

from hetaccel.workloads.placement import Executor
from hetaccel.workloads.training import make_dataset, metrics, train_seed_classifier


def test_dataset_is_deterministic_and_balanced():
    x1, y1 = make_dataset(0)
    x2, y2 = make_dataset(0)
    assert x1.shape == (100, 10) and y1.shape == (100,)
    np.testing.assert_array_equal(x1, x2)
    np.testing.assert_array_equal(y1, y2)
    assert 40 <= y1.sum() <= 60


def test_metrics():
    m = metrics(np.array([1, 1, 0, 0]), np.array([1, 0, 1, 0]))
    assert m == {"accuracy": 0.5, "recall": 0.5, "precision": 0.5, "f1": 0.5}
    assert metrics(np.array([0, 0]), np.array([0, 0]))["f1"] == 0.0


def test_quantized_training_tracks_float64():
    r = train_seed_classifier(Executor(None, "cpu"))
    assert r["float_accuracy"] >= 0.85
    assert abs(r["accuracy"] - r["float_accuracy"]) <= 0.02
    assert abs(r["f1"] - r["float_f1"]) <= 0.03
    assert r["prediction_agreement"] >= 0.97
    assert abs(r["final_loss"] - r["float_final_loss"]) < 0.02


def test_device_training_is_bit_identical_to_cpu_model():
    """Forward matmuls and every Adam update on the emulator equal the bit-exact models."""
    from hetaccel.host import Accelerator

    with Accelerator.open("emu") as acc:
        ex = Executor(acc, "accelerator")
        dev = train_seed_classifier(ex, epochs=5)
        kinds = {d.kind for d in ex.ops}
    cpu = train_seed_classifier(Executor(None, "cpu"), epochs=5)
    assert kinds == {"matmul", "adam"}
    assert dev["adam_steps_on_device"] == 5 and dev["device_cycles"] > 0
    for k in ("accuracy", "recall", "f1", "final_loss"):
        assert dev[k] == cpu[k], k


@pytest.mark.parametrize("kw, match", [({"epochs": 0}, "epochs"), ({"lr": 2.0}, "lr"),
                                       ({"hidden": -1}, "hidden")])
def test_bad_arguments(kw, match):
    with pytest.raises(ValueError, match=match):
        train_seed_classifier(Executor(None, "cpu"), **kw)
