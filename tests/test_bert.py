"""BERT loader (HF layout, error paths), float reference, quantized encoder."""

import importlib.util
import json
import math
from pathlib import Path

import numpy as np
import pytest

from hetaccel.workloads.bert import BertConfig, BertModel, cosine, packaged_model_dir
from hetaccel.workloads.encoder import (DEFAULT_SENTENCES, QuantizedEncoder, QuantScheme,
                                       read_sentences)
from hetaccel.workloads.placement import Executor

_spec = importlib.util.spec_from_file_location("tinybert", Path(__file__).with_name("tinybert.py"))
tinybert = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(tinybert)
_spec = importlib.util.spec_from_file_location("refs", Path(__file__).with_name("refs.py"))
refs = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(refs)

SENTENCES = ["The cat sat on the mat.", "Hello world!", "a dog ran", "is it big?",
             "the small cafe's guitar playing, the big dog's mat."]


@pytest.fixture(scope="module")
def tiny_dir(tmp_path_factory):
    return tinybert.write_tiny_model(tmp_path_factory.mktemp("tiny"))


@pytest.fixture(scope="module")
def tiny(tiny_dir):
    return BertModel.load(tiny_dir)


def _reference_embeddings(model: BertModel, folder, sentences) -> np.ndarray:
    """Float64 embeddings from tests/refs.py, which reads the weights itself and shares
    no code with the encoder (or with BertModel's float path); only the token ids are
    common input."""
    ref = refs.BertReference(folder)
    return np.stack([ref.embedding(model.tokenize(s).ids) for s in sentences])


#: Fidelity floor of the quantized encoder against the float reference, as cosine of the
#: mean-pooled embeddings.  docs/quantization.md measures the shipped scheme (16-bit split
#: activations and P, int8 weights with FFN-down split, GELU within 2 Q4.12 LSB) at a
#: minimum of 0.99897 over MiniLM and the shipped sentences; per-token int8 without the
#: splits measures 0.974, so 0.995 separates a sound scheme from a lossy one.
MIN_COSINE = 0.995


# --- an independent float reference, written the slow obvious way ---------------


def _naive_forward(model: BertModel, ids):
    cfg = model.config
    e = model.embeddings

    def ln(v, w, b):
        mu = sum(v) / len(v)
        var = sum((t - mu) ** 2 for t in v) / len(v)
        return [(t - mu) / math.sqrt(var + cfg.layer_norm_eps) * float(w[i]) + float(b[i])
                for i, t in enumerate(v)]

    def lin(v, w, b):
        return [sum(float(w[o, i]) * v[i] for i in range(len(v))) + float(b[o])
                for o in range(w.shape[0])]

    xs = [ln([float(e["word"][t, j] + e["position"][p, j] + e["token_type"][0, j])
              for j in range(cfg.hidden_size)], e["ln.weight"], e["ln.bias"])
          for p, t in enumerate(ids)]
    d = cfg.head_dim
    for p in model.layers:
        q = [lin(x, p["q.weight"], p["q.bias"]) for x in xs]
        k = [lin(x, p["k.weight"], p["k.bias"]) for x in xs]
        v = [lin(x, p["v.weight"], p["v.bias"]) for x in xs]
        ctx = [[0.0] * cfg.hidden_size for _ in xs]
        for h in range(cfg.num_attention_heads):
            sl = range(h * d, (h + 1) * d)
            for i in range(len(xs)):
                s = [sum(q[i][c] * k[j][c] for c in sl) / math.sqrt(d) for j in range(len(xs))]
                mx = max(s)
                ex = [math.exp(t - mx) for t in s]
                z = sum(ex)
                for c in sl:
                    ctx[i][c] = sum(ex[j] / z * v[j][c] for j in range(len(xs)))
        a = [lin(c, p["o.weight"], p["o.bias"]) for c in ctx]
        xs = [ln([x[j] + ai[j] for j in range(len(x))], p["ln1.weight"], p["ln1.bias"])
              for x, ai in zip(xs, a)]
        inter = [[0.5 * t * (1 + math.erf(t / math.sqrt(2))) for t in lin(x, p["up.weight"],
                                                                            p["up.bias"])]
                 for x in xs]
        o = [lin(t, p["down.weight"], p["down.bias"]) for t in inter]
        xs = [ln([x[j] + oi[j] for j in range(len(x))], p["ln2.weight"], p["ln2.bias"])
              for x, oi in zip(xs, o)]
    return np.array(xs)


def test_float_reference_matches_naive_implementation(tiny):
    ids = tiny.tokenize("the cat sat on the mat.").ids
    got = tiny.forward_float(ids)
    want = _naive_forward(tiny, ids)
    np.testing.assert_allclose(got, want, atol=2e-5)


def test_tokenizer_vocab_txt_and_tokenizer_json_agree(tmp_path, tiny):
    d = tinybert.write_tiny_model(tmp_path / "tj", tokenizer_json=True)
    m = BertModel.load(d)
    for s in SENTENCES:
        a, b = m.tokenize(s), tiny.tokenize(s)
        assert a.tokens == b.tokens
        assert a.tokens[0] == "[CLS]" and a.tokens[-1] == "[SEP]"


def test_truncation_keeps_sep(tiny):
    tiny2 = BertModel(tiny.config, tiny.embeddings, tiny.layers, tiny.tokenizer,
                      max_seq_length=6)
    t = tiny2.tokenize("the cat sat on the mat and the dog ran on it")
    assert len(t.ids) == 6 and t.truncated and t.tokens[-1] == "[SEP]"


def test_bert_prefix_is_accepted(tmp_path, tiny):
    m = BertModel.load(tinybert.write_tiny_model(tmp_path / "p", prefix="bert."))
    ids = m.tokenize(SENTENCES[0]).ids
    np.testing.assert_array_equal(m.forward_float(ids), tiny.forward_float(ids))


@pytest.mark.parametrize("shape", [dict(hidden=24, heads=3, layers=1, intermediate=40),
                                   dict(hidden=8, heads=1, layers=3, intermediate=8)])
def test_any_shape_quantized_close_to_float(tmp_path, shape):
    m = BertModel.load(tinybert.write_tiny_model(tmp_path / "s", **shape))
    enc = QuantizedEncoder(m, Executor(None, "cpu"))
    emb = enc.encode(SENTENCES)
    ref = _reference_embeddings(m, tmp_path / "s", SENTENCES)
    assert emb.shape == (len(SENTENCES), shape["hidden"])
    assert min(cosine(a, b) for a, b in zip(emb, ref)) > MIN_COSINE


def test_longest_sequence(tmp_path):
    d = tinybert.write_tiny_model(tmp_path / "l", max_pos=40)
    m = BertModel.load(d)
    text = " ".join(["the cat sat on the mat"] * 20)
    t = m.tokenize(text)
    assert len(t.ids) == 40
    enc = QuantizedEncoder(m, Executor(None, "cpu"))
    assert cosine(enc.encode([text])[0], _reference_embeddings(m, d, [text])[0]) > 0.999


def test_split_scheme_beats_naive_with_outliers(tiny, tiny_dir):
    """A token row with one outlier dimension (as BERT LayerNorm outputs have): the
    hi/lo split keeps the small entries that per-token int8 rounds away."""
    rng = np.random.default_rng(3)
    x = rng.standard_normal((6, 16)).astype(np.float32)
    x[:, 3] = 60.0
    split = QuantizedEncoder(tiny, Executor(None, "cpu"))
    naive = QuantizedEncoder(tiny, Executor(None, "cpu"), QuantScheme.naive())
    y_split = split.linear("q", x, split.weights[0]["q"])
    y_naive = naive.linear("q", x, naive.weights[0]["q"])
    wq = split.weights[0]["q"]          # the error of the activations alone
    ref = x.astype(np.float64) @ (wq.parts[0][0] * wq.scale[None, :]) + wq.bias
    e_split = np.abs(y_split - ref).max()
    e_naive = np.abs(y_naive - ref).max()
    assert e_split < e_naive / 4

    # Against the float weights read from the file: docs/quantization.md's rounding
    # bounds, per element, |dW[n,k]| <= max|W[n,:]| / 254 (int8 per output channel) and
    # |dx[m,k]| <= max|x[m,:]| / (2 qmax) per token (qmax 32639 split, 127 naive), give
    # |dy[m,n]| <= sum_k |x| |dW| + (|W| + |dW|) |dx|; float32 results add 2**-23.
    f = refs.BertReference(tiny_dir).w
    w = f["encoder.layer.0.attention.self.query.weight"]
    b = f["encoder.layer.0.attention.self.query.bias"]
    xf = x.astype(np.float64)
    exact = xf @ w.T + b
    dw = np.abs(w).max(axis=1) / 254
    for y, qmax in ((y_split, 32639), (y_naive, 127)):
        dx = np.abs(xf).max(axis=1, keepdims=True) / (2 * qmax)
        bound = (np.abs(xf) @ np.broadcast_to(dw[:, None], w.shape).T
                 + dx * (np.abs(w) + dw[:, None]).sum(axis=1))
        bound += 2.0 ** -23 * (np.abs(exact) + bound + np.abs(b))
        assert np.all(np.abs(y - exact) <= bound), (qmax, np.max(np.abs(y - exact) / bound))


def test_encoder_gelu_at_any_magnitude(tiny):
    """The encoder's GELU (the activation unit's 16-bit path on -|y|, plus relu(y) on
    the host) against erf-GELU, element by element: docs/numerics.md gives <= 2 Q4.12
    LSB for the unit; -|y| rounds to Q4.12 (2**-13) where |GELU'| <= 1/2, and
    saturating it at -8 changes GELU by < 1e-14 (docs/quantization.md)."""
    y = np.concatenate([np.linspace(-30, 30, 6001), [-8.0, -7.9999, 8.0, 1e-5, -1e-5, 0.0]])
    y = y.astype(np.float32)
    got = QuantizedEncoder(tiny, Executor(None, "cpu")).gelu(y)
    want = refs.gelu(y)
    bound = 0.5 * 2.0 ** -13 + 2 * 2.0 ** -12 + 1e-14 + 2.0 ** -23 * np.abs(want)
    assert np.all(np.abs(got - want) <= bound), float(np.max(np.abs(got - want) / bound))


def test_batching_is_bit_identical(tiny):
    enc = QuantizedEncoder(tiny, Executor(None, "cpu"))
    np.testing.assert_array_equal(enc.encode(SENTENCES, batch_tokens=1),
                                  enc.encode(SENTENCES, batch_tokens=1000))


def test_ops_placed_on_device_and_bit_identical_to_cpu_path(tiny):
    """Every Linear, Q.K^T, P.V and GELU goes to the device; results equal the CPU path."""
    from hetaccel.host import Accelerator

    cpu = QuantizedEncoder(tiny, Executor(None, "cpu")).encode(SENTENCES[:2])
    with Accelerator.open("emu") as acc:
        ex = Executor(acc, "accelerator")
        dev = QuantizedEncoder(tiny, ex).encode(SENTENCES[:2])
    np.testing.assert_array_equal(dev, cpu)
    names = {d.name.split("[")[0] for d in ex.ops}
    assert names == {"qkv", "o", "up", "down", "attn_qk", "attn_pv", "gelu"}
    assert all(d.placed == "accelerator" for d in ex.ops)
    assert all(d.device_cycles > 0 for d in ex.ops)
    assert len(acc.profile.ops) == len(ex.ops)   # nothing ran anywhere else


# --- error paths -------------------------------------------------------------------


def _broken(tmp_path, name):
    return tinybert.write_tiny_model(tmp_path / name)


def test_missing_folder(tmp_path):
    with pytest.raises(FileNotFoundError, match="does not exist"):
        BertModel.load(tmp_path / "nope")


def test_path_is_a_file(tmp_path):
    f = tmp_path / "x.txt"
    f.write_text("hi")
    with pytest.raises(FileNotFoundError, match="not a folder"):
        BertModel.load(f)


@pytest.mark.parametrize("missing, match", [("config.json", "config.json is missing"),
                                            ("model.safetensors", "model.safetensors is missing"),
                                            ("vocab.txt", "neither tokenizer.json nor vocab.txt")])
def test_missing_files(tmp_path, missing, match):
    d = _broken(tmp_path, "m")
    (d / missing).unlink()
    with pytest.raises(FileNotFoundError, match=match):
        BertModel.load(d)


def test_bad_json(tmp_path):
    d = _broken(tmp_path, "j")
    (d / "config.json").write_text("{not json")
    with pytest.raises(ValueError, match="not valid JSON"):
        BertModel.load(d)


@pytest.mark.parametrize("change, match", [
    ({"model_type": "gpt2"}, "model_type 'gpt2' is not supported"),
    ({"hidden_size": 15}, "not a multiple of num_attention_heads"),
    ({"hidden_act": "swish"}, "hidden_act 'swish'"),
    ({"num_hidden_layers": 0}, "num_hidden_layers must be an integer >= 1"),
    ({"position_embedding_type": "relative_key"}, "position_embedding_type"),
])
def test_bad_config_values(tmp_path, change, match):
    d = _broken(tmp_path, "c")
    cfg = json.loads((d / "config.json").read_text())
    cfg.update(change)
    (d / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(ValueError, match=match):
        BertModel.load(d)


def test_missing_config_field(tmp_path):
    d = _broken(tmp_path, "f")
    cfg = json.loads((d / "config.json").read_text())
    del cfg["intermediate_size"]
    (d / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(ValueError, match="'intermediate_size' is missing"):
        BertModel.load(d)


def test_corrupt_safetensors(tmp_path):
    d = _broken(tmp_path, "s")
    (d / "model.safetensors").write_bytes(b"\x00garbage" * 10)
    with pytest.raises(ValueError, match="not a valid safetensors file"):
        BertModel.load(d)


def test_weight_shape_mismatch(tmp_path):
    d = _broken(tmp_path, "w")
    cfg = json.loads((d / "config.json").read_text())
    cfg["intermediate_size"] = 48
    (d / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(ValueError, match=r"intermediate.dense.weight' has shape \(32, 16\), "
                                         r"expected \(48, 16\)"):
        BertModel.load(d)


def test_missing_tensor(tmp_path):
    from safetensors.numpy import load_file, save_file

    d = _broken(tmp_path, "t")
    w = load_file(str(d / "model.safetensors"))
    del w["encoder.layer.1.output.dense.bias"]
    save_file(w, str(d / "model.safetensors"))
    with pytest.raises(ValueError, match="'encoder.layer.1.output.dense.bias' is missing"):
        BertModel.load(d)


def test_not_a_bert_checkpoint(tmp_path):
    from safetensors.numpy import save_file

    d = _broken(tmp_path, "n")
    save_file({"lm_head.weight": np.zeros((2, 2), np.float32)}, str(d / "model.safetensors"))
    with pytest.raises(ValueError, match="is this a BERT checkpoint"):
        BertModel.load(d)


def test_bad_sentence_type(tiny):
    with pytest.raises(TypeError, match="must be a str"):
        tiny.tokenize(42)


# --- the real model -----------------------------------------------------------------


@pytest.fixture(scope="module")
def minilm():
    return BertModel.packaged_minilm()


def test_minilm_loads_from_the_package(minilm):
    assert packaged_model_dir().name == "model"
    assert minilm.config == BertConfig(30522, 384, 6, 12, 1536, 512, 2, 1e-12, "gelu", 0)
    assert minilm.max_seq_length == 256 and minilm.pooling == "mean"
    e = minilm.encode_float(["A man is playing a guitar.", "Someone plays the guitar.",
                             "Stock markets fell sharply."])
    # semantic sanity of the float reference: paraphrases are closer than unrelated text
    assert cosine(e[0], e[1]) > 0.7 > cosine(e[0], e[2])


def _shipped_sentences():
    return read_sentences(DEFAULT_SENTENCES)


def test_sentence_set_is_varied():
    s = _shipped_sentences()
    assert len(s) >= 30
    assert any(not t.isascii() for t in s)
    m = BertModel.packaged_minilm()
    lengths = [len(m.tokenize(t).ids) for t in s]
    assert max(lengths) == 256 and min(lengths) <= 5


def test_minilm_fidelity_few_sentences(minilm):
    """CI subset on the CPU placement (the device's integer numerics, bit-identical to
    the emulator — test_ops_placed_on_device_and_bit_identical_to_cpu_path)."""
    s = _shipped_sentences()
    pick = [s[0], s[6], s[12], s[21], s[30]]
    enc = QuantizedEncoder(minilm, Executor(None, "cpu"))
    ref = _reference_embeddings(minilm, packaged_model_dir(), pick)
    cos = [cosine(a, b) for a, b in zip(enc.encode(pick), ref)]
    assert min(cos) >= MIN_COSINE, cos
    # the workload's float32 yardstick (what `hetaccel run` reports cosines against)
    # is the float64 reference up to float32 rounding through six layers
    np.testing.assert_allclose(minilm.encode_float(pick), ref, rtol=0, atol=1e-5)


def test_minilm_layer_on_emulator_bit_identical(minilm):
    """One MiniLM layer with every op on the emulator equals the CPU placement."""
    from hetaccel.host import Accelerator

    x0 = minilm.embed(minilm.tokenize("Yes.").ids)
    want = QuantizedEncoder(minilm, Executor(None, "cpu")).layer(0, x0)
    with Accelerator.open("emu") as acc:
        got = QuantizedEncoder(minilm, Executor(acc, "accelerator")).layer(0, x0)
    np.testing.assert_array_equal(got, want)


@pytest.mark.slow
def test_minilm_fidelity_full_set(minilm):
    s = _shipped_sentences()
    enc = QuantizedEncoder(minilm, Executor(None, "cpu"))
    ref = _reference_embeddings(minilm, packaged_model_dir(), s)
    cos = [cosine(a, b) for a, b in zip(enc.encode(s), ref)]
    assert min(cos) >= MIN_COSINE, (min(cos), int(np.argmin(cos)))


@pytest.mark.slow
def test_minilm_on_emulator_two_sentences(minilm):
    from hetaccel.host import Accelerator

    s = ["Hello world.", "Is it raining?"]
    with Accelerator.open("emu") as acc:
        emb = QuantizedEncoder(minilm, Executor(acc, "accelerator")).encode(s)
    ref = _reference_embeddings(minilm, packaged_model_dir(), s)
    cos = [cosine(a, b) for a, b in zip(emb, ref)]
    assert min(cos) >= MIN_COSINE, cos
