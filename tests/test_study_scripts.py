"""The arithmetic of two study scripts, on small hand-made inputs whose answers are known:
``benchmarks/selection.py`` (which epoch to keep, judged on the other held-out speaker) and
``benchmarks/retrain_noise.py`` (the same recipe trained again, paired on the fold).
"""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]


def _benchmark(name: str):
    """benchmarks/<name>.py as a module (with its folder importable, for ``_timed``)."""
    sys.path.insert(0, str(ROOT / "benchmarks"))
    try:
        spec = importlib.util.spec_from_file_location(name, ROOT / "benchmarks" / f"{name}.py")
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
    finally:
        sys.path.remove(str(ROOT / "benchmarks"))
    return module


def _logits(predictions, n_classes=2):
    """One-hot-ish logits whose argmax is ``predictions``."""
    out = np.zeros((len(predictions), n_classes))
    out[np.arange(len(predictions)), predictions] = 1.0
    return out.tolist()


@pytest.mark.once
def test_selection_judges_each_rule_on_the_speaker_that_did_not_choose():
    # Speakers a and b, two utterances each (classes 0 and 1), three epochs.
    # a is right at epochs 1 and 2 (best: the later, 2), b only at epoch 1.
    labels = [0, 1, 0, 1]
    speakers = ["a", "a", "b", "b"]
    epochs = {
        "1": _logits([0, 1, 0, 1]),  # a 100 %, b 100 %
        "2": _logits([0, 1, 1, 1]),  # a 100 %, b 50 %
        "3": _logits([0, 0, 1, 0]),  # a 50 %, b 0 %
    }
    curves = {"labels": labels, "speakers": speakers, "class_names": ["x", "y"],
              "epochs": epochs}
    result = _benchmark("selection").judge(curves)
    by_pair = {(j["selector"], j["judge"]): j for j in result["judgements"]}
    # a chooses epoch 2 (a tie with 1, the later wins): b there scores 50 %.
    assert by_pair[("a", "b")]["selected_epoch"] == 2
    assert by_pair[("a", "b")]["best"] == pytest.approx(0.5)
    # b chooses epoch 1: a there scores 100 %.
    assert by_pair[("b", "a")]["selected_epoch"] == 1
    assert by_pair[("b", "a")]["best"] == pytest.approx(1.0)
    # the last epoch: a 50 %, b 0 %
    assert by_pair[("b", "a")]["last"] == pytest.approx(0.5)
    assert by_pair[("a", "b")]["last"] == pytest.approx(0.0)
    # the last 5 (all 3) epochs' logits averaged: a predicts [0, 1] (100 %),
    # b predicts [1, 1] (its two utterances' logit sums are both [1, 2]): 50 %
    assert by_pair[("b", "a")]["last5"] == pytest.approx(1.0)
    assert by_pair[("a", "b")]["last5"] == pytest.approx(0.5)
    assert result["mean"]["best"] == pytest.approx(0.75)
    assert result["mean"]["last"] == pytest.approx(0.25)
    assert result["epochs"] == 3


def _replica(label, seed, rows):
    return {"label": label, "seed": seed, "records": {
        fold: {"fold": fold, "val_ua": v, "ua": t, "selected_epoch": e,
               "options": {"seed": seed, "lr": 1e-3, "data_dir": f"/{label}"}}
        for fold, (v, t, e) in enumerate(rows)}}


@pytest.mark.once
def test_retrain_noise_pairs_replicas_of_one_seed_only():
    module = _benchmark("retrain_noise")
    a = _replica("a", 0, [(0.90, 0.80, 30), (0.80, 0.70, 20), (0.85, 0.60, 40)])
    b = _replica("b", 0, [(0.90, 0.70, 31), (0.82, 0.70, 20), (0.85, 0.90, 35)])
    c = _replica("c", 1, [(0.70, 0.50, 10), (0.70, 0.50, 10), (0.70, 0.50, 10)])
    module.check_identical([a, b, c])  # data paths and other seeds do not count
    summary = module.summarize([a, b, c])
    assert len(summary["pairs"]) == 1  # c has no replica of its seed
    pair = summary["pairs"][0]
    assert pair["ua"]["mean"] == pytest.approx((-10 + 0 + 30) / 3)
    assert pair["ua"]["max_abs"] == pytest.approx(30)
    assert pair["val_ua"]["mean"] == pytest.approx(2 / 3)
    assert pair["selected_epochs_differ"] == 2
    pooled = summary["pooled"]["ua"]
    assert pooled["pairs_for_2_points"] == int(np.ceil((2.8 * pooled["sd"] / 2) ** 2))
    text = module._markdown({"command": "python benchmarks/retrain_noise.py ...",
                             "summary": summary})
    assert "| b − a | 0 | 3 |" in text


@pytest.mark.once
def test_retrain_noise_refuses_replicas_that_train_differently():
    module = _benchmark("retrain_noise")
    a = _replica("a", 0, [(0.9, 0.8, 30)])
    b = _replica("b", 0, [(0.9, 0.8, 30)])
    b["records"][0]["options"]["lr"] = 1e-4
    with pytest.raises(SystemExit, match="differ in lr"):
        module.check_identical([a, b])


@pytest.mark.once
def test_selection_report_keeps_the_trainings_whose_run_folders_are_gone(tmp_path):
    """The JSON is the study's record: a later report over a runs folder that lost (or never
    had) some trainings keeps them, so a study spread over sessions adds up."""
    import argparse
    import json

    module = _benchmark("selection")
    judgements = [{"selector": "a", "judge": "b", "selected_epoch": 3, "best": 0.5, "last": 0.75,
                   "last5": 0.75, "last10": 0.75},
                  {"selector": "b", "judge": "a", "selected_epoch": 4, "best": 0.7, "last": 0.65,
                   "last5": 0.7, "last10": 0.7}]
    old = [{"setting": "default:val_fraction=0.2", "fold": fold, "group": f"speaker{fold}",
            "seed": 0, "validation_speakers": ["a", "b"], "judge_ua_best": 0.6,
            "judge_ua_last": 0.7, "judge_ua_last5": 0.725, "judge_ua_last10": 0.725,
            "judgements": judgements, "epochs_run": 40, "wall_seconds": 1.0}
           for fold in range(3)]
    results = tmp_path / "results"
    results.mkdir()
    (results / "selection.json").write_text(json.dumps({"records": old}))
    module.report(argparse.Namespace(runs=str(tmp_path / "runs"), results=str(results)))
    study = json.loads((results / "selection.json").read_text())
    assert [r["fold"] for r in study["records"]] == [0, 1, 2]
    text = (results / "selection.md").read_text()
    assert "| `last` | 70.0 ± 0.0 | +10.0 ± 0.0 |" in text
    assert (results / "selection.png").is_file()
