"""``hetaccel bench mutants``: how many plausible one-line faults the fast tests catch.

A catalogue (``tests/mutants.toml``, beside the tests it exercises) lists
mutants: a file of the package, a piece of its text that occurs exactly once,
the text that replaces it (an off-by-one, a wrong sign, a dropped term, swapped
operands ...), why a real engineer might write it, and the fast tests that
should notice.  For each mutant the bench copies the package into a temporary
directory, applies the one change there, runs those tests on the copy with
pytest and reports

``killed``
    the tests failed (or did not finish within ``--timeout``: a hang is a
    detected fault, reported with ``"how": "timeout"``);
``survived``
    every test passed with the fault in place;
``error``
    the mutation could not be measured: its text is not in the file or not
    exactly once, or its tests fail (or are not found) without the mutation;
``equivalent``
    not run: the catalogue argues (``equivalent = "why"``) that no test can
    tell it from the original.  Excluded from the score, listed separately.

The score is ``killed / (killed + survived)``.  The working tree is never
touched: every run sees a copy laid out as ``<tmp>/hetaccel/...`` first on
``PYTHONPATH`` (checked before any mutant runs: ``hetaccel.__file__`` must be
inside the copy), including the simulators cocotb starts, which inherit it.
Simulator builds are shared where that is safe: a build is found by the
Verilog it compiles, so every mutant sees the project's existing builds through
links, and a mutated design gets its own build inside the mutant's temporary
directory, which is deleted with it.  Before the mutants, the union of their
tests runs once on the unmodified copy (which also builds any design still
missing into the shared build directory), so a test that fails on its own
never counts as a kill.
"""

from __future__ import annotations

import os
import random
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

from ..host.rtl_transport import kill_process_group
from ..verify.cocotb_runner import build_root

try:    # Python >= 3.11
    import tomllib
except ModuleNotFoundError:     # pragma: no cover - Python 3.10: the same parser, if installed
    try:
        import tomli as tomllib
    except ModuleNotFoundError:
        tomllib = None

__all__ = ["HELP", "add_arguments", "run", "Mutant", "load_catalogue", "apply_mutation",
           "PACKAGE_ROOT", "DEFAULT_CATALOGUE"]

HELP = "mutation score of the fast tests: one-line faults in the RTL, models and timing"

#: the repository root, which is the ``hetaccel`` package
PACKAGE_ROOT = Path(__file__).resolve().parent.parent
DEFAULT_CATALOGUE = PACKAGE_ROOT / "tests" / "mutants.toml"

#: not copied: environments, build products, version control, caches
_SKIP = {".venv", "venv", "build", "dist", ".git", "__pycache__", ".pytest_cache",
         ".mypy_cache", ".ruff_cache"}

_FIELDS = {"id", "file", "original", "replacement", "why", "tests", "equivalent"}
_REQUIRED = ("id", "file", "original", "replacement", "why", "tests")


@dataclass(frozen=True)
class Mutant:
    id: str
    file: str
    original: str
    replacement: str
    why: str
    tests: tuple[str, ...]
    equivalent: str | None = None


@dataclass
class _Outcome:
    status: str                 # killed | survived | error | equivalent
    how: str = ""               # failed | timeout (killed); the reason (error)
    seconds: float = 0.0
    detail: str = ""


def add_arguments(parser) -> None:
    parser.add_argument("--catalogue", type=Path, default=DEFAULT_CATALOGUE,
                        help="the mutant catalogue (TOML)")
    parser.add_argument("--only", default=None, metavar="ID[,ID]",
                        help="run only these mutants")
    parser.add_argument("--sample", type=int, default=None, metavar="N",
                        help="run N mutants drawn at random (see --seed)")
    parser.add_argument("--seed", type=int, default=1, help="random seed of --sample")
    parser.add_argument("--jobs", type=int, default=1,
                        help="mutants run at once (each runs its tests in one process)")
    parser.add_argument("--timeout", type=float, default=600.0,
                        help="seconds per mutant; a run that takes longer counts as killed")
    parser.add_argument("--build-dir", type=Path, default=None,
                        help="simulator builds shared with the runs (default: "
                             "$HETACCEL_BUILD_DIR or ./build, as every simulation uses)")
    parser.add_argument("--min-score", type=float, default=0.95,
                        help="the result is ok (exit 0) when the score reaches this and "
                             "every mutant was measured")


# --- the catalogue ------------------------------------------------------------------


def load_catalogue(path: str | Path = DEFAULT_CATALOGUE) -> list[Mutant]:
    """The mutants of a TOML catalogue (``[[mutant]]`` tables), checked for shape."""
    path = Path(path)
    if tomllib is None:
        raise ValueError("reading the mutant catalogue needs Python >= 3.11 (tomllib) or "
                         f"the tomli package; this is Python {sys.version.split()[0]}")
    if not path.is_file():
        raise FileNotFoundError(f"no mutant catalogue at {path} (the bench needs the "
                                "source tree, tests/ included)")
    try:
        doc = tomllib.loads(path.read_text())
    except tomllib.TOMLDecodeError as e:
        raise ValueError(f"{path}: {e}") from None
    unknown = set(doc) - {"mutant"}
    if unknown:
        raise ValueError(f"{path}: unknown top-level keys {sorted(unknown)} "
                         "(mutants are [[mutant]] tables)")
    out, seen = [], set()
    for k, entry in enumerate(doc.get("mutant", [])):
        where = f"{path}: mutant #{k + 1} ({entry.get('id', '?')})"
        missing = [f for f in _REQUIRED if f not in entry]
        if missing:
            raise ValueError(f"{where}: missing {', '.join(missing)}")
        extra = set(entry) - _FIELDS
        if extra:
            raise ValueError(f"{where}: unknown keys {sorted(extra)}")
        for f in ("id", "file", "original", "replacement", "why"):
            if not isinstance(entry[f], str) or (f != "replacement" and not entry[f]):
                raise ValueError(f"{where}: {f} must be a non-empty string")
        tests = entry["tests"]
        if (not isinstance(tests, list) or not tests
                or not all(isinstance(t, str) and t for t in tests)):
            raise ValueError(f"{where}: tests must be a non-empty list of pytest ids")
        if entry["original"] == entry["replacement"]:
            raise ValueError(f"{where}: the replacement equals the original")
        eq = entry.get("equivalent")
        if eq is not None and (not isinstance(eq, str) or not eq):
            raise ValueError(f"{where}: equivalent must say why, as a string")
        if entry["id"] in seen:
            raise ValueError(f"{where}: duplicate id")
        seen.add(entry["id"])
        out.append(Mutant(entry["id"], entry["file"], entry["original"], entry["replacement"],
                          entry["why"], tuple(tests), eq))
    if not out:
        raise ValueError(f"{path}: no [[mutant]] entries")
    return out


def apply_mutation(root: str | Path, mutant: Mutant) -> str | None:
    """Apply ``mutant`` to the tree at ``root`` (a copy!); None, or why it cannot be."""
    path = Path(root) / mutant.file
    if not path.is_file():
        return f"not found: no file {mutant.file}"
    text = path.read_text()
    n = text.count(mutant.original)
    if n == 0:
        return f"not found: the original text is not in {mutant.file}"
    if n > 1:
        return f"ambiguous: the original text occurs {n} times in {mutant.file}"
    path.write_text(text.replace(mutant.original, mutant.replacement))
    return None


def _select(mutants: list[Mutant], only: str | None, sample: int | None,
            seed: int) -> list[Mutant]:
    if only:
        ids = [s.strip() for s in only.split(",") if s.strip()]
        known = {m.id for m in mutants}
        unknown = [i for i in ids if i not in known]
        if unknown:
            raise ValueError(f"--only: no mutant {', '.join(unknown)} in the catalogue")
        mutants = [m for m in mutants if m.id in ids]
    if sample is not None:
        if sample < 1:
            raise ValueError(f"--sample must be >= 1, got {sample}")
        # (equivalent mutants are not run, so not drawn)
        pool = [m for m in mutants if m.equivalent is None]
        picked = {m.id for m in random.Random(seed).sample(pool, min(sample, len(pool)))}
        mutants = [m for m in mutants if m.id in picked]
    return mutants


# --- copies, builds and runs -----------------------------------------------------------


def _ignore(directory, names):
    return {n for n in names if n in _SKIP or n.endswith(".egg-info")}


def _copy_tree(src: Path, dest_parent: Path) -> Path:
    """Copy the package tree to ``dest_parent/hetaccel`` (so ``dest_parent`` goes on
    PYTHONPATH); returns the copy's root."""
    dest = dest_parent / "hetaccel"
    shutil.copytree(src, dest, ignore=_ignore, symlinks=True)
    return dest


def _overlay_build(shared: Path, dest: Path) -> Path:
    """A build directory that sees every build of ``shared`` and writes new ones to itself.

    Build directories are named by a digest of what they compile, so a mutated
    design never lands in a linked one.  The Verilog export area is private (an
    export writes its file before the digest is known), the native harness index is
    copied (a mutated tree writes its own keys) and the vendor cell models are
    copied with their times (a mutated model generator writes a private file; an
    unchanged one keeps the linked builds up to date).  Locks are shared.
    """
    dest.mkdir(parents=True)
    (dest / "verilog").mkdir()
    if shared.is_dir():
        for entry in shared.iterdir():
            if entry.name == "verilog":
                continue
            if entry.name in ("models", "hetaccel_native-index") and entry.is_dir():
                shutil.copytree(entry, dest / entry.name)
            else:
                (dest / entry.name).symlink_to(entry, target_is_directory=entry.is_dir())
    return dest


def _env(copy_parent: Path, build_dir: Path) -> dict:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(copy_parent)] + (
        [env["PYTHONPATH"]] if env.get("PYTHONPATH") else []))
    env["HETACCEL_BUILD_DIR"] = str(build_dir)
    for k in [k for k in env if k.startswith("PYTEST_")]:
        del env[k]      # (the bench may itself run under pytest, or one with options)
    return env


class _Runner:
    """Runs subprocesses in their own process groups; ends them all on interruption."""

    def __init__(self):
        self._lock = threading.Lock()
        self._procs: set[subprocess.Popen] = set()

    def run(self, cmd, *, cwd, env, timeout) -> tuple[int | None, str, float]:
        """(return code or None on timeout, output, seconds)."""
        t0 = time.perf_counter()
        proc = subprocess.Popen(cmd, cwd=cwd, env=env, stdout=subprocess.PIPE,
                                stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                start_new_session=True)
        with self._lock:
            self._procs.add(proc)
        try:
            out, _ = proc.communicate(timeout=timeout)
            rc = proc.returncode
        except subprocess.TimeoutExpired:
            kill_process_group(proc)
            out, _ = proc.communicate()
            rc = None
        except BaseException:       # Ctrl-C: no test run outlives the bench
            kill_process_group(proc)
            raise
        finally:
            with self._lock:
                self._procs.discard(proc)
        return rc, out.decode(errors="replace"), time.perf_counter() - t0

    def kill_all(self) -> None:
        with self._lock:
            procs = list(self._procs)
        for p in procs:
            kill_process_group(p)


def _pytest_cmd(tests, basetemp: Path) -> list[str]:
    # -m "not slow": a test file named in the catalogue contributes its fast tests
    return [sys.executable, "-m", "pytest", "-q", "-x", "-p", "no:cacheprovider",
            "-m", "not slow", f"--basetemp={basetemp}", *tests]


def _first_failure(output: str) -> str:
    """pytest's first FAILED / ERROR summary line (not a simulator's log line)."""
    lines = output.splitlines()
    for prefix in ("FAILED ", "ERROR tests/", "ERROR "):
        for line in lines:
            if line.startswith(prefix):
                return line[:300]
    tail = [line for line in output.splitlines() if line.strip()]
    return "\n".join(tail[-3:])[-600:]


def _sanity(runner: _Runner, copy: Path, env: dict) -> None:
    """``import hetaccel`` in a run's environment must find the copy, not the tree."""
    rc, out, _ = runner.run([sys.executable, "-c", "import hetaccel; print(hetaccel.__file__)"],
                            cwd=copy, env=env, timeout=120)
    got = Path(out.strip().splitlines()[-1]).resolve() if rc == 0 and out.strip() else None
    if got is None or copy.resolve() not in got.parents:
        raise RuntimeError(f"a run in {copy} imports hetaccel from {got or out.strip()!r}, "
                           "not from the copy: its results would measure the working tree")


def _baseline(runner: _Runner, copy: Path, env: dict, groups: list[tuple[str, ...]],
              tmp: Path, timeout: float, log) -> dict[tuple[str, ...], str]:
    """Run every test group on the unmodified copy; {group: why it fails} for the bad ones."""
    union = list(dict.fromkeys(t for g in groups for t in g))
    rc, out, secs = runner.run(_pytest_cmd(union, tmp / "pt-baseline"), cwd=copy, env=env,
                               timeout=timeout * max(1, len(groups)))
    log(f"baseline: {len(union)} test ids, {secs:.0f} s, "
        f"{'pass' if rc == 0 else 'FAIL' if rc is not None else 'TIMEOUT'}")
    if rc == 0:
        return {}
    bad = {}
    for k, g in enumerate(groups):      # find which groups fail on their own
        rc, out, _ = runner.run(_pytest_cmd(g, tmp / f"pt-baseline{k}"), cwd=copy, env=env,
                                timeout=timeout)
        if rc != 0:
            bad[g] = ("timeout" if rc is None else f"exit {rc}: " + _first_failure(out))
    return bad


def _run_mutant(runner: _Runner, mutant: Mutant, pristine: Path, shared_build: Path,
                tmp_root: Path, timeout: float) -> _Outcome:
    tmp = Path(tempfile.mkdtemp(prefix=f"m-{mutant.id[:40]}-", dir=tmp_root))
    try:
        copy = tmp / "hetaccel"
        shutil.copytree(pristine, copy, symlinks=True, ignore=_ignore)
        problem = apply_mutation(copy, mutant)
        if problem:
            return _Outcome("error", how=problem.split(":")[0], detail=problem)
        build = _overlay_build(shared_build, tmp / "build")
        rc, out, secs = runner.run(_pytest_cmd(mutant.tests, tmp / "pt"), cwd=copy,
                                   env=_env(tmp, build), timeout=timeout)
        if rc is None:
            return _Outcome("killed", how="timeout", seconds=secs,
                            detail=f"no result within {timeout:.0f} s")
        if rc in (1, 2):        # failures, or an error while collecting / interrupted
            return _Outcome("killed", how="failed", seconds=secs, detail=_first_failure(out))
        if rc == 0:
            return _Outcome("survived", seconds=secs)
        return _Outcome("error", how=f"pytest exit {rc}", seconds=secs,
                        detail=_first_failure(out))
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


# --- the bench ---------------------------------------------------------------------------


def run(args) -> dict:
    if args.jobs < 1:
        raise ValueError(f"--jobs must be >= 1, got {args.jobs}")
    if args.timeout <= 0:
        raise ValueError(f"--timeout must be > 0, got {args.timeout}")
    catalogue = Path(args.catalogue)
    mutants = _select(load_catalogue(catalogue), args.only, args.sample, args.seed)
    runnable = [m for m in mutants if m.equivalent is None]
    shared_build = Path(args.build_dir).resolve() if args.build_dir else build_root()
    runner = _Runner()
    t0 = time.perf_counter()

    def log(msg):
        print(f"[mutants {time.perf_counter() - t0:6.0f} s] {msg}", file=sys.stderr, flush=True)

    outcomes: dict[str, _Outcome] = {
        m.id: _Outcome("equivalent", detail=m.equivalent) for m in mutants if m.equivalent}
    baseline_seconds = 0.0
    tmp_root = Path(tempfile.mkdtemp(prefix="hetaccel-mutants-"))
    try:
        # one snapshot: the mutants all start from the same tree even while it is edited
        pristine = _copy_tree(PACKAGE_ROOT, tmp_root / "pristine")
        env = _env(pristine.parent, shared_build)
        _sanity(runner, pristine, env)
        if runnable:
            groups = list(dict.fromkeys(m.tests for m in runnable))
            tb = time.perf_counter()
            bad = _baseline(runner, pristine, env, groups, tmp_root, args.timeout, log)
            baseline_seconds = time.perf_counter() - tb
            for m in runnable:
                if m.tests in bad:
                    outcomes[m.id] = _Outcome("error", how="tests fail unmutated",
                                              detail=bad[m.tests])
        todo = [m for m in runnable if m.id not in outcomes]
        done = []
        lock = threading.Lock()

        def one(m: Mutant) -> None:
            o = _run_mutant(runner, m, pristine, shared_build, tmp_root, args.timeout)
            with lock:
                outcomes[m.id] = o
                done.append(m.id)
                log(f"{len(done)}/{len(todo)} {m.id}: {o.status}"
                    f"{' (' + o.how + ')' if o.how else ''} {o.seconds:.0f} s")

        try:
            with ThreadPoolExecutor(max_workers=args.jobs) as pool:
                for f in [pool.submit(one, m) for m in todo]:
                    f.result()
        except BaseException:
            runner.kill_all()
            raise
    finally:
        shutil.rmtree(tmp_root, ignore_errors=True)

    results = []
    for m in mutants:
        o = outcomes[m.id]
        r = {"id": m.id, "file": m.file, "status": o.status, "why": m.why,
             "tests": list(m.tests), "seconds": round(o.seconds, 1)}
        if o.how:
            r["how"] = o.how
        if o.detail:
            r["detail"] = o.detail
        results.append(r)
    def ids(status):
        return [r["id"] for r in results if r["status"] == status]

    killed, survived = ids("killed"), ids("survived")
    applied = len(killed) + len(survived)
    score = len(killed) / applied if applied else None
    return {
        "catalogue": str(catalogue),
        "mutants": len(mutants),
        "applied": applied,
        "killed": len(killed),
        "survived": len(survived),
        "errors": len(ids("error")),
        "equivalent": len(ids("equivalent")),
        "timeouts": sum(1 for r in results if r.get("how") == "timeout"),
        "score": None if score is None else round(score, 4),
        "survivors": survived,
        "errored": ids("error"),
        "equivalents": ids("equivalent"),
        "jobs": args.jobs,
        "baseline_seconds": round(baseline_seconds, 1),
        "seconds": round(time.perf_counter() - t0, 1),
        "results": results,
        "ok": not ids("error") and score is not None and score >= args.min_score,
    }
