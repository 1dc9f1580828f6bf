"""IEMOCAP (speech only, four emotion classes) as a TFDS dataset.

IEMOCAP is licensed by USC and cannot be downloaded automatically: build it with
``tfds build datasets/iemocap --manual_dir=DIR`` where ``DIR`` is ``IEMOCAP_full_release`` or its
parent. Labels come from ``Session{n}/dialog/EmoEvaluation/<dialog>.txt``, audio from
``Session{n}/sentences/wav/<dialog>/<utterance>.wav``. Given Beam options
(``--beam_pipeline_options="runner=DirectRunner"``), the build runs as an Apache Beam pipeline
and writes the same examples.

This module is imported both as ``keras_dkd.datasets.iemocap.iemocap_dataset_builder`` (the
library) and as ``iemocap.iemocap_dataset_builder`` (``tfds build datasets/iemocap``), so it uses
absolute imports only and registers its builder under the name ``iemocap`` only when imported
under the first name.
"""

from __future__ import annotations

import dataclasses
import importlib
import re
from pathlib import Path

import numpy as np
import tensorflow_datasets as tfds

from keras_dkd.audio import read_corpus_wav
from keras_dkd.datasets.beam_build import BeamBuild
from keras_dkd.errors import DatasetError
from keras_dkd.io import remove_stale

HOMEPAGE = "https://sail.usc.edu/iemocap/"
SAMPLE_RATE = 16000
SESSIONS = (1, 2, 3, 4, 5)
#: Split names, one per session.
SPLITS = tuple(f"session{n}" for n in SESSIONS)
#: Class names, in label order.
CLASSES = ("neutral", "happy", "angry", "sad")
#: Every categorical code an EmoEvaluation utterance line may carry.
EMOTION_CODES = ("neu", "hap", "exc", "sad", "ang", "fru", "fea", "sur", "dis", "oth", "xxx")
#: How "happy" is formed: "hap+exc" merges excitement into happiness (the common convention);
#: "exc" keeps excitement as happy and drops hap (the Head Fusion / DKDFMH convention).
HAPPY_OPTIONS = {
    "hap+exc": {"neu": "neutral", "hap": "happy", "exc": "happy", "ang": "angry", "sad": "sad"},
    "exc": {"neu": "neutral", "exc": "happy", "ang": "angry", "sad": "sad"},
}
DIALOG_KINDS = ("improvised", "scripted", "all")

# `[6.2901 - 8.2357]<TAB>Ses01F_impro01_F000<TAB>neu<TAB>[2.5000, 2.5000, 2.5000]`
_NUMBER = r"-?\d+(?:\.\d+)?"
UTTERANCE_LINE = re.compile(
    rf"^\[(?P<start>{_NUMBER})\s*-\s*(?P<end>{_NUMBER})\]\t(?P<utterance>\S+)\t(?P<code>[a-z]{{3}})"
    rf"\t\[(?P<valence>{_NUMBER}),\s*(?P<activation>{_NUMBER}),\s*(?P<dominance>{_NUMBER})\]$"
)
# `C-E2:<TAB>Neutral;<TAB>()` and `A-E3:<TAB>val 3; act 2; dom  2;<TAB>()`
ANNOTATOR_LINE = re.compile(r"^[CA]-[A-Za-z]+\d*:(\t|$)")
DIALOG_NAME = re.compile(r"^Ses0(?P<session>[1-5])(?P<lead>[FM])_(?P<kind>impro|script)\w*$")
# What follows `<dialog>_` in an utterance name: the speaker letter, then the turn (F000, M012).
TURN = re.compile(r"^(?P<gender>[FM])[A-Z]*\d+$")

INSTRUCTIONS = """\
IEMOCAP is distributed by USC SAIL under a license agreement: request it at
https://sail.usc.edu/iemocap/iemocap_release.htm and extract the archive you receive
(e.g. IEMOCAP_full_release.tar.gz). Pass as manual_dir either the extracted
`IEMOCAP_full_release/` folder or the folder that contains it. It must hold
`Session1` ... `Session5`, each with `dialog/EmoEvaluation/*.txt` (labels) and
`sentences/wav/<dialog>/*.wav` (16 kHz mono audio). Videos and motion capture are not needed.
"""

_LIBRARY_NAME = "keras_dkd.datasets.iemocap.iemocap_dataset_builder"
_REGISTER = __name__ == _LIBRARY_NAME


@dataclasses.dataclass(eq=False)
class IemocapConfig(tfds.core.BuilderConfig):
    """Which dialogs (``improvised``, ``scripted`` or ``all``) and how happy is formed."""

    dialogs: str = "improvised"
    happy: str = "hap+exc"

    @property
    def class_names(self) -> tuple[str, ...]:
        """The class names, in label order (the same for every config)."""
        return CLASSES

    @property
    def mapping(self) -> dict[str, str]:
        """Emotion code -> class name; codes not in it are skipped."""
        return HAPPY_OPTIONS[self.happy]

    def keeps(self, improvised: bool) -> bool:
        return self.dialogs == "all" or (self.dialogs == "improvised") == improvised


def _config(dialogs: str, happy: str) -> IemocapConfig:
    which = {
        "improvised": "improvised dialogs only (the DKDFMH paper's subset)",
        "scripted": "scripted dialogs only",
        "all": "improvised and scripted dialogs",
    }[dialogs]
    how = {
        "hap+exc": "happy = hap + exc (excitement merged into happiness)",
        "exc": "happy = exc only, hap dropped (the Head Fusion / DKDFMH convention)",
    }[happy]
    return IemocapConfig(
        name=dialogs if happy == "hap+exc" else f"{dialogs}_exc",
        description=f"{which.capitalize()}; classes neutral, happy, angry, sad; {how}.",
        dialogs=dialogs,
        happy=happy,
    )


@dataclasses.dataclass(frozen=True)
class Utterance:
    """One labelled utterance of an EmoEvaluation file."""

    utterance_id: str
    dialog: str
    session: int
    speaker: str
    gender: str
    improvised: bool
    emotion_code: str
    valence: float
    activation: float
    dominance: float
    wav: Path
    source: str  # "<label file>:<line>", for error messages

    def __reduce__(self):
        # Pickled (by Beam) as the library module's Utterance: `tfds build datasets/iemocap`
        # imports this module as iemocap.iemocap_dataset_builder, which Beam's workers cannot.
        library = importlib.import_module(_LIBRARY_NAME)
        return library.Utterance, tuple(getattr(self, f.name) for f in dataclasses.fields(self))


def _malformed(path: Path, lineno: int, line: str, expected: str) -> DatasetError:
    shown = line if len(line) <= 90 else line[:87] + "..."
    return DatasetError(
        f"IEMOCAP: malformed line {path}:{lineno}: {shown!r}: expected {expected}; "
        "restore the file from the original IEMOCAP_full_release archive"
    )


def parse_emo_evaluation(path: Path, session_dir: Path) -> list[Utterance]:
    """Parses one ``EmoEvaluation/<dialog>.txt`` file.

    Args:
        path: The label file; its stem is the dialog name.
        session_dir: The ``Session{n}`` folder it belongs to (wavs are looked up there).

    Returns:
        The file's utterances, in file order (wav existence is not checked here).

    Raises:
        DatasetError: naming ``file:line`` for any line that is not the header, an utterance
        line, an annotator line or blank.

    Example:
        >>> parse_emo_evaluation(p, release / "Session1")[0].speaker
        'Ses01F'
    """
    dialog = path.stem
    dialog_match = DIALOG_NAME.match(dialog)
    session = int(session_dir.name[len("Session") :])
    if not dialog_match or int(dialog_match["session"]) != session:
        raise DatasetError(
            f"IEMOCAP: unexpected label file {path}: Session{session} label files are named "
            f"like Ses0{session}F_impro01.txt or Ses0{session}M_script03_2.txt; remove it"
        )
    improvised = dialog_match["kind"] == "impro"
    utterances = []
    text = path.read_text(encoding="utf-8", errors="replace")
    for lineno, raw in enumerate(text.splitlines(), start=1):
        line = raw.rstrip()
        if lineno == 1:
            if not line.startswith("%"):
                raise _malformed(path, lineno, line, "the header '% [START_TIME - END_TIME] ...'")
            continue
        if not line or ANNOTATOR_LINE.match(line):
            continue
        match = UTTERANCE_LINE.match(line)
        if not match:
            raise _malformed(
                path,
                lineno,
                line,
                "'[start - end]<TAB>utterance<TAB>code<TAB>[v, a, d]', an annotator line "
                "('C-E2:<TAB>...') or a blank line",
            )
        name, code = match["utterance"], match["code"]
        turn = TURN.match(name[len(dialog) + 1 :]) if name.startswith(dialog + "_") else None
        if turn is None:
            raise _malformed(path, lineno, line, f"an utterance of dialog {dialog} ({dialog}_F000)")
        if code not in EMOTION_CODES:
            raise _malformed(path, lineno, line, f"an emotion code in {', '.join(EMOTION_CODES)}")
        utterances.append(
            Utterance(
                utterance_id=name,
                dialog=dialog,
                session=session,
                speaker=f"Ses0{session}{turn['gender']}",
                gender=turn["gender"],
                improvised=improvised,
                emotion_code=code,
                valence=float(match["valence"]),
                activation=float(match["activation"]),
                dominance=float(match["dominance"]),
                wav=session_dir / "sentences" / "wav" / dialog / f"{name}.wav",
                source=f"{path}:{lineno}",
            )
        )
    return utterances


def find_release(manual_dir: Path) -> Path:
    """``IEMOCAP_full_release`` given itself or its parent; DatasetError otherwise."""
    for candidate in (manual_dir, manual_dir / "IEMOCAP_full_release"):
        present = [n for n in SESSIONS if (candidate / f"Session{n}").is_dir()]
        if len(present) == len(SESSIONS):
            return candidate
        if present:
            missing = ", ".join(f"Session{n}" for n in SESSIONS if n not in present)
            raise DatasetError(
                f"IEMOCAP: {candidate} lacks {missing}: extract the complete "
                "IEMOCAP_full_release archive there"
            )
    raise DatasetError(
        f"IEMOCAP: manual_dir {manual_dir} holds neither Session1..Session5 nor "
        "IEMOCAP_full_release/: extract the IEMOCAP archive from USC "
        "(https://sail.usc.edu/iemocap/) and pass that folder or its parent"
    )


def read_utterances(release: Path) -> dict[int, list[Utterance]]:
    """Every labelled utterance of the release, per session, in a stable order."""
    sessions = {}
    for n in SESSIONS:
        session_dir = release / f"Session{n}"
        label_dir = session_dir / "dialog" / "EmoEvaluation"
        files = sorted(
            p for p in label_dir.glob("*.txt") if p.is_file() and not p.name.startswith(".")
        )
        if not files:
            raise DatasetError(
                f"IEMOCAP: {label_dir} holds no label files (<dialog>.txt): extract the "
                "complete IEMOCAP_full_release archive"
            )
        utterances = [u for path in files for u in parse_emo_evaluation(path, session_dir)]
        sessions[n] = utterances
    seen = {}
    for utterance in (u for us in sessions.values() for u in us):
        if utterance.utterance_id in seen:
            raise DatasetError(
                f"IEMOCAP: {utterance.utterance_id} is labelled twice, in "
                f"{seen[utterance.utterance_id]} and {utterance.source}: keep one label line"
            )
        seen[utterance.utterance_id] = utterance.source
    return sessions


def read_wav(utterance: Utterance) -> np.ndarray:
    """The utterance's audio as int16; DatasetError naming the wav if it is unusable."""
    return read_corpus_wav(
        utterance.wav,
        "IEMOCAP",
        wrong_format="use the sentences/wav files of the original release",
        damaged="restore it from the original IEMOCAP_full_release archive",
    )


class Builder(BeamBuild, tfds.core.GeneratorBasedBuilder, skip_registration=not _REGISTER):
    """DatasetBuilder for IEMOCAP, speech only, four classes (neutral, happy, angry, sad).

    Builds through Apache Beam when given Beam options (``--beam_pipeline_options``), one
    utterance per element (:mod:`keras_dkd.datasets.beam_build`).
    """

    # TFDS infers these folders from the module name, which is wrong when the package is installed
    # editable (keras_dkd.datasets lives in the top-level datasets/ folder): state them.
    pkg_dir_path = tfds.core.Path(__file__).parent

    @tfds.core.utils.classproperty
    @classmethod
    def code_path(cls) -> tfds.core.Path:
        return tfds.core.Path(__file__)

    VERSION = tfds.core.Version("1.0.0")
    RELEASE_NOTES = {"1.0.0": "Initial release: one split per session."}
    BUILDER_CONFIGS = [
        _config(dialogs, happy) for happy in HAPPY_OPTIONS for dialogs in DIALOG_KINDS
    ]
    DEFAULT_CONFIG_NAME = "improvised"
    MANUAL_DOWNLOAD_INSTRUCTIONS = INSTRUCTIONS

    def download_and_prepare(self, *args, **kwargs):
        """TFDS' build, after removing stale ``incomplete.*`` folders of killed builds.

        Only folders nothing was written to for an hour go (:func:`keras_dkd.io.remove_stale`),
        so a build running concurrently in the same data dir keeps its work in progress.
        """
        remove_stale(Path(self.data_path).parent, r"incomplete\.[A-Z0-9]{6}_.+")
        return super().download_and_prepare(*args, **kwargs)

    def _info(self) -> tfds.core.DatasetInfo:
        return self.dataset_info_from_configs(
            features=tfds.features.FeaturesDict(
                {
                    "audio": _audio_feature(),
                    "label": tfds.features.ClassLabel(names=list(CLASSES)),
                    "utterance_id": tfds.features.Text(),
                    "dialog": tfds.features.Text(),
                    "session": tfds.features.Scalar(dtype=np.int32),
                    "speaker": tfds.features.Text(),
                    "gender": tfds.features.Text(),
                    "improvised": tfds.features.Scalar(dtype=np.bool_),
                    "emotion_code": tfds.features.Text(),
                    "valence": tfds.features.Scalar(dtype=np.float32),
                    "activation": tfds.features.Scalar(dtype=np.float32),
                    "dominance": tfds.features.Scalar(dtype=np.float32),
                    "duration": tfds.features.Scalar(dtype=np.float32),
                }
            ),
            supervised_keys=("audio", "label"),
            homepage=HOMEPAGE,
            metadata=tfds.core.MetadataDict(sample_rate=SAMPLE_RATE),
        )

    def _split_generators(self, dl_manager: tfds.download.DownloadManager):
        # A missing or empty manual_dir raises TFDS's AssertionError carrying the instructions.
        release = find_release(Path(str(dl_manager.manual_dir)))
        config = self.builder_config
        splits = {}
        for session, utterances in read_utterances(release).items():
            kept = [
                u
                for u in utterances
                if config.keeps(u.improvised) and u.emotion_code in config.mapping
            ]
            for utterance in kept:
                if not utterance.wav.is_file():
                    raise DatasetError(
                        f"IEMOCAP: {utterance.source} labels {utterance.utterance_id} but its "
                        f"audio {utterance.wav} is missing: restore it from the original "
                        "IEMOCAP_full_release archive"
                    )
            if not kept:  # never with the real corpus; TFDS cannot write an empty split
                raise DatasetError(
                    f"IEMOCAP: Session{session} of {release} has no utterance that config "
                    f"{config.name} keeps (codes {', '.join(sorted(config.mapping))}): extract "
                    "the complete IEMOCAP_full_release archive"
                )
            splits[f"session{session}"] = self._split_examples(kept)
        return splits

    def _example_arguments(self):
        return {"mapping": self.builder_config.mapping}


def make_example(u: Utterance, mapping: dict[str, str]):
    """``(key, example)`` of one utterance (the plain and the Beam build alike)."""
    audio = read_wav(u)
    return (
        u.utterance_id,
        {
            "audio": audio,
            "label": mapping[u.emotion_code],
            "utterance_id": u.utterance_id,
            "dialog": u.dialog,
            "session": u.session,
            "speaker": u.speaker,
            "gender": u.gender,
            "improvised": u.improvised,
            "emotion_code": u.emotion_code,
            "valence": u.valence,
            "activation": u.activation,
            "dominance": u.dominance,
            "duration": np.float32(len(audio) / SAMPLE_RATE),
        },
    )


def _audio_feature() -> tfds.features.Tensor:
    """The waveform: int16 samples at 16 kHz, stored as raw bytes.

    A plain Tensor with bytes encoding, not ``tfds.features.Audio``: TFDS's Audio feature stores
    arrays as an int64 list (up to 10 bytes a sample, ~10x slower to write) and ignores its
    ``encoding`` argument for arrays. The sample rate is in ``info.metadata["sample_rate"]``.
    """
    return tfds.features.Tensor(
        shape=(None,),
        dtype=np.int16,
        encoding=tfds.features.Encoding.BYTES,
        doc=tfds.features.Documentation(desc="Mono waveform, int16 samples at 16 kHz."),
    )
