"""The installed package: console script, `info`, and no stray top-level modules."""

import importlib.util
import json
import os
import subprocess
import sys
import sysconfig
from pathlib import Path

import pytest
from click.testing import CliRunner

from keras_dkd.cli.main import cli


def test_help_lists_the_command_group():
    result = CliRunner().invoke(cli, ["--help"])
    assert result.exit_code == 0, result.output
    assert "Commands:" in result.output
    assert "info" in result.output


def test_info_reports_the_active_backend():
    result = CliRunner().invoke(cli, ["info", "--json"])
    assert result.exit_code == 0, result.output
    report = json.loads(result.output)
    assert report["backend"] == os.environ.get("KERAS_BACKEND", "tensorflow")
    for name in ("keras", "tensorflow", "torch", "jax"):
        assert name in report["versions"]
    assert report["versions"]["keras"]
    assert report["data_dir"] and report["cache_dir"]
    machine = report["machine"]
    assert machine["cpu"] and machine["logical_cpus"] >= 1
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.is_file():  # the features listed are the ones the kernel reports
        flags = set(next(line for line in cpuinfo.read_text().splitlines()
                         if line.startswith(("flags", "Features"))).split(":", 1)[1].split())
        assert set(machine["cpu_features"]) <= flags
        assert ("avx2" in machine["cpu_features"]) == ("avx2" in flags)
    # a git checkout (CI's fresh clone) names its commit
    if (Path(__file__).resolve().parents[1] / ".git").exists():
        assert len(report["source"]["commit"]) == 40


def test_console_script_runs_info():
    exe = Path(sys.executable).with_name("keras-dkd")
    out = subprocess.run([str(exe), "info"], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert f"backend               {os.environ.get('KERAS_BACKEND', 'tensorflow')}" in out.stdout
    # the command tunes the host allocator on JAX and TensorFlow, not on PyTorch
    tuned = os.environ.get("KERAS_BACKEND", "tensorflow") in ("jax", "tensorflow")
    assert ("host allocator        glibc tuned" in out.stdout) == tuned, out.stdout


@pytest.mark.once
def test_no_top_level_cli_or_datasets_module_in_site_packages():
    site = Path(sysconfig.get_paths()["purelib"])
    for name in ("cli", "datasets"):
        assert not (site / name).exists(), f"{name} landed in site-packages"
        assert not (site / f"{name}.py").exists()
    # Imported from outside the repository, the namespace maps to the repo folders.
    code = (
        "import importlib.util,sys;"
        "print(importlib.util.find_spec('keras_dkd.cli') is not None,"
        " importlib.util.find_spec('keras_dkd.datasets') is not None,"
        " importlib.util.find_spec('cli') is None)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd="/")
    assert out.stdout.split() == ["True", "True", "True"], out.stderr
    assert importlib.util.find_spec("keras_dkd.datasets") is not None
