"""The user-facing commands: run bert/minilm/lstm, train, report, demo --help."""

import importlib.util
import json
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

from hetaccel.cli import COMMAND_EXTRAS, EXTRAS, build_parser, main

_spec = importlib.util.spec_from_file_location("tinybert", Path(__file__).with_name("tinybert.py"))
tinybert = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(tinybert)


@pytest.fixture(scope="module")
def tiny_dir(tmp_path_factory):
    return tinybert.write_tiny_model(tmp_path_factory.mktemp("tinycli"))


@pytest.fixture()
def sentences(tmp_path):
    f = tmp_path / "s.txt"
    f.write_text("The cat sat on the mat.\n\nHello world!\na dog ran, is it big?\n")
    return f


def _json(capsys, argv):
    rc = main(argv)
    out = capsys.readouterr().out
    return rc, json.loads(out)


def test_run_bert_emu_json_and_out(tiny_dir, sentences, tmp_path, capsys):
    out = tmp_path / "emb.npy"
    rc, r = _json(capsys, ["run", "bert", "--model", str(tiny_dir), "--sentences",
                           str(sentences), "--backend", "emu", "--json", "--quiet",
                           "--out", str(out)])
    assert rc == 0
    assert len(r["sentences"]) == 3                      # the blank line is skipped
    assert all(s["cosine"] > 0.99 for s in r["sentences"])
    assert r["min_cosine"] == min(s["cosine"] for s in r["sentences"])
    for key in ("mean_cosine", "device_cycles", "offloaded_macs", "cpu_macs",
                "projected_latency_s"):
        assert key in r
    assert r["device_cycles"] > 0 and r["offloaded_macs"] > 0 and r["cpu_macs"] == 0
    assert {"config", "ulx3s-85f"} <= set(r["projected_latency_s"])
    assert np.load(out).shape == (3, 16)


def test_run_bert_forced_cpu_same_embeddings(tiny_dir, sentences, tmp_path, capsys):
    a, b = tmp_path / "a.npy", tmp_path / "b.npy"
    _json(capsys, ["run", "bert", "--model", str(tiny_dir), "--sentences", str(sentences),
                   "--placement", "cpu", "--json", "--quiet", "--out", str(a)])
    rc, r = _json(capsys, ["run", "bert", "--model", str(tiny_dir), "--sentences",
                           str(sentences), "--backend", "emu", "--json", "--quiet",
                           "--out", str(b)])
    np.testing.assert_array_equal(np.load(a), np.load(b))


def test_run_bert_table_output(tiny_dir, sentences, capsys):
    assert main(["run", "bert", "--model", str(tiny_dir), "--sentences", str(sentences),
                 "--backend", "cpu"]) == 0
    cap = capsys.readouterr()
    assert "cosine" in cap.out and "min_cosine" in cap.out and "placed on" in cap.out
    assert "[" in cap.err                                 # the progress bar is on stderr


def test_run_errors(tiny_dir, tmp_path, capsys):
    assert main(["run", "bert", "--backend", "cpu"]) == 1
    assert "needs --model" in capsys.readouterr().err
    assert main(["run", "bert", "--model", str(tmp_path / "none"), "--backend", "cpu"]) == 1
    assert "does not exist" in capsys.readouterr().err
    assert main(["run", "bert", "--model", str(tiny_dir), "--sentences",
                 str(tmp_path / "missing.txt"), "--backend", "cpu"]) == 1
    assert "sentence file" in capsys.readouterr().err


def test_run_minilm_few_sentences(sentences, capsys):
    rc, r = _json(capsys, ["run", "minilm", "--sentences", str(sentences), "--placement", "cpu",
                           "--limit", "2", "--json", "--quiet"])
    assert rc == 0 and r["model"] == "all-MiniLM-L6-v2" and r["n_sentences"] == 2
    assert r["min_cosine"] >= 0.995


def test_run_lstm(capsys):
    rc, r = _json(capsys, ["run", "lstm", "--backend", "emu", "--steps", "2", "--json"])
    assert rc == 0 and r["max_abs_error_h"] < 5e-3 and r["activation_passes_on_device"] == 10


def test_train_seed_classifier(capsys):
    rc, r = _json(capsys, ["train", "seed-classifier", "--backend", "cpu", "--json", "--quiet"])
    assert rc == 0
    for key in ("accuracy", "recall", "f1", "float_accuracy", "float_f1"):
        assert 0 <= r[key] <= 1
    assert abs(r["accuracy"] - r["float_accuracy"]) <= 0.02


def test_report_writes_pngs(tmp_path, capsys):
    bdir = tmp_path / "boards" / "icebreaker"
    bdir.mkdir(parents=True)
    (bdir / "report.json").write_text(json.dumps({
        "board": "icebreaker", "core": "device", "fmax_mhz": 30.0, "target_mhz": 48.0,
        "luts": 4000, "ffs": 2000, "dsps": 8, "brams": 20,
        "available": {"luts": 5280, "ffs": 5280, "dsps": 8, "brams": 30}}))
    rc, r = _json(capsys, ["report", "--out", str(tmp_path / "png"), "--boards-dir",
                           str(tmp_path / "boards"), "--tokens", "8", "--json"])
    assert rc == 0
    names = sorted(Path(f).name for f in r["files"])
    assert names == ["boards.png", "roofline.png", "utilisation.png"]
    for f in r["files"]:
        assert Path(f).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_report_from_a_run(tiny_dir, sentences, tmp_path, capsys):
    _, run = _json(capsys, ["run", "bert", "--model", str(tiny_dir), "--sentences",
                            str(sentences), "--backend", "emu", "--json", "--quiet"])
    (tmp_path / "run.json").write_text(json.dumps(run))
    rc, r = _json(capsys, ["report", "--run", str(tmp_path / "run.json"), "--out",
                           str(tmp_path / "png"), "--boards-dir", str(tmp_path / "nb"),
                           "--board", "config", "--json"])
    assert rc == 0 and len(r["files"]) == 2 and "no board build reports" in r["note"]


def test_help_explains_every_option():
    parser = build_parser()
    sub = next(a for a in parser._actions if a.dest == "command")
    for name in ("run", "train", "report", "demo"):
        p = sub.choices[name]
        for action in p._actions:
            if action.dest != "help":
                assert action.help, f"{name} {action.option_strings or action.dest} lacks help"


def test_run_bert_on_rtl_matches_emu(tiny_dir, sentences, tmp_path, capsys):
    """The generated Verilog (Verilator) gives the emulator's embeddings bit for bit."""
    a, b = tmp_path / "rtl.npy", tmp_path / "emu.npy"
    rc, r = _json(capsys, ["run", "bert", "--model", str(tiny_dir), "--sentences",
                           str(sentences), "--limit", "1", "--backend", "rtl", "--json",
                           "--quiet", "--out", str(a)])
    assert rc == 0 and r["backend"] == "rtl" and r["device_cycles"] > 0
    _json(capsys, ["run", "bert", "--model", str(tiny_dir), "--sentences", str(sentences),
                   "--limit", "1", "--backend", "emu", "--json", "--quiet", "--out", str(b)])
    np.testing.assert_array_equal(np.load(a), np.load(b))


def test_run_bert_auto_placement_reports_decisions(tiny_dir, sentences, capsys):
    rc, r = _json(capsys, ["run", "bert", "--model", str(tiny_dir), "--sentences",
                           str(sentences), "--backend", "emu", "--placement", "auto",
                           "--json", "--quiet"])
    assert rc == 0 and r["placement"] == "auto"
    # behind the default 3 Mbaud UART every tiny op is cheaper on the CPU
    assert r["ops_on_cpu"] > 0 and r["cpu_macs"] > 0
    assert all("link-bound" in row["reason"] for row in r["placement_table"]
               if row["placed"] == "cpu")


_BLOCKED_CLI = textwrap.dedent("""
    import importlib.abc, sys

    BLOCKED = set(sys.argv[1].split(","))

    class Block(importlib.abc.MetaPathFinder):
        def find_spec(self, name, path=None, target=None):
            if name.split(".")[0] in BLOCKED:
                raise ModuleNotFoundError(f"No module named {name!r}", name=name)

    sys.meta_path.insert(0, Block())
    from hetaccel.cli import main

    raise SystemExit(main(sys.argv[2:]))
""")


def _cli_without(tmp_path, blocked: str, *argv: str):
    return subprocess.run([sys.executable, "-c", _BLOCKED_CLI, blocked, *argv],
                          capture_output=True, text=True, cwd=tmp_path, timeout=300)


@pytest.mark.parametrize("blocked, argv, extra", [
    ("amaranth,cocotb,cocotb_tools", ["bench", "gemm", "--rows", "4"], "sim"),
    ("amaranth,cocotb,cocotb_tools", ["build", "--board", "icebreaker"], "boards"),
    ("matplotlib", ["report", "--out", "png"], "plots"),
    ("tokenizers", ["run", "minilm", "--limit", "1", "--quiet"], "models"),
])
def test_missing_extra_is_one_line_naming_it(tmp_path, blocked, argv, extra):
    out = _cli_without(tmp_path, blocked, *argv)
    assert out.returncode == 1, out.stderr
    assert out.stderr.strip().count("\n") == 0 and "Traceback" not in out.stderr, out.stderr
    assert f"pip install 'hetaccel[{extra}]'" in out.stderr, out.stderr


def test_runtime_commands_need_no_extra(tmp_path):
    blocked = ",".join(EXTRAS)
    out = _cli_without(tmp_path, blocked, "run", "lstm", "--steps", "1", "--json")
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout)["backend"] == "emu"
    out = _cli_without(tmp_path, blocked, "bench", "--help")
    assert out.returncode == 0 and "hetaccel[sim]" in out.stdout, out.stderr


def test_every_extra_named_exists():
    tomllib = pytest.importorskip("tomllib")
    pyproject = tomllib.loads((Path(__file__).resolve().parents[1] / "pyproject.toml")
                              .read_text())
    extras = set(pyproject["project"]["optional-dependencies"])
    named = {e for es in EXTRAS.values() for e in es} | set(COMMAND_EXTRAS.values())
    assert named <= extras, named - extras
