"""A tiny synthetic BERT in the Hugging Face layout, for fast loader/encoder tests."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

WORDS = ["the", "cat", "sat", "on", "mat", "a", "dog", "ran", "hello", "world", "is", "it",
         "##s", "##ing", "play", "guitar", ".", ",", "!", "?", "'", "cafe", "big", "small"]
SPECIAL = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]


def tiny_config(hidden=16, heads=2, layers=2, intermediate=32, max_pos=64) -> dict:
    return {"model_type": "bert", "architectures": ["BertModel"], "hidden_size": hidden,
            "num_attention_heads": heads, "num_hidden_layers": layers,
            "intermediate_size": intermediate, "max_position_embeddings": max_pos,
            "type_vocab_size": 2, "vocab_size": len(SPECIAL) + len(WORDS),
            "layer_norm_eps": 1e-12, "hidden_act": "gelu", "pad_token_id": 0,
            "position_embedding_type": "absolute"}


def tiny_weights(cfg: dict, seed: int = 0, prefix: str = "") -> dict:
    rng = np.random.default_rng(seed)
    H, I = cfg["hidden_size"], cfg["intermediate_size"]

    def r(*shape, s=0.2):
        return (rng.standard_normal(shape) * s).astype(np.float32)

    w = {
        "embeddings.word_embeddings.weight": r(cfg["vocab_size"], H, s=1.0),
        "embeddings.position_embeddings.weight": r(cfg["max_position_embeddings"], H, s=0.3),
        "embeddings.token_type_embeddings.weight": r(cfg["type_vocab_size"], H, s=0.1),
        "embeddings.LayerNorm.weight": 1 + r(H, s=0.1),
        "embeddings.LayerNorm.bias": r(H, s=0.1),
        "embeddings.position_ids": np.arange(cfg["max_position_embeddings"])[None].astype(np.int64),
    }
    for i in range(cfg["num_hidden_layers"]):
        p = f"encoder.layer.{i}."
        for name, shape in (("attention.self.query", (H, H)), ("attention.self.key", (H, H)),
                            ("attention.self.value", (H, H)), ("attention.output.dense", (H, H)),
                            ("intermediate.dense", (I, H)), ("output.dense", (H, I))):
            w[p + name + ".weight"] = r(*shape, s=1.0 / np.sqrt(shape[1]))
            w[p + name + ".bias"] = r(shape[0], s=0.1)
        for name in ("attention.output.LayerNorm", "output.LayerNorm"):
            w[p + name + ".weight"] = 1 + r(H, s=0.1)
            w[p + name + ".bias"] = r(H, s=0.1)
    # make one hidden dimension an outlier, as real BERTs have
    w["embeddings.LayerNorm.weight"][3] = 8.0
    return {prefix + k: v for k, v in w.items()}


def write_tiny_model(directory, *, seed: int = 0, prefix: str = "", vocab: bool = True,
                     tokenizer_json: bool = False, **cfg_kw) -> Path:
    from safetensors.numpy import save_file

    d = Path(directory)
    d.mkdir(parents=True, exist_ok=True)
    cfg = tiny_config(**cfg_kw)
    (d / "config.json").write_text(json.dumps(cfg))
    save_file(tiny_weights(cfg, seed, prefix), str(d / "model.safetensors"))
    if vocab:
        (d / "vocab.txt").write_text("\n".join(SPECIAL + WORDS) + "\n")
    if tokenizer_json:
        from tokenizers import BertWordPieceTokenizer

        tok = BertWordPieceTokenizer(str(d / "vocab.txt"), lowercase=True)
        tok.save(str(d / "tokenizer.json"))
    return d
