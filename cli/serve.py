"""``keras-dkd serve``: a local test server for TF Serving's REST API (see keras_dkd.serve)."""

from __future__ import annotations

import click

from keras_dkd.cli.options import user_errors


@click.command()
@click.argument("export_dir", type=click.Path(file_okay=False))
@click.option("--port", type=click.IntRange(0, 65535), default=8501, show_default=True,
              help="Port to listen on (TF Serving's REST port by default; 0: any free one).")
@click.option("--host", default="127.0.0.1", show_default=True,
              help="Address to listen on (0.0.0.0: every interface).")
@click.option("--model-name", default=None,
              help="The model's name in URLs. Default: EXPORT_DIR's folder name.")
@click.option("--quiet", is_flag=True, help="Do not log each request.")
@user_errors
def serve(export_dir, port, host, model_name, quiet):
    """Answer TF Serving REST requests for the latest version under EXPORT_DIR.

    A test server for checking clients without Docker: POST /v1/models/NAME:predict with
    {"signature_name": ..., "instances": [...]} or {"inputs": ...}; GET /v1/models/NAME and
    /v1/models/NAME/metadata. Not for production: serve EXPORT_DIR with TF Serving there.
    Stop it with Ctrl-C.
    """
    from keras_dkd.serve import make_server

    server = make_server(export_dir, host=host, port=port, model_name=model_name, quiet=quiet)
    model = server.model
    bound_host, bound_port = server.server_address[:2]
    base = f"http://{bound_host}:{bound_port}/v1/models/{model.name}"
    click.echo(f"Serving {model.path} (model {model.name!r}, version {model.version}); "
               "a test server, not a production one")
    click.echo(f"  POST {base}:predict   signatures: {', '.join(sorted(model.signatures))}")
    click.echo(f"  GET  {base}  and  {base}/metadata")
    click.echo("Press Ctrl-C to stop.", err=True)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        click.echo("\nStopped.", err=True)
    finally:
        server.server_close()
