"""A user's corpus as a CSV manifest: one row per utterance, checked line by line.

The manifest is a CSV file with a header row. Required columns: ``path`` (the audio file,
relative to the manifest's folder or absolute; any format :func:`keras_dkd.audio.read_audio`
reads), ``label`` (the class name) and ``speaker``. Optional: ``split``, ``session`` and
``gender``; other columns are ignored. Blank lines are skipped::

    path,label,speaker,gender
    wav/03a01Fa.wav,happy,03,M
    wav/03a01Nc.wav,neutral,03,M

The groups (the TFDS splits and the leave-one-group-out folds) come from the ``split`` column
when there is one, else from ``session``, else from ``speaker``. A group value that is not a
valid split name is prefixed with the column's name (speaker ``03`` -> ``speaker03``); other
characters than letters, digits and ``_`` become ``_``.

The classes are given (then every label must be one of them, in that order) or taken from the
manifest (its labels, sorted). Every problem is a :class:`keras_dkd.errors.DatasetError` naming
``FILE:LINE`` and the fix.

Example:
    >>> manifest = read_manifest("corpus.csv", classes=["neutral", "happy", "angry", "sad"])
    >>> manifest.groups[:2], len(manifest.rows)                        # doctest: +SKIP
    (['speaker03', 'speaker08'], 339)
"""

from __future__ import annotations

import csv
import dataclasses
import hashlib
import re
from collections.abc import Sequence
from pathlib import Path

from keras_dkd.errors import DatasetError

__all__ = ["REQUIRED", "OPTIONAL", "Manifest", "Row", "config_name", "read_manifest"]

#: Columns every manifest has.
REQUIRED = ("path", "label", "speaker")
#: Columns a manifest may have; the first present of ``GROUP_COLUMNS`` names the groups.
OPTIONAL = ("split", "session", "gender")
GROUP_COLUMNS = ("split", "session", "speaker")

_SPLIT_NAME = re.compile(r"^[A-Za-z][A-Za-z0-9_]*$")


@dataclasses.dataclass(frozen=True)
class Row:
    """One utterance of a manifest.

    Attributes:
        line: the line number in the manifest (1: the header).
        path: the audio file, absolute.
        label: the class name.
        speaker, gender, session, split: the columns' values ("" where absent).
        group: the group (TFDS split name) the utterance belongs to.
        utterance_id: the file name without its extension, or the path relative to the
            manifest's folder without it when file names repeat.
    """

    line: int
    path: Path
    label: str
    speaker: str
    gender: str
    session: str
    split: str
    group: str
    utterance_id: str


@dataclasses.dataclass(frozen=True)
class Manifest:
    """A checked manifest.

    Attributes:
        path: the manifest file.
        rows: the utterances, in file order.
        class_names: the classes in label order.
        group_unit: the column the groups come from: ``split``, ``session`` or ``speaker``.
        groups: the group names, sorted.
        sha256: the manifest's SHA-256 (a built corpus records it).
    """

    path: Path
    rows: tuple[Row, ...]
    class_names: tuple[str, ...]
    group_unit: str
    groups: tuple[str, ...]
    sha256: str

    def where(self, row: Row) -> str:
        """``FILE:LINE`` of ``row``, as messages name it."""
        return f"{self.path}:{row.line}"


def config_name(manifest) -> str:
    """The config name a corpus built from ``manifest`` gets unless one is given: the file's
    stem in lower case, other characters than letters, digits and ``_`` replaced by ``_``.

    Example:
        >>> config_name("/data/My Corpus-v2.csv")
        'my_corpus_v2'
    """
    stem = re.sub(r"[^a-z0-9_]", "_", Path(manifest).stem.lower()).strip("_")
    return stem if stem and stem[0].isalpha() else f"csv_{stem}"


def _group_name(unit: str, value: str) -> str:
    if _SPLIT_NAME.match(value) and value != "all":
        return value
    return unit + re.sub(r"[^A-Za-z0-9_]", "_", value)


def _fail(where: str, problem: str) -> DatasetError:
    return DatasetError(f"{where}: {problem}")


def _open_rows(path: Path):
    """``(header, [(line, row dict)])`` of the CSV file, or a DatasetError naming the file."""
    if not path.is_file():
        raise DatasetError(
            f"{path}: manifest not found: pass the CSV file listing path,label,speaker"
        )
    try:
        text = path.read_text(encoding="utf-8-sig")
    except (OSError, UnicodeDecodeError) as error:
        raise DatasetError(f"{path}: cannot read the manifest ({error}): save it as UTF-8 "
                           "CSV") from error
    reader = csv.DictReader(text.splitlines(), strict=True)
    rows, start = [], 1
    try:
        header = [str(h).strip() for h in (reader.fieldnames or [])]
        reader.fieldnames = header
        while True:
            start = reader.line_num + 1  # the line the next row starts on
            try:
                row = next(reader)
            except StopIteration:
                break
            rows.append((reader.line_num, row))
    except csv.Error as error:
        raise _fail(f"{path}:{start}", f"malformed CSV ({error}): fix the quoting of that "
                    "line") from error
    return header, rows


def _check_header(path: Path, header: list[str]) -> None:
    missing = [c for c in REQUIRED if c not in header]
    if missing:
        raise _fail(f"{path}:1", f"the header has no {', '.join(missing)} column: the first "
                    f"line must name the columns, at least {','.join(REQUIRED)}")
    repeated = sorted({c for c in header if header.count(c) > 1 and c})
    if repeated:
        raise _fail(f"{path}:1", f"column {', '.join(repeated)} appears twice in the header: "
                    "keep one")


def _values(path: Path, line: int, row: dict, columns: Sequence[str]) -> dict[str, str]:
    where = f"{path}:{line}"
    if None in row:
        raise _fail(where, f"malformed row: more fields than the {len(row) - 1} columns of "
                    "the header; quote values holding commas")
    if any(row.get(c) is None for c in columns):
        raise _fail(where, f"malformed row: fewer fields than the {len(columns)} columns of "
                    "the header; fill in every column")
    values = {c: str(row.get(c) or "").strip() for c in (*REQUIRED, *OPTIONAL)}
    empty = [c for c in REQUIRED if not values[c]]
    if empty:
        raise _fail(where, f"malformed row: empty {', '.join(empty)}; fill it in or remove "
                    "the row")
    return values


def read_manifest(manifest, classes: Sequence[str] | None = None,
                  check_files: bool = True) -> Manifest:
    """Read and check a CSV manifest.

    Args:
        manifest: the CSV file.
        classes: the class names in label order; None: the manifest's labels, sorted.
        check_files: refuse rows whose audio file does not exist.

    Returns:
        A :class:`Manifest`.

    Raises:
        DatasetError: a missing or unreadable manifest, a header without ``path``, ``label``
            or ``speaker``, a malformed row, a missing audio file, a label outside
            ``classes``, a path listed twice, two group values giving one split name, or no
            rows; each naming ``FILE:LINE``.

    Example:
        >>> read_manifest("corpus.csv").class_names                     # doctest: +SKIP
        ('angry', 'happy', 'neutral', 'sad')
    """
    path = Path(manifest).expanduser().resolve()
    header, raw = _open_rows(path)
    _check_header(path, header)
    if classes is not None:
        classes = tuple(str(c).strip() for c in classes)
        if not classes or "" in classes or len(set(classes)) != len(classes):
            raise DatasetError(f"classes {list(classes)} must be distinct non-empty names")
    if not raw:
        raise _fail(f"{path}:1", "the manifest lists no utterances: add one row per audio file")
    unit = next(c for c in GROUP_COLUMNS if c in header)
    root = path.parent
    seen: dict[Path, int] = {}
    names: dict[str, tuple[str, int]] = {}
    parsed = []
    for line, row in raw:
        values = _values(path, line, row, header)
        where = f"{path}:{line}"
        if not values[unit]:
            raise _fail(where, f"malformed row: empty {unit} (the column the groups come "
                        "from); fill it in or remove the row")
        audio = Path(values["path"]).expanduser()
        audio = (audio if audio.is_absolute() else root / audio).resolve()
        if check_files and not audio.is_file():
            raise _fail(where, f"audio file {values['path']} not found (paths are relative "
                        f"to {root}): fix the path or remove the row")
        if audio in seen:
            raise _fail(where, f"{values['path']} is listed again (first on line "
                        f"{seen[audio]}): remove one of the rows")
        seen[audio] = line
        if classes is not None and values["label"] not in classes:
            raise _fail(where, f"unknown label {values['label']!r}: the classes are "
                        f"{', '.join(classes)}; fix the label, remove the row or give the "
                        "class too")
        group = _group_name(unit, values[unit])
        first = names.setdefault(group, (values[unit], line))
        if first[0] != values[unit]:
            raise _fail(where, f"{unit} {values[unit]!r} and {first[0]!r} (line {first[1]}) "
                        f"both give the split name {group!r}: rename one")
        parsed.append((line, audio, values, group))
    stems = [audio.with_suffix("").name for _, audio, _, _ in parsed]
    unique_stems = len(set(stems)) == len(stems)
    rows = tuple(
        Row(line=line, path=audio, label=values["label"], speaker=values["speaker"],
            gender=values["gender"], session=values["session"], split=values["split"],
            group=group,
            utterance_id=stem if unique_stems else _relative_id(audio, root))
        for (line, audio, values, group), stem in zip(parsed, stems, strict=True)
    )
    if classes is None:
        classes = tuple(sorted({r.label for r in rows}))
    return Manifest(path=path, rows=rows, class_names=classes, group_unit=unit,
                    groups=tuple(sorted(names)),
                    sha256=hashlib.sha256(path.read_bytes()).hexdigest())


def _relative_id(audio: Path, root: Path) -> str:
    try:
        relative = audio.relative_to(root)
    except ValueError:
        relative = Path(*audio.parts[1:])
    return relative.with_suffix("").as_posix()
