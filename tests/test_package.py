"""The package as a user installs it: build the wheel, install it into a fresh venv (dependencies
reached from the test venv, never its editable evalloop), and run it from outside the checkout:
--version, the demo task the packaged code writes, `eval --model tiny-random` on it, and the
review app served from the installed package."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import sysconfig
import tomllib
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SOURCES = ("pyproject.toml", "README.md", "LICENSE", "loop", "evals")


def run(args: list, cwd: Path, timeout: int = 300) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    env.update(HF_HUB_OFFLINE="1", OMP_NUM_THREADS="1", TOKENIZERS_PARALLELISM="false")
    proc = subprocess.run([str(a) for a in args], cwd=cwd, env=env, capture_output=True,
                          text=True, timeout=timeout)
    assert proc.returncode == 0, f"{args}\n{proc.stdout[-2000:]}\n{proc.stderr[-3000:]}"
    return proc


@pytest.fixture(scope="module")
def installed(tmp_path_factory) -> Path:
    """A venv holding only the built wheel; a .pth file puts the test venv's site-packages on
    its path for the dependencies. (.pth files inside a directory added that way are not run,
    so the test venv's editable-install finder stays out.)"""
    tmp = tmp_path_factory.mktemp("package")
    source = tmp / "source"  # a copy: building in the checkout would leave build/ and egg-info
    source.mkdir()
    for name in SOURCES:
        if (ROOT / name).is_dir():
            shutil.copytree(ROOT / name, source / name,
                            ignore=shutil.ignore_patterns("__pycache__"))
        else:
            shutil.copy2(ROOT / name, source / name)
    run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q",
         "-w", tmp / "dist", source], cwd=tmp)
    (wheel,) = (tmp / "dist").glob("evalloop-*.whl")
    venv = tmp / "venv"
    run([sys.executable, "-m", "venv", "--without-pip", venv], cwd=tmp)
    python = venv / "bin" / "python"
    site = Path(run([python, "-c", "import sysconfig; print(sysconfig.get_path('purelib'))"],
                    cwd=tmp).stdout.strip())
    (site / "test-venv-dependencies.pth").write_text(sysconfig.get_path("purelib") + "\n")
    run([sys.executable, "-m", "pip", "--python", python, "install", "-q", "--no-deps",
         "--no-index", wheel], cwd=tmp)
    return venv


def test_the_wheel_installs_and_runs_from_outside_the_checkout(installed, tmp_path):
    evalloop, python = installed / "bin" / "evalloop", installed / "bin" / "python"
    version = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["version"]
    assert run([evalloop, "--version"], cwd=tmp_path).stdout.strip() == f"evalloop {version}"

    where = run([python, "-c", "import loop, evals; print(loop.__file__); print(evals.__file__)"],
                cwd=tmp_path).stdout.split()
    assert all(Path(p).is_relative_to(installed) for p in where), where  # not the checkout

    workspace = tmp_path / "ws"
    task = Path(run([evalloop, "demo", "--workspace", workspace, "--prepare-only"],
                    cwd=tmp_path).stdout.strip())
    assert task == workspace / "demo-task" / "task.toml"  # generated: no datasets/ in a wheel
    for split in ("train", "dev", "test"):  # the same items as the committed demo task
        assert (task.parent / f"{split}.jsonl").read_bytes() == \
            (ROOT / "datasets" / "demo" / f"{split}.jsonl").read_bytes()
    result = json.loads(run([evalloop, "eval", "--model", "tiny-random", "--task", task,
                             "--workspace", workspace, "--limit", "10", "--json"],
                            cwd=tmp_path).stdout)
    assert result["n"] == 10 and 0 <= result["pass_rate"] <= 1, result

    helped = run([evalloop, "app", "--help"], cwd=tmp_path).stdout
    script = Path(helped.split("Serves ", 1)[1].split(" with Streamlit")[0])
    assert script.is_relative_to(installed) and script.name == "main.py" and script.is_file()
    # the installed app renders its overview page on the workspace the eval wrote
    page = run([python, "-c", (
        "import sys; from streamlit.testing.v1 import AppTest\n"
        f"sys.argv = ['app', '--workspace', {str(workspace)!r}]\n"
        f"at = AppTest.from_file({str(script)!r}, default_timeout=120).run()\n"
        "assert not at.exception, at.exception\n"
        "print(' '.join(str(e.value) for e in [*at.header, *at.markdown, *at.sidebar.caption]))")],
        cwd=tmp_path).stdout
    assert "Overview" in page and f"workspace {workspace}" in page
    assert "snapshot published" in page  # it read the snapshot the eval published


def test_the_demo_generator_rewrites_the_committed_task_byte_for_byte(tmp_path):
    from loop.data.demo_task import demo_task, write_task

    write_task(tmp_path, benchmark_data="../../../shared/benchmarks")
    committed = ROOT / "datasets" / "demo"
    for name in ("train.jsonl", "dev.jsonl", "test.jsonl", "task.toml"):
        assert (tmp_path / name).read_bytes() == (committed / name).read_bytes(), name
    assert demo_task(tmp_path / "ws") == committed / "task.toml"  # a checkout uses its copy
    assert not (tmp_path / "ws").exists()
