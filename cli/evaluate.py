"""``keras-dkd evaluate`` and ``predict``: parse, call the library, print."""

from __future__ import annotations

import json
from pathlib import Path

import click

from keras_dkd.cli.options import (
    check_data_options,
    data_options,
    dataset_option,
    inference_batch_option,
    protocol_options,
    seed_option,
    unsafe_option,
    user_errors,
)


def format_metrics(metrics: dict) -> str:
    """A plain-text report: WA, UA, macro-F1, per-class recall and the confusion matrix."""
    classes = list(metrics["classes"])
    width = max(8, *(len(c) for c in classes)) + 1
    lines = []
    header = []
    if metrics.get("model"):
        header.append(metrics["model"])
    if metrics.get("dataset"):
        header.append(f"on {metrics['dataset']}")
    if metrics.get("split"):
        header.append(f"split {metrics['split']}")
    if header:
        lines.append(" ".join(header))
    lines += [
        f"utterances  {metrics['n_utterances']}",
        f"WA          {100 * metrics['wa']:.1f} %",
        f"UA          {100 * metrics['ua']:.1f} %",
        f"macro-F1    {100 * metrics['macro_f1']:.1f} %",
        "",
        "recall per class:",
    ]
    for name in classes:
        recall = metrics["per_class_recall"][name]
        value = "    — (no utterances)" if recall is None else f"{100 * recall:5.1f} %"
        lines.append(f"  {name:<{width}} {value}")
    lines += [
        "",
        "confusion (rows: true, columns: predicted):",
        " " * (width + 2) + "".join(f"{c[:7]:>8}" for c in classes),
    ]
    for name, row in zip(classes, metrics["confusion"], strict=True):
        lines.append(f"  {name:<{width}}" + "".join(f"{int(v):>8}" for v in row))
    return "\n".join(lines)


@click.command()
@click.argument("model", type=click.Path(dir_okay=False))
@dataset_option()
@data_options
@click.option(
    "--split",
    default="test",
    show_default=True,
    help="test / val: the split `train` makes with the same --protocol, --fold and "
    "--seed; or a corpus split (speaker03, session1, several joined by +), or "
    "all.",
)
@protocol_options()
@seed_option("The data seed of the run (for --split test/val).")
@click.option(
    "--val-fraction",
    type=click.FloatRange(min=0, max=1, max_open=True),
    metavar="FLOAT",
    default=0.1,
    show_default=True,
    help="As given to train (for --split test/val).",
)
@inference_batch_option
@click.option("--json", "as_json", is_flag=True, help="Print the metrics as JSON.")
@unsafe_option
@user_errors
def evaluate(model, dataset, config_name, split, protocol, fold, as_json, unsafe, **options):
    """Evaluate a trained MODEL (.keras) on a dataset split, at utterance level."""
    config_name, fold = check_data_options(dataset, config_name, protocol, fold)
    _check_split(dataset, split)
    if split in ("test", "val"):
        run_options = ("seed", "val_fraction", "max_utterances")
        _warn_if_not_the_run_split(
            model,
            dict(dataset=dataset, config=config_name, protocol=protocol, fold=fold,
                 **{key: options[key] for key in run_options}),
        )
    from keras_dkd import experiments

    # options: the data options, --seed, --val-fraction and --batch-size.
    metrics = experiments.evaluate(
        model,
        dataset,
        config=config_name,
        split=split,
        protocol=protocol,
        fold=fold,
        safe_mode=not unsafe,
        **options,
    )
    if as_json:
        click.echo(json.dumps(metrics, indent=2))
    else:
        click.echo(format_metrics(metrics))


def _warn_if_not_the_run_split(model, given: dict):
    """Tell the user when --split test/val is not the split the model's run held out."""
    config_path = Path(model).parent / "config.json"
    try:
        options = json.loads(config_path.read_text(encoding="utf-8"))["options"]
    except (OSError, ValueError, KeyError, TypeError):
        return
    differ = [
        f"--{key.replace('_', '-')} {options.get(key)}"
        for key, value in given.items()
        if key in options and options.get(key) != value
    ]
    if differ:
        click.echo(
            f"Note: {config_path} was trained with {', '.join(differ)}; pass the same options "
            "to evaluate on that run's held-out split.",
            err=True,
        )


def _check_split(dataset, split):
    from keras_dkd import corpora

    if split in ("test", "val", "all"):
        return
    groups = list(corpora.groups(dataset))
    for part in split.split("+"):
        if part not in groups:
            raise click.BadParameter(
                f"{part!r} is not a {dataset} split; use test, val, all or one of "
                f"{', '.join(groups)} (join several with +)",
                param_hint="'--split'",
            )


@click.command()
@click.argument("model", type=click.Path(dir_okay=False))
@click.argument("files", nargs=-1, required=True, type=click.Path())
@click.option(
    "--json",
    "as_json",
    is_flag=True,
    help='Print a JSON list of {"file", "label", "probabilities"}.',
)
@click.option(
    "--hop",
    type=click.FloatRange(min=0, min_open=True),
    metavar="FLOAT",
    default=0.4,
    show_default=True,
    help="Seconds between the starts of 2-s segments.",
)
@inference_batch_option
@unsafe_option
@user_errors
def predict(model, files, as_json, hop, batch_size, unsafe):
    """Predict the emotion of audio FILES with MODEL (.keras).

    Any format libsndfile reads, any sample rate or channel count: audio is mixed to mono,
    resampled to 16 kHz, cut into 2-s segments and the segment logits averaged. Prints
    `file<TAB>label<TAB>probability` per file. A file that cannot be used is reported on
    stderr (one line) while the others are still predicted; the exit status is then 1.
    """
    from keras_dkd.io import load_model
    from keras_dkd.predict import predict_files

    keras_model = load_model(model, safe_mode=not unsafe)
    results = predict_files(keras_model, list(files), hop_seconds=hop, batch_size=batch_size)
    failed = [r for r in results if "error" in r]
    good = [r for r in results if "error" not in r]
    if as_json:
        click.echo(json.dumps(good, indent=2))
    else:
        for r in good:
            click.echo(f"{r['file']}\t{r['label']}\t{r['probabilities'][r['label']]:.4f}")
    for r in failed:
        click.echo(f"Error: {r['error']}", err=True)
    if failed:
        raise SystemExit(1)
