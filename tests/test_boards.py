"""Board builds, PLL dividers, the ASIC report and the `hetaccel build` CLI."""

import json
import subprocess
import sys

import pytest
from amaranth.sim import Simulator

from hetaccel.boards.build import BoardTop, DoesNotFit, LinkEcho, board_platform, build_board
from hetaccel.spec.boards import BOARDS, default_config
from hetaccel.boards.pll import ecp5_pll, ice40_pll
from hetaccel.spec.link import Frame, ReplyDecoder, encode_request
from hetaccel.spec import AcceleratorConfig, Opcode, Status


@pytest.mark.parametrize("mhz,divr,divf,divq", [
    # the values `icepll -i 12 -o <mhz>` prints
    (48, 0, 63, 4), (50.25, 0, 66, 4), (36, 0, 47, 4), (60, 0, 79, 4),
])
def test_ice40_pll_matches_icepll(mhz, divr, divf, divq):
    p = ice40_pll(12e6, mhz * 1e6)
    assert (p.divr, p.divf, p.divq) == (divr, divf, divq)
    assert p.f_out == mhz * 1e6
    assert 533e6 <= p.f_vco <= 1066e6


def test_ecp5_pll():
    p = ecp5_pll(25e6, 100e6)
    assert p.f_out == 100e6 and 400e6 <= p.f_vco <= 800e6
    assert p.f_in * p.clkfb_div / p.clki_div == 100e6


def test_unreachable_clock_names_nearest():
    with pytest.raises(ValueError, match=r"clock_hz=50000000 is not reachable.*50250000"):
        ice40_pll(12e6, 50e6)
    with pytest.raises(ValueError, match="outside the PLL output range"):
        ice40_pll(12e6, 5e6)


def test_default_configs_valid():
    for name in BOARDS:
        cfg = default_config(name)
        assert isinstance(cfg, AcceleratorConfig)
    with pytest.raises(ValueError, match="unknown board 'de10'"):
        default_config("de10")


@pytest.mark.parametrize("name", list(BOARDS))
def test_catalog_nextpnr_options_are_the_platforms(name):
    # build_board runs nextpnr itself with the catalog's device options: they
    # must be the ones Amaranth's build script for the platform passes.
    b = BOARDS[name]
    plan = board_platform(b).prepare(BoardTop(b, default_config(name), core=LinkEcho),
                                     name="top")
    script = plan.files["build_top.sh"]
    script = script if isinstance(script, str) else script.decode()
    nextpnr = [line for line in script.splitlines() if line.startswith('"$NEXTPNR_')]
    assert len(nextpnr) == 1 and f" {' '.join(b.nextpnr)} " in nextpnr[0], nextpnr


def test_link_echo_core_answers_frames():
    # The bring-up core the CI bitstream carries, in the Amaranth simulator.
    cfg = AcceleratorConfig(max_payload=16, link_timeout_cycles=64)
    dut = LinkEcho(cfg)
    sim = Simulator(dut)
    sim.add_clock(1e-6)
    frames = encode_request(Opcode.NOP, 1, b"") + encode_request(Opcode.WRITE_MEM, 2, b"hello!")
    bad = bytearray(encode_request(Opcode.NOP, 3, b"x"))
    bad[-1] ^= 0xFF
    out = bytearray()

    async def drive(ctx):
        for b in frames + bytes(bad):
            ctx.set(dut.rx.payload, b)
            ctx.set(dut.rx.valid, 1)
            await ctx.tick().until(dut.rx.ready)
        ctx.set(dut.rx.valid, 0)

    async def sink(ctx):
        ctx.set(dut.tx.ready, 1)
        async for _, _, v, d in ctx.tick().sample(dut.tx.valid, dut.tx.payload):
            if v:
                out.append(d)

    sim.add_testbench(drive)
    sim.add_process(sink)
    sim.run_until(300e-6)
    got = ReplyDecoder().feed(bytes(out))
    assert got == [Frame(1, Status.OK, b""), Frame(2, Status.OK, b"hello!"),
                   Frame(3, Status.BAD_CRC, b"")], got


def _check_report(r, board, cfg):
    for key in ("fmax_mhz", "target_mhz", "luts", "ffs", "dsps", "brams", "config",
                "peak_gops", "bitstream", "available", "wall_s", "timing_met"):
        assert key in r, key
    assert r["board"] == board
    assert r["fmax_mhz"] > 0
    assert r["target_mhz"] == cfg.clock_hz / 1e6
    assert r["luts"] > 0 and r["ffs"] > 0
    assert r["luts"] <= r["available"]["luts"]
    assert r["peak_gops"] == pytest.approx(2 * cfg.macs * cfg.clock_hz / 1e9, rel=1e-3)
    assert AcceleratorConfig.from_dict(r["config"]) == cfg
    assert json.loads(json.dumps(r)) == r


def test_icebreaker_build(tmp_path):
    # The real thing in CI: the board's default device (PLL, reset, UART,
    # host link, command processor, array, scratchpads) placed and routed on
    # the iCE40UP5K, meeting its clock.
    cfg = default_config("icebreaker")
    r = build_board("icebreaker", cfg, out_dir=tmp_path)
    _check_report(r, "icebreaker", cfg)
    assert r["core"] == "Device"
    assert r["timing_met"], f"Fmax {r['fmax_mhz']} MHz below the {r['target_mhz']} MHz target"
    assert r["dsps"] == 8 and r["macs"] == 16      # every SB_MAC16, in its dual 8x8 mode
    assert r["brams"] >= 3                         # scratchpads are block RAM
    bits = (tmp_path / "icebreaker" / "top.bin").read_bytes()
    assert len(bits) == 104090          # a full iCE40UP5K bitstream
    assert (tmp_path / "icebreaker" / "report.json").exists()


@pytest.mark.slow
def test_link_echo_core_builds(tmp_path):
    # The bring-up core: a quick image for checking a board's clock and UART.
    cfg = default_config("icebreaker", max_payload=64)
    r = build_board("icebreaker", cfg, out_dir=tmp_path, core=LinkEcho)
    _check_report(r, "icebreaker", cfg)
    assert r["core"] == "LinkEcho" and r["timing_met"]


@pytest.mark.slow
def test_too_big_config_fails_with_numbers(tmp_path):
    # After synthesis (CI checks the quicker pre-synthesis refusal below).
    # 2 x 8 KiB of frame buffers need 32 of the UP5K's 30 block RAMs (512 B each).
    cfg = default_config("icebreaker", max_payload=8192)
    with pytest.raises(DoesNotFit, match=r"brams: \d+ used, 30 available"):
        build_board("icebreaker", cfg, out_dir=tmp_path, core=LinkEcho)


def test_asic_report(tmp_path):
    from hetaccel.boards.asic import asic_report
    from hetaccel.verify.formal import FORMAL_DEVICE_CONFIG
    r = asic_report(FORMAL_DEVICE_CONFIG, out_dir=tmp_path)
    assert r["cells"] > 1000 and r["flip_flops"] > 100
    assert r["transistors_logic"] > 4 * r["cells_by_type"].get("_NAND_", 0)
    assert r["transistors"] > r["transistors_logic"]
    assert r["memories"] >= 3 and r["memory_bits"] > 0
    assert r["macs"] == FORMAL_DEVICE_CONFIG.macs


def test_cli_errors():
    proc = subprocess.run([sys.executable, "-m", "hetaccel", "build"], capture_output=True,
                          text=True)
    assert proc.returncode == 1 and "choose a board" in proc.stderr
    proc = subprocess.run([sys.executable, "-m", "hetaccel", "build", "--board", "icebreaker",
                           "--set", "rows=0"], capture_output=True, text=True)
    assert proc.returncode == 1 and "rows must be in [1, 64]" in proc.stderr


@pytest.mark.slow
def test_ulx3s_build(tmp_path):
    cfg = default_config("ulx3s-85f")
    r = build_board("ulx3s-85f", cfg, out_dir=tmp_path)
    _check_report(r, "ulx3s-85f", cfg)
    assert r["core"] == "Device"
    assert r["timing_met"], f"Fmax {r['fmax_mhz']} MHz below the {r['target_mhz']} MHz target"
    assert (tmp_path / "ulx3s-85f" / "top.bit").stat().st_size > 100_000


def test_array_larger_than_dsps_refused_before_synthesis(tmp_path):
    cfg = default_config("icebreaker", rows=4, cols=4, mac_mapping="generic")
    with pytest.raises(DoesNotFit, match=r"4x4 array needs dsps: 16 used .*, 8 available"):
        build_board("icebreaker", cfg, out_dir=tmp_path)


def test_hard_dsp_mappings_refused_on_the_other_family(tmp_path):
    with pytest.raises(ValueError, match="ecp5_mult18.*icebreaker is ice40"):
        build_board("icebreaker", default_config("icebreaker", mac_mapping="ecp5_mult18"),
                    out_dir=tmp_path)
    with pytest.raises(ValueError, match="ice40_dual.*ulx3s-85f is ecp5"):
        build_board("ulx3s-85f", default_config("ulx3s-85f", mac_mapping="ice40_dual"),
                    out_dir=tmp_path)


def test_ecp5_mult18_counts_its_instances_even_without_dsp_inference(tmp_path):
    # 13x13 instantiated MULT18X18Ds do not fit the 156 even with -nodsp
    cfg = default_config("ulx3s-85f", rows=13, cols=13, lut_multipliers=0)
    with pytest.raises(DoesNotFit, match=r"13x13 array needs dsps: 169 used \(one registered "
                                          r"MULT18X18D per MAC\), 156 available"):
        build_board("ulx3s-85f", cfg, out_dir=tmp_path, synth_opts="-nodsp")


_FAKE_NEXTPNR = """\
import json, os, sys
a = sys.argv[1:]
opt = lambda k: a[a.index(k) + 1]
seed = int(opt("--seed"))
fmax = dict(x.split(":") for x in os.environ["FAKE_FMAX"].split(","))[str(seed)]
open(opt("--log"), "w").write(f"Max frequency for clock 'clk': {fmax} MHz\\n")
json.dump({"fmax": {"clk": {"achieved": float(fmax), "constraint": 50.25}}, "utilization": {}},
          open(opt("--report"), "w"))
open(opt("--asc"), "w").write(f"placed with seed {seed}")
"""
_FAKE_ICEPACK = "import shutil, sys\nshutil.copy(sys.argv[1], sys.argv[2])\n"


def test_seed_sweep_keeps_the_first_seed_that_meets_timing(tmp_path, monkeypatch):
    # nextpnr and icepack stand-ins whose Fmax depends on the seed; Yosys is real
    for tool, text in (("NEXTPNR_ICE40", _FAKE_NEXTPNR), ("ICEPACK", _FAKE_ICEPACK)):
        script = tmp_path / f"{tool.lower()}.py"
        script.write_text(f"#!{sys.executable}\n{text}")
        script.chmod(0o755)
        monkeypatch.setenv(tool, str(script))
    cfg = default_config("icebreaker", max_payload=64)
    d = tmp_path / "icebreaker"

    monkeypatch.setenv("FAKE_FMAX", "1:44.4,2:50.3,3:52.0")
    r = build_board("icebreaker", cfg, out_dir=tmp_path, core=LinkEcho, seed=[1, 2, 3])
    assert r["seed"] == 2 and r["fmax_mhz"] == 50.3 and r["timing_met"]
    assert r["seed_sweep"] == [{"seed": 1, "fmax_mhz": 44.4}, {"seed": 2, "fmax_mhz": 50.3}]
    assert (d / "top.bin").read_text() == "placed with seed 2"
    assert "44.4" in (d / "top.seed1.tim").read_text() and "50.3" in (d / "top.tim").read_text()
    assert not (d / "top.seed2.tim").exists()

    # none meets timing: the fastest is kept, and the failure is reported
    monkeypatch.setenv("FAKE_FMAX", "4:47.0,5:49.9,6:45.5")
    r = build_board("icebreaker", cfg, out_dir=tmp_path, core=LinkEcho, seed=range(4, 7))
    assert r["seed"] == 5 and r["fmax_mhz"] == 49.9 and not r["timing_met"]
    assert [e["seed"] for e in r["seed_sweep"]] == [4, 5, 6]
    assert (d / "top.bin").read_text() == "placed with seed 5"
    assert json.loads((d / "report.json").read_text())["seed"] == 5
    assert sorted(p.name for p in d.glob("top.seed*.tim")) == ["top.seed4.tim", "top.seed6.tim"]
    assert not (d / "top.seed1.tim").exists()          # the earlier build's are gone

    with pytest.raises(ValueError, match="seed"):
        build_board("icebreaker", cfg, out_dir=tmp_path, core=LinkEcho, seed=[])
