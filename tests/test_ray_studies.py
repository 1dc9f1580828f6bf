"""Studies on Ray (:mod:`keras_dkd.study_jobs`): the same records as serially, failures that name
the run, reruns that skip finished runs, and the errors when Ray is missing or unreachable.

The Ray study runs in the torch pass only: its point (tasks, workers, gathering) does not depend
on the backend, and torch, which compiles nothing, keeps four tiny trainings cheap. The serial
reference runs in this process with torch held to the workers' one thread, so the two must agree
to the last bit.
"""

from __future__ import annotations

import json
import os

import pytest

from keras_dkd.errors import UserError

BACKEND = os.environ.get("KERAS_BACKEND", "tensorflow")
FOLDS = [0, 1, 2, 3]
TINY = {"variant": "cnn", "max_utterances": 40, "epochs": 1, "batch_size": 16}


def _base(emodb_data):
    from keras_dkd.options import RunOptions

    where = {flag.removeprefix("--").replace("-", "_"): value
             for flag, value in zip(emodb_data[::2], emodb_data[1::2], strict=True)}
    return RunOptions.from_flat(dataset="emodb", protocol="loso", fold=0, **where, **TINY)


def _fold_records(out, report):
    """Per fold: the cv.json entry (without where it lies), metrics.json and history.csv."""
    records = {}
    for entry in report["folds"]:
        run_dir = out / f"fold{entry['fold']}-{entry['group']}"
        records[entry["fold"]] = {
            "entry": {k: v for k, v in entry.items() if k != "run_dir"},
            "metrics": json.loads((run_dir / "metrics.json").read_text()),
            "history": (run_dir / "history.csv").read_text(),
        }
    return records


@pytest.mark.skipif(BACKEND != "torch", reason="Ray studies: the torch pass only (see above)")
def test_ray_cv_gives_the_serial_records_names_a_failed_run_and_resumes(
        emodb_data, tmp_path, monkeypatch):
    pytest.importorskip("ray")
    import torch

    from keras_dkd import corpora, studies, study_jobs
    from keras_dkd.study_jobs import RayOptions
    from keras_dkd.training import Progress

    base = _base(emodb_data)
    groups = corpora.groups("emodb", "four_class", data_dir=base.data.data_dir)
    on_ray = tmp_path / "ray"
    # A fifth fold whose run directory is someone else's folder: its task fails at once.
    foreign = on_ray / f"fold4-{groups[4]}"
    foreign.mkdir(parents=True)
    (foreign / "notes.txt").write_text("not a run")
    events = []
    progress = Progress(on_event=events.append)
    with pytest.raises(UserError, match=rf"fold 4 \({groups[4]}\) .*not empty"):
        studies.cv(base, on_ray, folds=[*FOLDS, 4], progress=progress,
                   ray=RayOptions(workers=2, threads=1))
    ray_event = next(e for e in events if e["event"] == "ray")
    assert (ray_event["workers"], ray_event["threads"], ray_event["tasks"]) == (2, 1, 5)
    finished = [e for e in events if e["event"] == "finished"]
    assert sorted(e["status"] for e in finished) == ["failed"] + ["trained"] * 4
    for fold in FOLDS:  # the other trainings finished, each in its own run directory
        assert (on_ray / f"fold{fold}-{groups[fold]}" / "metrics.json").is_file()

    # The rerun reads the finished runs here and starts no Ray at all.
    def no_ray(*args, **kwargs):
        raise AssertionError("a rerun of finished runs started Ray")

    monkeypatch.setattr(study_jobs, "_connect", no_ray)
    report = studies.cv(base, on_ray, folds=FOLDS, ray=RayOptions(workers=2, threads=1))

    serial = tmp_path / "serial"
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # as each Ray worker
    try:
        reference = studies.cv(base, serial, folds=FOLDS)
    finally:
        torch.set_num_threads(threads)
    assert report["summary"] == reference["summary"]
    assert _fold_records(on_ray, report) == _fold_records(serial, reference)
    config = json.loads((on_ray / f"fold0-{groups[0]}" / "config.json").read_text())
    assert config["backend"] == "torch"  # the workers ran the driver's backend


# ------------------------------------------------------------------------------------------
# the errors: cheap, no training
# ------------------------------------------------------------------------------------------


def _cv(emodb_data, tmp_path, *extra):
    from click.testing import CliRunner

    from keras_dkd.cli.main import cli

    args = ["cv", "--dataset", "emodb", "--out", str(tmp_path / "cv"), "--folds", "0",
            "--quiet", *emodb_data, *extra]
    return CliRunner().invoke(cli, args)


@pytest.mark.once
def test_ray_without_ray_installed_names_the_extra(emodb_data, tmp_path, monkeypatch):
    import sys

    monkeypatch.setitem(sys.modules, "ray", None)  # `import ray` raises ImportError
    result = _cv(emodb_data, tmp_path, "--ray")
    assert result.exit_code == 1, result.output
    assert "pip install 'keras-dkd[ray]'" in result.output
    assert "Traceback" not in result.output


@pytest.mark.once
def test_an_unreachable_ray_address_is_a_one_line_error(emodb_data, tmp_path):
    pytest.importorskip("ray")
    result = _cv(emodb_data, tmp_path, "--ray-address", "127.0.0.1:9")
    assert result.exit_code == 1, result.output
    assert "cannot reach a Ray cluster at 127.0.0.1:9" in result.output
    assert "Traceback" not in result.output


@pytest.mark.once
def test_ray_workers_without_ray_is_a_usage_error(emodb_data, tmp_path):
    result = _cv(emodb_data, tmp_path, "--ray-workers", "2")
    assert result.exit_code == 2, result.output
    assert "--ray-workers" in result.output and "add --ray" in result.output
    assert not (tmp_path / "cv").exists()
