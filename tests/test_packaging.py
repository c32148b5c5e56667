"""The built wheel must contain every module of the source tree."""

import subprocess
import sys
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
# Every directory of the package tree that is a Python package (has __init__.py).
SUBPACKAGES = tuple(sorted(p.parent.name for p in ROOT.glob("*/__init__.py")
                           if p.parent.name not in ("tests", "build")))
#: Non-Python files the package needs at run time.
PACKAGE_DATA = ("hetaccel/py.typed", "hetaccel/data/sentences.txt",
                *(f"hetaccel/verify/{p.name}" for p in ROOT.glob("verify/*")
                  if p.suffix in (".cpp", ".v")))


def _source_modules() -> set[str]:
    mods = {f"hetaccel.{p.stem}" for p in ROOT.glob("*.py") if p.stem != "__init__"}
    mods.add("hetaccel")
    for sub in SUBPACKAGES:
        for p in (ROOT / sub).rglob("*.py"):
            rel = p.relative_to(ROOT).with_suffix("")
            parts = ["hetaccel", *rel.parts]
            if parts[-1] == "__init__":
                parts = parts[:-1]
            mods.add(".".join(parts))
    return mods


def test_wheel_contains_and_imports_every_module(tmp_path):
    subprocess.run([sys.executable, "-m", "build", "--wheel", "--no-isolation",
                    "--outdir", str(tmp_path / "dist"), str(ROOT)],
                   check=True, capture_output=True)
    wheel = next((tmp_path / "dist").glob("hetaccel-*.whl"))
    names = zipfile.ZipFile(wheel).namelist()
    in_wheel = set()
    for n in names:
        if n.endswith(".py") and n.startswith("hetaccel/"):
            parts = n[:-3].split("/")
            if parts[-1] == "__init__":
                parts = parts[:-1]
            in_wheel.add(".".join(parts))
    missing = _source_modules() - in_wheel
    assert not missing, f"modules missing from the wheel: {sorted(missing)}"
    assert not any(n.startswith("hetaccel/tests/") for n in names)
    assert {"spec", "rtl", "sim", "host", "workloads", "verify", "bench", "boards", "cli"} <= \
        set(SUBPACKAGES), SUBPACKAGES
    assert len(PACKAGE_DATA) > 3, "the simulator harness sources are missing from verify/"
    missing_data = set(PACKAGE_DATA) - set(names)
    assert not missing_data, f"package data missing from the wheel: {sorted(missing_data)}"

    # Import every module from the unpacked wheel, not from the source tree:
    # the wheel's directory comes first on sys.path, ahead of the editable finder.
    site = tmp_path / "site"
    zipfile.ZipFile(wheel).extractall(site)
    script = ("import importlib, sys\n"
              f"sys.path.insert(0, {str(site)!r})\n"
              f"mods = {sorted(in_wheel)!r}\n"
              "for m in mods:\n"
              "    if m.endswith('__main__'): continue  # runs the CLI when imported\n"
              "    mod = importlib.import_module(m)\n"
              f"    assert mod.__file__.startswith({str(site)!r}), mod.__file__\n"
              "print(len(mods))\n")
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                         cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    assert int(out.stdout.strip()) == len(in_wheel), out.stdout
