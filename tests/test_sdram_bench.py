"""``hetaccel bench sdram``: a short run on Icarus checked for structure, data,
the cycle model's exactness and self-consistent figures (no performance
thresholds: the bench reports those)."""

import argparse
import dataclasses
import json

import pytest

from hetaccel.bench import sdram
from hetaccel.spec.sdram import CHIPS

PATTERN_KEYS = {"requests", "reads", "writes", "bytes", "start_cycle", "end_cycle", "cycles",
                "mb_s", "percent_of_peak", "model_cycles", "model_diff",
                "model_schedule_exact", "refreshes", "model_refreshes", "row_misses",
                "model_row_misses", "data_ok", "words_checked", "data_errors"}


def _args(*argv):
    parser = argparse.ArgumentParser()
    sdram.add_arguments(parser)
    return parser.parse_args(["--sim", "icarus", *argv])


def _check(result, names):
    assert json.loads(json.dumps(result)) == result          # one plain JSON object
    assert result["correct"] is True and result["uninitialised_reads"] == 0
    assert result["model_exact"] is True
    peak = result["peak_mb_s"]
    assert peak == 2 * result["clock_mhz"]
    hz = result["clock_mhz"] * 1e6
    assert [k for k in result if k in sdram.PATTERNS] == names
    previous_end = -1
    for name in names:
        p = result[name]
        assert set(p) - {"target_percent", "meets_target"} == PATTERN_KEYS, name
        assert p["data_ok"] is True and p["data_errors"] == [], (name, p["data_errors"])
        assert p["words_checked"] == p["requests"] == p["reads"] + p["writes"]
        assert p["model_diff"] == 0 and p["model_cycles"] == p["cycles"], (name, p)
        assert p["model_schedule_exact"] is True, name
        assert p["refreshes"] == p["model_refreshes"], (name, p)
        assert p["row_misses"] == p["model_row_misses"], (name, p)
        # the figures follow from bytes and cycles
        assert p["bytes"] == 16 * p["requests"]
        assert p["cycles"] == p["end_cycle"] - p["start_cycle"] + 1
        assert p["start_cycle"] > previous_end     # patterns do not overlap
        previous_end = p["end_cycle"]
        assert p["mb_s"] == pytest.approx(p["bytes"] * hz / p["cycles"] / 1e6)
        assert p["percent_of_peak"] == pytest.approx(100 * p["mb_s"] / peak)
        # a burst moves 16 bytes in 8 cycles: no window can beat the bus
        assert p["cycles"] >= 8 * p["requests"]
        if name in sdram.TARGETS:
            assert p["target_percent"] == sdram.TARGETS[name]
            assert p["meets_target"] == (p["percent_of_peak"] >= p["target_percent"])
        else:
            assert "target_percent" not in p and "meets_target" not in p
    assert result["sim_cycles"] > previous_end


def test_short_run_every_pattern():
    # 128 bursts a pattern: about 6000 cycles in all, several refreshes
    result = sdram.run(_args("--bursts", "128", "--tile-row-bursts", "8"))
    _check(result, list(sdram.PATTERNS))
    assert sum(result[n]["refreshes"] for n in sdram.PATTERNS) >= 5
    assert result["tile_read"]["row_misses"] > 0      # the tile's rows change SDRAM rows
    counts = result["chip_commands"]
    assert counts["READ"] == 128 + 128 + 64 and counts["WRITE"] == 128 + 128 + 64


def test_back_pressure_and_same_bank_tile_rows():
    # rdata.ready once every 12 cycles throttles the reads below the bus rate;
    # a 4 KB stride puts every tile row in the same bank (a row miss each)
    result = sdram.run(_args("--bursts", "64", "--patterns", "tile_read,mixed,sequential_read",
                             "--rdata-ready", "1" + "0" * 11, "--tile-stride", "4096",
                             "--tile-row-bursts", "4", "--seed", "3"))
    _check(result, ["sequential_read", "tile_read", "mixed"])
    assert result["sequential_read"]["cycles"] >= 12 * 64
    # every tile row closes the bank's previous row, except where a refresh
    # closed every bank just before it
    tile = result["tile_read"]
    assert 64 // 4 - tile["refreshes"] <= tile["row_misses"] <= 64 // 4


def test_datasheet_violation_fails_the_run(monkeypatch):
    # a controller built with tRCD one cycle short: the chip model stops the run
    real = sdram.worst_case

    def short_rcd(*a, **k):
        t = real(*a, **k)
        return dataclasses.replace(t, rcd=t.rcd - 1)

    monkeypatch.setattr(sdram, "worst_case", short_rcd)
    with pytest.raises(AssertionError, match="SDRAM rule tRCD broken"):
        sdram.run(_args("--bursts", "16", "--patterns", "sequential_read"))


def test_patterns_layout():
    chip = CHIPS["IS42S16160G-7"]
    p = sdram.build_patterns(chip, bursts=10, tile_row_bursts=3, tile_stride=160,
                             tile_rows=None, mixed_offset=64)
    assert p["sequential_write"].addrs == p["sequential_read"].addrs
    assert p["sequential_write"].writes == [1] * 10 and p["sequential_read"].writes == [0] * 10
    tile = p["tile_read"].addrs
    assert len(tile) == 12 and tile[:3] == [tile[0], tile[0] + 1, tile[0] + 2]
    assert tile[3] == tile[0] + 10                   # 160 bytes = 10 bursts on
    mixed = p["mixed"]
    assert mixed.writes == [0, 1] * 5 and mixed.addrs[1] == mixed.addrs[0] + 4
    regions = [set(p[n].addrs) for n in ("sequential_read", "tile_read", "mixed")]
    assert not (regions[0] & regions[1] or regions[1] & regions[2] or regions[0] & regions[2])


@pytest.mark.parametrize("argv, message", [
    (["--patterns", "sequential,tile_read"], "--patterns must be a comma-separated subset"),
    (["--tile-stride", "1540"], "--tile-stride must be a multiple of 16 bytes, not 1540"),
    (["--tile-stride", "128"], "--tile-stride must be an integer >= 256, not 128"),
    (["--bursts", "1"], "--bursts must be an integer >= 2, not 1"),
    (["--mixed-offset", "1073741824"], "the patterns need"),
    (["--rdata-ready", "1x0"], "rdata_ready must be a string of 0s and 1s"),
    (["--rdata-ready", "000"], "rdata_ready must be a string of 0s and 1s"),
    (["--rdata-depth", "3"], "rdata_depth must be a power of two"),
])
def test_bad_arguments_are_clear_errors(argv, message):
    with pytest.raises(ValueError, match=message.replace("+", r"\+")):
        sdram.run(_args(*argv))


def test_cli_json_is_the_only_stdout(monkeypatch, capfd):
    # the simulator's output goes to stderr; stdout is one JSON object
    from hetaccel import cli

    monkeypatch.setitem(cli.BENCHES, "sdram", "hetaccel.bench.sdram")
    rc = cli.main(["bench", "sdram", "--sim", "icarus", "--bursts", "16",
                   "--patterns", "sequential_read", "--json"])
    out = capfd.readouterr().out
    assert rc == 0 and out.count("\n") == 1, out[:2000]
    result = json.loads(out)
    _check(result, ["sequential_read"])
