"""Fake IEMOCAP trees in the true layout and line format, with known contents, for tests.

IEMOCAP is licensed and never available here, so tests that need it build a fake release::

    fake = make_fake_iemocap(tmp_path)            # tmp_path/IEMOCAP_full_release/Session1..5
    fake.counts("improvised")                     # {"session1": {"neutral": 2, ...}, ...}
    fake.total("all_exc")                         # examples the builder must produce
    fake.utterance("Ses01F_impro01_M000")         # every field the builder must emit

The layout is the real one: ``Session{n}/dialog/EmoEvaluation/<dialog>.txt`` (header line,
tab-separated utterance lines, annotator lines ``C-E2:``/``A-E3:``, blank lines) and
``Session{n}/sentences/wav/<dialog>/<utterance>.wav`` (16 kHz mono 16-bit noise, 50-110 ms),
plus the real tree's distractors the builder must ignore (``Categorical/``, ``Attribute/`` and
``Self-evaluation/`` label folders, transcriptions, AppleDouble ``._*`` files).

The expected counts here follow the documented label rules, written independently of the
builder: classes neutral, happy, angry, sad; happy = hap + exc (configs ``improvised``,
``scripted``, ``all``) or exc only with hap dropped (the ``*_exc`` configs); every other code is
skipped.
"""

from __future__ import annotations

import dataclasses
from collections import Counter
from pathlib import Path

import numpy as np
import soundfile

SAMPLE_RATE = 16000
CLASSES = ("neutral", "happy", "angry", "sad")
CODES = ("neu", "hap", "exc", "sad", "ang", "fru", "fea", "sur", "dis", "oth", "xxx")
CONFIGS = ("improvised", "scripted", "all", "improvised_exc", "scripted_exc", "all_exc")
HEADER = "% [START_TIME - END_TIME] TURN_NAME EMOTION [V, A, D]"
_CATEGORY = {
    "neu": "Neutral",
    "hap": "Happiness",
    "exc": "Excited",
    "sad": "Sadness",
    "ang": "Anger",
    "fru": "Frustration",
    "fea": "Fear",
    "sur": "Surprise",
    "dis": "Disgust",
    "oth": "Other",
    "xxx": "Neutral",
}

# Lead actor of each session's dialogs (mixed, so M turns occur in F-led dialogs and vice versa).
LEADS = {1: "F", 2: "M", 3: "M", 4: "F", 5: "M"}
# Improvised dialog of session n: these 8 turns, then n extra neutral ones (so splits differ).
IMPROVISED_TURNS = (
    ("F", "neu"),
    ("M", "hap"),
    ("F", "exc"),
    ("M", "exc"),
    ("F", "ang"),
    ("M", "sad"),
    ("F", "fru"),
    ("M", "xxx"),
)
# Scripted dialog of every session; turn numbers start at 007 (F007 ... F012, M007 ... M011).
SCRIPTED_TURNS = (
    ("F", "neu"),
    ("M", "hap"),
    ("F", "hap"),
    ("M", "exc"),
    ("F", "ang"),
    ("M", "ang"),
    ("F", "sur"),
    ("M", "fea"),
    ("F", "oth"),
    ("M", "dis"),
    ("F", "sad"),
)
SCRIPTED_NAMES = {
    1: "script01_1",
    2: "script02_2",
    3: "script03_2",
    4: "script01_3",
    5: "script02_1",
}


def default_spec() -> dict[str, list[tuple[str, str]]]:
    """Dialog name -> [(turn, code), ...] of the default fake corpus (2 dialogs per session).

    Per session n: improvised (hap+exc) gives neutral 1+n, happy 3, angry 1, sad 1; exc only
    gives neutral 1+n, happy 2, angry 1, sad 1. Scripted gives neutral 1, happy 3, angry 2, sad 1
    (exc only: happy 1). Totals: improvised 45, improvised_exc 40, scripted 35, scripted_exc 25,
    all 80, all_exc 65. ``Ses03M_script03_2_F012`` is a sad female turn in an M-led scripted dialog.
    """
    spec = {}
    for n, lead in LEADS.items():
        turns = list(IMPROVISED_TURNS) + [("M", "neu")] * n
        spec[f"Ses0{n}{lead}_impro0{n}"] = _number(turns, first=0)
        spec[f"Ses0{n}{lead}_{SCRIPTED_NAMES[n]}"] = _number(SCRIPTED_TURNS, first=7)
    return spec


def _number(turns, first: int) -> list[tuple[str, str]]:
    counters = Counter()
    numbered = []
    for gender, code in turns:
        numbered.append((f"{gender}{first + counters[gender]:03d}", code))
        counters[gender] += 1
    return numbered


@dataclasses.dataclass
class FakeUtterance:
    """One fake utterance: what the builder must emit for it (label aside), and its files."""

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
    num_samples: int
    wav: Path
    label_file: Path
    line: int  # 1-based line of its utterance line in label_file

    @property
    def duration(self) -> float:
        return self.num_samples / SAMPLE_RATE

    def label(self, config: str) -> str | None:
        """The class name under ``config``, or None when the config skips it."""
        dialogs, happy = _parse_config(config)
        if dialogs != "all" and (dialogs == "improvised") != self.improvised:
            return None
        table = {"neu": "neutral", "exc": "happy", "ang": "angry", "sad": "sad"}
        if happy == "hap+exc":
            table["hap"] = "happy"
        return table.get(self.emotion_code)


def _parse_config(config: str) -> tuple[str, str]:
    if config not in CONFIGS:
        raise ValueError(f"unknown IEMOCAP config {config!r}")
    if config.endswith("_exc"):
        return config[: -len("_exc")], "exc"
    return config, "hap+exc"


@dataclasses.dataclass
class FakeIemocap:
    """A generated tree: ``root`` (a manual_dir holding ``IEMOCAP_full_release``) and its truth."""

    root: Path
    release: Path
    utterances: list[FakeUtterance]

    def utterance(self, utterance_id: str) -> FakeUtterance:
        return next(u for u in self.utterances if u.utterance_id == utterance_id)

    def label_file(self, dialog: str) -> Path:
        session = self.release / f"Session{int(dialog[4])}"
        return session / "dialog" / "EmoEvaluation" / f"{dialog}.txt"

    def kept(self, config: str) -> list[FakeUtterance]:
        """The utterances ``config`` keeps, in generation order."""
        return [u for u in self.utterances if u.label(config) is not None]

    def counts(self, config: str) -> dict[str, dict[str, int]]:
        """``{split: {class: count}}`` for every split and class (zeros included)."""
        counts = {f"session{n}": dict.fromkeys(CLASSES, 0) for n in range(1, 6)}
        for u in self.kept(config):
            counts[f"session{u.session}"][u.label(config)] += 1
        return counts

    def total(self, config: str) -> int:
        return len(self.kept(config))


def make_fake_iemocap(
    root, spec: dict[str, list[tuple[str, str]]] | None = None, seed: int = 0
) -> FakeIemocap:
    """Writes a fake ``IEMOCAP_full_release`` under ``root`` and returns what it holds.

    Args:
        root: Folder to write into (created); it becomes a valid manual_dir, and
            ``root / "IEMOCAP_full_release"`` is one too.
        spec: Dialog name (``Ses01F_impro01``) -> list of ``(turn, code)`` such as
            ``("M000", "hap")``; None for :func:`default_spec`. Sessions come from the names;
            a session without dialogs still gets its (empty) folders.
        seed: Seed of the noise audio and of nothing else.

    Returns:
        A :class:`FakeIemocap` with every utterance's expected fields and file locations.
    """
    spec = default_spec() if spec is None else spec
    root = Path(root)
    release = root / "IEMOCAP_full_release"
    rng = np.random.default_rng(seed)
    utterances = []
    for n in range(1, 6):
        session = release / f"Session{n}"
        labels = session / "dialog" / "EmoEvaluation"
        for sub in ("Categorical", "Attribute", "Self-evaluation"):
            (labels / sub).mkdir(parents=True, exist_ok=True)
        (session / "dialog" / "transcriptions").mkdir(parents=True, exist_ok=True)
        (session / "sentences" / "wav").mkdir(parents=True, exist_ok=True)
    for dialog, turns in spec.items():
        n = int(dialog[4])
        session = release / f"Session{n}"
        labels = session / "dialog" / "EmoEvaluation"
        wav_dir = session / "sentences" / "wav" / dialog
        wav_dir.mkdir(parents=True, exist_ok=True)
        label_file = labels / f"{dialog}.txt"
        lines, categorical, transcript = [HEADER, ""], [], []
        start = 3.0
        for turn, code in turns:
            index = len(utterances)
            utterance_id = f"{dialog}_{turn}"
            num_samples = 800 + 16 * (index % 61)
            audio = rng.integers(-3000, 3000, size=num_samples, dtype=np.int16)
            wav = wav_dir / f"{utterance_id}.wav"
            soundfile.write(wav, audio, SAMPLE_RATE, subtype="PCM_16")
            valence = 1.0 + 0.5 * (index % 9)
            activation = 1.5 + 0.5 * (index % 7)
            dominance = 2.0 + 0.5 * (index % 5)
            end = start + num_samples / SAMPLE_RATE
            utterances.append(
                FakeUtterance(
                    utterance_id=utterance_id,
                    dialog=dialog,
                    session=n,
                    speaker=f"Ses0{n}{turn[0]}",
                    gender=turn[0],
                    improvised="_impro" in dialog,
                    emotion_code=code,
                    valence=valence,
                    activation=activation,
                    dominance=dominance,
                    num_samples=num_samples,
                    wav=wav,
                    label_file=label_file,
                    line=len(lines) + 1,
                )
            )
            category = _CATEGORY[code]
            lines += [
                f"[{start:.4f} - {end:.4f}]\t{utterance_id}\t{code}\t"
                f"[{valence:.4f}, {activation:.4f}, {dominance:.4f}]",
                f"C-E2:\t{category};\t()",
                f"C-E3:\t{category}; Other;\t(unsure)",
                f"C-{turn[0]}1:\t{category};\t()",
                f"A-E3:\tval {int(valence)}; act {int(activation)}; dom  {int(dominance)};\t()",
                f"A-{turn[0]}1:\tval 3; act 3; dom  3;\t()",
                "",
            ]
            categorical.append(f"{utterance_id} :{category}; ()")
            transcript.append(f"{utterance_id} [{start:08.4f}-{end:08.4f}]: Some words here.")
            start = end + 0.5
        label_file.write_text("\n".join(lines) + "\n")
        # Distractors the builder must not read as label files.
        (labels / "Categorical" / f"{dialog}_e1_cat.txt").write_text("\n".join(categorical) + "\n")
        (labels / "Attribute" / f"{dialog}_atr.txt").write_text(f"{dialog} :act 3; val 3;\n")
        (labels / "Self-evaluation" / f"{dialog}.anvil").write_text("<annotation/>\n")
        (labels / f"._{dialog}.txt").write_bytes(b"\x00\x05\x16\x07\x00\x02\x00\x00Mac OS X")
        (session / "dialog" / "transcriptions" / f"{dialog}.txt").write_text(
            "\n".join(transcript) + "\n"
        )
        (wav_dir / f"._{dialog}_{turns[0][0]}.wav").write_bytes(b"\x00\x05\x16\x07 not audio")
    return FakeIemocap(root=root, release=release, utterances=utterances)
