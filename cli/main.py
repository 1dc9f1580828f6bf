"""``keras-dkd``: the click application.

Commands parse options, call the library and print. Library errors that the user can fix
(:class:`keras_dkd.errors.UserError`) become one-line ``Error:`` messages and exit status 1.
:func:`main`, the console script, does the same for problems no command can foresee: a full disk
or an unwritable folder anywhere (:func:`keras_dkd.errors.storage_error`) and a
``KERAS_BACKEND`` that names no Keras backend.

TensorFlow's native libraries log two lines each time they load ("oneDNN custom operations are
on ..." and absl's "All log messages before absl::InitializeLog() ..."), before
``TF_CPP_MIN_LOG_LEVEL`` takes effect, so the variable cannot silence them. The first import of
``tensorflow`` therefore runs with file descriptor 2 pointed at a temporary file; what was
written there is then copied to the real stderr without those start-up notes. oneDNN itself
stays as TensorFlow configures it (numerics unchanged).
"""

from __future__ import annotations

import contextlib
import importlib.abc
import json
import os
import re
import sys
import tempfile

# Keep TensorFlow's C++ start-up chatter (CPU feature notes) off the user's terminal.
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

_TF_STARTUP_NOISE = re.compile(
    r".*(oneDNN custom operations are on|All log messages before absl::InitializeLog\(\) is "
    r"called are written to STDERR|cpu_feature_guard\.cc|To enable the following instructions:"
    r".*rebuild TensorFlow).*"
)


@contextlib.contextmanager
def _filtered_native_stderr():
    """Capture what native code writes to fd 2 in the block; replay it minus TF's start-up notes.

    The capture goes to a temporary file (a pipe could fill up and block the writer). Python
    tracebacks raised in the block are printed after it, unfiltered.
    """
    try:
        sys.stderr.flush()
        saved = os.dup(2)
        capture = tempfile.TemporaryFile()
    except OSError:  # no fd 2 or no temp dir: leave stderr alone
        yield
        return
    os.dup2(capture.fileno(), 2)
    try:
        yield
    finally:
        sys.stderr.flush()
        os.dup2(saved, 2)
        os.close(saved)
        capture.seek(0)
        text = capture.read().decode("utf-8", "replace")
        capture.close()
        kept = [line for line in text.splitlines(keepends=True)
                if not _TF_STARTUP_NOISE.fullmatch(line.rstrip("\n"))]
        if kept:
            sys.stderr.write("".join(kept))
            sys.stderr.flush()


class _QuietTensorFlowImport(importlib.abc.MetaPathFinder):
    """Run the first ``import tensorflow`` inside :func:`_filtered_native_stderr`."""

    def find_spec(self, fullname, path=None, target=None):
        if fullname != "tensorflow":
            return None
        sys.meta_path.remove(self)  # once: find the real spec without this finder
        import importlib.util

        spec = importlib.util.find_spec(fullname)
        if spec is None or spec.loader is None:
            return spec
        loader = spec.loader
        exec_module = loader.exec_module

        def quiet_exec_module(module):
            with _filtered_native_stderr():
                exec_module(module)

        try:
            loader.exec_module = quiet_exec_module
        except AttributeError:  # a loader that cannot be patched: import as usual
            pass
        return spec


if "tensorflow" not in sys.modules:
    sys.meta_path.insert(0, _QuietTensorFlowImport())

import click  # noqa: E402

from keras_dkd import __version__  # noqa: E402
from keras_dkd.allocator import tune_allocator  # noqa: E402
from keras_dkd.cli.cross import cross  # noqa: E402
from keras_dkd.cli.evaluate import evaluate, predict  # noqa: E402
from keras_dkd.cli.export import export  # noqa: E402
from keras_dkd.cli.options import user_errors  # noqa: E402
from keras_dkd.cli.prepare import prepare  # noqa: E402
from keras_dkd.cli.serve import serve  # noqa: E402
from keras_dkd.cli.train import ablate, cv, train  # noqa: E402
from keras_dkd.errors import UserError  # noqa: E402

__all__ = ["cli", "main", "user_errors"]


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="keras-dkd")
def cli():
    """Speech emotion recognition with DKD-distilled head-fusion CNNs (DKDFMH).

    Pick the Keras backend with KERAS_BACKEND=tensorflow|torch|jax.
    """
    _quiet_library_logs()
    # On JAX and TensorFlow, before their first computation: freed CPU buffers stay in the
    # process instead of being page-faulted in afresh every step (keras_dkd.allocator).
    try:
        tune_allocator()
    except UserError as error:
        raise click.ClickException(str(error)) from None


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
    click.echo(f"machine               {env['machine']['cpu']}, "
               f"{env['machine']['logical_cpus']} logical CPUs, "
               f"{' '.join(env['machine']['cpu_features']) or 'no listed vector features'}")
    source = env["source"]
    click.echo("source                " + (f"git {source['commit'][:12]}"
                                          + (" (uncommitted changes)" if source["dirty"] else "")
                                          if source else "installed package (no git checkout)"))
    click.echo(f"host allocator        {env['allocator']}")
    click.echo(f"data dir (TFDS)       {env['data_dir']}")
    click.echo(f"feature cache         {env['cache_dir']}")
    click.echo(f"runs dir              {env['runs_dir']}")
    click.echo(f"EmoDB manual dir      {env['emodb_dir'] or '(not set: downloads the archive)'}")
    click.echo(f"IEMOCAP manual dir    {env['iemocap_dir'] or '(not set)'}")
    click.echo(f"RAVDESS manual dir    {env['ravdess_dir'] or '(not set)'}")


for _command in (prepare, train, evaluate, predict, ablate, cv, cross, export, serve):
    cli.add_command(_command)


def _backend_error(error: BaseException):
    """A one-line message for a Keras backend that cannot be imported, else None."""
    text = str(error)
    if not (isinstance(error, ValueError) and text.startswith("Unable to import backend")):
        return None
    name = text.split(":", 1)[-1].strip()
    if os.environ.get("KERAS_BACKEND"):
        where = f"KERAS_BACKEND={os.environ['KERAS_BACKEND']}"
        fix = "set KERAS_BACKEND to tensorflow, torch or jax (or unset it)"
    else:
        where = f"the backend {name!r} of ~/.keras/keras.json"
        fix = 'set "backend" there, or KERAS_BACKEND, to tensorflow, torch or jax'
    return f"{where} is not a Keras backend; {fix}"


def main():
    """Console-script entry point.

    Besides what the commands catch, turns a full disk or an unwritable folder (anywhere, in
    any command) and an unknown ``KERAS_BACKEND`` into one ``Error:`` line and exit status 1.
    """
    from keras_dkd.errors import storage_error

    try:
        status = cli(prog_name="keras-dkd")
    except Exception as error:
        storage = storage_error(error)
        message = str(storage) if storage is not None else _backend_error(error)
        if message is None:
            raise
        click.echo(f"Error: {message}", err=True)
        sys.stdout.flush()
        sys.stderr.flush()
        if storage is not None:
            # Skip the interpreter's teardown: with the disk full, finalizers of half-written
            # HDF5 files have crashed it (exit 139). Every file keras-dkd keeps is written
            # atomically and the run lock is released by the kernel, so nothing is lost.
            os._exit(1)
        sys.exit(1)
    sys.exit(status)


if __name__ == "__main__":
    main()
