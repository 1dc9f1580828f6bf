"""``keras-dkd export``: a ``.keras`` model -> a TF Serving SavedModel version directory."""

from __future__ import annotations

import click

from keras_dkd.cli.options import unsafe_option, user_errors


@click.command()
@click.argument("model", type=click.Path(dir_okay=False))
@click.argument("export_dir", type=click.Path(file_okay=False))
@click.option(
    "--version",
    "version",
    type=click.IntRange(min=1),
    default=None,
    help="Version number: writes EXPORT_DIR/N. Default: the largest existing version + 1.",
)
@click.option("--overwrite", is_flag=True, help="Replace EXPORT_DIR/N if it already exists.")
@click.option(
    "--format",
    "fmt",
    type=click.Choice(["saved_model", "onnx"]),
    default="saved_model",
    show_default=True,
    help="saved_model: TF Serving's SavedModel. onnx: EXPORT_DIR/N/features.onnx and "
    "waveform.onnx (needs the onnx extra: pip install 'keras-dkd[onnx]').",
)
@unsafe_option
@user_errors
def export(model, export_dir, version, overwrite, fmt, unsafe):
    """Export MODEL (.keras) for TF Serving as the SavedModel EXPORT_DIR/N (or as ONNX).

    SavedModel signatures: serving_default (features float32 [None, 197, 40] -> logits,
    probabilities); classify_waveform (waveform float32 [None]: one 16 kHz mono utterance of
    any length, samples in [-1, 1] -> probabilities, class_id, label); classify_waveforms (a
    padded batch of waveforms plus their lengths); classify_wav (WAV files as bytes, any
    sample rate and channel count, 16-bit PCM). The export runs under the TensorFlow backend
    whatever backend trained the model (in a subprocess if needed), accepts standard
    TensorFlow ops only, and the version directory appears atomically. Serve EXPORT_DIR with
    the tensorflow/serving image, or try it locally with `keras-dkd serve` (see the README).
    """
    from keras_dkd.export import export_saved_model

    path = export_saved_model(
        model, export_dir, version=version, overwrite=overwrite, safe_mode=not unsafe, fmt=fmt
    )
    click.echo(f"Exported {model} to {path}")
    if fmt == "onnx":
        click.echo("  features.onnx  features float32 [N, 197, 40] -> logits, probabilities")
        click.echo("  waveform.onnx  waveform float32 [samples] (16 kHz mono) -> probabilities, "
                   "class_id (class names in the metadata)")
        return
    click.echo("  serving_default     features float32 [None, 197, 40] -> logits, probabilities")
    click.echo("  classify_waveform   waveform float32 [None] (16 kHz mono) -> probabilities, "
               "class_id, label")
    click.echo("  classify_waveforms  waveforms float32 [None, None], lengths int32 [None] -> "
               "the same, per row")
    click.echo("  classify_wav        wav string [None] (WAV file bytes) -> the same, per file")
