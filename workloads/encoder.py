"""The quantized BERT encoder: matmuls on the accelerator, the rest on the CPU.

Per layer, for a sentence of ``T`` tokens (hidden ``H``, ``nh`` heads of ``d``):

=====================  ==============================  ================================
op                     where                           numerics (docs/quantization.md)
=====================  ==============================  ================================
QKV (fused), attn-out  accelerator (:class:`Executor`)  x split hi/lo per token, W int8
FFN up                 accelerator                      x split hi/lo per token, W int8
FFN down               accelerator                      x split hi/lo, W split hi/lo
Q·Kᵀ per head          accelerator                      Q, K int8 per token
P·V per head           accelerator                      P split hi/lo per row, V int8
                                                        per channel
GELU                   accelerator (activation unit)    16-bit fixed point (Q4.12)
embeddings, softmax,   CPU                              float32
layer norm, pooling
=====================  ==============================  ================================

Every matmul is exact (int8 x int8 -> int32); scales are applied on the host.  With
``placement="cpu"`` the same integer ops run in NumPy (and GELU through
:func:`hetaccel.sim.activation_model.apply`), giving bit-identical embeddings.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Sequence

import numpy as np

from . import quantize as Q
from .bert import BertModel, cosine, layer_norm, softmax
from .placement import Executor

__all__ = ["QuantScheme", "QuantizedEncoder", "Q412", "DEFAULT_SENTENCES", "read_sentences",
           "run_encoder"]

#: The shipped sentence set (short, long up to 256 tokens, punctuation, non-ASCII).
DEFAULT_SENTENCES = Path(__file__).resolve().parent.parent / "data" / "sentences.txt"

#: One Q4.12 unit: the fixed-point input/output format of the activation unit's
#: 16-bit path (spec.ACTIVATION_FORMAT.fixed_in_frac).
Q412 = 1 << 12
_Q412_MIN = -(1 << 15)


@dataclass(frozen=True)
class QuantScheme:
    """Which operands take the two-part (16-bit) path.

    Parameters
    ----------
    split_linear_inputs : bool
        Token activations entering a Linear are split into hi/lo int8 parts.
    split_weights : tuple of str
        Linears (``"q", "k", "v", "o", "up", "down"``) whose weights are split too
        (three int8 matmuls: hi·hi, hi·lo, lo·hi; lo·lo is below 2**-16).
    split_pv : bool
        Attention probabilities are split into hi/lo parts for P·V.
    split_qk : bool
        Queries are split for Q·Kᵀ (not needed on MiniLM; measured).
    """

    split_linear_inputs: bool = True
    split_weights: tuple = ("down",)
    split_pv: bool = True
    split_qk: bool = False

    def __post_init__(self):
        bad = set(self.split_weights) - {"q", "k", "v", "o", "up", "down"}
        if bad:
            raise ValueError(f"split_weights names unknown linears {sorted(bad)}; "
                             f"known: q, k, v, o, up, down")

    @classmethod
    def naive(cls) -> "QuantScheme":
        """Per-token int8 everywhere, no 16-bit parts (a baseline)."""
        return cls(False, (), False, False)

    def as_dict(self) -> dict:
        return {"split_linear_inputs": self.split_linear_inputs,
                "split_weights": list(self.split_weights), "split_pv": self.split_pv,
                "split_qk": self.split_qk}


@dataclass
class _Weight:
    parts: list            # [(int8 K x N, factor)]
    scale: np.ndarray      # (N,) float64
    bias: np.ndarray       # (N,) float32


def _prep_weight(w: np.ndarray, b: np.ndarray, split: bool) -> _Weight:
    if split:
        s = Q.split_weight(w)
        parts = [(np.ascontiguousarray(s.hi.T), 256), (np.ascontiguousarray(s.lo.T), 1)]
    else:
        s = Q.quantize_weight(w)
        parts = [(np.ascontiguousarray(s.values.T), 1)]
    return _Weight(parts, s.scale.ravel(), b.astype(np.float32))


class QuantizedEncoder:
    """Sentence encoder whose matmuls and GELU go through an :class:`Executor`."""

    def __init__(self, model: BertModel, executor: Executor,
                 scheme: QuantScheme | None = None):
        if not isinstance(model, BertModel):
            raise TypeError(f"model must be a BertModel, not {type(model).__name__}")
        if not isinstance(executor, Executor):
            raise TypeError(f"executor must be an Executor, not {type(executor).__name__}")
        self.model = model
        self.ex = executor
        self.scheme = scheme or QuantScheme()
        if model.config.hidden_act not in ("gelu",):
            raise ValueError(f"the device path implements erf-GELU; the model uses "
                             f"{model.config.hidden_act!r}")
        k_max = max(model.config.hidden_size, model.config.intermediate_size,
                    model.max_seq_length)
        if k_max > executor.config.max_k:
            raise ValueError(f"the model needs reductions of {k_max} but the accelerator's "
                             f"max_k is {executor.config.max_k}")
        self.weights = []
        sw = self.scheme.split_weights
        # Q, K and V read the same activations: one matmul against the three weights
        # side by side (per-channel scales make this identical to three products)
        self.fuse_qkv = ("q" in sw) == ("k" in sw) == ("v" in sw)
        for p in model.layers:
            w = {name: _prep_weight(p[f"{name}.weight"], p[f"{name}.bias"], name in sw)
                 for name in ("q", "k", "v", "o", "up", "down")}
            if self.fuse_qkv:
                w["qkv"] = _prep_weight(
                    np.concatenate([p["q.weight"], p["k.weight"], p["v.weight"]]),
                    np.concatenate([p["q.bias"], p["k.bias"], p["v.bias"]]), "q" in sw)
            self.weights.append(w)
        # The Linears' weights are the same on every run: a device with device
        # memory keeps them there, uploaded once here
        used = (("qkv",) if self.fuse_qkv else ("q", "k", "v")) + ("o", "up", "down")
        for i, w in enumerate(self.weights):
            for name in used:
                for j, (wb, _) in enumerate(w[name].parts):
                    executor.keep_resident(f"layer{i}.{name}[{j}]", wb)

    # --- building blocks --------------------------------------------------------

    def _act_parts(self, x: np.ndarray, split: bool):
        if split:
            s = Q.split_rows(x)
            return [(s.hi, 256), (s.lo, 1)], s.scale
        s = Q.quantize_rows(x)
        return [(s.values, 1)], s.scale

    def _product(self, name: str, x_parts, w_parts) -> np.ndarray:
        """``sum_ij fa_i * fb_j * (x_i @ w_j)`` exactly, in int64.

        The activation parts that meet one weight part are stacked into one matmul
        so each weight crosses the link once per part (hi and lo rows share it).
        """
        both_split = len(x_parts) > 1 and len(w_parts) > 1
        m = x_parts[0][0].shape[0]
        acc = None
        for wb, fb in w_parts:
            use = [(xa, fa) for xa, fa in x_parts if not (both_split and fa == 1 and fb == 1)]
            # lo x lo is skipped: it is below 2**-16 of the result
            stacked = use[0][0] if len(use) == 1 else np.concatenate([xa for xa, _ in use])
            res = self.ex.matmul(name, stacked, wb)
            for i, (_, fa) in enumerate(use):
                part = res[i * m:(i + 1) * m]
                f = fa * fb
                term = part * f if f != 1 else part
                if acc is None:
                    acc, owned = term, f != 1
                elif owned:
                    acc += term
                else:
                    acc, owned = acc + term, True
        return acc

    def linear(self, name: str, x: np.ndarray, w: _Weight) -> np.ndarray:
        parts, row_scale = self._act_parts(x, self.scheme.split_linear_inputs)
        acc = self._product(name, parts, w.parts)
        return Q.dequantize_product(acc, row_scale, w.scale) + w.bias

    def gelu(self, y: np.ndarray) -> np.ndarray:
        """erf-GELU on the activation unit's 16-bit path.

        The unit sees Q4.12 inputs (|v| < 8).  GELU(y) = relu(y) + GELU(-|y|), and
        GELU(-|y|) is what the device evaluates: its argument is never positive,
        saturating it at -8 changes GELU by < 1e-14, so pre-activations of any
        magnitude are exact to the unit's precision.
        """
        v = y.astype(np.float64)
        np.abs(v, out=v)
        v *= -Q412
        np.rint(v, out=v)
        np.clip(v, _Q412_MIN, 0, out=v)
        g = self.ex.activation_fixed16("gelu", "gelu", v.astype(np.int64))
        out = g.astype(np.float64)
        out /= Q412
        out += np.maximum(y, 0)
        return out.astype(np.float32)

    def attention(self, x_q, x_k, x_v, segments) -> np.ndarray:
        """Self-attention of each sentence (``segments``: its rows) separately.

        Every scale is per token and head (per row of a head's slice) or per
        head channel, so each sentence's heads are quantized together, their
        scores taken head by head and their softmax and probabilities' split
        done together before the heads' P·V products.
        """
        cfg = self.model.config
        nh, d = cfg.num_attention_heads, cfg.head_dim
        ctx = np.empty((x_q.shape[0], nh * d), dtype=np.float32)
        inv = 1.0 / math.sqrt(d)
        for r0, r1 in segments:
            t = r1 - r0
            # rows (token, head) of d channels: each head's per-token quantization
            qp, qs = self._act_parts(x_q[r0:r1].reshape(t * nh, d), self.scheme.split_qk)
            qp = [(xa.reshape(t, nh, d), fa) for xa, fa in qp]
            kq = Q.quantize_rows(x_k[r0:r1].reshape(t * nh, d))
            kv = kq.values.reshape(t, nh, d)
            acc = np.stack([self._product(f"attn_qk[{h}]", [(xa[:, h], fa) for xa, fa in qp],
                                          [(np.ascontiguousarray(kv[:, h].T), 1)])
                            for h in range(nh)])                          # (nh, t, t)
            scores = Q.dequantize_product(acc, qs.reshape(t, nh).T[:, :, None] * inv,
                                          kq.scale.reshape(t, nh).T[:, None, :])
            pp, ps = self._act_parts(softmax(scores).reshape(nh * t, t), self.scheme.split_pv)
            pp = [(xa.reshape(nh, t, t), fa) for xa, fa in pp]
            ps = ps.reshape(nh, t, 1)
            vq = Q.quantize_weight(x_v[r0:r1].T)            # per head channel = output column
            for h in range(nh):
                sl = slice(h * d, (h + 1) * d)
                acc = self._product(f"attn_pv[{h}]", [(xa[h], fa) for xa, fa in pp],
                                    [(np.ascontiguousarray(vq.values[sl].T), 1)])
                ctx[r0:r1, sl] = Q.dequantize_product(acc, ps[h], vq.scale[sl].ravel())
        return ctx

    def layer(self, i: int, x: np.ndarray, segments=None) -> np.ndarray:
        """Layer ``i`` on the rows of one or more sentences (``segments``: the
        ``(start, end)`` rows of each; default: all rows are one sentence).
        Linears are per token, so sentences share their weight transfers."""
        if segments is None:
            segments = [(0, x.shape[0])]
        cfg = self.model.config
        p = self.model.layers[i]
        w = self.weights[i]
        self.ex.layer = f"layer{i}"
        if self.fuse_qkv:
            h = cfg.hidden_size
            qkv = self.linear("qkv", x, w["qkv"])
            q, k, v = qkv[:, :h], qkv[:, h:2 * h], qkv[:, 2 * h:]
        else:
            q = self.linear("q", x, w["q"])
            k = self.linear("k", x, w["k"])
            v = self.linear("v", x, w["v"])
        ctx = self.attention(q, k, v, segments)
        attn = self.linear("o", ctx, w["o"])
        x = layer_norm(x + attn, p["ln1.weight"], p["ln1.bias"], cfg.layer_norm_eps)
        inter = self.gelu(self.linear("up", x, w["up"]))
        out = self.linear("down", inter, w["down"])
        return layer_norm(x + out, p["ln2.weight"], p["ln2.bias"], cfg.layer_norm_eps)

    # --- whole model --------------------------------------------------------------

    def forward(self, ids: np.ndarray, layers: int | None = None) -> np.ndarray:
        """Last hidden state (tokens x hidden) of one tokenised sentence.

        ``layers`` limits the run to the first layers (for cross-checks).
        """
        return self.forward_batch([ids], layers)[0]

    def forward_batch(self, batch: Sequence[np.ndarray], layers: int | None = None,
                      on_layer: Callable[[int], None] | None = None) -> list:
        """Hidden states of several sentences run together (bit-identical to one by
        one: every scale is per token and every matmul exact).  ``on_layer(i)`` is
        called after layer ``i``."""
        if not batch:
            return []
        self.ex.layer = "embeddings"
        xs = [self.model.embed(ids) for ids in batch]
        bounds = np.cumsum([0] + [len(e) for e in xs])
        segments = [(int(a), int(b)) for a, b in zip(bounds[:-1], bounds[1:])]
        x = np.concatenate(xs)
        n = len(self.model.layers) if layers is None else layers
        if not 0 <= n <= len(self.model.layers):
            raise ValueError(f"layers must be in [0, {len(self.model.layers)}], got {layers}")
        for i in range(n):
            x = self.layer(i, x, segments)
            if on_layer is not None:
                on_layer(i)
        self.ex.layer = ""
        return [x[a:b] for a, b in segments]

    def encode(self, sentences: Sequence[str], batch_tokens: int = 256,
               progress: Callable[[int, int, str], None] | None = None) -> np.ndarray:
        """Mean-pooled embeddings; sentences are grouped into batches of up to
        ``batch_tokens`` tokens so weights cross the link once per batch."""
        if not isinstance(batch_tokens, int) or batch_tokens < 1:
            raise ValueError(f"batch_tokens must be a positive integer, got {batch_tokens!r}")
        toks = [self.model.tokenize(s).ids for s in sentences]
        out: list = [None] * len(toks)
        n_layers = len(self.model.layers)
        # progress in token-layers: long sentences weigh what they cost
        total = sum(len(t) for t in toks) * n_layers
        done = 0
        i = 0
        while i < len(toks):
            j, size = i, 0
            while j < len(toks) and (j == i or size + len(toks[j]) <= batch_tokens):
                size += len(toks[j])
                j += 1
            note = f"sentences {i + 1}-{j} of {len(toks)}"

            def tick(layer, base=done, size=size, note=note):
                if progress is not None:
                    progress(base + size * (layer + 1), total, note)

            if progress is not None:
                progress(done, total, note)
            hidden = self.forward_batch(toks[i:j], on_layer=tick)
            for k, hdn in zip(range(i, j), hidden):
                out[k] = self.model.pool(hdn)
            done += size * n_layers
            i = j
        return np.stack(out) if out else np.zeros((0, self.model.config.hidden_size), np.float32)


def read_sentences(path) -> list[str]:
    """The non-empty lines of a text file, one sentence each."""
    p = Path(path)
    if not p.is_file():
        raise FileNotFoundError(f"sentence file {p} does not exist")
    lines = [s.strip() for s in p.read_text(encoding="utf-8").splitlines()]
    sentences = [s for s in lines if s]
    if not sentences:
        raise ValueError(f"sentence file {p} has no non-empty line")
    return sentences


def run_encoder(model: BertModel, sentences, executor: Executor, *, scheme=None,
                batch_tokens=256, progress=None, boards=None) -> tuple[dict, np.ndarray]:
    """Quantized embeddings vs the float32 reference, with placement figures.

    Both runs are timed here, on the same sentences (tokenisation included in
    each): ``wall_s`` is the quantized run on the executor's ``backend``,
    ``float_reference_wall_s`` the NumPy float32 forward, and
    ``wall_over_float_reference`` their ratio.
    """
    enc = QuantizedEncoder(model, executor, scheme)
    t0 = time.perf_counter()
    emb = enc.encode(sentences, batch_tokens=batch_tokens, progress=progress)
    wall = time.perf_counter() - t0
    t1 = time.perf_counter()
    ref = model.encode_float(sentences)
    ref_s = time.perf_counter() - t1
    backend = executor.acc.backend if executor.acc is not None else "cpu"
    cos = [cosine(a, b) for a, b in zip(emb, ref)]
    op_wall = sum(d.wall_s for d in executor.ops)
    # the CPU work of the quantized run outside the offloaded ops (embeddings,
    # softmax, layer norm, quantization, pooling): measured, added to every board
    host_s = max(0.0, wall - op_wall)
    summary = executor.summary(boards, host_s=host_s)
    per = [{"text": s, "tokens": int(len(model.tokenize(s).ids)), "cosine": c}
           for s, c in zip(sentences, cos)]
    result = {
        "model": model.name,
        "backend": backend,
        "placement": executor.mode,
        "scheme": enc.scheme.as_dict(),
        "sentences": per,
        "n_sentences": len(sentences),
        "link_bytes_per_sentence": summary["link_bytes"] / max(1, len(sentences)),
        "min_cosine": float(min(cos)),
        "mean_cosine": float(np.mean(cos)),
        **summary,
        "wall_s": wall,
        "float_reference_wall_s": ref_s,
        "wall_over_float_reference": wall / ref_s if ref_s > 0 else float("inf"),
        "placement_table": executor.placement_table(),
    }
    return result, emb
