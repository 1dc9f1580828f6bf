"""keras_dkd.reports: mean ± sd summaries, ablation and cross-validation tables, protocol text."""

from __future__ import annotations

import pytest

from keras_dkd import reports
from keras_dkd.studies import ABLATION_ROWS


@pytest.mark.once
def test_summarize_uses_the_sample_standard_deviation():
    s = reports.summarize([0.5, 0.6, 0.7])
    assert s["mean"] == pytest.approx(0.6)
    assert s["std"] == pytest.approx(0.1)
    assert s["n"] == 3 and s["values"] == [0.5, 0.6, 0.7]
    assert reports.summarize([0.4])["std"] == 0.0


def _table(mode="table"):
    names = (
        [r[0] for r in ABLATION_ROWS]
        if mode == "table"
        else ["CNN+MHA (teacher)", "DKD β=1", "DKD β=8"]
    )
    rows = []
    for i, name in enumerate(names):
        wa = reports.summarize([0.5 + 0.01 * i, 0.52 + 0.01 * i])
        ua = reports.summarize([0.45 + 0.01 * i, 0.47 + 0.01 * i])
        rows.append(
            {
                "name": name,
                "wa": wa,
                "ua": ua,
                "macro_f1": ua,
                "runs": [],
                "paper": reports.PAPER_TABLE1.get(name) if mode == "table" else None,
            }
        )
    return {
        "dataset": "emodb",
        "config": "four_class",
        "mode": mode,
        "seeds": [0, 1],
        "protocol": "speaker-independent: leave-one-speaker-out, fold 0 (test speaker03)",
        "epochs": 30,
        "batch_size": 32,
        "learning_rate": 1e-4,
        "select": "best",
        "backend": "torch",
        "command": "keras-dkd ablate --dataset emodb",
        "rows": rows,
    }


@pytest.mark.once
def test_the_ablation_table_states_protocol_command_and_rows(tmp_path):
    text = reports.format_ablation(_table())
    assert "speaker-independent" in text and "speaker03" in text
    assert "`keras-dkd ablate --dataset emodb`" in text
    for name, _, _ in ABLATION_ROWS:
        assert f"| {name} |" in text
    assert "| CNN | 51.0 ± 1.4 | 46.0 ± 1.4 |" in text  # WA 50/52 %, UA 45/47 %
    assert "79.1 / 77.1" in text  # the paper's DKD row, for reference
    assert "| seed 0 | seed 1 |" in text
    sweep = reports.format_ablation(_table("beta"))
    assert "| DKD β=8 |" in sweep and "paper" not in sweep.split("\n\n")[1]
    reports.plot_ablation(_table(), tmp_path / "a.png")
    assert (tmp_path / "a.png").read_bytes().startswith(b"\x89PNG")


@pytest.mark.once
def test_cv_summary_is_mean_and_std_over_folds():
    folds = [
        {
            "fold": k,
            "group": g,
            "run_dir": "",
            "teacher": {"wa": wa, "ua": wa - 0.1, "macro_f1": wa - 0.2, "n_utterances": 30},
            "student": {"wa": wa + 0.05, "ua": wa, "macro_f1": wa, "n_utterances": 30},
        }
        for k, (g, wa) in enumerate([("speaker03", 0.6), ("speaker08", 0.7)])
    ]
    summary = {
        m: {k: reports.summarize([f[m][k] for f in folds]) for k in ("wa", "ua", "macro_f1")}
        for m in ("teacher", "student")
    }
    report = {
        "dataset": "emodb",
        "config": "four_class",
        "variant": "dkd",
        "seed": 0,
        "backend": "jax",
        "groups": ["speaker03", "speaker08"],
        "folds": folds,
        "summary": summary,
        "command": None,
    }
    text = reports.format_cv(report)
    assert "Leave-one-speaker-out" in text
    assert "| 0 | speaker03 | 30 | 60.0 | 50.0 | 40.0 | 65.0 | 60.0 | 60.0 |" in text
    assert "| **mean ± std** | | | 65.0 ± 7.1 |" in text


@pytest.mark.once
def test_protocol_descriptions_say_whether_speakers_are_shared():
    loso = reports.protocol_description(
        {"dataset": "iemocap", "test_group": "session5", "val_speakers": ["Ses04F"]}, "loso", 4
    )
    assert loso.startswith("speaker-independent: leave-one-session-out, fold 4 (test session5)")
    assert "Ses04F" in loso
    random = reports.protocol_description({"split_seed": 3, "val_fraction": 0.1}, "random")
    assert random.startswith("speaker-dependent: random 80/20") and "seed 3" in random
