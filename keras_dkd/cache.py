"""The feature cache: log filter-bank segments per (corpus, config, TFDS split, hop) on disk.

Entries live under ``cache_dir`` (default :func:`keras_dkd.paths.cache_dir`) in
``features/<corpus>/<config>/<split>-hop<hop>-<key>/`` (``segments.npy``, ``meta.json``) and are
written atomically. ``key`` hashes the feature parameters, the segment length and hop,
``drop_short``, the padding of short utterances, the dataset name, config and version, the split
name and a fingerprint of its utterances (ids and audio bytes). :func:`cache_stats` counts
computations and loads.

**Padding.** Zero- and repeat-padded features (see :mod:`keras_dkd.features`) never share an
entry: a ``"repeat"`` entry's key holds ``"padding": "repeat"`` and its ``meta.json`` says
``"padding": "repeat"``, checked on load. ``"zero"`` entries keep the key they had before
padding became a choice (their ``meta.json`` says ``"padding": "zero"`` from now on, and an entry
without the field is a zero-padded one), so existing caches stay valid. With ``drop_short`` no
utterance is padded, so the padding asked for does not matter and the entries are the
``"zero"`` ones.

``meta.json`` holds the SHA-256 of ``segments.npy``, checked on every load: an entry whose
segments were damaged in place (same size, other bytes), whose ``meta.json`` is not the JSON
object it should be, or that cannot be read is recomputed and rewritten, with one warning
(:class:`CacheWarning`) naming it. Checking costs one read of the file at about 1.4 GB/s.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import shutil
import warnings
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from keras_dkd import features as F
from keras_dkd import paths
from keras_dkd.errors import UserError, storage_error
from keras_dkd.io import atomic_path

__all__ = ["CACHE_FORMAT", "CacheWarning", "FeatureCache", "cache_stats", "reset_cache_stats"]

CACHE_FORMAT = 2  # bump when the layout of a cache entry changes (2: sha256 in meta.json)


class CacheWarning(UserWarning):
    """A damaged feature-cache entry was found; it is recomputed."""


def _sha256(path: Path) -> str:
    with open(path, "rb") as f:
        return hashlib.file_digest(f, "sha256").hexdigest()



@dataclasses.dataclass
class _CacheStats:
    computed_utterances: int = 0
    computed_entries: int = 0
    loaded_entries: int = 0


_STATS = _CacheStats()


def cache_stats() -> dict:
    """Counters since the last :func:`reset_cache_stats`, process-wide.

    Returns:
        ``{"computed_utterances", "computed_entries", "loaded_entries"}``: utterances whose
        features were computed (one logfbank pass each, whatever the number of hops), cache
        entries (one per split and hop) written, and entries read from the cache.
    """
    return dataclasses.asdict(_STATS)


def reset_cache_stats() -> None:
    """Set the :func:`cache_stats` counters to 0."""
    global _STATS
    _STATS = _CacheStats()





def _fingerprint(records: Sequence) -> str:
    h = hashlib.sha256()
    for r in records:
        audio = np.ascontiguousarray(r.audio)
        h.update(f"{r.utterance_id}\0{int(r.sample_rate)}\0{audio.dtype.str}\0{audio.size}\0"
                 .encode())
        h.update(audio.tobytes())
    return h.hexdigest()


def _hop_name(hop: float) -> str:
    return f"{hop:g}".replace(".", "p")


class FeatureCache:
    """Per (dataset, config, group, hop) segment arrays on disk (see the module docstring)."""

    def __init__(self, cache_dir, dataset: str, config, version: str, drop_short: bool,
                 padding: str = "zero"):
        base = Path(cache_dir).expanduser() if cache_dir is not None else paths.cache_dir()
        self.root = base / "features" / safe_name(dataset) / safe_name(config or "default")
        self.dataset, self.config, self.version = dataset, config, version
        self.drop_short = bool(drop_short)
        # with drop_short nothing is padded: one set of entries serves every padding
        self.padding = "zero" if self.drop_short else F.check_padding(padding)

    def _key(self, group: str, hop: float, fingerprint: str) -> str:
        params = {
            "format": CACHE_FORMAT,
            "features": F.FEATURE_PARAMS,
            "segment_seconds": F.SEGMENT_SECONDS,
            "hop_seconds": float(hop),
            "drop_short": self.drop_short,
            "dataset": self.dataset,
            "config": self.config,
            "version": self.version,
            "group": group,
            "utterances": fingerprint,
        }
        if self.padding != "zero":  # zero-padded entries keep their pre-padding keys
            params["padding"] = self.padding
        return hashlib.sha256(json.dumps(params, sort_keys=True).encode()).hexdigest()[:20]

    def _path(self, group: str, hop: float, key: str) -> Path:
        return self.root / f"{safe_name(group)}-hop{_hop_name(hop)}-{key}"

    def segments(self, records: Sequence, hops: Sequence[float]) -> list[list]:
        """Per hop, a list with each record's ``(n_i, 197, 40)`` segments (views, maybe mmap)."""
        by_group: dict[str, list[int]] = {}
        for i, r in enumerate(records):
            by_group.setdefault(r.group, []).append(i)
        result = [[None] * len(records) for _ in hops]
        for group, members in by_group.items():
            recs = [records[i] for i in members]
            fp = _fingerprint(recs)
            paths_ = [self._path(group, h, self._key(group, h, fp)) for h in hops]
            loaded = [self._load(p, recs) for p in paths_]
            missing = [k for k, x in enumerate(loaded) if x is None]
            if missing:
                computed = self._compute(recs, [hops[k] for k in missing])
                for k, arrays in zip(missing, computed, strict=True):
                    self._store(paths_[k], recs, hops[k], arrays)
                    loaded[k] = arrays
            for k, arrays in enumerate(loaded):
                for i, seg in zip(members, arrays, strict=True):
                    result[k][i] = seg
        return result

    def _compute(self, recs, hops):
        out = [[] for _ in hops]
        for r in recs:
            try:
                per_hop = F.logfbank_segments_multi(
                    r.audio, r.sample_rate, hops, F.SEGMENT_SECONDS, self.drop_short,
                    self.padding)
            except UserError as error:
                raise UserError(f"{r.utterance_id}: {error}") from None
            for k, seg in enumerate(per_hop):
                out[k].append(seg)
            _STATS.computed_utterances += 1
        return out

    def _store(self, path: Path, recs, hop, arrays) -> None:
        counts = [int(len(a)) for a in arrays]
        segments = (np.concatenate(arrays) if arrays else
                    np.zeros((0, F.SEGMENT_FRAMES, F.NFILT), np.float32)).astype(np.float32)
        meta = {
            "format": CACHE_FORMAT,
            "dataset": self.dataset,
            "config": self.config,
            "version": self.version,
            "group": recs[0].group if recs else "",
            "hop_seconds": float(hop),
            "drop_short": self.drop_short,
            "padding": self.padding,
            "features": F.FEATURE_PARAMS,
            "utterance_ids": [r.utterance_id for r in recs],
            "counts": counts,
        }
        if path.exists():  # an unusable entry (damaged, or written for other utterances)
            shutil.rmtree(path, ignore_errors=True)
        try:
            with atomic_path(path, suffix="") as tmp:
                tmp.mkdir()
                np.save(tmp / "segments.npy", segments)
                meta["segments_sha256"] = _sha256(tmp / "segments.npy")
                (tmp / "meta.json").write_text(json.dumps(meta), encoding="utf-8")
        except OSError as error:
            if not (path / "meta.json").is_file():  # not a concurrent writer's finished entry
                storage = storage_error(error, path=self.root)
                if storage is not None:
                    raise UserError(f"feature cache: {storage} (or pass --cache-dir)") from None
                raise
        _STATS.computed_entries += 1

    def _load(self, path: Path, recs):
        meta_path, seg_path = path / "meta.json", path / "segments.npy"
        if not (meta_path.is_file() and seg_path.is_file()):
            return None
        try:
            meta = json.loads(meta_path.read_text(encoding="utf-8"))
            if not isinstance(meta, dict):
                return _damaged(path, "meta.json is not a JSON object")
            expected = meta.get("segments_sha256")
            if not isinstance(expected, str) or _sha256(seg_path) != expected:
                return _damaged(path, "segments.npy does not match its checksum")
            segments = np.load(seg_path, mmap_mode="r")
        except (OSError, ValueError) as error:
            return _damaged(path, f"it cannot be read ({type(error).__name__})")
        counts = meta.get("counts", [])
        if (not isinstance(counts, list) or not all(isinstance(c, int) for c in counts)
                or meta.get("utterance_ids") != [r.utterance_id for r in recs]
                or meta.get("padding", "zero") != self.padding
                or sum(counts) != len(segments)):
            return None
        offsets = np.concatenate([[0], np.cumsum(counts)]).astype(int)
        _STATS.loaded_entries += 1
        return [segments[offsets[j]: offsets[j + 1]] for j in range(len(recs))]


def _damaged(path: Path, why: str) -> None:
    warnings.warn(f"{path}: damaged feature-cache entry ({why}); recomputing it",
                  CacheWarning, stacklevel=3)
    return None


def safe_name(name) -> str:
    return "".join(c if c.isalnum() or c in "-_." else "_" for c in str(name))


