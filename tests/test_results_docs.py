"""The recorded results and the README agree: docs/results/recipes.md (the recipes study),
recipes_round1.md and recipes_round2.md (its earlier rounds) are what ``benchmarks/recipes.py``
renders from their JSON records, and the README quotes their tables as they are.
"""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "docs" / "results"


def _recipes_script():
    """benchmarks/recipes.py as a module (it imports its sibling ``_timed``)."""
    sys.path.insert(0, str(ROOT / "benchmarks"))
    try:
        spec = importlib.util.spec_from_file_location(
            "recipes_study", ROOT / "benchmarks" / "recipes.py")
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
    finally:
        sys.path.remove(str(ROOT / "benchmarks"))
    return module


def _table_rows(markdown: str) -> list[str]:
    return [line for line in markdown.splitlines()
            if line.startswith("| ") and not line.startswith(("| ---", "| recipe |"))]


STUDIES = ["recipes", "recipes_round1", "recipes_round2"]


@pytest.mark.once
@pytest.mark.parametrize("name", STUDIES)
def test_recipes_report_is_rendered_from_its_records(name):
    study = json.loads((RESULTS / f"{name}.json").read_text())
    assert (RESULTS / f"{name}.md").read_text() == _recipes_script()._markdown(study)
    assert (RESULTS / f"{name}.png").is_file()
    # recipes_round2 was made as recipes.json and renamed when `default` began to keep its
    # last epoch (README: Results), so its command names no --name
    assert f"--name {name}" in study["command"] or name in ("recipes", "recipes_round2")
    keys = [(r.get("setting", r["recipe"]), r["variant"], r["fold"], r["seed"])
            for r in study["records"]]
    assert len(keys) == len(set(keys)), "a (recipe, variant, fold, seed) is recorded twice"


@pytest.mark.once
@pytest.mark.parametrize("name", STUDIES)
def test_readme_quotes_the_recipes_tables_and_count(name):
    study = json.loads((RESULTS / f"{name}.json").read_text())
    readme = (ROOT / "README.md").read_text()
    rows = _table_rows((RESULTS / f"{name}.md").read_text())
    assert rows
    missing = [row for row in rows if row not in readme]
    assert not missing, f"README.md lacks these rows of docs/results/{name}.md: {missing}"
    words = " ".join(readme.split())
    assert f"{len(study['records'])} of the {study['planned']} planned trainings" in words


def _benchmark(name: str):
    """benchmarks/<name>.py as a module."""
    spec = importlib.util.spec_from_file_location(name, ROOT / "benchmarks" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _throughput_report():
    return _benchmark("throughput_report")


@pytest.mark.once
@pytest.mark.parametrize("study", ["throughput_gpu", "torch_syncs_gpu"])
def test_gpu_throughput_reports_are_rendered_from_their_records(study):
    record = json.loads((RESULTS / f"{study}.json").read_text())
    assert (RESULTS / f"{study}.md").read_text() == _throughput_report().render(record)
    assert (RESULTS / f"{study}.png").is_file()
    # every run is a throughput.py record of a GPU run, with the baseline on the same GPU
    for run in record["runs"]:
        assert run["info"]["plain_torch_device"].startswith("cuda")
        assert set(run["results"]) == {"float32", "mixed_bfloat16"}


@pytest.mark.once
def test_readme_quotes_the_gpu_throughput_rows():
    readme = (ROOT / "README.md").read_text()
    quoted = [line for line in readme.splitlines() if line.startswith("| throughput_")
              or line.startswith("| torch_before_") or line.startswith("| torch_after_")]
    assert quoted, "the README's GPU table is missing"
    rows = set((RESULTS / "throughput_gpu.md").read_text().splitlines())
    rows |= set((RESULTS / "torch_syncs_gpu.md").read_text().splitlines())
    assert [line for line in quoted if line not in rows] == []


@pytest.mark.once
def test_cpu_bfloat16_throughput_report_is_rendered_from_its_records():
    record = json.loads((RESULTS / "throughput_avx512.json").read_text())
    assert (RESULTS / "throughput_avx512.md").read_text() == _throughput_report().render(record)
    assert (RESULTS / "throughput_avx512.png").is_file()
    # runs of throughput.py on a CPU with bfloat16 instructions, the baseline on the same CPU
    for run in record["runs"]:
        assert run["info"]["plain_torch_device"].startswith("cpu")
        assert "avx512_bf16" in run["info"]["machine"]
        assert set(run["results"]) == {"float32", "mixed_bfloat16"}


@pytest.mark.once
def test_readme_quotes_the_cpu_bfloat16_rows_and_the_parity_study():
    readme = (ROOT / "README.md").read_text()
    quoted = [line for line in readme.splitlines() if line.startswith("| avx512_")]
    assert quoted, "the README's AVX-512 table is missing"
    rows = set((RESULTS / "throughput_avx512.md").read_text().splitlines())
    assert [line for line in quoted if line not in rows] == []
    parity = json.loads((RESULTS / "precision_parity.json").read_text())
    words = " ".join(readme.split())
    summary = parity["summary"]
    difference = summary["mean_ua_difference"] * 100, summary["sd_ua_difference"] * 100
    assert f"{difference[0]:+.1f} ± {difference[1]:.1f}" in words
    assert f"{summary['wall_speedup_median']:.2f}×" in words


@pytest.mark.once
@pytest.mark.parametrize("split", ["val", "test"])
def test_speaker_norm_serving_reports_are_rendered_from_their_records(split):
    """The as-served measurement of speaker-normalised models: the table is its JSON's, the
    plot exists, every record is a speaker-normalised model, and the README quotes the means."""
    name = f"speaker_norm_serving_{split}"
    study = json.loads((RESULTS / f"{name}.json").read_text())
    assert study["split"] == split and f"--split {split}" in study["command"]
    rendered = _benchmark("speaker_norm_serving")._markdown(study)
    assert (RESULTS / f"{name}.md").read_text() == rendered
    assert (RESULTS / f"{name}.png").is_file()
    assert all(r["options"]["speaker_norm"] and r["split"] == split for r in study["records"])
    mean_row = next(line for line in (RESULTS / f"{name}.md").read_text().splitlines()
                    if line.startswith("| mean ± sd"))
    assert mean_row in (ROOT / "README.md").read_text()


@pytest.mark.once
def test_readme_quotes_the_second_rounds_paired_rows():
    """recipes_rotate2 (the second round, continued): every candidate's paired row, with its
    test column, is in the README as recorded, and each record holds a test UA (after the
    decision) and its run's options."""
    study = json.loads((RESULTS / "recipes_rotate2.json").read_text())
    assert "--with-test" in study["command"] and "--name recipes_rotate2" in study["command"]
    assert all("ua" in r and r["options"]["val_order"] == "rotate" for r in study["records"])
    rows = [line for line in (RESULTS / "recipes_rotate2.md").read_text().splitlines()
            if line.startswith("| default_") and line.count("|") == 7]
    assert rows
    readme = (ROOT / "README.md").read_text()
    assert not [row for row in rows if row not in readme]


@pytest.mark.once
def test_retraining_noise_report_is_rendered_from_its_records():
    """recipes_retrain: the table is what benchmarks/retrain_noise.py renders from its JSON, the
    plot exists, every replica's records are in the study file it names, and the README quotes
    the pooled row."""
    study = json.loads((RESULTS / "recipes_retrain.json").read_text())
    module = _benchmark("retrain_noise")
    assert (RESULTS / "recipes_retrain.md").read_text() == module._markdown(study)
    assert (RESULTS / "recipes_retrain.png").is_file()
    for replica in study["replicas"]:
        source = json.loads((ROOT / replica["file"]).read_text())["records"]
        kept = {(r.get("setting", r.get("recipe")), r["variant"], r["fold"], r["seed"]): r
                for r in source}
        for record in replica["records"]:
            original = kept[(replica["setting"], "cnn_mha", record["fold"], replica["seed"])]
            assert record["ua"] == original["ua"] and record["val_ua"] == original["val_ua"]
    pooled = next(line for line in (RESULTS / "recipes_retrain.md").read_text().splitlines()
                  if line.startswith("| pooled"))
    assert pooled in (ROOT / "README.md").read_text()


@pytest.mark.once
def test_selection_report_is_rendered_from_its_records():
    """selection (which epoch to keep): the table is what benchmarks/selection.py renders from
    its JSON, each record's rule scores are the means of its judgements, and the README quotes
    the rules' rows."""
    study = json.loads((RESULTS / "selection.json").read_text())
    module = _recipes_script_named("selection")
    assert (RESULTS / "selection.md").read_text() == module._markdown(study)
    assert (RESULTS / "selection.png").is_file()
    for record in study["records"]:
        assert len(record["judgements"]) == 2
        for rule in module.RULES:
            mean = sum(j[rule] for j in record["judgements"]) / len(record["judgements"])
            assert record[f"judge_ua_{rule}"] == pytest.approx(mean)
    text = (RESULTS / "selection.md").read_text()
    seed0 = text.split("## Seed 0", 1)[1].split("\n\n", 2)[1]  # the decision's table
    rows = [line for line in seed0.splitlines() if line.startswith("| `")]
    assert len(rows) == len(module.RULES)
    readme = (ROOT / "README.md").read_text()
    assert not [row for row in rows if row not in readme]


def _recipes_script_named(name: str):
    """benchmarks/<name>.py as a module, its folder importable (for ``_timed``)."""
    sys.path.insert(0, str(ROOT / "benchmarks"))
    try:
        return _benchmark(name)
    finally:
        sys.path.remove(str(ROOT / "benchmarks"))
