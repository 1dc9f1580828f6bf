"""``keras-dkd prepare``: build a corpus with TFDS and fill the feature cache, ahead of training."""

from __future__ import annotations

import click

from keras_dkd.cli.options import check_data_options, data_options, dataset_option, user_errors


@click.command()
@dataset_option()
@data_options
@click.option(
    "--classes",
    default=None,
    metavar="A,B,...",
    help="--dataset csv: the class names in label order, e.g. neutral,happy,angry,sad "
    "[the manifest's labels, sorted]; a row with another label is an error.",
)
@user_errors
def prepare(dataset, config_name, manifest, data_dir, manual_dir, cache_dir, max_utterances,
            classes):
    """Build DATASET (TFDS) if needed and cache its log filter-bank segments.

    `train`, `evaluate`, `ablate` and `cv` do this by themselves on first use; run it first to
    see the corpus' counts, or to build once for several runs. A built dataset and cached
    features are reused (a change of data or feature parameters recomputes them).
    """
    config_name, _ = check_data_options(dataset, config_name, manifest=manifest,
                                        data_dir=data_dir)
    if classes is not None and dataset != "csv":
        raise click.BadParameter("--classes applies to --dataset csv only",
                                 param_hint="'--classes'")
    class_list = [c.strip() for c in classes.split(",")] if classes else None
    from keras_dkd import corpora, data
    from keras_dkd.options import RunOptions

    builder = corpora.prepare(dataset, config_name, data_dir=data_dir, manual_dir=manual_dir,
                              manifest=manifest, classes=class_list)
    # The default recipe's data options (its padding): the features `train` will read.
    options = RunOptions.from_flat(dataset=dataset, config=config_name, data_dir=data_dir,
                                   manual_dir=manual_dir, cache_dir=cache_dir,
                                   max_utterances=max_utterances, manifest=manifest).data
    bundle = data.prepare(options)
    info = bundle.describe()
    splits = info["splits"]
    counts: dict[str, int] = {}
    for part in ("train", "val", "test"):
        for name, n in ((splits.get(part) or {}).get("classes") or {}).items():
            counts[name] = counts.get(name, 0) + int(n)
    click.echo(f"{dataset}/{config_name} (version {builder.version}) in {builder.data_dir}")
    click.echo(
        f"  utterances  {sum(counts.values())}: "
        + ", ".join(f"{name} {n}" for name, n in counts.items())
    )
    groups = corpora.groups(dataset, config_name, data_dir=data_dir, manifest=manifest)
    click.echo(f"  groups      {', '.join(groups)}")
    click.echo(
        f"  features    cached in {info['cache']['dir']} "
        f"({info['cache']['computed_utterances']} utterances computed now)"
    )
