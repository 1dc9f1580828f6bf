"""Writes ``dummy_data/`` for the CSV corpus builder test: a manifest and tiny audio files.

Run from anywhere: ``python datasets/csv_corpus/make_dummy_data.py``. The manifest
(``dummy_data/manifest.csv``) lists six files in three formats (16 kHz mono WAV, 48 kHz stereo
WAV, 22.05 kHz FLAC) in a subfolder and beside it, by relative path, with the optional
``session`` and ``gender`` columns (so the groups are ``session1`` and ``session2``), an extra
column the builder ignores, and a blank line.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import soundfile

HERE = Path(__file__).resolve().parent

# path, label, speaker, session, gender, sample rate, channels, seconds
DUMMY_FILES = (
    ("audio/a1.wav", "neutral", "s1", "1", "F", 16000, 1, 0.10),
    ("audio/a2.flac", "happy", "s1", "1", "F", 22050, 1, 0.15),
    ("audio/b1.wav", "angry", "s2", "1", "M", 48000, 2, 0.20),
    ("audio/c1.wav", "sad", "s3", "2", "M", 16000, 1, 0.25),
    ("d1.wav", "happy", "s4", "2", "F", 48000, 2, 0.30),
    ("audio/d2.flac", "neutral", "s4", "2", "F", 22050, 1, 0.35),
)


def make_dummy_data(root: Path = HERE / "dummy_data") -> Path:
    """(Re)writes the dummy data under ``root`` and returns it."""
    shutil.rmtree(root, ignore_errors=True)
    rng = np.random.default_rng(0)
    lines = ["path,label,speaker,session,gender,notes"]
    for path, label, speaker, session, gender, rate, channels, seconds in DUMMY_FILES:
        target = root / path
        target.parent.mkdir(parents=True, exist_ok=True)
        shape = (round(rate * seconds), channels)
        audio = rng.integers(-2000, 2000, size=shape, dtype=np.int16)
        soundfile.write(target, audio, rate, subtype="PCM_16")
        lines.append(f"{path},{label},{speaker},{session},{gender},ignored")
        if path == "audio/b1.wav":
            lines.append("")  # a blank line: skipped
    (root / "manifest.csv").write_text("\n".join(lines) + "\n")
    return root


if __name__ == "__main__":
    print(make_dummy_data())
