"""``keras-dkd evaluate`` and ``predict``: parse, call the library, print."""

from __future__ import annotations

import json

import click

from keras_dkd.cli.options import (
    check_data_options,
    data_options,
    dataset_option,
    inference_batch_option,
    protocol_options,
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
@dataset_option(required=False)
@data_options
@click.option(
    "--split",
    default="test",
    show_default=True,
    help="test / val: the split `train` makes with the data options; or a corpus split "
    "(speaker03, session1, several joined by +), or all.",
)
@protocol_options(default_protocol=None)
@click.option(
    "--seed",
    type=click.IntRange(min=0),
    metavar="INT",
    default=None,
    help="The seed of the splits (for --split test/val) [the run's, else 0].",
)
@click.option(
    "--val-fraction",
    type=click.FloatRange(min=0, max=1, max_open=True),
    metavar="FLOAT",
    default=None,
    help="As given to train (for --split test/val) [the run's, else 0.1].",
)
@click.option(
    "--allow-overlap",
    is_flag=True,
    help="Score a split even if it shares utterances with the training or validation data of "
    "the model's run (the numbers then measure nothing held out).",
)
@inference_batch_option
@click.option("--json", "as_json", is_flag=True, help="Print the metrics as JSON.")
@unsafe_option
@user_errors
def evaluate(model, split, seed, allow_overlap, batch_size, as_json, unsafe, **given):
    """Evaluate a trained MODEL (.keras) on a dataset split, at utterance level.

    A model in a run directory (RUN/student.keras) is evaluated on that run's test split by
    default: the run's data options are used, and any data option given replaces the run's.
    A split that shares utterances with the run's training or validation data is refused
    unless --allow-overlap. A model outside a run directory needs --dataset.

    Cross-corpus: --dataset OTHER [--config ...] --split all scores the model on another
    corpus, its classes matched by name (happiness = happy); utterances of classes the model
    lacks are not scored, and a model with a class the corpus lacks is refused.
    """
    from keras_dkd import evaluation

    found = evaluation.run_of_model(model)
    data = _data_options(model, found, {k: v for k, v in given.items() if v is not None})
    _check_split(data, split)
    metrics = evaluation.evaluate(model, data, split=split, seed=seed,
                                  allow_overlap=allow_overlap, safe_mode=not unsafe,
                                  batch_size=batch_size)
    if split in ("test", "val") and found is not None:
        _note_other_split(found, data, seed)
    if as_json:
        click.echo(json.dumps(metrics, indent=2))
    else:
        click.echo(format_metrics(metrics))


def _data_options(model, found, given: dict):
    """The data options to evaluate on: the run's, with the given ones replacing theirs."""
    from keras_dkd.options import DataOptions

    if "config_name" in given:
        given["config"] = given.pop("config_name")
    if found is None and "dataset" not in given:
        raise click.UsageError(
            f"{model} is not a model of a run directory (no config.json beside it): give "
            "--dataset and the options it was trained with"
        )
    values = {} if found is None else found[1].data.to_dict()
    if "dataset" in given and given["dataset"] != values.get("dataset"):
        values = {}  # another corpus: nothing of the run's data options applies
    if "protocol" in given and given["protocol"] != values.get("protocol"):
        values["fold"] = None
    values.update(given)
    dataset = values.setdefault("dataset", "emodb")
    protocol = values.get("protocol", "random")
    config, fold = check_data_options(dataset, values.get("config"), protocol,
                                      values.get("fold"), manifest=values.get("manifest"),
                                      data_dir=values.get("data_dir"))
    values.update(config=config, fold=fold)
    return DataOptions(**values)


def _note_other_split(found, data, seed):
    """Tell the user when --split test/val is not the split the model's run held out."""
    run, options = found
    differ = [
        f"--{key.replace('_', '-')} {value}"
        for key, value in options.data.to_dict().items()
        if key not in data.location_fields() and getattr(data, key) != value
    ]
    if seed is not None and seed != options.seed:
        differ.append(f"--seed {options.seed}")
    if differ:
        click.echo(
            f"Note: {run.config} was trained with {', '.join(differ)}; leave out the data "
            "options to evaluate on that run's held-out split.",
            err=True,
        )


def _check_split(data, split):
    from keras_dkd import corpora

    if split in ("test", "val", "all"):
        return
    groups = list(corpora.groups(data.dataset, data.config, data_dir=data.data_dir,
                                 manifest=data.manifest))
    for part in split.split("+"):
        if part not in groups:
            raise click.BadParameter(
                f"{part!r} is not a {data.dataset} split; use test, val, all or one of "
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
