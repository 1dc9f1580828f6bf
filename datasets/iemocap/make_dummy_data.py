"""Writes ``dummy_data/`` for the IEMOCAP builder test: a tiny fake release in the real layout.

Run from anywhere: ``python datasets/iemocap/make_dummy_data.py``. ``dummy_data/`` is a manual_dir
holding ``IEMOCAP_full_release/`` (so the builder test also covers "the parent is accepted"). Each
session has one improvised and one scripted dialog (``DIALOGS``); audio is 25-50 ms of noise.
The fuller generator for tests is ``tests/fake_iemocap.py``.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import soundfile

HERE = Path(__file__).resolve().parent
SAMPLE_RATE = 16000
HEADER = "% [START_TIME - END_TIME] TURN_NAME EMOTION [V, A, D]"

# Per session n: dialog suffix -> (turn, emotion code) in file order. The dialog's lead actor
# alternates with the session, so male turns appear in female-led dialogs and vice versa.
DIALOGS = {
    "impro01": [("F000", "neu"), ("M000", "exc"), ("F001", "hap"), ("M001", "fru")],
    "script01_2": [("F000", "ang"), ("M000", "sad"), ("F001", "xxx")],
}
# Examples per session split under the default config (improvised, happy = hap + exc): neu, exc,
# hap. The builder test expects this many.
EXPECTED_PER_SESSION = 3


def _utterance_block(start: float, utterance: str, code: str, duration: float) -> list[str]:
    return [
        f"[{start:.4f} - {start + duration:.4f}]\t{utterance}\t{code}\t[2.5000, 3.0000, 3.5000]",
        "C-E2:\tNeutral;\t()",
        "C-E3:\tNeutral;\t()",
        "A-E3:\tval 3; act 2; dom  2;\t()",
        "",
    ]


def make_dummy_data(root: Path = HERE / "dummy_data") -> Path:
    """(Re)writes the dummy data under ``root`` and returns it."""
    shutil.rmtree(root, ignore_errors=True)
    rng = np.random.default_rng(0)
    release = root / "IEMOCAP_full_release"
    for n in range(1, 6):
        lead = "F" if n % 2 else "M"
        session = release / f"Session{n}"
        labels = session / "dialog" / "EmoEvaluation"
        labels.mkdir(parents=True)
        for suffix, turns in DIALOGS.items():
            dialog = f"Ses0{n}{lead}_{suffix}"
            wav_dir = session / "sentences" / "wav" / dialog
            wav_dir.mkdir(parents=True)
            lines, start = [HEADER, ""], 1.0
            for turn, code in turns:
                utterance = f"{dialog}_{turn}"
                audio = rng.integers(-2000, 2000, size=int(rng.integers(400, 800)), dtype=np.int16)
                soundfile.write(wav_dir / f"{utterance}.wav", audio, SAMPLE_RATE, subtype="PCM_16")
                lines += _utterance_block(start, utterance, code, len(audio) / SAMPLE_RATE)
                start += 1.0
            (labels / f"{dialog}.txt").write_text("\n".join(lines) + "\n")
    return root


if __name__ == "__main__":
    print(make_dummy_data())
