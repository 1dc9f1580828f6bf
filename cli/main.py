"""``keras-dkd``: the click application.

Commands parse options, call the library and print. Library errors that the user can fix
(:class:`keras_dkd.errors.UserError`) become one-line ``Error:`` messages and exit status 1.
"""

from __future__ import annotations

import functools
import json
import sys

import click

from keras_dkd import __version__
from keras_dkd.errors import UserError


def user_errors(func):
    """Turn a library :class:`UserError` into a one-line click error (exit 1, no traceback)."""

    @functools.wraps(func)
    def wrapper(*args, **kwargs):
        try:
            return func(*args, **kwargs)
        except UserError as error:
            raise click.ClickException(str(error)) from None

    return wrapper


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="keras-dkd")
def cli():
    """Speech emotion recognition with DKD-distilled head-fusion CNNs (DKDFMH).

    Pick the Keras backend with KERAS_BACKEND=tensorflow|torch|jax.
    """


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


def main():
    """Console-script entry point."""
    sys.exit(cli(prog_name="keras-dkd"))


if __name__ == "__main__":
    main()
