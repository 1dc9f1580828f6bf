"""Writes ``dummy_data/`` for the RAVDESS builder test: tiny 48 kHz noise WAVs in the real layout.

Run from anywhere: ``python datasets/ravdess/make_dummy_data.py``. ``dummy_data/`` is a manual_dir
as the builder expects it, the extracted archive: ``Actor_01`` ... ``Actor_04`` with three speech
files each (``DUMMY_FILES``, covering all eight emotions), plus what the builder must skip: a
song file (channel 02), an AppleDouble ``._*.wav`` file and a text file. :func:`write_tree` writes
the complete 24-actor tree of speech names (1,440 files) for the counting test.
"""

from __future__ import annotations

import itertools
import shutil
from pathlib import Path

import numpy as np
import soundfile

HERE = Path(__file__).resolve().parent
SAMPLE_RATE = 48000

# Three speech files per actor for actors 01-04; together they cover all eight emotion codes.
DUMMY_FILES = {
    "01": ("03-01-01-01-01-01-01", "03-01-02-02-01-02-01", "03-01-03-01-02-01-01"),
    "02": ("03-01-04-02-02-02-02", "03-01-05-01-01-01-02", "03-01-06-02-01-01-02"),
    "03": ("03-01-07-01-02-02-03", "03-01-08-02-02-01-03", "03-01-01-01-02-02-03"),
    "04": ("03-01-03-02-01-01-04", "03-01-05-02-02-02-04", "03-01-04-01-01-02-04"),
}


def speech_names(actor: str) -> list[str]:
    """The 60 speech file names (without ``.wav``) of one actor, by the official scheme."""
    names = []
    for emotion in (f"{e:02d}" for e in range(1, 9)):
        intensities = ("01",) if emotion == "01" else ("01", "02")  # neutral: normal only
        for intensity, statement, repetition in itertools.product(
            intensities, ("01", "02"), ("01", "02")
        ):
            names.append(f"03-01-{emotion}-{intensity}-{statement}-{repetition}-{actor}")
    return names


def _write(path: Path, samples: int, rng) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    audio = rng.integers(-2000, 2000, size=samples, dtype=np.int16)
    soundfile.write(path, audio, SAMPLE_RATE, subtype="PCM_16")


def write_tree(root: Path, actors=None, samples: int = 480) -> Path:
    """Every speech file of ``actors`` (default all 24) as ``root/Actor_NN/<name>.wav``, each
    ``samples`` long (10 ms at 48 kHz by default)."""
    rng = np.random.default_rng(1)
    for actor in actors or [f"{n:02d}" for n in range(1, 25)]:
        for name in speech_names(actor):
            _write(root / f"Actor_{actor}" / f"{name}.wav", samples, rng)
    return root


def make_dummy_data(root: Path = HERE / "dummy_data") -> Path:
    """(Re)writes the dummy data under ``root`` and returns it."""
    shutil.rmtree(root, ignore_errors=True)
    rng = np.random.default_rng(0)
    index = 0
    for actor, names in DUMMY_FILES.items():
        for name in names:
            # 50 ms and up at 48 kHz: sizes differ, so the resampled durations are checkable
            _write(root / f"Actor_{actor}" / f"{name}.wav", 2400 + 480 * index, rng)
            index += 1
    _write(root / "Actor_01" / "03-02-03-01-01-01-01.wav", 2400, rng)  # song: skipped
    (root / "Actor_01" / "._03-01-01-01-01-01-01.wav").write_bytes(b"\x00\x05\x16\x07 not audio")
    (root / "Actor_02" / "notes.txt").write_text("not audio; the builder ignores it\n")
    return root


if __name__ == "__main__":
    print(make_dummy_data())
