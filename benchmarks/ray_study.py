"""Wall time of a cross-validation study serially and on Ray, end to end.

Run by hand on a quiet machine, never in CI (its figures depend on the machine and its load)::

    KERAS_BACKEND=torch .venv/bin/python benchmarks/ray_study.py --epochs 3
    KERAS_BACKEND=torch .venv/bin/python benchmarks/ray_study.py             # the recipe's epochs
    .venv/bin/python benchmarks/ray_study.py --folds 2 --epochs 1 --out /tmp/rs \\
        --json /tmp/rs.json --md /tmp/rs.md                                  # a smoke run

It times two commands as a user runs them, each in a fresh process and into fresh run
directories: the 10-fold EmoDB CE study (``keras-dkd cv --variant ce``, one CNN+MHA per
held-out speaker) serially, then the same study with ``--ray --ray-workers N`` (a local Ray
instance, N trainings at once, the cores split between them). Both wall times include
start-up: imports, and for Ray starting the instance and its workers. The corpus is built and
its feature cache filled first, untimed, so neither run computes features.

Writes ``docs/results/ray_study.json`` and ``.md``: the machine, its cores and load, the
epochs, the wall seconds of each run and the speed-up, and how far the two runs' per-fold UA
are apart (the serial run's threads and the workers' differ, so they may differ in the last
bits of the weights, and a fold's UA with them).
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
RESULTS = REPO / "docs" / "results"


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--epochs", type=int, default=None,
                        help="epochs per training (default: the default recipe's)")
    parser.add_argument("--folds", type=int, default=10,
                        help="the first N folds (speakers) of EmoDB (default 10: all)")
    parser.add_argument("--workers", type=int, default=2, help="Ray workers (default 2)")
    parser.add_argument("--out", type=Path, default=None,
                        help="folder for the two studies' run directories (default: a temporary "
                        "one, deleted afterwards); must not exist")
    parser.add_argument("--data-dir", default=None, help="TFDS data dir (as keras-dkd's)")
    parser.add_argument("--cache-dir", default=None, help="feature cache (as keras-dkd's)")
    parser.add_argument("--manual-dir", default=None,
                        help="the EmoDB folder [$KERAS_DKD_EMODB_DIR, else ../shared/data/emodb]")
    parser.add_argument("--json", type=Path, default=RESULTS / "ray_study.json")
    parser.add_argument("--md", type=Path, default=RESULTS / "ray_study.md")
    return parser.parse_args(argv)


def _where(args) -> list[str]:
    manual = args.manual_dir or os.environ.get("KERAS_DKD_EMODB_DIR") or str(
        REPO.parent / "shared" / "data" / "emodb")
    flags = ["--manual-dir", manual]
    for flag, value in (("--data-dir", args.data_dir), ("--cache-dir", args.cache_dir)):
        if value:
            flags += [flag, value]
    return flags


def _warm_up(args, base_flags) -> None:
    """Build EmoDB and fill the feature cache (one fold's data prepares every utterance)."""
    code = (
        "import sys\n"
        "from keras_dkd import corpora, data\n"
        "from keras_dkd.options import RunOptions\n"
        "kw = dict(zip(sys.argv[1::2], sys.argv[2::2]))\n"
        "kw = {k.removeprefix('--').replace('-', '_'): v for k, v in kw.items()}\n"
        "corpora.prepare('emodb', 'four_class', data_dir=kw.get('data_dir'),\n"
        "                manual_dir=kw.get('manual_dir'))\n"
        "options = RunOptions.from_flat(dataset='emodb', protocol='loso', fold=0, **kw)\n"
        "data.prepare(options.data, options.seed)\n"
    )
    subprocess.run([sys.executable, "-c", code, *base_flags], check=True)


def _timed_cv(out: Path, flags: list[str]) -> float:
    command = [sys.executable, "-c", "from keras_dkd.cli.main import main; main()", "cv",
               "--dataset", "emodb", "--variant", "ce", "--quiet", "--out", str(out), *flags]
    print("$", " ".join(command[3:]), flush=True)
    start = time.perf_counter()
    subprocess.run(command, check=True)
    return time.perf_counter() - start


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _fold_ua(out: Path) -> tuple[dict[int, float], dict]:
    report = json.loads((out / "cv.json").read_text())
    return {f["fold"]: f["student"]["ua"] for f in report["folds"]}, report


def main(argv=None):
    args = parse_args(argv)
    backend = os.environ.get("KERAS_BACKEND", "tensorflow")
    root = args.out or Path(tempfile.mkdtemp(prefix="ray_study_"))
    if args.out is not None and args.out.exists():
        sys.exit(f"{args.out} exists: give a new folder (reruns would skip finished runs)")
    where = _where(args)
    study = [*where, "--folds", *[str(k) for k in range(args.folds)]]
    if args.epochs is not None:
        study += ["--epochs", str(args.epochs)]
    try:
        _warm_up(args, where)
        load_before = os.getloadavg()
        serial = _timed_cv(root / "serial", study)
        on_ray = _timed_cv(root / "ray", [*study, "--ray", "--ray-workers", str(args.workers)])
        load_after = os.getloadavg()
        serial_ua, report = _fold_ua(root / "serial")
        ray_ua, _ = _fold_ua(root / "ray")
    finally:
        if args.out is None:
            shutil.rmtree(root, ignore_errors=True)
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    threads = max(1, cores // args.workers)
    result = {
        "study": "ray_study",
        "command": "KERAS_BACKEND=" + backend + " python benchmarks/ray_study.py "
        + " ".join(sys.argv[1:] if argv is None else argv),
        "date": datetime.date.today().isoformat(),
        "machine": {"cpu": _cpu_model(), "cores": cores, "python": platform.python_version(),
                    "load_average_before": [round(x, 2) for x in load_before],
                    "load_average_after": [round(x, 2) for x in load_after]},
        "backend": backend,
        "study_options": {"dataset": "emodb", "config": report["config"], "variant": "ce",
                          "folds": args.folds,
                          "epochs": report["options"]["epochs"]},
        "serial": {"wall_s": round(serial, 1), "threads": cores},
        "ray": {"wall_s": round(on_ray, 1), "workers": args.workers, "threads": threads},
        "speedup": round(serial / on_ray, 2),
        "max_fold_ua_difference": max(abs(serial_ua[k] - ray_ua[k]) for k in serial_ua),
        "mean_ua": {"serial": sum(serial_ua.values()) / len(serial_ua),
                    "ray": sum(ray_ua.values()) / len(ray_ua)},
    }
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(result, indent=1) + "\n")
    args.md.write_text(markdown(result))
    print(markdown(result))


def markdown(r: dict) -> str:
    m, s = r["machine"], r["study_options"]
    return "\n".join([
        f"# A {s['folds']}-fold EmoDB CE study, serially and on Ray",
        "",
        f"- `{r['command']}` ({r['date']}).",
        f"- {s['folds']} trainings of CNN+MHA with cross-entropy (`keras-dkd cv --variant ce`), "
        f"{s['epochs']} epochs each, {s['config']}, backend {r['backend']}.",
        f"- Machine: {m['cpu']}, {m['cores']} cores; load average "
        f"{m['load_average_before'][0]:.1f} before, {m['load_average_after'][0]:.1f} after.",
        "- Wall time of the whole command, start-up included (imports; for Ray the local "
        "instance and its workers); the corpus and its feature cache were ready.",
        "",
        "| run | trainings at once | threads each | wall s | speed-up |",
        "| --- | --- | --- | --- | --- |",
        f"| serial | 1 | {r['serial']['threads']} | {r['serial']['wall_s']:.1f} | 1.00 |",
        f"| Ray, local | {r['ray']['workers']} | {r['ray']['threads']} | "
        f"{r['ray']['wall_s']:.1f} | {r['speedup']:.2f} |",
        "",
        f"Mean test UA {100 * r['mean_ua']['serial']:.1f} % serially, "
        f"{100 * r['mean_ua']['ray']:.1f} % on Ray (largest per-fold difference "
        f"{100 * r['max_fold_ua_difference']:.1f} points: the serial run's threads and the "
        "workers' differ, so the weights may differ in the last bits).",
        "",
    ])


if __name__ == "__main__":
    main()
