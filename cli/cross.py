"""``keras-dkd cross``: parse the corpora, build the run options, call
:func:`keras_dkd.cross.cross`, print the table."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import click

from keras_dkd.cli.options import (
    MultiValueOption,
    check_data_options,
    quiet_option,
    recipe_values,
    seed_option,
    training_options,
    unsafe_option,
    user_errors,
    variant_options,
)
from keras_dkd.corpora import CORPORA


def parse_corpus(spec: str, data_dir=None) -> dict:
    """``NAME[/CONFIG][=PATH]`` as data option values: PATH is the manifest of ``csv``, the
    manual_dir of the others.

    Example:
        >>> parse_corpus("emodb/full=~/emodb")
        {'dataset': 'emodb', 'config': 'full', 'manual_dir': '~/emodb', 'manifest': None}
    """
    left, _, path = spec.partition("=")
    name, _, config = left.strip().partition("/")
    if name not in CORPORA:
        raise click.BadParameter(
            f"{spec!r}: unknown corpus {name!r}; use NAME[/CONFIG][=PATH] with NAME one of "
            f"{', '.join(CORPORA)}", param_hint="'--corpus'")
    path = path.strip() or None
    manifest = path if name == "csv" else None
    try:
        config, _ = check_data_options(name, config.strip() or None, manifest=manifest,
                                       data_dir=data_dir)
    except click.BadParameter as error:
        raise click.BadParameter(f"{spec!r}: {error.message}", param_hint="'--corpus'") from None
    return {"dataset": name, "config": config,
            "manual_dir": path if name != "csv" else None, "manifest": manifest}


@click.command()
@click.option(
    "--corpus",
    "specs",
    cls=MultiValueOption,
    required=True,
    metavar="SPEC...",
    help="The corpora, two or more, as NAME[/CONFIG][=PATH]: PATH is the manifest of csv "
    "and the manual dir of the others (e.g. iemocap=~/IEMOCAP_full_release ravdess/four_class="
    "~/ravdess emodb csv=my_corpus.csv).",
)
@click.option(
    "--out",
    type=click.Path(file_okay=False),
    required=True,
    metavar="DIR",
    help="Folder of the study: one run directory per training corpus, cross.json, cross.md.",
)
@click.option("--data-dir", type=click.Path(file_okay=False), default=None,
              help="TFDS data dir [$KERAS_DKD_DATA_DIR or ~/tensorflow_datasets].")
@click.option("--cache-dir", type=click.Path(file_okay=False), default=None,
              help="Feature cache [$KERAS_DKD_CACHE_DIR or ~/.cache/keras_dkd].")
@click.option("--max-utterances", type=click.IntRange(min=2), default=None, metavar="N",
              help="Use at most N utterances of each corpus (quick trials and tests).")
@variant_options(
    "As for train: dkd/kd/tckd/nckd (teacher + student per corpus), ce or cnn (one model); "
    "the student is tested."
)
@training_options
@seed_option("Seed of the data splits, the shuffling and the weight initialisation.")
@unsafe_option
@quiet_option
@user_errors
def cross(specs, out, data_dir, cache_dir, max_utterances, unsafe, quiet, **options):
    """Cross-corpus study: train on each corpus, test on each other corpus, as a table.

    Each corpus trains one run (random 80/20 split: its own held-out 20 % is the table's
    diagonal) under DIR; its student is then scored on all of every other corpus, classes
    matched by name (happiness = happy). A pair whose test corpus lacks a class of the
    training corpus is marked n/a with the reason. Writes DIR/cross.md and cross.json. Rerun to
    resume.
    """
    parsed = [parse_corpus(spec, data_dir) for spec in specs]
    if len(parsed) < 2:
        raise click.BadParameter("give two corpora or more", param_hint="'--corpus'")
    from keras_dkd import cross as cross_study
    from keras_dkd.cli.train import _reporting
    from keras_dkd.options import RunOptions

    base = RunOptions.from_flat(**parsed[0], data_dir=data_dir, cache_dir=cache_dir,
                                max_utterances=max_utterances, **recipe_values(options))
    corpora = [dataclasses.replace(base.data, **values) for values in parsed]
    report = cross_study.cross(base, corpora, out, safe_mode=not unsafe, **_reporting(quiet))
    click.echo(cross_study.format_cross(report).rstrip())
    click.echo(f"\nwritten: {Path(out) / 'cross.md'}, cross.json")
