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


# --- --board and --config ----------------------------------------------------------


def _write(path, obj):
    path.write_text(json.dumps(obj) if not isinstance(obj, str) else obj)
    return str(path)


def _image_of(name):
    from hetaccel.spec.boards import default_config

    c = default_config(name)
    return {"name": name, "board": name, "config_file": None, "rows": c.rows, "cols": c.cols,
            "has_activation": c.has_activation, "has_adam": c.has_adam,
            "clock_hz": c.clock_hz, "baud": c.baud}


def test_run_board_emulates_that_image(tiny_dir, sentences, capsys):
    from hetaccel.spec.boards import default_config

    rc, r = _json(capsys, ["run", "bert", "--model", str(tiny_dir), "--sentences",
                           str(sentences), "--limit", "1", "--board", "icebreaker", "--json",
                           "--quiet"])
    assert rc == 0 and r["image"] == _image_of("icebreaker")
    # the run's own config ("config") is the board's 4x4 image, not the default 8x8
    assert (r["projection"]["config"]["rows"], r["projection"]["config"]["cols"]) == (4, 4)
    assert r["projection"]["config"] == {**r["projection"]["icebreaker"], "board": "config"}
    gelu = [row for row in r["placement_table"] if row["op"] == "gelu"]
    if default_config("icebreaker").has_activation:
        assert all(row["placed"] == "accelerator" for row in gelu)
    else:
        assert all((row["placed"], row["reason"]) == ("cpu", "no activation unit on icebreaker")
                   for row in gelu)


def test_run_without_the_activation_unit_completes_bit_exact(tiny_dir, sentences, tmp_path,
                                                             capsys):
    bare = _write(tmp_path / "bare.json", {"has_activation": False})
    a, b = tmp_path / "dev.npy", tmp_path / "cpu.npy"
    rc, r = _json(capsys, ["run", "bert", "--model", str(tiny_dir), "--sentences",
                           str(sentences), "--board", "ulx3s-85f", "--config", bare,
                           "--json", "--quiet", "--out", str(a)])
    assert rc == 0
    assert (r["image"]["name"], r["image"]["board"], r["image"]["config_file"]) == \
        ("config", "ulx3s-85f", bare)
    assert (r["image"]["rows"], r["image"]["has_activation"]) == (16, False)
    placed = {(row["op"], row["placed"], row["reason"]) for row in r["placement_table"]}
    assert ("gelu", "cpu", "no activation unit on this image") in placed
    assert {p for op, p, _ in placed if op != "gelu"} == {"accelerator"}
    _json(capsys, ["run", "bert", "--model", str(tiny_dir), "--sentences", str(sentences),
                   "--placement", "cpu", "--json", "--quiet", "--out", str(b)])
    np.testing.assert_array_equal(np.load(a), np.load(b))
    # the table says it too
    assert main(["run", "bert", "--model", str(tiny_dir), "--sentences", str(sentences),
                 "--limit", "1", "--config", bare, "--quiet"]) == 0
    out = capsys.readouterr().out
    assert any(line.split()[:2] == ["gelu", "cpu"] and
               line.endswith("no activation unit on this image") for line in out.splitlines())
    assert "name=config" in out


def test_train_board_and_config(tmp_path, capsys):
    from hetaccel.spec.boards import default_config

    base = ["train", "seed-classifier", "--epochs", "3", "--json", "--quiet"]
    rc, r = _json(capsys, [*base, "--board", "icebreaker"])
    assert rc == 0 and r["image"] == _image_of("icebreaker")
    adam = {row["placed"] for row in r["placement_table"] if row["op"] == "adam"}
    assert adam == {"accelerator" if default_config("icebreaker").has_adam else "cpu"}
    # both units: every op on the device
    units = _write(tmp_path / "units.json", {"has_activation": True, "has_adam": True})
    rc, r = _json(capsys, [*base, "--board", "ulx3s-85f", "--config", units])
    assert rc == 0 and r["image"]["has_adam"] is True and r["image"]["rows"] == 16
    assert {row["placed"] for row in r["placement_table"]} == {"accelerator"}
    assert r["adam_steps_on_device"] == 3
    # no Adam unit: the steps run on the CPU, bit for bit the same training
    bare = _write(tmp_path / "bare.json", {"has_adam": False})
    rc, r = _json(capsys, [*base, "--config", bare])
    assert rc == 0 and r["adam_steps_on_device"] == 0
    rows = [row for row in r["placement_table"] if row["op"] == "adam"]
    assert [(row["placed"], row["reason"], row["calls"]) for row in rows] == \
        [("cpu", "no adam unit on this image", 3)]
    _, ref = _json(capsys, [*base, "--placement", "cpu"])
    assert (r["final_loss"], r["accuracy"]) == (ref["final_loss"], ref["accuracy"])


def test_bad_config_files_are_one_line_errors(tmp_path, capsys):
    cases = [
        (str(tmp_path / "missing.json"), "cannot read config file"),
        (_write(tmp_path / "bad.json", "{rows: 4"), "is not valid JSON"),
        (_write(tmp_path / "list.json", [4, 4]), "must hold a JSON object"),
        (_write(tmp_path / "field.json", {"rowz": 4}), "unknown config field(s): rowz"),
        (_write(tmp_path / "value.json", {"rows": 0}), "rows must be"),
    ]
    commands = [["run", "lstm"], ["train", "seed-classifier"], ["demo"],
                ["bench", "runtime"], ["build", "--board", "icebreaker"]]
    for i, (path, message) in enumerate(cases):
        # every command reads the file the same way; each case once, the first on all
        for cmd in commands if i == 0 else commands[i % 4:i % 4 + 1]:
            assert main([*cmd, "--config", path]) == 1, cmd
            err = capsys.readouterr().err
            assert err.startswith("hetaccel: error: ") and message in err, (cmd, err)
            assert err.count("\n") == 1 and path in err, err
    with pytest.raises(SystemExit) as exc:
        main(["run", "lstm", "--board", "nosuchboard"])
    assert exc.value.code == 2 and "invalid choice" in capsys.readouterr().err


def test_bench_runtime_board_and_config(tmp_path, capsys):
    from hetaccel.spec.boards import default_config

    small = ["bench", "runtime", "--m", "4", "--k", "8", "--n", "4", "--json"]
    rc, r = _json(capsys, [*small, "--board", "icebreaker"])
    ice = default_config("icebreaker")
    assert rc == 0 and r["correct"] and r["image"] == _image_of("icebreaker")
    assert (r["config"]["rows"], r["config"]["cols"]) == (ice.rows, ice.cols)
    assert r["projection"]["board"] == "icebreaker"
    assert r["op"] == ("linear" if ice.has_activation else "matmul")
    bare = _write(tmp_path / "bare.json", {"has_activation": False, "rows": 4, "cols": 4})
    rc, r = _json(capsys, [*small, "--config", bare])
    assert rc == 0 and r["op"] == "matmul" and r["image"]["name"] == "config"
    assert r["projection"]["board"] == "config" and r["config"]["rows"] == 4
    assert main([*small, "--config", bare, "--op", "linear"]) == 1
    assert "--op linear needs the activation unit" in capsys.readouterr().err


def test_bench_runtime_resident_weights(tmp_path, capsys):
    small = ["bench", "runtime", "--m", "6", "--k", "40", "--n", "24", "--json"]
    assert main([*small, "--resident"]) == 1
    assert "--resident needs device memory" in capsys.readouterr().err
    mem = _write(tmp_path / "mem.json", {"device_memory": "sdram32m"})
    for op in ("linear", "matmul"):
        rc, sent = _json(capsys, [*small, "--config", mem, "--op", op])
        rc2, kept = _json(capsys, [*small, "--config", mem, "--op", op, "--resident"])
        assert rc == rc2 == 0 and sent["correct"] and kept["correct"]
        assert kept["resident"] and kept["upload"]["bytes"] > 0 and kept["dram_bytes"] > 0
        assert not sent["resident"] and sent["dram_bytes"] == 0
        assert kept["device_bytes_in"] < sent["device_bytes_in"]


class _NoPort(ValueError):
    pass


def test_serial_without_baud_opens_at_the_boards_baud(monkeypatch, capsys):
    import dataclasses

    import hetaccel.host.accelerator as accelerator
    from hetaccel.spec.boards import BOARDS

    ice = BOARDS["icebreaker"]
    monkeypatch.setitem(BOARDS, "icebreaker", dataclasses.replace(
        ice, default={**ice.default, "baud": 500_000}))
    opened = []

    def serial(port, baud, **kw):
        opened.append((port, baud))
        raise _NoPort(f"no board on {port}")

    monkeypatch.setattr(accelerator, "SerialTransport", serial)
    for cmd in (["train", "seed-classifier"], ["run", "lstm"]):
        assert main([*cmd, "--backend", "serial:/dev/nothing", "--board", "icebreaker"]) == 1
        assert "no board on /dev/nothing" in capsys.readouterr().err
        assert opened.pop() == ("/dev/nothing", 500_000)


def test_demo_board_emulates_that_image_and_projects_every_board(tiny_dir, tmp_path,
                                                                 monkeypatch, capsys):
    from hetaccel.host.planner import board_images
    from hetaccel.workloads.bert import BertModel

    monkeypatch.setattr(BertModel, "packaged_minilm", classmethod(
        lambda cls: cls.load(tiny_dir)))
    main(["demo", "--board", "icebreaker", "--rtl-check", "none", "--sentences", "1",
          "--out", str(tmp_path / "demo"), "--json", "--quiet"])
    r = json.loads(capsys.readouterr().out)
    assert r["image"] == _image_of("icebreaker")
    assert "cpu_ops" in r["projection"]["icebreaker"]
    assert set(r["projection"]) == {b.name for b in board_images()}
    assert (r["projection"]["config"]["rows"], r["projection"]["config"]["cols"]) == (4, 4)
    run = json.loads((tmp_path / "demo" / "run.json").read_text())
    assert run["projection"]["config"]["macs"] == 16
