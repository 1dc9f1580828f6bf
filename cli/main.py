"""``keras-dkd``: the click application.

Commands parse options, call the library and print. Library errors that the user can fix
(:class:`keras_dkd.errors.UserError`) become one-line ``Error:`` messages and exit status 1.
"""

from __future__ import annotations

import json
import os
import sys

# Keep TensorFlow's C++ start-up chatter (CPU feature notes) off the user's terminal.
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import click  # noqa: E402

from keras_dkd import __version__  # noqa: E402
from keras_dkd.cli.evaluate import evaluate, predict  # noqa: E402
from keras_dkd.cli.export import export  # noqa: E402
from keras_dkd.cli.options import user_errors  # noqa: E402
from keras_dkd.cli.prepare import prepare  # noqa: E402
from keras_dkd.cli.train import ablate, cv, train  # noqa: E402

__all__ = ["cli", "main", "user_errors"]


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="keras-dkd")
def cli():
    """Speech emotion recognition with DKD-distilled head-fusion CNNs (DKDFMH).

    Pick the Keras backend with KERAS_BACKEND=tensorflow|torch|jax.
    """
    _quiet_library_logs()


def _quiet_library_logs():
    """Keep TensorFlow's and TFDS's warnings (retracing notes, deprecations) off the terminal."""
    import logging

    logging.getLogger("tensorflow").setLevel(logging.ERROR)
    try:
        from absl import logging as absl_logging
    except ImportError:  # pragma: no cover (absl comes with TensorFlow)
        return
    absl_logging.set_verbosity(absl_logging.ERROR)


@cli.command()
@click.option("--json", "as_json", is_flag=True, help="Print the report as JSON.")
@user_errors
def info(as_json):
    """Show library versions, the Keras backend, accelerators and storage locations."""
    from keras_dkd.info import environment

    env = environment()
    if as_json:
        click.echo(json.dumps(env, indent=2))
        return
    click.echo(f"keras-dkd {env['versions']['keras-dkd']}")
    for name, version in env["versions"].items():
        if name != "keras-dkd":
            click.echo(f"  {name:<20} {version or 'not installed'}")
    click.echo(f"backend               {env['backend']}")
    click.echo(f"accelerators          {', '.join(env['accelerators']) or 'none (CPU only)'}")
    click.echo(f"data dir (TFDS)       {env['data_dir']}")
    click.echo(f"feature cache         {env['cache_dir']}")
    click.echo(f"runs dir              {env['runs_dir']}")
    click.echo(f"EmoDB manual dir      {env['emodb_dir'] or '(not set: downloads the archive)'}")
    click.echo(f"IEMOCAP manual dir    {env['iemocap_dir'] or '(not set)'}")


for _command in (prepare, train, evaluate, predict, ablate, cv, export):
    cli.add_command(_command)


def main():
    """Console-script entry point."""
    sys.exit(cli(prog_name="keras-dkd"))


if __name__ == "__main__":
    main()
