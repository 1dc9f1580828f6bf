"""SavedModel export for TensorFlow Serving, from a model trained on any Keras backend.

:func:`export_saved_model` turns a keras-dkd ``.keras`` model into TF Serving's versioned layout,
``EXPORT_DIR/N/`` (``saved_model.pb`` + ``variables/``), with two signatures:

``serving_default``
    input ``features``: float32 ``[None, 197, 40]`` (log filter-bank segments, as the model
    takes them) -> ``logits`` and ``probabilities``, float32 ``[None, num_classes]``. A model
    trained on speaker-normalised features takes them standardised (the client's job, with the
    speaker's statistics: :mod:`keras_dkd.speaker_norm`).
``classify_waveform``
    input ``waveform``: float32 ``[None]``, one utterance of any length, 16 kHz mono, on the scale
    :func:`keras_dkd.audio.read_audio` returns (samples in [-1, 1]). In the graph: utterances
    shorter than 2 s are zero-padded to one 2-s segment, the waveform is cut into 2-s segments
    with a 0.4-s hop, :class:`keras_dkd.features.LogFBank` turns each into 197 x 40 features,
    the model's segment logits are averaged (summed 64 segments at a time, so memory does not
    grow with the utterance) -> ``probabilities`` float32 ``[num_classes]`` (softmax of the
    mean logits), ``class_id`` int64 scalar and ``label`` string scalar (the model's class
    names). It gives the answer of ``keras-dkd predict``. An empty waveform is an
    ``InvalidArgument`` error. For a model trained on speaker-normalised features the
    utterance is standardised on its own frames in the graph (its own speaker, as ``predict``
    with one file), so digital silence alone is an ``InvalidArgument`` error too.

The export always runs under the TensorFlow backend, which traces the Keras model into a native
TensorFlow graph (a JAX or torch process would need jax2tf, whose ``XlaCallModule`` op stock TF
Serving may refuse, or torch_xla). From another backend the work is done by a subprocess,
``python -m keras_dkd.export``, with ``KERAS_BACKEND=tensorflow``. The saved graph is checked
before it is published: every op must be a registered TensorFlow op and none may be
``XlaCallModule`` or a Python callback (``PyFunc``, ``EagerPyFunc``).

The version directory is written atomically: the SavedModel is built in a hidden temporary
directory beside it (TF Serving ignores names that are not numbers) and renamed into place, so
a partial export never appears under ``EXPORT_DIR/N``.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import warnings
from pathlib import Path

from keras_dkd.errors import UserError, storage_error
from keras_dkd.io import remove_stale

FEATURES_SIGNATURE = "serving_default"
WAVEFORM_SIGNATURE = "classify_waveform"
WAVEFORMS_SIGNATURE = "classify_waveforms"
WAV_SIGNATURE = "classify_wav"
SIGNATURES = (FEATURES_SIGNATURE, WAVEFORM_SIGNATURE, WAVEFORMS_SIGNATURE, WAV_SIGNATURE)
FORMATS = ("saved_model", "onnx")
ONNX_OPSET = 17

# Ops that a stock TF Serving build cannot run or that call back into Python.
FORBIDDEN_OPS = frozenset({"XlaCallModule", "PyFunc", "PyFuncStateless", "EagerPyFunc"})

_RESULT_MARKER = "KERAS_DKD_EXPORT_RESULT "


# --------------------------------------------------------------------------------------------
# Versions


def list_versions(export_dir) -> list[int]:
    """The version numbers already present under ``export_dir`` (sorted; empty if none).

    Args:
        export_dir: a TF Serving model base path.

    Returns:
        The integers whose decimal names are directories under ``export_dir``.

    Example:
        >>> list_versions("/nonexistent")
        []
    """
    export_dir = Path(export_dir)
    if not export_dir.is_dir():
        return []
    return sorted(
        int(p.name) for p in export_dir.iterdir() if p.is_dir() and re.fullmatch(r"\d+", p.name)
    )


def next_version(export_dir) -> int:
    """The version :func:`export_saved_model` picks by default: the largest existing + 1, or 1.

    Example:
        >>> next_version("/nonexistent")
        1
    """
    versions = list_versions(export_dir)
    return versions[-1] + 1 if versions else 1


def _check_version(version) -> int:
    if isinstance(version, bool) or not isinstance(version, int) or version < 1:
        raise UserError(f"export version {version!r} is not a positive integer; pass e.g. 1")
    return version


# --------------------------------------------------------------------------------------------
# Op inspection


def saved_model_op_types(path) -> dict[str, int]:
    """Count the op types in a SavedModel's graph, function library included.

    Reads ``saved_model.pb`` directly: the top-level graph and every function in its library
    (the signatures, the model's call functions, the save/restore functions). Calls of library
    functions by name are not ops and are left out.

    Args:
        path: a SavedModel directory.

    Returns:
        ``{op_type: count}``, sorted by op type.

    Example:
        >>> ops = saved_model_op_types("exports/emotion/1")   # doctest: +SKIP
        >>> "Conv2D" in ops                                    # doctest: +SKIP
        True
    """
    from tensorflow.core.protobuf import saved_model_pb2

    proto = saved_model_pb2.SavedModel()
    proto.ParseFromString((Path(path) / "saved_model.pb").read_bytes())
    counts: dict[str, int] = {}
    for meta_graph in proto.meta_graphs:
        graph = meta_graph.graph_def
        functions = {f.signature.name for f in graph.library.function}
        nodes = list(graph.node)
        for function in graph.library.function:
            nodes.extend(function.node_def)
        for node in nodes:
            if node.op not in functions:
                counts[node.op] = counts.get(node.op, 0) + 1
    return dict(sorted(counts.items()))


def check_standard_ops(path) -> dict[str, int]:
    """Fail if a SavedModel holds an op a stock TF Serving may not run.

    Every op must be registered in TensorFlow's own op registry, and none may be in
    :data:`FORBIDDEN_OPS` (``XlaCallModule``, ``PyFunc``, ``PyFuncStateless``, ``EagerPyFunc``).

    Args:
        path: a SavedModel directory.

    Returns:
        The op-type counts of :func:`saved_model_op_types`.

    Raises:
        UserError: a forbidden or unregistered op is present.

    Example:
        >>> check_standard_ops("exports/emotion/1")   # doctest: +SKIP
    """
    from tensorflow.python.framework import op_def_registry

    ops = saved_model_op_types(path)
    forbidden = sorted(op for op in ops if op in FORBIDDEN_OPS)
    unknown = sorted(
        op for op in ops if op not in FORBIDDEN_OPS and op_def_registry.get(op) is None
    )
    if forbidden or unknown:
        found = ", ".join(forbidden + unknown)
        raise UserError(
            f"the exported graph holds ops that stock TF Serving cannot run ({found}); "
            "remove tf.py_function / jax2tf / custom ops from the model's layers"
        )
    return ops


# --------------------------------------------------------------------------------------------
# The graph (TensorFlow backend only)


def _class_names(model) -> list[str]:
    from keras_dkd.models import get_class_names

    return [str(name) for name in get_class_names(model)]


def build_export_archive(model):
    """Build the ``keras.export.ExportArchive`` holding the serving signatures.

    Must run under the TensorFlow backend (the model is traced into a native TF graph).

    Args:
        model: a keras-dkd model (input ``(None, 197, 40)``, raw logits out, class names carried
            by its final ``Logits`` layer).

    Returns:
        The archive; ``archive.write_out(path, verbose=False)`` writes the SavedModel.

    Example:
        >>> archive = build_export_archive(model)   # doctest: +SKIP
        >>> archive.write_out("/tmp/emotion/1", verbose=False)   # doctest: +SKIP
    """
    import keras

    functions = serving_functions(model)
    archive = keras.export.ExportArchive()
    archive.track(model)
    for name in SIGNATURES:
        fn, input_signature = functions[name]
        archive.add_endpoint(name, fn, input_signature=input_signature)
    return archive


def serving_functions(model) -> dict:
    """The graph functions of the export, by name, as ``(function, input signature)``.

    The four signatures of :data:`SIGNATURES`, plus ``"waveform_numeric"``: one utterance's
    waveform -> ``probabilities`` and ``class_id`` (no string output), the function the ONNX
    waveform model is converted from. Must run under the TensorFlow backend.

    Args:
        model: a keras-dkd model (see :func:`build_export_archive`).

    Returns:
        ``{name: (python function, list of tf.TensorSpec)}``.
    """
    import keras
    import tensorflow as tf

    from keras_dkd import features as fbank

    if keras.backend.backend() != "tensorflow":
        raise RuntimeError("serving_functions needs the TensorFlow backend")

    class_names = _class_names(model)
    frames, filters = fbank.SEGMENT_FRAMES, fbank.NFILT
    inputs = getattr(model, "inputs", None) or []
    if len(inputs) != 1 or tuple(inputs[0].shape[1:]) != (frames, filters):
        shapes = [tuple(x.shape) for x in inputs]
        raise UserError(
            f"the model takes inputs of shape {shapes}; keras-dkd exports models with one "
            f"input of shape (None, {frames}, {filters}), as built by keras_dkd.models"
        )
    outputs = model.outputs[0].shape[-1] if getattr(model, "outputs", None) else None
    if outputs is not None and outputs != len(class_names):
        raise UserError(
            f"the model has {outputs} outputs but {len(class_names)} class names; "
            "rebuild it with keras_dkd.models.build_model(class_names=...)"
        )
    # The segmenting rule of fbank.logfbank_segments / keras-dkd predict: segments of 2 s
    # every 0.4 s that fit in the utterance (a tail shorter than a hop is dropped); an utterance
    # shorter than 2 s is padded to one segment as the model was trained (zeros, or the
    # waveform repeated). Each segment's features are computed on its own samples (its first
    # sample is not pre-emphasised against the one before it).
    from keras_dkd.models import get_padding, get_speaker_norm
    from keras_dkd.speaker_norm import MIN_STD, REAL_FRAME_ABOVE

    repeat = get_padding(model) == "repeat"
    speaker_norm = get_speaker_norm(model)
    frontend = fbank.LogFBank()
    segment = int(round(fbank.SEGMENT_SECONDS * fbank.SAMPLE_RATE))
    hop = int(round(fbank.EVAL_HOP_SECONDS * fbank.SAMPLE_RATE))
    batch_size = 64  # segments per model call, as in keras-dkd predict
    labels = tf.constant(class_names)

    def serve_features(features):
        logits = tf.cast(model(features, training=False), tf.float32)
        return {"logits": logits, "probabilities": tf.nn.softmax(logits, axis=-1)}

    def padded(waveform):
        """The waveform, padded to one segment if shorter, as the model was trained."""
        waveform = tf.reshape(tf.cast(waveform, tf.float32), [-1])
        if repeat:  # tile a short waveform to one segment: index i reads sample i mod n
            length = tf.maximum(tf.size(waveform), segment)
            return tf.gather(waveform, tf.range(length) % tf.size(waveform))
        return tf.pad(waveform, [[0, tf.maximum(segment - tf.size(waveform), 0)]])

    def moments(frames):
        """``(count, sum, sum of squares)`` over the real frames of ``[n, filters]`` frames."""
        real = tf.boolean_mask(frames, tf.reduce_any(frames > REAL_FRAME_ABOVE, axis=1))
        real = tf.cast(real, tf.float64)
        return (tf.cast(tf.shape(real)[0], tf.float64), tf.reduce_sum(real, axis=0),
                tf.reduce_sum(tf.square(real), axis=0))

    def standardiser(count_, total, squares):
        """A speaker-normalised model's transform from its utterance's moments: the utterance
        is its own speaker, as in keras-dkd predict with one file."""
        tf.debugging.assert_greater(
            count_, tf.constant(0.0, tf.float64),
            message="the utterance holds only digital silence; a model trained on "
                    "speaker-normalised features needs speech to standardise with")
        mean = total / count_
        std = tf.maximum(tf.sqrt(tf.maximum(squares / count_ - tf.square(mean), 0.0)),
                         MIN_STD)
        mean, std = tf.cast(mean, tf.float32), tf.cast(std, tf.float32)
        return lambda features: (features - mean) / std

    def chunk_of(waveform, first, count):
        """The samples of segments ``first .. first + batch_size`` (fewer at the end)."""
        n = tf.minimum(batch_size, count - first)
        start = first * hop
        return waveform[start : start + (n - 1) * hop + segment]

    def utterance_standardiser(waveform, count):
        """:func:`standardiser` of a padded waveform, its features computed batch by batch
        (bounded memory, as the logits)."""
        def add(first, count_, total, squares):
            feats = frontend(tf.signal.frame(chunk_of(waveform, first, count), segment, hop))
            more = moments(tf.reshape(feats, [-1, filters]))
            return (first + batch_size, count_ + more[0], total + more[1], squares + more[2])

        zeros = tf.zeros([filters], tf.float64)
        _, count_, total, squares = tf.while_loop(
            lambda first, *_: first < count, add,
            [tf.constant(0), tf.constant(0.0, tf.float64), zeros, zeros],
            parallel_iterations=1,
        )
        return standardiser(count_, total, squares)

    def mean_logits(waveform):
        """The mean segment logits of one utterance (float32 ``[num_classes]``)."""
        waveform = padded(waveform)
        count = 1 + (tf.size(waveform) - segment) // hop  # segments
        transform = utterance_standardiser(waveform, count) if speaker_norm else None

        # Segment logits are summed batch by batch, so memory stays bounded by the batch size
        # whatever the length of the utterance (an hour of audio has 9000 segments).
        def add_batch(first, total):
            segments = tf.signal.frame(chunk_of(waveform, first, count), segment, hop)
            feats = frontend(segments)  # (n, 197, 40)
            if transform is not None:
                feats = transform(feats)
            logits = tf.cast(model(feats, training=False), tf.float32)
            return first + batch_size, total + tf.reduce_sum(logits, axis=0)

        _, total = tf.while_loop(
            lambda first, total: first < count,
            add_batch,
            [tf.constant(0), tf.zeros([len(class_names)], tf.float32)],
            parallel_iterations=1,
        )
        return total / tf.cast(count, tf.float32)

    def answer(logits, label=True):
        """Probabilities, class ids and labels from mean logits (any leading shape)."""
        probabilities = tf.nn.softmax(logits, axis=-1)
        class_id = tf.argmax(probabilities, axis=-1, output_type=tf.int64)
        outputs = {"probabilities": probabilities, "class_id": class_id}
        if label:
            outputs["label"] = tf.gather(labels, class_id)
        return outputs

    def classify_waveform(waveform):
        tf.debugging.assert_greater(
            tf.size(waveform), 0, message="classify_waveform: the waveform is empty"
        )
        return answer(mean_logits(waveform))

    def each(fn, elems):
        return tf.map_fn(
            fn, elems, fn_output_signature=tf.TensorSpec([len(class_names)], tf.float32),
            parallel_iterations=1,
        )

    def classify_waveforms(waveforms, lengths):
        waveforms = tf.cast(waveforms, tf.float32)
        lengths = tf.cast(lengths, tf.int32)
        width = tf.shape(waveforms)[1]
        checks = [
            tf.debugging.assert_equal(
                tf.shape(lengths)[0], tf.shape(waveforms)[0],
                message="classify_waveforms: give one length per row of waveforms"),
            tf.debugging.assert_greater(
                lengths, 0, message="classify_waveforms: every length must be at least 1"),
            tf.debugging.assert_less_equal(
                lengths, width,
                message="classify_waveforms: a length exceeds the width of waveforms"),
        ]
        with tf.control_dependencies(checks):
            rows = tf.range(tf.shape(waveforms)[0])
        return answer(each(lambda i: mean_logits(waveforms[i, : lengths[i]]), rows))

    def classify_wav(wav):
        from keras_dkd.export_audio import decode_wav

        rows = tf.range(tf.shape(wav)[0])
        return answer(each(lambda i: mean_logits(decode_wav(wav[i], i)), rows))

    def waveform_numeric(waveform):
        # For ONNX: all segments in one model call (no loop: tf2onnx leaves variables that a
        # while loop captures as graph inputs), so memory grows with the utterance.
        tf.debugging.assert_greater(
            tf.size(waveform), 0, message="classify_waveform: the waveform is empty"
        )
        segments = tf.signal.frame(padded(waveform), segment, hop)
        feats = frontend(segments)
        if speaker_norm:
            feats = standardiser(*moments(tf.reshape(feats, [-1, filters])))(feats)
        logits = tf.cast(model(feats, training=False), tf.float32)
        return answer(tf.reduce_mean(logits, axis=0), label=False)

    waveform_spec = [tf.TensorSpec([None], tf.float32, name="waveform")]
    return {
        FEATURES_SIGNATURE: (
            serve_features, [tf.TensorSpec([None, frames, filters], tf.float32, name="features")]
        ),
        WAVEFORM_SIGNATURE: (classify_waveform, waveform_spec),
        WAVEFORMS_SIGNATURE: (
            classify_waveforms,
            [tf.TensorSpec([None, None], tf.float32, name="waveforms"),
             tf.TensorSpec([None], tf.int32, name="lengths")],
        ),
        WAV_SIGNATURE: (classify_wav, [tf.TensorSpec([None], tf.string, name="wav")]),
        "waveform_numeric": (waveform_numeric, waveform_spec),
    }


# --------------------------------------------------------------------------------------------
# Export


def _check_format(fmt) -> None:
    if fmt not in FORMATS:
        raise UserError(f"export format {fmt!r} is unknown; use one of {', '.join(FORMATS)}")


def write_onnx(model, folder) -> dict[str, Path]:
    """Write the model as ONNX: ``features.onnx`` and ``waveform.onnx`` in ``folder``.

    Converted with tf2onnx (opset :data:`ONNX_OPSET`) from the same TensorFlow functions as the
    SavedModel's signatures, so the three answer alike:

    - ``features.onnx``: ``features`` float32 ``[N, 197, 40]`` -> ``logits`` and
      ``probabilities`` float32 ``[N, C]`` (``serving_default``);
    - ``waveform.onnx``: ``waveform`` float32 ``[samples]``, one 16 kHz mono utterance ->
      ``probabilities`` float32 ``[C]`` and ``class_id`` int64 (``classify_waveform``; the
      features are computed in the ONNX graph, all segments in one model call, so memory
      grows with the utterance: for hours of audio, run ``features.onnx`` on chunks).

    ONNX graphs carry no string tensors here: the class names are in each file's metadata
    (``metadata_props``: ``class_names``, a JSON list; ``padding``; ``speaker_norm``, JSON
    ``true`` when ``features.onnx`` takes speaker-standardised features; ``keras_dkd_version``).
    Must run under the TensorFlow backend; needs the ``onnx`` extra (tf2onnx, onnx).

    Args:
        model: a keras-dkd model.
        folder: an existing directory.

    Returns:
        ``{"features": path, "waveform": path}``.

    Raises:
        UserError: tf2onnx or onnx is not installed.
    """
    import tensorflow as tf
    from tensorflow.python.framework.convert_to_constants import (
        convert_variables_to_constants_v2,
    )

    try:
        import onnx
        import tf2onnx
    except ImportError:
        raise UserError(
            "ONNX export needs tf2onnx and onnx: pip install 'keras-dkd[onnx]'"
        ) from None
    try:  # tf2onnx predates NumPy 2; Keras' own ONNX export patches it the same way
        from keras.src.export.tf2onnx_lib import patch_tf2onnx

        with warnings.catch_warnings():  # the patch's np.object probe warns on NumPy 2
            warnings.simplefilter("ignore", FutureWarning)
            patch_tf2onnx()
    except ImportError:  # pragma: no cover (a Keras without the patch)
        import numpy as np

        if not hasattr(np, "object"):
            np.object = object

    from keras_dkd import __version__
    from keras_dkd.models import get_padding, get_speaker_norm

    functions = serving_functions(model)
    metadata = {"class_names": json.dumps(_class_names(model)),
                "padding": get_padding(model),
                "speaker_norm": json.dumps(get_speaker_norm(model)),
                "keras_dkd_version": __version__}
    paths = {}
    for name, key in (("features", FEATURES_SIGNATURE), ("waveform", "waveform_numeric")):
        fn, spec = functions[key]
        # Frozen first: tf2onnx's from_function would leave tensors the function captures
        # (the Normalization layer's mean and variance) as graph inputs.
        concrete = tf.function(fn, input_signature=spec).get_concrete_function()
        frozen = convert_variables_to_constants_v2(concrete)
        inputs = [t.name for t in frozen.inputs]
        outputs = [t.name for t in frozen.outputs]
        rename = dict(zip(inputs, [x.name for x in spec], strict=True))
        rename.update(zip(outputs, sorted(concrete.structured_outputs), strict=True))
        proto, _ = tf2onnx.convert.from_graph_def(
            frozen.graph.as_graph_def(), input_names=inputs, output_names=outputs,
            opset=ONNX_OPSET, tensors_to_rename=rename,
        )
        for k, v in metadata.items():
            entry = proto.metadata_props.add()
            entry.key, entry.value = k, v
        paths[name] = Path(folder) / f"{name}.onnx"
        onnx.save(proto, str(paths[name]))
    return paths


def _umask() -> int:
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def _export_here(model, export_dir: Path, version, overwrite: bool, safe_mode: bool,
                 fmt: str = "saved_model") -> Path:
    """The export proper, in this (TensorFlow-backend) process."""
    _check_format(fmt)
    from keras_dkd.io import load_model

    if export_dir.exists() and not export_dir.is_dir():
        raise UserError(f"{export_dir} is a file; pass a directory as the export base path")
    version = next_version(export_dir) if version is None else _check_version(version)
    final = export_dir / str(version)
    if final.exists() and not overwrite:
        raise UserError(
            f"{final} already exists; pass another --version, or --overwrite to replace it"
        )
    import keras

    if keras.backend.backend() != "tensorflow":
        raise RuntimeError("the export proper needs the TensorFlow backend")
    if not hasattr(model, "outputs"):
        model = load_model(model, safe_mode=safe_mode)

    try:
        export_dir.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".{version}.", suffix=".tmp", dir=export_dir))
    except OSError as error:
        _raise_if_storage(error, export_dir)
        raise
    # leftovers of killed exports (untouched for an hour: not a concurrent export's)
    remove_stale(export_dir, r"\.\d+\.[A-Za-z0-9_]{8}\.tmp")
    old = None
    try:
        # mkdtemp makes the directory private (0700); give it the mode any new directory gets,
        # so that a server running as another user can read the version.
        os.chmod(tmp, 0o777 & ~_umask())
        if fmt == "onnx":
            write_onnx(model, tmp)
        else:
            archive = build_export_archive(model)
            archive.write_out(str(tmp), verbose=False)
            check_standard_ops(tmp)
        if final.exists():  # only with overwrite: swap the old version out, then in
            old = export_dir / f".{version}.old-{os.getpid()}"
            os.replace(final, old)
        try:
            os.rename(tmp, final)
        except OSError:
            raise UserError(
                f"{final} appeared during the export; pass another --version"
            ) from None
    except BaseException as error:
        shutil.rmtree(tmp, ignore_errors=True)
        if old is not None and not final.exists():
            os.replace(old, final)
            old = None
        if isinstance(error, Exception):
            _raise_if_storage(error, export_dir)
        raise
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)
    return final


def _raise_if_storage(error: BaseException, export_dir: Path) -> None:
    """Raise a one-line UserError if ``error`` is a full disk or an unwritable export folder
    (TensorFlow wraps them in ``ResourceExhaustedError`` / ``PermissionDeniedError``)."""
    storage = storage_error(error, path=export_dir)
    if storage is not None:
        raise UserError(f"cannot export: {storage}") from None


def _export_in_subprocess(model_path: Path, export_dir: Path, version, overwrite, safe_mode,
                          fmt="saved_model"):
    cmd = [sys.executable, "-m", "keras_dkd.export", str(model_path), str(export_dir),
           "--format", fmt]
    if version is not None:
        cmd += ["--version", str(version)]
    if overwrite:
        cmd.append("--overwrite")
    if not safe_mode:
        cmd.append("--unsafe")
    env = dict(os.environ, KERAS_BACKEND="tensorflow")
    env.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True)
    for line in reversed(proc.stdout.splitlines()):
        if line.startswith(_RESULT_MARKER):
            result = json.loads(line[len(_RESULT_MARKER) :])
            if "error" in result:
                raise UserError(result["error"])
            return Path(result["path"])
    tail = "\n".join((proc.stderr or proc.stdout).strip().splitlines()[-15:])
    _raise_if_storage(RuntimeError(tail), export_dir)
    raise RuntimeError(
        f"the TensorFlow export subprocess failed (exit {proc.returncode}):\n{tail}"
    )


def export_saved_model(
    model, export_dir, version=None, overwrite=False, safe_mode=True, fmt="saved_model"
) -> Path:
    """Export a keras-dkd model as a TF Serving SavedModel (or ONNX) in ``export_dir/<version>/``.

    Works whatever backend trained the model: under the TensorFlow backend the export runs in
    this process, otherwise in a ``KERAS_BACKEND=tensorflow`` subprocess.

    Args:
        model: path of a ``.keras`` model file, or a ``keras.Model`` (saved to a temporary
            ``.keras`` first when this process is not on the TensorFlow backend).
        export_dir: the model base path TF Serving watches (e.g. ``exports/emotion``).
        version: the version number; defaults to the largest existing one + 1 (1 if none).
        overwrite: replace an existing ``export_dir/<version>`` (atomically) instead of failing.
        safe_mode: load the ``.keras`` file with Keras safe mode (refuses pickled Python code).
        fmt: ``"saved_model"`` (TF Serving) or ``"onnx"`` (:func:`write_onnx`: the version
            directory then holds ``features.onnx`` and ``waveform.onnx``).

    Returns:
        The path of the new version directory.

    Raises:
        UserError: the model cannot be loaded, the version exists (without ``overwrite``), the
            version is not a positive integer, or the graph holds non-standard ops.

    Example:
        >>> export_saved_model("runs/emodb/student.keras", "exports/emotion")   # doctest: +SKIP
        PosixPath('exports/emotion/1')
    """
    import keras

    export_dir = Path(export_dir)
    _check_format(fmt)
    if version is not None:
        _check_version(version)
    if keras.backend.backend() == "tensorflow":
        if not hasattr(model, "outputs"):
            model = Path(model)
        return _export_here(model, export_dir, version, overwrite, safe_mode, fmt)

    export_dir = export_dir.absolute()
    if hasattr(model, "outputs"):
        from keras_dkd.io import save_model

        with tempfile.TemporaryDirectory(prefix="keras_dkd_export_") as tmp:
            path = save_model(model, Path(tmp) / "model.keras")
            return _export_in_subprocess(path, export_dir, version, overwrite, True, fmt)
    model = Path(model)
    if not model.is_file():
        raise UserError(f"{model}: model file not found; pass the path of a .keras file")
    return _export_in_subprocess(model.absolute(), export_dir, version, overwrite, safe_mode,
                                 fmt)


def main(argv=None) -> int:
    """``python -m keras_dkd.export MODEL EXPORT_DIR [--version N] [--overwrite] [--unsafe]``.

    The worker the other backends call. Prints one ``KERAS_DKD_EXPORT_RESULT {json}`` line,
    ``{"path": ...}`` or ``{"error": ...}``; the exit status is 0 or 1.
    """
    parser = argparse.ArgumentParser(prog="python -m keras_dkd.export")
    parser.add_argument("model")
    parser.add_argument("export_dir")
    parser.add_argument("--version", type=int, default=None)
    parser.add_argument("--overwrite", action="store_true")
    parser.add_argument("--unsafe", action="store_true")
    parser.add_argument("--format", default="saved_model", choices=FORMATS)
    args = parser.parse_args(argv)
    if "keras" not in sys.modules:  # this worker always exports under the TensorFlow backend
        os.environ["KERAS_BACKEND"] = "tensorflow"
    try:
        path = _export_here(
            Path(args.model), Path(args.export_dir), args.version, args.overwrite,
            not args.unsafe, args.format,
        )
        result, status = {"path": str(path)}, 0
    except UserError as error:
        result, status = {"error": str(error)}, 1
    sys.stdout.write(_RESULT_MARKER + json.dumps(result) + "\n")
    sys.stdout.flush()
    return status


if __name__ == "__main__":
    sys.exit(main())
