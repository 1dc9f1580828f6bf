"""Evaluation of a trained model on a dataset split, at utterance level, never on its own
training data.

A model inside a run directory (``RUN/student.keras``, ``RUN/teacher.keras``) is evaluated with
that run's data options unless others are given, so ``evaluate(RUN/"student.keras")`` scores the
run's test split and reproduces its ``metrics.json``. A split that shares utterances with the
run's training or validation data is refused (:class:`keras_dkd.errors.UserError` naming the
overlap) unless ``allow_overlap`` is set. A model outside a run directory needs data options.

Example:
    >>> from keras_dkd.evaluation import evaluate
    >>> evaluate("runs/demo/student.keras")["ua"]                          # doctest: +SKIP
    0.78
"""

from __future__ import annotations

from pathlib import Path

import keras

from keras_dkd.class_mapping import class_mapping, restrict
from keras_dkd.errors import UserError
from keras_dkd.options import DataOptions, RunOptions
from keras_dkd.runs import RunDir, read_json, to_builtin

__all__ = ["evaluate", "run_of_model", "training_utterances"]

_RUN_MODELS = ("teacher.keras", "student.keras")


def run_of_model(model) -> tuple[RunDir, RunOptions] | None:
    """The run directory a ``.keras`` path sits in and that run's options (None: it is not a
    run's ``teacher.keras`` / ``student.keras``, or there is no ``config.json`` beside it).

    Raises:
        UserError: the run's ``config.json`` is damaged.
    """
    if isinstance(model, keras.Model) or model is None:
        return None
    path = Path(model)
    run = RunDir(path.parent)
    if path.name not in _RUN_MODELS or not run.exists():
        return None
    config = run.read_config()
    try:
        return run, RunOptions.from_dict(config["options"])
    except UserError as error:
        raise UserError(f"{run.config} is damaged ({error}); restore it, or give the data "
                        "options yourself") from None


def training_utterances(run: RunDir, options: RunOptions) -> set[str]:
    """The ids of the utterances a run trained and selected its model on (train + val).

    Read from the run's ``splits.json``; rebuilt from its data options when that is missing.
    """
    splits = read_json(run.splits)
    if not (isinstance(splits, dict) and isinstance(splits.get("train"), list)):
        from keras_dkd import data

        splits = data.prepare(options.data, options.seed).utterance_ids()
    return {str(i) for i in splits.get("train", [])} | {str(i) for i in splits.get("val") or []}


def evaluate(
    model,
    data: DataOptions | None = None,
    *,
    split: str = "test",
    seed: int | None = None,
    allow_overlap: bool = False,
    safe_mode: bool = True,
    batch_size: int = 64,
) -> dict:
    """Utterance-level metrics of a model on a dataset split.

    Args:
        model: a ``.keras`` path or a ``keras.Model``.
        data: the data options (None: those of the run the model sits in).
        split: ``"test"`` / ``"val"`` (the splits :func:`keras_dkd.training.train` makes with
            ``data`` and ``seed``), a corpus split name (``speaker03``, ``session1``), several
            joined by ``+``, or ``"all"``.
        seed: the seed of the splits (None: the run's seed, else 0).
        allow_overlap: score a split even if it shares utterances with the training or
            validation data of the model's run.
        safe_mode: load the model with Keras safe mode.
        batch_size: segments per inference batch.

    Returns:
        The dict of :func:`keras_dkd.metrics.classification_metrics` (``wa``, ``ua``,
        ``macro_f1``, ``per_class_recall``, ``confusion``, ``classes``, ``n_utterances``) plus
        ``split``, ``dataset`` and ``model``.

    Cross-corpus: when the corpus' classes differ from the model's, they are matched by name
    (:mod:`keras_dkd.class_mapping`; ``happiness`` is ``happy``); the corpus' utterances of classes
    the model lacks are not scored (``unscored_utterances``), and ``class_mapping`` (corpus class
    -> model class) is added to the result.

    Raises:
        UserError: no data options for a model outside a run; an overlap with the run's
            training data; a model with a class the corpus lacks (listing them).
    """
    from keras_dkd.io import load_model
    from keras_dkd.metrics import evaluate_model
    from keras_dkd.models import get_class_names

    found = run_of_model(model)
    if data is None:
        if found is None:
            raise UserError(f"{model}: not a model of a run directory (no config.json beside "
                            "it); give the data options (--dataset ...)")
        data = found[1].data
    if seed is None:
        seed = found[1].seed if found is not None else 0
    utterances, class_names = _evaluation_set(data, split, seed)
    if utterances is None or utterances.n_utterances == 0:
        raise UserError(f"split {split!r} of {data.dataset}/{data.config} holds no utterances")
    model_path = None
    if not isinstance(model, keras.Model):
        model_path = str(model)
        model = load_model(model, safe_mode=safe_mode)
    model_classes = list(get_class_names(model))
    mapping = None
    if model_classes != list(class_names):
        mapping = class_mapping(model_classes, class_names, f"{data.dataset}/{data.config}")
    if found is not None and not allow_overlap:
        _refuse_overlap(found, utterances, split, data)
    mapped = None
    if mapping is not None:
        mapped = {class_names[i]: model_classes[j] for i, j in mapping.items()}
        total = utterances.n_utterances
        utterances = restrict(utterances, mapping, model_classes)
        if utterances.n_utterances == 0:
            raise UserError(f"split {split!r} of {data.dataset}/{data.config} holds no "
                            f"utterances of the model's classes ({', '.join(model_classes)})")
        unscored = total - utterances.n_utterances
    result = to_builtin(evaluate_model(model, utterances, model_classes, batch_size=batch_size))
    result["split"] = split
    result["dataset"] = f"{data.dataset}/{data.config}"
    if mapped is not None:
        result["class_mapping"] = mapped
        result["unscored_utterances"] = int(unscored)
    if model_path:
        result["model"] = model_path
    return result


def _refuse_overlap(found, utterances, split, data) -> None:
    run, options = found
    trained = training_utterances(run, options)
    shared = [i for i in utterances.utterance_ids if i in trained]
    if shared:
        examples = ", ".join(shared[:3]) + (" ..." if len(shared) > 3 else "")
        raise UserError(
            f"split {split!r} of {data.dataset}/{data.config} shares {len(shared)} of its "
            f"{utterances.n_utterances} utterances ({examples}) with the training and validation "
            f"data of {run.path}; leave out the data options to score that run's test split, "
            "or pass --allow-overlap to score them anyway"
        )


def _evaluation_set(data: DataOptions, split, seed):
    from keras_dkd import data as data_module

    if split in ("test", "val"):
        bundle = data_module.prepare(data, seed)
        return (bundle.test if split == "test" else bundle.val), bundle.class_names
    return data_module.utterance_set(data, None if split == "all" else split, seed=seed)
