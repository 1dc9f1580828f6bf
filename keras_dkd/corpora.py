"""The speech emotion corpora keras-dkd builds with TFDS: names, configs, classes, splits, loading.

Each corpus is a TFDS dataset folder in ``datasets/`` (installed as ``keras_dkd.datasets``), built
either by ``tfds build datasets/<name>`` or by :func:`prepare` / :func:`load` here, into the same
data directory (``keras_dkd.paths.data_dir()`` unless given).

=========  ==========================================  ================================  ==========
corpus     configs (default first)                     splits (``groups``)               manual_dir
=========  ==========================================  ================================  ==========
iemocap    improvised, scripted, all, improvised_exc,  session1 ... session5             required
           scripted_exc, all_exc
emodb      four_class, full                            speaker03, speaker08, ...         optional
=========  ==========================================  ================================  ==========

Splits compose with TFDS syntax: ``"session1+session2+session3+session4"``, ``"speaker03[:50%]"``.

Example:
    >>> from keras_dkd import corpora
    >>> ds = corpora.load("emodb", split="speaker03", manual_dir="../shared/data/emodb")
    >>> corpora.class_names("emodb")
    ['neutral', 'happy', 'angry', 'sad']
"""

from __future__ import annotations

import contextlib
import importlib
import io
import re
from pathlib import Path

from keras_dkd import paths
from keras_dkd.errors import DatasetError

#: The corpora, by TFDS name.
CORPORA = ("iemocap", "emodb")
#: The config used when none is given.
DEFAULT_CONFIG = {"iemocap": "improvised", "emodb": "four_class"}
#: What one group (TFDS split, LOSO fold) of each corpus is.
GROUP_UNITS = {"iemocap": "session", "emodb": "speaker"}

_MODULES = {name: f"keras_dkd.datasets.{name}.{name}_dataset_builder" for name in CORPORA}
_TITLES = {"iemocap": "IEMOCAP", "emodb": "EmoDB"}


def _module(name: str):
    if name not in _MODULES:
        raise DatasetError(f"unknown dataset {name!r}: choose one of {', '.join(CORPORA)}")
    return importlib.import_module(_MODULES[name])


def builder_class(name: str):
    """The TFDS builder class of corpus ``name`` (imports TFDS, not TensorFlow)."""
    return _module(name).Builder


def _config(name: str, config: str | None):
    config = DEFAULT_CONFIG[name] if config is None else config
    for candidate in builder_class(name).BUILDER_CONFIGS:
        if candidate.name == config:
            return candidate
    raise DatasetError(
        f"unknown config {config!r} for {name}: choose one of {', '.join(configs(name))}"
    )


def configs(name: str) -> list[str]:
    """The config names of corpus ``name``, the default first.

    Args:
        name: ``"iemocap"`` or ``"emodb"``.

    Returns:
        Config names, e.g. ``["four_class", "full"]`` for EmoDB.

    Example:
        >>> configs("iemocap")[:3]
        ['improvised', 'scripted', 'all']
    """
    names = [c.name for c in builder_class(name).BUILDER_CONFIGS]
    default = DEFAULT_CONFIG[name]
    return [default] + [n for n in names if n != default]


def class_names(name: str, config: str | None = None) -> list[str]:
    """The class names of ``name``/``config`` in label order.

    Args:
        name: ``"iemocap"`` or ``"emodb"``.
        config: A config name; None for the default.

    Returns:
        E.g. ``["neutral", "happy", "angry", "sad"]`` for every IEMOCAP config and EmoDB's
        ``four_class``; EmoDB ``full`` gives ``["neutral", "happiness", "anger", "sadness",
        "fear", "disgust", "boredom"]``.

    Example:
        >>> class_names("emodb", "full")[:4]
        ['neutral', 'happiness', 'anger', 'sadness']
    """
    return list(_config(name, config).class_names)


def groups(name: str) -> list[str]:
    """The split names of corpus ``name``: one per session (IEMOCAP) or speaker (EmoDB).

    Example:
        >>> groups("iemocap")
        ['session1', 'session2', 'session3', 'session4', 'session5']
    """
    return list(_module(name).SPLITS)


def group_unit(name: str) -> str:
    """What a group of corpus ``name`` is: ``"session"`` (IEMOCAP), ``"speaker"`` (EmoDB), or
    ``"group"`` for any other name."""
    return GROUP_UNITS.get(name, "group")


def fold_group(fold, group_names) -> str:
    """The held-out group of a leave-one-group-out fold: the one parser of folds.

    Args:
        fold: a 0-based index into ``group_names`` (an int, or its digits as text) or a group
            name.
        group_names: the groups in fold order.

    Returns:
        The group name.

    Raises:
        UserError: an unknown name, an index out of range, or another type, listing the folds.

    Example:
        >>> fold_group("1", ["speaker03", "speaker08"]), fold_group("speaker03", ["speaker03"])
        ('speaker08', 'speaker03')
    """
    from keras_dkd.errors import UserError

    group_names = list(group_names)
    listing = ", ".join(f"{i}={g}" for i, g in enumerate(group_names))
    if fold is None:
        raise UserError(f"a fold is needed: a 0-based index or a group name ({listing})")
    if isinstance(fold, str):
        text = fold.strip()
        if text in group_names:
            return text
        if not text.lstrip("-").isdigit():
            raise UserError(f"unknown fold {fold!r}: use a 0-based index or a group ({listing})")
        fold = int(text)
    if isinstance(fold, bool) or not hasattr(fold, "__index__"):
        raise UserError(f"fold must be an integer or a group name, got {fold!r}")
    if not 0 <= int(fold) < len(group_names):
        raise UserError(
            f"fold {int(fold)} is out of range: folds are 0-based, 0..{len(group_names) - 1} "
            f"({listing})"
        )
    return group_names[int(fold)]


def fold_index(name: str, fold) -> int:
    """``fold`` (an index or a group name of corpus ``name``) as a 0-based index.

    Example:
        >>> fold_index("emodb", "speaker08")
        1
    """
    group_names = groups(name)
    return group_names.index(fold_group(fold, group_names))


def builder(name: str, config: str | None = None, data_dir=None):
    """The TFDS builder of ``name``/``config`` in ``data_dir`` (built or not; see :func:`prepare`).

    Args:
        name: ``"iemocap"`` or ``"emodb"``.
        config: A config name; None for the default.
        data_dir: The TFDS data directory; None for ``keras_dkd.paths.data_dir()``.

    Returns:
        A ``tfds.core.DatasetBuilder``.
    """
    cfg = _config(name, config)
    data_dir = Path(data_dir).expanduser() if data_dir is not None else paths.data_dir()
    return builder_class(name)(config=cfg.name, data_dir=str(data_dir))


def prepare(name: str, config: str | None = None, data_dir=None, manual_dir=None):
    """Builds ``name``/``config`` into ``data_dir`` unless it is built already.

    Args:
        name: ``"iemocap"`` or ``"emodb"``.
        config: A config name; None for the default.
        data_dir: The TFDS data directory; None for ``keras_dkd.paths.data_dir()``.
        manual_dir: Where the raw corpus is: ``IEMOCAP_full_release`` or its parent (required
            for IEMOCAP); a folder holding EmoDB's ``wav/`` (optional: without it the official
            archive is downloaded). None falls back to ``$KERAS_DKD_<NAME>_DIR``.

    Returns:
        The built ``tfds.core.DatasetBuilder``.

    Raises:
        DatasetError: a missing or empty manual_dir, a download that failed, or a problem in the
            raw data (malformed label line, missing or corrupt wav), in one line with the fix.

    Example:
        >>> b = prepare("emodb", "full", manual_dir="../shared/data/emodb")
        >>> b.info.splits.total_num_examples
        535
    """
    import tensorflow_datasets as tfds

    b = builder(name, config, data_dir)
    if b.is_prepared():
        return b
    manual = Path(manual_dir).expanduser() if manual_dir is not None else paths.manual_dir(name)
    _check_manual_dir(name, manual, b.data_dir)
    download_config = tfds.download.DownloadConfig(
        manual_dir=str(manual) if manual is not None else None,
        compute_stats=tfds.download.ComputeStatsMode.SKIP,
    )
    try:
        with _quiet(tfds):
            b.download_and_prepare(download_config=download_config)
    except DatasetError:
        raise
    except AssertionError as error:
        if "Manual directory" not in str(error):
            raise
        raise _manual_dir_error(name, manual, "is missing or empty") from error
    except OSError as error:
        from keras_dkd.errors import storage_error

        storage = storage_error(error, path=b.data_dir)
        if storage is not None:
            raise storage from error
        if manual is not None:
            raise
        url = _module(name).URL
        raise DatasetError(
            f"{_TITLES[name]}: downloading {url} failed ({error}): check the network, or pass "
            f"manual_dir / set KERAS_DKD_{name.upper()}_DIR to a local copy (a folder holding wav/)"
        ) from error
    return b


def load(name: str, config: str | None = None, split=None, data_dir=None, manual_dir=None):
    """The utterances of ``name``/``config`` as a ``tf.data.Dataset``, building them if needed.

    Args:
        name: ``"iemocap"`` or ``"emodb"``.
        config: A config name; None for the default (``DEFAULT_CONFIG``).
        split: A split name from :func:`groups`, a TFDS split expression over them
            (``"session1+session2"``, ``"speaker03[:50%]"``), or a list of those (then a list of
            datasets comes back); None for every split.
        data_dir: The TFDS data directory; None for ``keras_dkd.paths.data_dir()``.
        manual_dir: See :func:`prepare`; only read when the dataset must be built.

    Returns:
        A ``tf.data.Dataset`` of dicts: ``audio`` (int16 ``[samples]``, 16 kHz), ``label``
        (int64), ``utterance_id``, ``speaker``, ``gender``, ``emotion_code``, ``duration`` and the
        corpus' other fields (IEMOCAP: ``dialog``, ``session``, ``improvised``, ``valence``,
        ``activation``, ``dominance``; EmoDB: ``text_id``). Order is deterministic.

    Raises:
        DatasetError: an unknown name, config or split, or anything :func:`prepare` raises.

    Example:
        >>> ds = load("iemocap", "improvised", "session1+session2+session3+session4")
    """
    _check_split(name, split)
    b = prepare(name, config, data_dir, manual_dir)
    if split is None:
        split = "+".join(groups(name))
    return b.as_dataset(split=split, shuffle_files=False)


@contextlib.contextmanager
def _quiet(tfds):
    """TFDS prints a banner to stdout and draws progress bars; the library prints nothing."""
    tqdm_utils = tfds.core.utils.tqdm_utils
    was_active = getattr(tqdm_utils, "_active", True)
    tfds.display_progress_bar(False)
    try:
        with contextlib.redirect_stdout(io.StringIO()):
            yield
    finally:
        tfds.display_progress_bar(was_active)


_SPLIT_PART = re.compile(r"^\s*(?P<name>\w+)\s*(\[[^\]]*\])?\s*$")


def _check_split(name: str, split) -> None:
    if split is None:
        return
    known = groups(name)
    for expression in split if isinstance(split, (list, tuple)) else [split]:
        if not isinstance(expression, str):
            continue  # a tfds.core.ReadInstruction: TFDS checks it
        for part in expression.split("+"):
            match = _SPLIT_PART.match(part)
            if not match or match["name"] not in (*known, "all"):
                example = f"{known[0]}+{known[1]}"
                raise DatasetError(
                    f"unknown split {expression!r} for {name}: use {', '.join(known)} or 'all', "
                    f"joined with '+' (e.g. {example})"
                )


def _manual_dir_error(name: str, manual: Path | None, problem: str) -> DatasetError:
    title, variable = _TITLES[name], f"KERAS_DKD_{name.upper()}_DIR"
    if name == "iemocap":
        fix = (
            "request IEMOCAP from https://sail.usc.edu/iemocap/, extract it, and pass manual_dir= "
            f"(or set {variable}) as IEMOCAP_full_release or its parent"
        )
    else:
        fix = f"pass manual_dir= (or set {variable}) as a folder holding EmoDB's wav/, or leave it "
        fix += "unset to download the official archive"
    where = f"manual_dir {manual}" if manual is not None else "no manual_dir"
    return DatasetError(f"{title}: {where} {problem}: {fix}")


def _check_manual_dir(name: str, manual: Path | None, target) -> None:
    if manual is None:
        if name == "iemocap":
            raise DatasetError(
                f"IEMOCAP is not built in {target} and no manual_dir was given: request IEMOCAP "
                "from https://sail.usc.edu/iemocap/, extract it, and pass manual_dir= (or set "
                "KERAS_DKD_IEMOCAP_DIR) as IEMOCAP_full_release or its parent"
            )
        return
    if not manual.is_dir():
        raise _manual_dir_error(name, manual, "does not exist")
    if not any(manual.iterdir()):
        raise _manual_dir_error(name, manual, "is empty")
