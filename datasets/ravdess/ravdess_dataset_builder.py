"""The Ryerson Audio-Visual Database of Emotional Speech and Song (RAVDESS), speech audio, as a
TFDS dataset.

RAVDESS is a manual download: ``Audio_Speech_Actors_01-24.zip`` from Zenodo (record 1188976).
Build with ``tfds build datasets/ravdess --manual_dir=DIR`` where ``DIR`` holds the archive, or
its extracted ``Actor_01`` ... ``Actor_24`` folders (directly or one level below). Labels come
from the file names (``03-01-05-01-02-01-01.wav``: modality 03 audio-only, channel 01 speech,
emotion 05 angry, intensity 01 normal, statement 02, repetition 01, actor 01). The 48 kHz WAVs are
resampled to 16 kHz.

This module is imported both as ``keras_dkd.datasets.ravdess.ravdess_dataset_builder`` (the
library) and as ``ravdess.ravdess_dataset_builder`` (``tfds build datasets/ravdess``), so it uses
absolute imports only and registers its builder only when imported under the first name.
"""

from __future__ import annotations

import dataclasses
import re
from pathlib import Path

import numpy as np
import tensorflow_datasets as tfds

from keras_dkd.audio import read_audio
from keras_dkd.datasets.beam_build import BeamBuild
from keras_dkd.errors import DatasetError, UserError
from keras_dkd.io import remove_stale

HOMEPAGE = "https://zenodo.org/record/1188976"
ARCHIVE = "Audio_Speech_Actors_01-24.zip"
SAMPLE_RATE = 16000

#: Actor numbers; odd actors are male, even actors female.
ACTORS = tuple(f"{n:02d}" for n in range(1, 25))
#: Split names, one per actor.
SPLITS = tuple(f"actor{a}" for a in ACTORS)

#: Emotion code of the file name -> class name of the ``full`` config.
EMOTIONS = {
    "01": "neutral",
    "02": "calm",
    "03": "happy",
    "04": "sad",
    "05": "angry",
    "06": "fearful",
    "07": "disgust",
    "08": "surprised",
}
#: Class order of ``full``: the four product classes first (neutral, happy, angry, sad), so label
#: indices 0-3 mean the same in both configs, then the others in code order.
FULL_CLASSES = ("neutral", "happy", "angry", "sad", "calm", "fearful", "disgust", "surprised")
#: The ``four_class`` config: neutral, happy, angry and sad only. Calm is left out, not merged
#: into neutral: it is acted as an emotion of its own (with a strong intensity, unlike neutral),
#: and merging it would make "neutral" three times as large as in RAVDESS' own neutral class.
FOUR_CLASSES = ("neutral", "happy", "angry", "sad")
FOUR_CLASS_MAP = {"01": "neutral", "03": "happy", "05": "angry", "04": "sad"}

FILENAME = re.compile(
    r"^(?P<modality>0[1-3])-(?P<channel>0[12])-(?P<emotion>0[1-8])-(?P<intensity>0[12])-"
    r"(?P<statement>0[12])-(?P<repetition>0[12])-(?P<actor>\d{2})\.wav$"
)

_REGISTER = __name__ == "keras_dkd.datasets.ravdess.ravdess_dataset_builder"


@dataclasses.dataclass(eq=False)
class RavdessConfig(tfds.core.BuilderConfig):
    """A label set: ``class_names`` in label order, ``mapping`` emotion code -> class name."""

    class_names: tuple[str, ...] = ()
    mapping: dict[str, str] = dataclasses.field(default_factory=dict)


def parse_filename(name: str) -> dict[str, str] | None:
    """The parts of a RAVDESS speech file name; None for song (channel 02) or video files.

    Args:
        name: a file name such as ``"03-01-05-01-02-01-01.wav"``.

    Returns:
        A dict with ``utterance_id``, ``actor``, ``gender`` (``M`` for odd actors, ``F`` for
        even), ``emotion_code``, ``intensity``, ``statement`` and ``repetition``; None when the
        file is not audio-only speech.

    Raises:
        DatasetError: a name that is not a RAVDESS name, or an actor outside 01-24.

    Example:
        >>> parse_filename("03-01-05-01-02-01-01.wav")["emotion_code"]
        '05'
    """
    match = FILENAME.match(name)
    if not match or match["actor"] not in ACTORS:
        raise DatasetError(
            f"RAVDESS: unexpected file name {name!r}: RAVDESS names look like "
            "03-01-05-01-02-01-01.wav (modality, channel, emotion, intensity, statement, "
            "repetition, actor 01-24); remove the file"
        )
    if match["modality"] != "03" or match["channel"] != "01":
        return None
    return {
        "utterance_id": name[: -len(".wav")],
        "actor": match["actor"],
        "gender": "M" if int(match["actor"]) % 2 else "F",
        "emotion_code": match["emotion"],
        "intensity": match["intensity"],
        "statement": match["statement"],
        "repetition": match["repetition"],
    }


def find_actor_dirs(root: Path) -> list[Path]:
    """The ``Actor_NN`` folders in ``root`` or one level below it (an extracted archive)."""
    for base in (root, *sorted(p for p in root.iterdir() if p.is_dir())):
        found = sorted(p for p in base.glob("Actor_[0-9][0-9]") if p.is_dir())
        if found:
            return found
    return []


def speech_files(root: Path, mapping: dict[str, str]) -> dict[str, list[Path]]:
    """The speech files of each actor split whose emotion is in ``mapping``.

    Args:
        root: the folder holding the ``Actor_NN`` folders (or one level above them).
        mapping: emotion code -> class name of the config.

    Returns:
        ``{"actor01": [paths...], ...}`` with every split of :data:`SPLITS`, in name order
        (a split is empty when its actor's folder is missing).

    Raises:
        DatasetError: no ``Actor_NN`` folder, an unexpected file name, or a file in the folder
            of another actor.
    """
    dirs = find_actor_dirs(root)
    if not dirs:
        raise DatasetError(
            f"RAVDESS: {root} holds no Actor_01 ... Actor_24 folders: extract "
            f"{ARCHIVE} there, or put the archive itself there"
        )
    files: dict[str, list[Path]] = {split: [] for split in SPLITS}
    for folder in dirs:
        for path in sorted(folder.glob("*.wav")):
            if path.name.startswith("."):
                continue  # AppleDouble and other hidden files
            meta = parse_filename(path.name)
            if meta is None or meta["emotion_code"] not in mapping:
                continue  # song or video, or outside this config's classes
            if folder.name != f"Actor_{meta['actor']}":
                raise DatasetError(
                    f"RAVDESS: {path} belongs to actor {meta['actor']} but lies in "
                    f"{folder.name}: move it to Actor_{meta['actor']}"
                )
            files[f"actor{meta['actor']}"].append(path)
    return files


def _audio_feature() -> tfds.features.Tensor:
    """int16 samples at 16 kHz stored as raw bytes (as the EmoDB and IEMOCAP builders do)."""
    return tfds.features.Tensor(
        shape=(None,),
        dtype=np.int16,
        encoding=tfds.features.Encoding.BYTES,
        doc=tfds.features.Documentation(desc="Mono waveform, int16 samples at 16 kHz."),
    )


class Builder(BeamBuild, tfds.core.GeneratorBasedBuilder, skip_registration=not _REGISTER):
    """DatasetBuilder for RAVDESS speech (24 actors, 1,440 files); builds through Apache Beam
    when given Beam options (:mod:`keras_dkd.datasets.beam_build`)."""

    pkg_dir_path = tfds.core.Path(__file__).parent

    @tfds.core.utils.classproperty
    @classmethod
    def code_path(cls) -> tfds.core.Path:
        return tfds.core.Path(__file__)

    VERSION = tfds.core.Version("1.0.0")
    RELEASE_NOTES = {"1.0.0": "Initial release: speech audio, one split per actor."}
    BUILDER_CONFIGS = [
        RavdessConfig(
            name="full",
            description="All 1,440 speech files, 8 classes: " + ", ".join(FULL_CLASSES) + ".",
            class_names=FULL_CLASSES,
            mapping=dict(EMOTIONS),
        ),
        RavdessConfig(
            name="four_class",
            description=(
                "The 672 files of neutral, happy, angry and sad (calm, fearful, disgust and "
                "surprised left out), named and ordered like IEMOCAP: neutral, happy, angry, sad."
            ),
            class_names=FOUR_CLASSES,
            mapping=dict(FOUR_CLASS_MAP),
        ),
    ]
    DEFAULT_CONFIG_NAME = "four_class"
    MANUAL_DOWNLOAD_INSTRUCTIONS = """\
    Download Audio_Speech_Actors_01-24.zip from https://zenodo.org/record/1188976 (free, licence
    CC BY-NC-SA 4.0) and pass a manual_dir holding the archive, or its extracted Actor_01 ...
    Actor_24 folders.
    """

    def download_and_prepare(self, *args, **kwargs):
        """TFDS' build, after removing stale ``incomplete.*`` folders of killed builds."""
        remove_stale(Path(self.data_path).parent, r"incomplete\.[A-Z0-9]{6}_.+")
        return super().download_and_prepare(*args, **kwargs)

    def _info(self) -> tfds.core.DatasetInfo:
        return self.dataset_info_from_configs(
            features=tfds.features.FeaturesDict(
                {
                    "audio": _audio_feature(),
                    "label": tfds.features.ClassLabel(names=list(self.builder_config.class_names)),
                    "utterance_id": tfds.features.Text(),
                    "speaker": tfds.features.Text(),
                    "gender": tfds.features.Text(),
                    "emotion_code": tfds.features.Text(),
                    "intensity": tfds.features.Text(),
                    "statement": tfds.features.Text(),
                    "repetition": tfds.features.Text(),
                    "duration": tfds.features.Scalar(dtype=np.float32),
                }
            ),
            supervised_keys=("audio", "label"),
            homepage=HOMEPAGE,
            metadata=tfds.core.MetadataDict(sample_rate=SAMPLE_RATE),
        )

    def _split_generators(self, dl_manager: tfds.download.DownloadManager):
        root = Path(str(dl_manager.manual_dir))
        if not find_actor_dirs(root) and (root / ARCHIVE).is_file():
            root = Path(str(dl_manager.extract(root / ARCHIVE)))
        files = speech_files(root, self.builder_config.mapping)
        if not any(files.values()):
            raise DatasetError(
                f"RAVDESS: {root} holds no speech files (03-01-*.wav) of this config's classes: "
                f"extract {ARCHIVE} there again"
            )
        # A partial copy builds the splits of the actors it holds (TFDS cannot write an empty
        # split).
        return {split: self._split_examples(paths) for split, paths in files.items() if paths}

    def _example_arguments(self):
        return {"mapping": self.builder_config.mapping}


def make_example(path: Path, mapping: dict[str, str]):
    """``(key, example)`` of one speech file (the plain and the Beam build alike)."""
    meta = parse_filename(path.name)
    try:
        waveform = read_audio(path, SAMPLE_RATE)
    except UserError as error:
        raise DatasetError(
            f"RAVDESS: {error}; replace it with the original from {ARCHIVE}"
        ) from error
    audio = np.clip(np.round(waveform * 32768.0), -32768, 32767).astype(np.int16)
    return (
        meta["utterance_id"],
        {
            "audio": audio,
            "label": mapping[meta["emotion_code"]],
            "utterance_id": meta["utterance_id"],
            "speaker": meta["actor"],
            "gender": meta["gender"],
            "emotion_code": meta["emotion_code"],
            "intensity": meta["intensity"],
            "statement": meta["statement"],
            "repetition": meta["repetition"],
            "duration": np.float32(len(audio) / SAMPLE_RATE),
        },
    )
