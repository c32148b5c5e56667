"""The mutant catalogue (tests/mutants.toml) and ``hetaccel bench mutants``.

The fast tests keep the catalogue in step with the code it mutates: every entry
still applies to exactly one place, names tests that exist, and every RTL module,
device model and the timing contract has mutants.  One unmarked test runs five
cheap mutants through the bench and needs all five killed; the slow test runs the
whole catalogue and needs a score of at least 95 %.
"""

from __future__ import annotations

import ast
import json
import sys

import pytest

from hetaccel.bench.mutants import (DEFAULT_CATALOGUE, PACKAGE_ROOT, Mutant, apply_mutation,
                                    load_catalogue)
from hetaccel.cli import main

if sys.version_info < (3, 11):     # the catalogue is TOML: tomllib, or tomli before 3.11
    pytest.importorskip("tomli")

#: beyond every rtl/ module, the models and the contract the catalogue must cover
MODELS = ("sim/device_model.py", "sim/activation_model.py", "sim/adam_model.py",
          "sim/link_model.py", "spec/timing.py")

#: one mutant per room, each killed by tests that take seconds (what CI runs)
CHEAP = ("contract-only-deeper", "fp-round-half-up", "cmd-counter-carry",
         "model-link-busy-early", "spec-crc-byte-not-shifted")


@pytest.fixture(scope="module")
def catalogue() -> list[Mutant]:
    return load_catalogue(DEFAULT_CATALOGUE)


def test_catalogue_parses_with_enough_mutants(catalogue):
    assert len(catalogue) >= 40
    assert len({m.id for m in catalogue}) == len(catalogue)
    for m in catalogue:
        assert m.why.strip() and m.tests, m.id


def test_every_original_occurs_exactly_once(catalogue):
    for m in catalogue:
        text = (PACKAGE_ROOT / m.file).read_text()
        assert text.count(m.original) == 1, (
            f"{m.id}: the original text occurs {text.count(m.original)} times in {m.file}; "
            "update tests/mutants.toml with the code")


def test_each_mutant_changes_one_line(catalogue):
    for m in catalogue:
        old, new = m.original.split("\n"), m.replacement.split("\n")
        assert len(old) == len(new), m.id
        assert sum(a != b for a, b in zip(old, new)) == 1, m.id


def test_every_rtl_module_and_model_is_covered(catalogue):
    covered = {m.file for m in catalogue}
    rtl = {f"rtl/{p.name}" for p in (PACKAGE_ROOT / "rtl").glob("*.py")
           if p.name != "__init__.py"}
    assert rtl, "no rtl modules found"
    missing = sorted((rtl | set(MODELS)) - covered)
    assert not missing, f"modules without mutants in tests/mutants.toml: {missing}"


def test_named_tests_exist(catalogue):
    for m in catalogue:
        for t in m.tests:
            path, _, rest = t.partition("::")
            file = PACKAGE_ROOT / path
            assert file.is_file() and file.parent.name == "tests", (m.id, t)
            if rest:
                name = rest.split("[")[0].split("::")[0]
                defined = {n.name for n in ast.walk(ast.parse(file.read_text()))
                           if isinstance(n, ast.FunctionDef)}
                assert name in defined, (m.id, t)


def test_apply_mutation_only_to_a_single_match(tmp_path):
    (tmp_path / "a.py").write_text("x = 1\ny = 2\ny = 2\n")

    def mutant(original):
        return Mutant("t", "a.py", original, "z = 3", "why", ("tests/x.py",))

    assert "not found" in apply_mutation(tmp_path, mutant("w = 0"))
    assert "ambiguous" in apply_mutation(tmp_path, mutant("y = 2"))
    assert "not found" in apply_mutation(tmp_path, Mutant("t", "b.py", "x", "y", "w", ("t",)))
    assert apply_mutation(tmp_path, mutant("x = 1")) is None
    assert (tmp_path / "a.py").read_text() == "z = 3\ny = 2\ny = 2\n"


def test_bench_rejects_unknown_ids_before_running(capsys):
    assert main(["bench", "mutants", "--only", "no-such-mutant", "--json"]) == 1
    assert "no-such-mutant" in capsys.readouterr().err


def _bench(capsys, *argv) -> dict:
    """Run the bench; the files it mutates must be untouched afterwards."""
    files = sorted({PACKAGE_ROOT / m.file for m in load_catalogue(DEFAULT_CATALOGUE)})
    before = [f.read_bytes() for f in files]
    main(["bench", "mutants", *argv, "--json"])
    result = json.loads(capsys.readouterr().out)
    assert [f.read_bytes() for f in files] == before, "the bench changed the working tree"
    return result


def test_cheap_mutants_are_killed(capsys):
    r = _bench(capsys, "--only", ",".join(CHEAP))
    statuses = {x["id"]: x["status"] for x in r["results"]}
    assert statuses == {i: "killed" for i in CHEAP}, r["results"]
    assert r["score"] == 1.0 and r["ok"]


@pytest.mark.slow
def test_whole_catalogue_scores_at_least_95_percent(capsys):
    r = _bench(capsys, "--min-score", "0.95")
    assert r["errors"] == 0, [x for x in r["results"] if x["status"] == "error"]
    assert r["score"] >= 0.95, r["survivors"]
