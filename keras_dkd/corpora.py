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
ravdess    four_class, full                            actor01 ... actor24               required
csv        one per manifest (its file stem, or given)  the manifest's groups             manifest
=========  ==========================================  ================================  ==========

``csv`` is a corpus of the user's, listed in a CSV manifest (:mod:`keras_dkd.manifests`): every
function here takes ``manifest=`` for it. A CSV corpus is built under a config name (the
manifest's file stem unless given) in the data directory, and is read back from there by that
name alone: its classes and groups are the built dataset's.

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
CORPORA = ("iemocap", "emodb", "ravdess", "csv")
#: The config used when none is given (a CSV corpus: the manifest's file stem).
DEFAULT_CONFIG = {"iemocap": "improvised", "emodb": "four_class", "ravdess": "four_class"}
#: What one group (TFDS split, LOSO fold) of each corpus is (a CSV corpus: its manifest's).
GROUP_UNITS = {"iemocap": "session", "emodb": "speaker", "ravdess": "actor"}
#: The TFDS dataset folder (``datasets/<folder>``) of each corpus.
FOLDERS = {"iemocap": "iemocap", "emodb": "emodb", "ravdess": "ravdess", "csv": "csv_corpus"}
#: The corpora that cannot be downloaded: a manual_dir (a manifest for ``csv``) is required.
MANUAL_ONLY = ("iemocap", "ravdess")

_MODULES = {name: f"keras_dkd.datasets.{folder}.{folder}_dataset_builder"
            for name, folder in FOLDERS.items()}
_TITLES = {"iemocap": "IEMOCAP", "emodb": "EmoDB", "ravdess": "RAVDESS", "csv": "csv"}


def _module(name: str):
    if name not in _MODULES:
        raise DatasetError(f"unknown dataset {name!r}: choose one of {', '.join(CORPORA)}")
    return importlib.import_module(_MODULES[name])


def builder_class(name: str):
    """The TFDS builder class of corpus ``name`` (imports TFDS, not TensorFlow)."""
    return _module(name).Builder


def _config(name: str, config: str | None):
    if name == "csv":
        raise DatasetError("csv: corpora made from manifests have no fixed configs; use "
                           "builder('csv', config, manifest=...)")
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
    if name == "csv":
        return []  # one per manifest: see csv_configs()
    names = [c.name for c in builder_class(name).BUILDER_CONFIGS]
    default = DEFAULT_CONFIG[name]
    return [default] + [n for n in names if n != default]


def class_names(name: str, config: str | None = None, *, data_dir=None,
                manifest=None) -> list[str]:
    """The class names of ``name``/``config`` in label order.

    Args:
        name: a corpus of :data:`CORPORA`.
        config: A config name; None for the default.
        data_dir, manifest: ``csv`` only: where it is built, and its manifest (read when the
            corpus is not built yet).

    Returns:
        E.g. ``["neutral", "happy", "angry", "sad"]`` for every IEMOCAP config and EmoDB's
        ``four_class``; EmoDB ``full`` gives ``["neutral", "happiness", "anger", "sadness",
        "fear", "disgust", "boredom"]``.

    Example:
        >>> class_names("emodb", "full")[:4]
        ['neutral', 'happiness', 'anger', 'sadness']
    """
    if name == "csv":
        return list(_csv_facts(config, data_dir, manifest)["class_names"])
    return list(_config(name, config).class_names)


def groups(name: str, config: str | None = None, *, data_dir=None, manifest=None) -> list[str]:
    """The split names of corpus ``name``: one per session (IEMOCAP), speaker (EmoDB), actor
    (RAVDESS), or group of a manifest (``csv``; sorted).

    Args:
        name: a corpus of :data:`CORPORA`.
        config, data_dir, manifest: ``csv`` only (as for :func:`class_names`).

    Example:
        >>> groups("iemocap")
        ['session1', 'session2', 'session3', 'session4', 'session5']
    """
    if name == "csv":
        return list(_csv_facts(config, data_dir, manifest)["groups"])
    return list(_module(name).SPLITS)


def group_unit(name: str, config: str | None = None, *, data_dir=None, manifest=None) -> str:
    """What a group of corpus ``name`` is: ``"session"`` (IEMOCAP), ``"speaker"`` (EmoDB),
    ``"actor"`` (RAVDESS), a CSV corpus' group column when it can be found, or ``"group"``."""
    if name == "csv" and (config is not None or manifest is not None):
        try:
            return str(_csv_facts(config, data_dir, manifest)["group_unit"])
        except DatasetError:
            return "group"
    return GROUP_UNITS.get(name, "group")


# ----------------------------------------------------------------------------------------------
# CSV corpora


def csv_config(config: str | None, manifest=None) -> str:
    """The config name of a CSV corpus: ``config`` when given, else the manifest's file stem.

    Raises:
        DatasetError: neither given, or a name TFDS cannot use.

    Example:
        >>> csv_config(None, "/data/my-corpus.csv")
        'my_corpus'
    """
    from keras_dkd.manifests import config_name

    if config is None:
        if manifest is None:
            raise DatasetError("csv: no manifest and no config name: pass the manifest "
                               "(--manifest FILE) or the name of a built CSV corpus (--config)")
        return config_name(manifest)
    if not re.fullmatch(r"[a-z][a-z0-9_]*", str(config)):
        raise DatasetError(f"csv: config name {config!r} must be lower-case letters, digits "
                           "and _, starting with a letter")
    return str(config)


def _csv_dir(config: str, data_dir) -> Path:
    root = Path(data_dir).expanduser() if data_dir is not None else paths.data_dir()
    version = str(builder_class("csv").VERSION)
    return root / FOLDERS["csv"] / config / version


def csv_configs(data_dir=None) -> list[str]:
    """The names of the CSV corpora built in ``data_dir`` (sorted)."""
    root = Path(data_dir).expanduser() if data_dir is not None else paths.data_dir()
    version = str(builder_class("csv").VERSION)
    folder = root / FOLDERS["csv"]
    if not folder.is_dir():
        return []
    return sorted(p.name for p in folder.iterdir()
                  if (p / version / "dataset_info.json").is_file())


def _csv_facts(config, data_dir, manifest, classes=None) -> dict:
    """``class_names``, ``groups`` and ``group_unit`` of a CSV corpus: the built dataset's when
    it is built, else read from the manifest."""
    import json

    from keras_dkd.manifests import read_manifest

    name = csv_config(config, manifest)
    built = _csv_dir(name, data_dir)
    if (built / "dataset_info.json").is_file():
        info = json.loads((built / "dataset_info.json").read_text())
        labels = built / "label.labels.txt"
        names = labels.read_text().splitlines() if labels.is_file() else []
        meta_file = built / "metadata.json"
        meta = json.loads(meta_file.read_text()) if meta_file.is_file() else {}
        split_names = sorted(s["name"] for s in info.get("splits", []))
        return {"class_names": list(meta.get("class_names") or names),
                "groups": list(meta.get("groups") or split_names),
                "group_unit": meta.get("group_unit", "group")}
    if manifest is None:
        built_names = csv_configs(data_dir)
        raise DatasetError(
            f"csv: no CSV corpus {name!r} is built in {built.parent.parent}: pass its manifest "
            f"(--manifest FILE) to build it"
            + (f", or use one of {', '.join(built_names)}" if built_names else "")
        )
    found = read_manifest(manifest, classes, check_files=False)
    return {"class_names": list(found.class_names), "groups": list(found.groups),
            "group_unit": found.group_unit}


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


def fold_index(name: str, fold, config: str | None = None, *, data_dir=None,
               manifest=None) -> int:
    """``fold`` (an index or a group name of corpus ``name``) as a 0-based index.

    Example:
        >>> fold_index("emodb", "speaker08")
        1
    """
    group_names = groups(name, config, data_dir=data_dir, manifest=manifest)
    return group_names.index(fold_group(fold, group_names))


def builder(name: str, config: str | None = None, data_dir=None, manifest=None, classes=None):
    """The TFDS builder of ``name``/``config`` in ``data_dir`` (built or not; see :func:`prepare`).

    Args:
        name: a corpus of :data:`CORPORA`.
        config: A config name; None for the default (``csv``: the manifest's file stem).
        data_dir: The TFDS data directory; None for ``keras_dkd.paths.data_dir()``.
        manifest: ``csv`` only: the manifest. Without it, the corpus built under ``config`` is
            read back (a read-only builder).
        classes: ``csv`` only: the class names in label order (None: the manifest's labels,
            sorted); used when building.

    Returns:
        A ``tfds.core.DatasetBuilder``.
    """
    data_dir = Path(data_dir).expanduser() if data_dir is not None else paths.data_dir()
    if name == "csv":
        return _csv_builder(config, data_dir, manifest, classes)
    cfg = _config(name, config)
    return builder_class(name)(config=cfg.name, data_dir=str(data_dir))


def _csv_builder(config, data_dir: Path, manifest, classes):
    import tensorflow_datasets as tfds

    name = csv_config(config, manifest)
    built = _csv_dir(name, data_dir)
    if manifest is None:
        _csv_facts(name, data_dir, None)  # a DatasetError naming the fix when not built
        return tfds.builder_from_directory(str(built))
    module = _module("csv")
    cfg = module.CsvConfig(name=name, manifest=str(Path(manifest).expanduser().resolve()),
                           class_names=tuple(classes or ()))
    if (built / "dataset_info.json").is_file():
        _check_same_manifest(name, built, manifest)
        built_classes = _csv_facts(name, data_dir, None)["class_names"]
        if classes is not None and list(classes) != built_classes:
            raise DatasetError(
                f"csv: {name!r} in {data_dir} was built with the classes "
                f"{', '.join(built_classes)}, not {', '.join(classes)}: pass --config with a new "
                f"name, or delete {built.parent} to rebuild it"
            )
        return tfds.builder_from_directory(str(built))
    return module.Builder(config=cfg, data_dir=str(data_dir))


def _check_same_manifest(name: str, built: Path, manifest) -> None:
    """Refuse a manifest other than (or changed since) the one ``name`` was built from (one that
    no longer exists is no reason: the built corpus is read without it)."""
    import hashlib
    import json

    meta_file = built / "metadata.json"
    meta = json.loads(meta_file.read_text()) if meta_file.is_file() else {}
    path = Path(manifest).expanduser()
    if not path.is_file():
        return  # moved or gone since: the built corpus is read by its name
    if meta.get("manifest_sha256") not in (None, hashlib.sha256(path.read_bytes()).hexdigest()):
        raise DatasetError(
            f"csv: {name!r} in {built.parent.parent} was built from {meta.get('manifest')} as it "
            f"was then, not from {path} as it is now: pass --config with a new name, or delete "
            f"{built.parent} to rebuild it"
        )


def prepare(name: str, config: str | None = None, data_dir=None, manual_dir=None,
            manifest=None, classes=None):
    """Builds ``name``/``config`` into ``data_dir`` unless it is built already.

    Args:
        name: ``"iemocap"`` or ``"emodb"``.
        config: A config name; None for the default.
        data_dir: The TFDS data directory; None for ``keras_dkd.paths.data_dir()``.
        manual_dir: Where the raw corpus is: ``IEMOCAP_full_release`` or its parent (required
            for IEMOCAP); a folder holding EmoDB's ``wav/`` (optional: without it the official
            archive is downloaded); RAVDESS' archive or its ``Actor_NN`` folders (required).
            None falls back to ``$KERAS_DKD_<NAME>_DIR``. Not used for ``csv``.
        manifest: ``csv`` only: the CSV manifest (:mod:`keras_dkd.manifests`); not needed once
            the corpus is built under ``config``.
        classes: ``csv`` only: the class names in label order (None: the manifest's labels,
            sorted).

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

    b = builder(name, config, data_dir, manifest, classes)
    if b.is_prepared():
        return b
    if name == "csv":
        return _build_csv(b, tfds)
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


def _build_csv(b, tfds):
    """Build a CSV corpus (no manual_dir, nothing to download)."""
    download_config = tfds.download.DownloadConfig(
        compute_stats=tfds.download.ComputeStatsMode.SKIP)
    try:
        with _quiet(tfds):
            b.download_and_prepare(download_config=download_config)
    except OSError as error:
        from keras_dkd.errors import storage_error

        storage = storage_error(error, path=b.data_dir)
        if storage is not None:
            raise storage from error
        raise
    return b


def load(name: str, config: str | None = None, split=None, data_dir=None, manual_dir=None,
         manifest=None):
    """The utterances of ``name``/``config`` as a ``tf.data.Dataset``, building them if needed.

    Args:
        name: ``"iemocap"`` or ``"emodb"``.
        config: A config name; None for the default (``DEFAULT_CONFIG``).
        split: A split name from :func:`groups`, a TFDS split expression over them
            (``"session1+session2"``, ``"speaker03[:50%]"``), or a list of those (then a list of
            datasets comes back); None for every split.
        data_dir: The TFDS data directory; None for ``keras_dkd.paths.data_dir()``.
        manual_dir: See :func:`prepare`; only read when the dataset must be built.
        manifest: ``csv`` only; see :func:`prepare`.

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
    known = groups(name, config, data_dir=data_dir, manifest=manifest)
    _check_split(name, split, known)
    b = prepare(name, config, data_dir, manual_dir, manifest)
    if split is None:
        split = "+".join(known)
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


def _check_split(name: str, split, known=None) -> None:
    if split is None:
        return
    known = groups(name) if known is None else known
    for expression in split if isinstance(split, (list, tuple)) else [split]:
        if not isinstance(expression, str):
            continue  # a tfds.core.ReadInstruction: TFDS checks it
        for part in expression.split("+"):
            match = _SPLIT_PART.match(part)
            if not match or match["name"] not in (*known, "all"):
                example = "+".join(known[:2])
                raise DatasetError(
                    f"unknown split {expression!r} for {name}: use {', '.join(known)} or 'all', "
                    f"joined with '+' (e.g. {example})"
                )


def _manual_dir_error(name: str, manual: Path | None, problem: str) -> DatasetError:
    title, variable = _TITLES[name], f"KERAS_DKD_{name.upper()}_DIR"
    if name == "ravdess":
        fix = (
            "download Audio_Speech_Actors_01-24.zip from https://zenodo.org/record/1188976 and "
            f"pass manual_dir= (or set {variable}) as the folder holding it or its extracted "
            "Actor_01 ... Actor_24 folders"
        )
    elif name == "iemocap":
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
        if name in MANUAL_ONLY:
            raise _manual_dir_error(name, None, f"is given and it is not built in {target}")
        return
    if not manual.is_dir():
        raise _manual_dir_error(name, manual, "does not exist")
    if not any(manual.iterdir()):
        raise _manual_dir_error(name, manual, "is empty")
