"""The repository's own entry points keep the README's promises: `make bench` runs every
benchmark the README reports (and any benchmarks/bench_*.py added later), and `.ci/run` makes
sure a browser is there before `make test`, so the report tests that need Chromium run in CI
instead of skipping."""
from __future__ import annotations

import os
import re
import shutil
import stat
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
BENCH = re.compile(r"benchmarks/bench_\w+\.py")


def test_make_bench_runs_every_benchmark_the_readme_reports():
    make = shutil.which("make")
    if make is None:
        pytest.skip("no make on PATH")
    # -n prints the recipe without running it (nor the set-up it depends on)
    dry_run = subprocess.run([make, "-n", "bench"], cwd=ROOT, capture_output=True, text=True, check=True).stdout
    reported = set(BENCH.findall((ROOT / "README.md").read_text()))
    present = {f"benchmarks/{path.name}" for path in (ROOT / "benchmarks").glob("bench_*.py")}
    assert {"benchmarks/bench_prepare.py", "benchmarks/bench_serve.py"} <= reported
    assert reported <= present, f"the README reports benchmarks that do not exist: {reported - present}"
    assert set(BENCH.findall(dry_run)) == present


def fake_tools(directory: Path, chromium_installed: bool) -> Path:
    """A PATH holding only what .ci/run calls: a root `id`, an `apt-get` that cannot install
    chromium until its package lists are updated (a fresh image) and then puts a chromium on
    the PATH, and a `make`; each records its call in calls.log."""
    directory.mkdir()
    log = directory / "calls.log"
    scripts = {
        "id": 'echo 0',
        "make": f'echo "make $*" >> {log}',
        "apt-get": f'''echo "apt-get $*" >> {log}
case "$*" in
  *update*) : > {directory}/lists ;;
  *install*) [ -e {directory}/lists ] || exit 100
             printf '#!/bin/sh\\n' > {directory}/chromium; {shutil.which("chmod")} +x {directory}/chromium ;;
esac''',
    }
    if chromium_installed:
        scripts["chromium"] = "exit 0"
    for name, body in scripts.items():
        path = directory / name
        path.write_text(f"#!/bin/sh\n{body}\n")
        path.chmod(path.stat().st_mode | stat.S_IXUSR)
    os.symlink(shutil.which("dirname"), directory / "dirname")
    return log


def run_ci(tmp_path: Path, tools: Path) -> subprocess.CompletedProcess:
    checkout = tmp_path / "checkout"
    (checkout / ".ci").mkdir(parents=True, exist_ok=True)
    shutil.copy(ROOT / ".ci" / "run", checkout / ".ci" / "run")
    return subprocess.run([shutil.which("bash"), str(checkout / ".ci" / "run")], capture_output=True, text=True,
                          env={"PATH": str(tools)}, timeout=60)


def test_ci_installs_chromium_before_make_test_and_only_once(tmp_path):
    log = fake_tools(tmp_path / "bin", chromium_installed=False)
    first = run_ci(tmp_path, tmp_path / "bin")
    assert first.returncode == 0, first.stderr
    calls = log.read_text().splitlines()
    assert calls == ["apt-get install -y -qq chromium", "apt-get update -qq", "apt-get install -y -qq chromium",
                     "make test"]
    assert (tmp_path / "bin" / "chromium").is_file()
    log.unlink()
    again = run_ci(tmp_path, tmp_path / "bin")  # idempotent: chromium is there now, apt is left alone
    assert again.returncode == 0 and log.read_text().splitlines() == ["make test"]


def test_ci_leaves_apt_alone_when_chromium_is_installed(tmp_path):
    log = fake_tools(tmp_path / "bin", chromium_installed=True)
    assert run_ci(tmp_path, tmp_path / "bin").returncode == 0
    assert log.read_text().splitlines() == ["make test"]
