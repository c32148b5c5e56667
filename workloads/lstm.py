"""An LSTM cell (the seed's §3.1) with its gates on the accelerator.

Per time step::

    z = x W_ih^T + h W_hh^T + b            (device: exact int8 matmuls, hi/lo split inputs)
    i, f, o = sigmoid(z_i), sigmoid(z_f), sigmoid(z_o)   (device: activation unit, 16-bit)
    g = tanh(z_g)                                          (device: activation unit, 16-bit)
    c' = f * c + i * g                     (CPU)
    h' = o * tanh(c')                      (device tanh, CPU product)

The activation unit's 16-bit path takes Q4.12 inputs (pre-activations saturate at
+-8, where sigmoid is within 3.4e-4 of its limit) and returns Q1.14, so the gates
carry ~6e-5 resolution.  :func:`lstm_reference` is the float64 cell.
"""

from __future__ import annotations

import numpy as np

from . import quantize as Q
from .placement import Executor

__all__ = ["LSTMCell", "lstm_reference", "run_lstm"]

_Q412 = 1 << 12
_Q114 = 1 << 14


class LSTMCell:
    """Weights in torch's layout: ``w_ih`` (4H x I), ``w_hh`` (4H x H), gates i, f, g, o."""

    def __init__(self, w_ih, w_hh, b_ih=None, b_hh=None):
        w_ih = np.asarray(w_ih, dtype=np.float32)
        w_hh = np.asarray(w_hh, dtype=np.float32)
        if w_ih.ndim != 2 or w_hh.ndim != 2 or w_ih.shape[0] % 4 or w_hh.shape[0] != w_ih.shape[0] \
                or w_hh.shape[1] * 4 != w_hh.shape[0]:
            raise ValueError(f"w_ih must be (4H, I) and w_hh (4H, H), got {w_ih.shape} and "
                             f"{w_hh.shape}")
        self.hidden = w_hh.shape[1]
        self.inputs = w_ih.shape[1]
        n = 4 * self.hidden
        b = np.zeros(n, np.float32)
        for name, bb in (("b_ih", b_ih), ("b_hh", b_hh)):
            if bb is not None:
                bb = np.asarray(bb, dtype=np.float32)
                if bb.shape != (n,):
                    raise ValueError(f"{name} must have shape ({n},), got {bb.shape}")
                b = b + bb
        self.w_ih, self.w_hh, self.bias = w_ih, w_hh, b
        # one weight for [x, h]: a single matmul per step
        wq = Q.quantize_weight(np.concatenate([w_ih, w_hh], axis=1))
        self._w = np.ascontiguousarray(wq.values.T)
        self._w_scale = wq.scale.ravel()

    @classmethod
    def random(cls, inputs: int, hidden: int, seed: int = 0) -> "LSTMCell":
        rng = np.random.default_rng(seed)
        k = 1.0 / np.sqrt(hidden)          # torch's default uniform(-k, k)
        u = lambda *s: rng.uniform(-k, k, s).astype(np.float32)  # noqa: E731
        return cls(u(4 * hidden, inputs), u(4 * hidden, hidden), u(4 * hidden), u(4 * hidden))

    def _act(self, ex: Executor, fn: str, v: np.ndarray) -> np.ndarray:
        codes = np.clip(np.rint(v.astype(np.float64) * _Q412), -(1 << 15), (1 << 15) - 1)
        out = ex.activation_fixed16(fn, fn, codes.astype(np.int64))
        return out.astype(np.float64) / _Q114

    def step(self, ex: Executor, x: np.ndarray, h: np.ndarray, c: np.ndarray):
        """One step for a batch: ``x`` (B x I), ``h``, ``c`` (B x H) -> ``(h', c')``."""
        xh = np.concatenate([x, h], axis=1).astype(np.float32)
        s = Q.split_rows(xh)
        acc = Q.combine_split([ex.matmul("gates", s.hi, self._w), ex.matmul("gates", s.lo, self._w)])
        z = Q.dequantize_product(acc, s.scale, self._w_scale) + self.bias
        H = self.hidden
        i = self._act(ex, "sigmoid", z[:, :H])
        f = self._act(ex, "sigmoid", z[:, H:2 * H])
        g = self._act(ex, "tanh", z[:, 2 * H:3 * H])
        o = self._act(ex, "sigmoid", z[:, 3 * H:])
        c2 = f * c + i * g
        h2 = o * self._act(ex, "tanh", c2)
        return h2.astype(np.float32), c2.astype(np.float32)

    def run(self, ex: Executor, xs: np.ndarray):
        """A sequence ``xs`` (T x B x I) from zero state; returns ``(hs, c)``."""
        xs = np.asarray(xs, dtype=np.float32)
        if xs.ndim != 3 or xs.shape[2] != self.inputs:
            raise ValueError(f"xs must be (T, B, {self.inputs}), got {xs.shape}")
        h = np.zeros((xs.shape[1], self.hidden), np.float32)
        c = np.zeros_like(h)
        hs = []
        for t in range(xs.shape[0]):
            ex.layer = f"t{t}"
            h, c = self.step(ex, xs[t], h, c)
            hs.append(h)
        return np.stack(hs), c


def lstm_reference(cell: LSTMCell, xs: np.ndarray):
    """float64 LSTM over ``xs`` (T x B x I) from zero state."""
    sig = lambda v: 1.0 / (1.0 + np.exp(-v))  # noqa: E731
    H = cell.hidden
    w = np.concatenate([cell.w_ih, cell.w_hh], axis=1).astype(np.float64)
    h = np.zeros((xs.shape[1], H))
    c = np.zeros_like(h)
    hs = []
    for t in range(xs.shape[0]):
        z = np.concatenate([xs[t], h], axis=1) @ w.T + cell.bias
        i, f, g, o = sig(z[:, :H]), sig(z[:, H:2 * H]), np.tanh(z[:, 2 * H:3 * H]), sig(z[:, 3 * H:])
        c = f * c + i * g
        h = o * np.tanh(c)
        hs.append(h)
    return np.stack(hs), c


def run_lstm(ex: Executor, *, inputs: int = 16, hidden: int = 32, batch: int = 4,
             steps: int = 8, seed: int = 0) -> dict:
    """The cell on the executor vs float64: max/mean absolute error of h and c."""
    for name, v in (("inputs", inputs), ("hidden", hidden), ("batch", batch), ("steps", steps)):
        if isinstance(v, bool) or not isinstance(v, int) or v < 1:
            raise ValueError(f"{name} must be a positive integer, got {v!r}")
    cell = LSTMCell.random(inputs, hidden, seed)
    xs = np.random.default_rng(seed + 7).standard_normal((steps, batch, inputs)).astype(np.float32)
    hs, c = cell.run(ex, xs)
    rhs, rc = lstm_reference(cell, xs)
    err_h = np.abs(hs - rhs)
    err_c = np.abs(c - rc)
    s = ex.summary()
    return {"inputs": inputs, "hidden": hidden, "batch": batch, "steps": steps,
            "max_abs_error_h": float(err_h.max()), "mean_abs_error_h": float(err_h.mean()),
            "max_abs_error_c": float(err_c.max()),
            "backend": ex.acc.backend if ex.acc is not None else "cpu", "placement": ex.mode,
            "device_cycles": s["device_cycles"], "offloaded_macs": s["offloaded_macs"],
            "activation_passes_on_device": sum(1 for d in ex.ops if d.kind == "activation"
                                               and d.placed == "accelerator")}
