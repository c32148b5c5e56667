"""Float64 references for the workloads' numerics, written from the textbook formulas.

Nothing here imports hetaccel: a reference that called the device path's own
helpers (quantisation, the activation or Adam models, the workload's float code)
would agree with it whatever those helpers got wrong.  Weights are read from the
files with safetensors and every formula is written out again; the tests feed the
same inputs (token ids, data sets, initial weights) to both sides.

Load it like tinybert.py (tests/ is not a package)::

    _spec = importlib.util.spec_from_file_location("refs", Path(__file__).with_name("refs.py"))
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np

# --- activations -----------------------------------------------------------------

_erf = np.vectorize(math.erf, otypes=[np.float64])


def relu(x):
    return np.maximum(np.asarray(x, dtype=np.float64), 0.0)


def sigmoid(x):
    x = np.asarray(x, dtype=np.float64)
    with np.errstate(over="ignore"):
        return 1.0 / (1.0 + np.exp(-x))


def tanh(x):
    return np.tanh(np.asarray(x, dtype=np.float64))


def gelu(x):
    """erf-GELU, x * Phi(x) (Hendrycks & Gimpel; Hugging Face's "gelu")."""
    x = np.asarray(x, dtype=np.float64)
    return 0.5 * x * (1.0 + _erf(x / math.sqrt(2.0)))


ACTIVATIONS = {None: lambda x: np.asarray(x, dtype=np.float64), "none":
               lambda x: np.asarray(x, dtype=np.float64), "relu": relu, "sigmoid": sigmoid,
               "tanh": tanh, "gelu": gelu}

#: max |f'| of each function: how far an input rounding error can move its output.
#: GELU'' = phi(x) (2 - x^2), so GELU's slope peaks at x = sqrt(2): Phi + x phi = 1.129.
SLOPE = {None: 1.0, "none": 1.0, "relu": 1.0, "sigmoid": 0.25, "tanh": 1.0,
         "gelu": 0.5 * (1 + math.erf(1.0)) + math.exp(-1.0) / math.sqrt(math.pi)}


def activation(name, x):
    return ACTIVATIONS[name](x)


def round_half_away(v):
    v = np.asarray(v, dtype=np.float64)
    return np.sign(v) * np.floor(np.abs(v) + 0.5)


# --- BERT ------------------------------------------------------------------------


class BertReference:
    """A post-LayerNorm BERT encoder in float64, read straight from a Hugging Face folder
    (config.json and model.safetensors), with mean pooling over the tokens."""

    def __init__(self, folder):
        from safetensors.numpy import load_file

        folder = Path(folder)
        cfg = json.loads((folder / "config.json").read_text())
        raw = load_file(str(folder / "model.safetensors"))
        prefix = next(p for p in ("", "bert.") if p + "embeddings.word_embeddings.weight" in raw)
        self.w = {k[len(prefix):]: v.astype(np.float64) for k, v in raw.items()
                  if k.startswith(prefix) and v.dtype.kind == "f"}
        self.heads = cfg["num_attention_heads"]
        self.layers = cfg["num_hidden_layers"]
        self.eps = cfg.get("layer_norm_eps", 1e-12)
        assert cfg.get("hidden_act", "gelu") == "gelu"
        pool = folder / "1_Pooling" / "config.json"
        if pool.exists():
            assert json.loads(pool.read_text()).get("pooling_mode_mean_tokens", True)

    def _ln(self, x, name):
        mu = x.mean(axis=-1, keepdims=True)
        var = ((x - mu) ** 2).mean(axis=-1, keepdims=True)
        return ((x - mu) / np.sqrt(var + self.eps) * self.w[name + ".weight"]
                + self.w[name + ".bias"])

    def _dense(self, x, name):
        # torch's Linear: y = x W^T + b, W stored (out, in)
        return x @ self.w[name + ".weight"].T + self.w[name + ".bias"]

    def embed(self, ids):
        ids = np.asarray(ids)
        e = (self.w["embeddings.word_embeddings.weight"][ids]
             + self.w["embeddings.position_embeddings.weight"][np.arange(ids.size)]
             + self.w["embeddings.token_type_embeddings.weight"][0])
        return self._ln(e, "embeddings.LayerNorm")

    def layer(self, i, x):
        p = f"encoder.layer.{i}."
        t, hidden = x.shape
        d = hidden // self.heads
        q = self._dense(x, p + "attention.self.query")
        k = self._dense(x, p + "attention.self.key")
        v = self._dense(x, p + "attention.self.value")
        ctx = np.empty_like(q)
        for h in range(self.heads):
            c = slice(h * d, (h + 1) * d)
            s = q[:, c] @ k[:, c].T / math.sqrt(d)          # (queries, keys)
            e = np.exp(s - s.max(axis=1, keepdims=True))
            ctx[:, c] = (e / e.sum(axis=1, keepdims=True)) @ v[:, c]
        x = self._ln(x + self._dense(ctx, p + "attention.output.dense"),
                     p + "attention.output.LayerNorm")
        inter = gelu(self._dense(x, p + "intermediate.dense"))
        return self._ln(x + self._dense(inter, p + "output.dense"), p + "output.LayerNorm")

    def hidden(self, ids):
        x = self.embed(ids)
        for i in range(self.layers):
            x = self.layer(i, x)
        return x

    def embedding(self, ids):
        return self.hidden(ids).mean(axis=0)


def cosine(a, b) -> float:
    a = np.asarray(a, dtype=np.float64).ravel()
    b = np.asarray(b, dtype=np.float64).ravel()
    return float(a @ b / (np.linalg.norm(a) * np.linalg.norm(b)))


# --- LSTM (torch.nn.LSTM's equations) ------------------------------------------------


def lstm_step(w_ih, w_hh, b_ih, b_hh, x, h, c):
    """One step; weight rows are the gates in torch's order i, f, g, o."""
    hid = w_hh.shape[1]
    z = (np.asarray(x, np.float64) @ np.asarray(w_ih, np.float64).T + b_ih
         + np.asarray(h, np.float64) @ np.asarray(w_hh, np.float64).T + b_hh)
    i = sigmoid(z[:, :hid])
    f = sigmoid(z[:, hid:2 * hid])
    g = tanh(z[:, 2 * hid:3 * hid])
    o = sigmoid(z[:, 3 * hid:])
    c2 = f * c + i * g
    return o * tanh(c2), c2, {"z": z, "i": i, "f": f, "g": g, "o": o}


def lstm(w_ih, w_hh, b_ih, b_hh, xs):
    """A sequence ``xs`` (T x B x I) from zero state: ``(hs, c)``."""
    b_ih = np.asarray(b_ih, np.float64)
    b_hh = np.asarray(b_hh, np.float64)
    h = np.zeros((xs.shape[1], w_hh.shape[1]))
    c = np.zeros_like(h)
    hs = []
    for x in xs:
        h, c, _ = lstm_step(w_ih, w_hh, b_ih, b_hh, x, h, c)
        hs.append(h)
    return np.stack(hs), c


# --- Adam (torch.optim.Adam / AdamW documentation, Kingma & Ba) ------------------------


def adam(p, g, m, v, *, lr, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.0, step=1,
         decoupled=False):
    """One step in float64: ``(p', m', v')``."""
    p, g, m, v = (np.asarray(a, dtype=np.float64) for a in (p, g, m, v))
    b1, b2 = betas
    if weight_decay and not decoupled:
        g = g + weight_decay * p                 # Adam: L2 term in the gradient
    if weight_decay and decoupled:
        p = p - lr * weight_decay * p            # AdamW: decay the parameter itself
    m = b1 * m + (1 - b1) * g
    v = b2 * v + (1 - b2) * g * g
    m_hat = m / (1 - b1 ** step)
    v_hat = v / (1 - b2 ** step)
    return p - lr * m_hat / (np.sqrt(v_hat) + eps), m, v


# --- the seed classifier: 1 hidden ReLU layer, 2 logits, softmax cross-entropy ---------


def classifier_loss_grads(x, y, w1, b1, w2, b2):
    """Mean cross-entropy and its gradients, by the chain rule in float64."""
    x = np.asarray(x, np.float64)
    n = x.shape[0]
    pre = x @ w1 + b1
    h = np.maximum(pre, 0.0)
    logits = h @ w2 + b2
    z = logits - logits.max(axis=1, keepdims=True)
    logp = z - np.log(np.exp(z).sum(axis=1, keepdims=True))
    loss = float(-logp[np.arange(n), y].mean())
    d_logits = np.exp(logp)
    d_logits[np.arange(n), y] -= 1.0
    d_logits /= n
    d_pre = (d_logits @ w2.T) * (pre > 0)
    grads = {"w1": x.T @ d_pre, "b1": d_pre.sum(axis=0), "w2": h.T @ d_logits,
             "b2": d_logits.sum(axis=0)}
    return loss, grads


def classifier_predict(x, w1, b1, w2, b2):
    h = np.maximum(np.asarray(x, np.float64) @ w1 + b1, 0.0)
    return np.argmax(h @ w2 + b2, axis=1)


def train_classifier(x, y, params, epochs, lr, betas=(0.9, 0.999), eps=1e-8):
    """Full-batch Adam in float64 from ``params``: final params, predictions, losses."""
    p = {k: np.asarray(v, np.float64).copy() for k, v in params.items()}
    m = {k: np.zeros_like(v) for k, v in p.items()}
    v = {k: np.zeros_like(a) for k, a in p.items()}
    losses = []
    for t in range(1, epochs + 1):
        loss, g = classifier_loss_grads(x, y, p["w1"], p["b1"], p["w2"], p["b2"])
        losses.append(loss)
        for k in p:
            p[k], m[k], v[k] = adam(p[k], g[k], m[k], v[k], lr=lr, betas=betas, eps=eps,
                                    step=t)
    return p, classifier_predict(x, p["w1"], p["b1"], p["w2"], p["b2"]), losses
