"""The seed's training example (§4.3) on the accelerator.

Binary classification of 100 deterministic samples with 10 features by a network
with a single hidden ReLU layer (10 -> ``hidden``) and a linear read-out (-> 2
logits), softmax cross-entropy, full-batch Adam with lr 0.01.

Division of labour (heterogeneous): the forward matmuls run on the accelerator as
exact int8 x int8 -> int32 products (inputs split per row into hi/lo int8 parts,
weights int8 per output channel, re-quantized every step since they change); the
Adam update of every parameter (fp32 param, m, v) runs on the Adam unit; the
gradients, ReLU, softmax, loss and the metrics are computed on the CPU.  The same
training runs in float64 on the CPU as the reference, from the same initial weights.
"""

from __future__ import annotations

import numpy as np

from . import quantize as Q
from .placement import Executor

__all__ = ["make_dataset", "init_params", "train_seed_classifier", "metrics",
           "train_float64"]


def make_dataset(seed: int = 0, n: int = 100, features: int = 10):
    """Deterministic, roughly balanced, not linearly perfect: ``(X float32, y int)``."""
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((n, features)).astype(np.float32)
    w = rng.standard_normal(features)
    # a non-linear boundary plus label noise, so a ReLU layer helps and 100% is rare
    score = x @ w + 0.8 * (x[:, 0] * x[:, 1]) + 3.0 * rng.standard_normal(n)
    y = (score > np.median(score)).astype(np.int64)
    return x, y


def init_params(seed: int, features: int, hidden: int) -> dict:
    rng = np.random.default_rng(seed + 1)
    return {
        "w1": (rng.standard_normal((features, hidden)) * np.sqrt(2.0 / features)).astype(np.float32),
        "b1": np.zeros(hidden, dtype=np.float32),
        "w2": (rng.standard_normal((hidden, 2)) * np.sqrt(1.0 / hidden)).astype(np.float32),
        "b2": np.zeros(2, dtype=np.float32),
    }


def metrics(y_true: np.ndarray, y_pred: np.ndarray) -> dict:
    """Accuracy, recall and F1 of the positive class (precision too)."""
    tp = int(np.sum((y_pred == 1) & (y_true == 1)))
    fp = int(np.sum((y_pred == 1) & (y_true == 0)))
    fn = int(np.sum((y_pred == 0) & (y_true == 1)))
    acc = float(np.mean(y_pred == y_true))
    recall = tp / (tp + fn) if tp + fn else 0.0
    precision = tp / (tp + fp) if tp + fp else 0.0
    f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    return {"accuracy": acc, "recall": recall, "precision": precision, "f1": f1}


def _softmax(z):
    z = z - z.max(axis=1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=1, keepdims=True)


def _device_linear(ex: Executor, name: str, x: np.ndarray, w: np.ndarray) -> np.ndarray:
    """``x @ w`` (w: in x out) as exact int8 products on the executor."""
    s = Q.split_rows(x)
    wq = Q.quantize_weight(w.T)                   # per output channel
    b = np.ascontiguousarray(wq.values.T)
    acc = Q.combine_split([ex.matmul(name, s.hi, b), ex.matmul(name, s.lo, b)])
    return Q.dequantize_product(acc, s.scale, wq.scale.ravel())


def _grads(x, y, p_logits, h_pre, h, w2, dtype):
    n = x.shape[0]
    prob = _softmax(p_logits.astype(dtype))
    onehot = np.eye(2, dtype=dtype)[y]
    loss = float(-np.mean(np.log(np.clip(prob[np.arange(n), y], 1e-12, None))))
    dlog = (prob - onehot) / n
    g = {"w2": h.T.astype(dtype) @ dlog, "b2": dlog.sum(axis=0)}
    dh = dlog @ w2.T.astype(dtype)
    dpre = dh * (h_pre > 0)
    g["w1"] = x.T.astype(dtype) @ dpre
    g["b1"] = dpre.sum(axis=0)
    return loss, g


_ORDER = ("w1", "b1", "w2", "b2")


def train_float64(x, y, params, epochs, lr, betas=(0.9, 0.999), eps=1e-8):
    """The reference: the same network and Adam (torch.optim.Adam rules) in float64."""
    p = {k: v.astype(np.float64) for k, v in params.items()}
    m = {k: np.zeros_like(v) for k, v in p.items()}
    v = {k: np.zeros_like(vv) for k, vv in p.items()}
    xf = x.astype(np.float64)
    losses = []
    for step in range(1, epochs + 1):
        h_pre = xf @ p["w1"] + p["b1"]
        h = np.maximum(h_pre, 0)
        logits = h @ p["w2"] + p["b2"]
        loss, g = _grads(xf, y, logits, h_pre, h, p["w2"], np.float64)
        losses.append(loss)
        for k in _ORDER:
            m[k] = betas[0] * m[k] + (1 - betas[0]) * g[k]
            v[k] = betas[1] * v[k] + (1 - betas[1]) * g[k] ** 2
            mhat = m[k] / (1 - betas[0] ** step)
            vhat = v[k] / (1 - betas[1] ** step)
            p[k] = p[k] - lr * mhat / (np.sqrt(vhat) + eps)
    h = np.maximum(xf @ p["w1"] + p["b1"], 0)
    pred = np.argmax(h @ p["w2"] + p["b2"], axis=1)
    return p, pred, losses


def train_seed_classifier(ex: Executor, *, epochs: int = 100, lr: float = 0.01,
                          hidden: int = 8, seed: int = 0, progress=None) -> dict:
    """Train on the executor's device and in float64; return the figures."""
    for name, v, lo in (("epochs", epochs, 1), ("hidden", hidden, 1)):
        if isinstance(v, bool) or not isinstance(v, int) or v < lo:
            raise ValueError(f"{name} must be an integer >= {lo}, got {v!r}")
    if not isinstance(lr, (int, float)) or not 0 < lr < 1:
        raise ValueError(f"lr must be in (0, 1), got {lr!r}")
    x, y = make_dataset(seed)
    params0 = init_params(seed, x.shape[1], hidden)
    sizes = [params0[k].size for k in _ORDER]
    flat = np.concatenate([params0[k].ravel() for k in _ORDER]).astype(np.float32)
    m = np.zeros_like(flat)
    v = np.zeros_like(flat)

    def unflat(vec):
        out, i = {}, 0
        for k, n in zip(_ORDER, sizes):
            out[k] = vec[i:i + n].reshape(params0[k].shape)
            i += n
        return out

    losses = []
    for step in range(1, epochs + 1):
        p = unflat(flat)
        ex.layer = "forward"
        h_pre = _device_linear(ex, "fc1", x, p["w1"]) + p["b1"]
        h = np.maximum(h_pre, 0).astype(np.float32)
        logits = _device_linear(ex, "fc2", h, p["w2"]) + p["b2"]
        loss, g = _grads(x, y, logits, h_pre, h, p["w2"], np.float32)
        losses.append(loss)
        grads = np.concatenate([g[k].ravel() for k in _ORDER]).astype(np.float32)
        ex.layer = "optimizer"
        ex.adam_step("adam", flat, grads, m, v, lr=lr, betas=(0.9, 0.999), eps=1e-8,
                     weight_decay=0.0, step=step, decoupled=False)
        if progress is not None:
            progress(step, epochs, f"loss {loss:.4f}")
    p = unflat(flat)
    ex.layer = "evaluate"
    h = np.maximum(_device_linear(ex, "fc1", x, p["w1"]) + p["b1"], 0).astype(np.float32)
    pred = np.argmax(_device_linear(ex, "fc2", h, p["w2"]) + p["b2"], axis=1)
    dev = metrics(y, pred)
    _, fpred, flosses = train_float64(x, y, params0, epochs, lr)
    ref = metrics(y, fpred)
    summary = ex.summary()
    return {
        "accuracy": dev["accuracy"], "recall": dev["recall"], "f1": dev["f1"],
        "precision": dev["precision"],
        "float_accuracy": ref["accuracy"], "float_recall": ref["recall"], "float_f1": ref["f1"],
        "prediction_agreement": float(np.mean(pred == fpred)),
        "final_loss": losses[-1], "float_final_loss": flosses[-1],
        "epochs": epochs, "lr": lr, "hidden": hidden, "samples": int(x.shape[0]),
        "features": int(x.shape[1]),
        "backend": ex.acc.backend if ex.acc is not None else "cpu", "placement": ex.mode,
        "device_cycles": summary["device_cycles"], "offloaded_macs": summary["offloaded_macs"],
        "adam_steps_on_device": sum(1 for d in ex.ops
                                    if d.kind == "adam" and d.placed == "accelerator"),
    }
