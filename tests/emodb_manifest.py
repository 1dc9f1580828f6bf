"""A CSV manifest of the EmoDB copy, for the CSV corpus and cross-corpus tests."""

from __future__ import annotations

import os
from pathlib import Path

from keras_dkd.datasets.emodb.emodb_dataset_builder import SPEAKERS

#: EmoDB letter -> the four product classes.
FOUR = {"N": "neutral", "F": "happy", "W": "angry", "T": "sad"}
#: EmoDB letter -> the names of EmoDB's seven classes.
FULL = {"N": "neutral", "F": "happiness", "W": "anger", "T": "sadness", "A": "fear",
        "E": "disgust", "L": "boredom"}


def emodb_manifest(emodb_dir: Path, target: Path, mapping=None, speakers=None) -> Path:
    """A manifest of EmoDB's files (those of ``mapping``'s letters and ``speakers``), paths
    relative to ``target``'s folder."""
    mapping = FOUR if mapping is None else mapping
    target.parent.mkdir(parents=True, exist_ok=True)
    lines = ["path,label,speaker,gender"]
    for wav in sorted((emodb_dir / "wav").glob("*.wav")):
        letter, speaker = wav.name[5], wav.name[:2]
        if letter in mapping and (speakers is None or speaker in speakers):
            relative = os.path.relpath(wav.resolve(), target.parent.resolve())
            lines.append(f"{relative},{mapping[letter]},{speaker},{SPEAKERS[speaker]}")
    target.write_text("\n".join(lines) + "\n")
    return target
