"""Writes ``dummy_data/`` for the EmoDB builder test: tiny noise WAVs named like the real files.

Run from anywhere: ``python datasets/emodb/make_dummy_data.py``. ``dummy_data/`` is a manual_dir
as the builder expects it: ``wav/`` with two files per speaker covering all seven emotion letters
(``DUMMY_FILES``), plus an AppleDouble ``._*.wav`` file and a text file the builder must ignore.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import soundfile

HERE = Path(__file__).resolve().parent
SAMPLE_RATE = 16000

# Two files per speaker; together they cover all seven emotion letters.
DUMMY_FILES = (
    "03a01Wa", "03b02Lb", "08a02Ea", "08b01Fa", "09a04Aa", "09b03Tb", "10a05Na", "10b09Wa",
    "11a07Fa", "11b10La", "12a01Ea", "12b01Ta", "13a02Aa", "13b02Na", "14a04Wb", "14b03Fa",
    "15a05Ta", "15b09Ea", "16a07Na", "16b10Aa",
)  # fmt: skip


def _write_wavs(folder: Path, names, seed: int) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    for index, name in enumerate(names):
        samples = 400 + 40 * index  # 25 ms and up: sizes differ, so durations are checkable
        audio = rng.integers(-2000, 2000, size=samples, dtype=np.int16)
        soundfile.write(folder / f"{name}.wav", audio, SAMPLE_RATE, subtype="PCM_16")


def make_dummy_data(root: Path = HERE / "dummy_data") -> Path:
    """(Re)writes the dummy data under ``root`` and returns it."""
    shutil.rmtree(root, ignore_errors=True)
    _write_wavs(root / "wav", DUMMY_FILES, seed=0)
    (root / "wav" / "._03a01Wa.wav").write_bytes(b"\x00\x05\x16\x07 AppleDouble, not audio")
    (root / "wav" / "notes.txt").write_text("not audio; the builder ignores it\n")
    return root


if __name__ == "__main__":
    print(make_dummy_data())
