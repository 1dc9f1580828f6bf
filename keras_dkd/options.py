"""What a run is made of: the data options and the training recipe, validated in one place.

A training run is fully described by a :class:`RunOptions`: a :class:`DataOptions` (which corpus,
which protocol and fold, how validation is carved, the features and the subset), a
:class:`Recipe` (the objective, its weights, the optimiser and its schedule, epochs, batch size
and model selection), the seed and an optional trained teacher. They are frozen dataclasses,
checked once when they are made (a bad value raises :class:`keras_dkd.errors.UserError` naming the
option), written into ``config.json`` as one flat dict (:meth:`RunOptions.to_dict`) and read back
from it (:meth:`RunOptions.from_dict`). :meth:`RunOptions.differences` decides whether a rerun may
resume a run directory: only the fields that change what a run computes count, not where data,
caches or outputs live.

Variants of a run for a study are ``dataclasses.replace`` calls::

    base = RunOptions.from_flat(dataset="emodb", protocol="loso", fold=0, epochs=20)
    kd = base.replace(variant="kd")               # fields of the data, recipe or run alike

This module imports neither Keras nor TensorFlow, so the CLI can use it while parsing.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field, fields
from typing import Any

from keras_dkd.errors import UserError

__all__ = [
    "ARCHITECTURES",
    "DISTILLATION_VARIANTS",
    "PROTOCOLS",
    "SELECTIONS",
    "STUDENT_INITS",
    "VAL_ORDERS",
    "VARIANTS",
    "DataOptions",
    "Recipe",
    "RunOptions",
    "architecture",
]

#: Every ``variant`` of a run: the four distillation objectives, then the two CE-only models.
VARIANTS = ("dkd", "kd", "tckd", "nckd", "ce", "cnn")
#: The variants that distil a student from a teacher.
DISTILLATION_VARIANTS = ("dkd", "kd", "tckd", "nckd")
#: The networks :func:`keras_dkd.models.build_model` builds.
ARCHITECTURES = ("cnn_mha", "cnn")
#: ``random``: the paper's speaker-dependent 80/20 split; ``loso``: leave one group out.
PROTOCOLS = ("random", "loso")
#: ``best``: the epoch with the best validation UA; ``last``: the last epoch.
SELECTIONS = ("best", "last")
#: Optimisers a recipe can name.
OPTIMIZERS = ("adam", "adamw")
#: Learning-rate schedules a recipe can name.
SCHEDULES = ("constant", "inverse_time", "step", "cosine")
#: Initialisations of the head-fusion layer's fused Q/K/V kernel.
HEAD_INITS = ("fused", "per_head")
#: Where a distilled student starts: its own initial weights, or the teacher's trained ones.
STUDENT_INITS = ("random", "teacher")
#: Keras dtype policies a run may train under: float32, or bfloat16 compute with float32
#: variables (the softmax, losses, BatchNorm statistics and logits stay float32).
PRECISIONS = ("float32", "mixed_bfloat16")
#: How a short utterance fills its one segment.
PADDINGS = ("zero", "repeat")
#: How ``loso`` picks its validation speakers (``DataOptions.val_order``).
VAL_ORDERS = ("rotate", "seeded")


def architecture(variant: str) -> str:
    """The network a run's student (or only model) uses: ``cnn`` for variant ``cnn``, else
    ``cnn_mha`` (the head-fusion CNN)."""
    return "cnn" if variant == "cnn" else "cnn_mha"


def _location():
    """A field that says where something lives, not what a run computes."""
    return field(default=None, metadata={"result": False})


def _is_int(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _check(ok: bool, message: str) -> None:
    if not ok:
        raise UserError(message)


def _number(name, value, *, low=None, low_open=False, high=None, high_open=False, integer=False):
    """``value`` as an int or float within bounds, or a UserError naming the option."""
    kind = "an integer" if integer else "a number"
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise UserError(f"{name} must be {kind}, got {value!r}")
    if integer and int(value) != value:
        raise UserError(f"{name} must be {kind}, got {value!r}")
    value = int(value) if integer else float(value)
    _check(math.isfinite(value), f"{name} must be finite, got {value!r}")
    if low is not None:
        _check(value > low if low_open else value >= low,
               f"{name} must be {'>' if low_open else '>='} {low:g}, got {value:g}")
    if high is not None:
        _check(value < high if high_open else value <= high,
               f"{name} must be {'<' if high_open else '<='} {high:g}, got {value:g}")
    return value


def _choice(name, value, choices) -> str:
    _check(value in choices, f"unknown {name} {value!r}; use one of {', '.join(choices)}")
    return value


def _optional_path(name, value):
    if value is None:
        return None
    _check(isinstance(value, str | bytes) or hasattr(value, "__fspath__"),
           f"{name} must be a path, got {value!r}")
    return str(value)


class _Options:
    """Shared behaviour of the frozen option dataclasses."""

    def _set(self, name, value):
        object.__setattr__(self, name, value)

    def to_dict(self) -> dict:
        return {f.name: getattr(self, f.name) for f in fields(self)}

    @classmethod
    def field_names(cls) -> tuple[str, ...]:
        return tuple(f.name for f in fields(cls))

    @classmethod
    def location_fields(cls) -> frozenset[str]:
        return frozenset(f.name for f in fields(cls) if f.metadata.get("result") is False)


@dataclass(frozen=True)
class DataOptions(_Options):
    """The data side of a run: what is trained and tested on.

    Args:
        dataset: a corpus of :data:`keras_dkd.corpora.CORPORA` (``emodb``, ``iemocap``,
            ``ravdess``, ``csv``), or any name for records prepared by the caller.
        config: the corpus config (None: the corpus default, e.g. ``four_class``; for ``csv``
            the manifest's file stem, the name the corpus is built under).
        protocol: ``"random"`` (speaker-dependent 80/20 utterance split, the paper's) or
            ``"loso"`` (leave one speaker / session out).
        fold: ``loso`` only: the held-out group, as a 0-based index or a group name
            (``"speaker03"``); stored as the index for a known corpus.
        split_seed: the seed of the subset, test and validation splits (None: the run's seed).
        val_fraction: share of the training utterances held out for validation (0: none).
        val_order: ``loso`` only: which training speakers validate. ``"rotate"``: the ones that
            follow the test speakers in the corpus' sorted speaker order, skipping ``seed``
            speakers (fold k validates on the next speaker, so over the folds every speaker
            validates once per seed); ``"seeded"``: a seeded shuffle of the training speakers
            that is the same in every fold (one speaker then validates most folds; runs made
            before 2026-12-01, whose stored options lack this field, used it).
        normalize: per-filter standardisation with the training split's statistics, inside
            the model.
        speaker_norm: per-speaker standardisation of the features, each speaker's utterances
            with that speaker's own per-filter statistics, before the model
            (:mod:`keras_dkd.speaker_norm`; validation and test speakers with their own,
            from their unlabelled audio).
        drop_short: drop utterances of 2 s or less instead of zero-padding them (Head Fusion).
        max_utterances: a seeded stratified subset of this many utterances (quick runs).
        train_hop, eval_hop: the hop, in seconds, of the 2-s training segments (1 s) and of the
            validation and test segments (0.4 s).
        padding: how an utterance shorter than one segment fills it: ``"zero"`` (digital
            silence, the paper's) or ``"repeat"`` (the utterance repeated, no length cue).
        data_dir, manual_dir, cache_dir: the TFDS data directory, the raw corpus, the feature
            cache (None: :mod:`keras_dkd.paths`' defaults). Where, not what: a run may resume
            with other locations.
        manifest: ``csv`` only: the CSV manifest listing the corpus (:mod:`keras_dkd.manifests`);
            not needed once the corpus is built under ``config``.
        bundle_dir: a folder of data bundles saved by :func:`keras_dkd.data.save_bundle`; when
            given, the data is read from there instead of TFDS (training without TensorFlow).

    Example:
        >>> DataOptions("emodb", protocol="loso", fold="speaker08").fold
        1
    """

    dataset: str = "emodb"
    config: str | None = None
    protocol: str = "random"
    fold: int | str | None = None
    split_seed: int | None = None
    val_fraction: float = 0.1
    val_order: str = "rotate"
    normalize: bool = False
    speaker_norm: bool = False
    drop_short: bool = False
    max_utterances: int | None = None
    train_hop: float = 1.0
    eval_hop: float = 0.4
    padding: str = "zero"
    data_dir: str | None = _location()
    manual_dir: str | None = _location()
    cache_dir: str | None = _location()
    bundle_dir: str | None = _location()
    manifest: str | None = _location()

    def __post_init__(self):
        from keras_dkd import corpora

        _check(isinstance(self.dataset, str) and self.dataset != "",
               f"dataset must be a name, got {self.dataset!r}")
        if self.config is None and self.dataset in corpora.DEFAULT_CONFIG:
            self._set("config", corpora.DEFAULT_CONFIG[self.dataset])
        if self.dataset == "csv":
            self._set("config", corpora.csv_config(self.config, self.manifest))
        _check(self.config is None or isinstance(self.config, str),
               f"config must be a name, got {self.config!r}")
        _choice("protocol", self.protocol, PROTOCOLS)
        if self.protocol == "random":
            _check(self.fold is None, "fold applies to protocol 'loso' only; leave it out for "
                   "'random' or use --protocol loso")
        elif self.fold is None:
            raise UserError("protocol 'loso' needs a fold: a 0-based index or a group name")
        elif self.dataset in corpora.CORPORA and not (
            (self.bundle_dir or self.dataset == "csv") and _is_int(self.fold)
        ):
            # (with saved bundles and an index, the bundle checks the fold: no TFDS needed; a
            # CSV corpus' index is checked against its groups when the data is prepared)
            self._set("fold", corpora.fold_index(self.dataset, self.fold, self.config,
                                                 data_dir=self.data_dir, manifest=self.manifest))
        else:
            _check(_is_int(self.fold) or isinstance(self.fold, str),
                   f"fold must be an integer or a group name, got {self.fold!r}")
        if self.split_seed is not None:
            self._set("split_seed", _number("split_seed", self.split_seed, low=0, integer=True))
        self._set("val_fraction", _number("val_fraction", self.val_fraction, low=0, high=1,
                                          high_open=True))
        for name in ("normalize", "speaker_norm", "drop_short"):
            _check(isinstance(getattr(self, name), bool),
                   f"{name} must be true or false, got {getattr(self, name)!r}")
        if self.max_utterances is not None:
            self._set("max_utterances",
                      _number("max_utterances", self.max_utterances, low=2, integer=True))
        for name in ("train_hop", "eval_hop"):
            self._set(name, _number(name, getattr(self, name), low=0, low_open=True))
        _choice("padding", self.padding, PADDINGS)
        _choice("val_order", self.val_order, VAL_ORDERS)
        for name in ("data_dir", "manual_dir", "cache_dir", "bundle_dir", "manifest"):
            self._set(name, _optional_path(name, getattr(self, name)))
        if self.manifest is not None:  # absolute: a run resumed elsewhere still finds it
            from pathlib import Path

            self._set("manifest", str(Path(self.manifest).expanduser().absolute()))

    def resolved_split_seed(self, seed: int) -> int:
        """The seed of the splits for a run seeded with ``seed``."""
        return int(seed) if self.split_seed is None else int(self.split_seed)


@dataclass(frozen=True)
class Recipe(_Options):
    """How a run trains: objective, optimiser, schedule, regularisation, selection.

    The field defaults are the paper's recipe (:data:`keras_dkd.recipes.RECIPES` ``"paper"``);
    :meth:`RunOptions.from_flat` and the CLI start from a named recipe instead (``"default"``
    unless told otherwise) and apply the options given on top.

    Args:
        name: the named recipe these values started from (a label: every value is explicit).
        variant: ``dkd``, ``kd``, ``tckd``, ``nckd`` (a CE teacher, then a student distilled
            with that objective), ``ce`` (one head-fusion CNN with cross-entropy) or ``cnn``
            (one CNN without attention, cross-entropy).
        alpha, beta: weights of TCKD (or KD) and NCKD (α=1, β=8).
        temperature: softmax temperature of the distillation terms (4).
        warmup_epochs: the distillation weight is ``min(epoch / warmup_epochs, 1)`` in 1-based
            epochs, as in the DKD reference: full weight from epoch ``warmup_epochs`` (20).
        epochs: the epoch budget of each phase.
        batch_size: training batch size.
        optimizer: ``adam`` or ``adamw`` (Keras'; both apply ``weight_decay`` decoupled).
        learning_rate: the peak learning rate.
        weight_decay: decoupled weight decay (0: none).
        schedule: the learning rate over training, after ``lr_warmup_epochs`` of linear
            warm-up: ``constant``; ``inverse_time`` (``lr / (1 + lr_decay · step)``, Keras 2's
            legacy ``decay``); ``step`` (× ``step_factor`` every ``step_epochs`` epochs);
            ``cosine`` (to 0 at the end of the budget).
        lr_decay: the rate of ``inverse_time``.
        step_epochs, step_factor: the period and factor of ``step``.
        lr_warmup_epochs: epochs of linear learning-rate warm-up from 0 (0: none).
        patience: stop a phase once this many epochs have passed without a better validation
            UA (0: train the whole budget); the best epoch is then kept (``select="best"``).
        time_masks, time_width, freq_masks, freq_width: SpecAugment-style masks on the
            training segments (count and maximum width in frames / filters; 0: none).
        speed: speed perturbation of the training segments: each is resampled in time and
            frequency as if its audio were played ``s`` times faster, ``s`` uniform in
            ``[1 − speed, 1 + speed]`` (:class:`keras_dkd.perturb.SpeedPerturb`; 0: none).
        freq_warp: vocal-tract-length perturbation: each training segment's spectrum scaled in
            frequency by a factor uniform in ``[1 − freq_warp, 1 + freq_warp]`` (0: none).
        mixup: Beta parameter of mixup in cross-entropy phases (a teacher, the ``ce`` and
            ``cnn`` variants; not a distilled student): each training segment mixed with a
            random partner of its batch, labels alike (:class:`keras_dkd.mixup.Mixup`; 0: none).
        label_smoothing: the cross-entropy's target is ``(1 − ε) · one_hot + ε / K``
            (:func:`keras_dkd.losses.cross_entropy`; 0: none, as in the paper); in a distilled
            student it smooths the cross-entropy term only, not the teacher's distribution.
        dropout: dropout rate before the classifier (0: none, as in the paper). Keras keeps
            dropout's random state outside the checkpoint, so a run with dropout that is
            interrupted and resumed is not bit-identical to an uninterrupted one.
        ema: momentum of an exponential moving average of the weights, updated every step
            (Keras' ``use_ema``; 0: none). Validation, selection and the saved model then use
            the average, not the trained weights.
        balance_classes: draw each epoch's training segments in equal shares per class
            (:class:`keras_dkd.batches.EpochBatches`) instead of in the corpus' proportions.
        head_init: ``fused`` (Glorot over the fused Q/K/V kernel of the head-fusion layer) or
            ``per_head`` (Glorot over each head's 1x1 convolution, as separate layers get).
        select: ``best`` (each phase keeps its epoch with the best validation UA) or ``last``.
        student_init: where a distilled student starts: ``random`` (its own initial weights, as
            in the paper) or ``teacher`` (a copy of the teacher's trained weights; the teacher
            must be the same network). Cross-entropy variants (``ce``, ``cnn``) have no teacher
            and ignore it.
        precision: the Keras dtype policy the models are built with: ``float32`` or
            ``mixed_bfloat16`` (bfloat16 compute, float32 variables; softmax, losses,
            BatchNorm statistics and the logits stay float32). Saved models keep it.

    Example:
        >>> Recipe(variant="kd", epochs=20).epochs
        20
    """

    name: str = "paper"
    variant: str = "dkd"
    alpha: float = 1.0
    beta: float = 8.0
    temperature: float = 4.0
    warmup_epochs: int = 20
    epochs: int = 50
    batch_size: int = 32
    optimizer: str = "adam"
    learning_rate: float = 1e-4
    weight_decay: float = 1e-6
    schedule: str = "constant"
    lr_decay: float = 0.0
    step_epochs: int = 10
    step_factor: float = 0.1
    lr_warmup_epochs: int = 0
    patience: int = 0
    time_masks: int = 0
    time_width: int = 0
    freq_masks: int = 0
    freq_width: int = 0
    speed: float = 0.0
    freq_warp: float = 0.0
    mixup: float = 0.0
    label_smoothing: float = 0.0
    dropout: float = 0.0
    ema: float = 0.0
    balance_classes: bool = False
    head_init: str = "fused"
    select: str = "best"
    student_init: str = "random"
    precision: str = "float32"

    def __post_init__(self):
        _check(isinstance(self.name, str) and self.name != "",
               f"name must be a recipe name, got {self.name!r}")
        _choice("variant", self.variant, VARIANTS)
        _choice("optimizer", self.optimizer, OPTIMIZERS)
        _choice("schedule", self.schedule, SCHEDULES)
        _choice("head_init", self.head_init, HEAD_INITS)
        _choice("selection", self.select, SELECTIONS)
        _choice("student_init", self.student_init, STUDENT_INITS)
        _choice("precision", self.precision, PRECISIONS)
        for name, low, low_open in (("alpha", 0, False), ("beta", 0, False),
                                    ("temperature", 0, True), ("learning_rate", 0, True),
                                    ("weight_decay", 0, False), ("lr_decay", 0, False),
                                    ("step_factor", 0, True)):
            self._set(name, _number(name, getattr(self, name), low=low, low_open=low_open))
        for name in ("label_smoothing", "dropout", "ema"):
            self._set(name, _number(name, getattr(self, name), low=0, high=1, high_open=True))
        for name in ("speed", "freq_warp"):
            self._set(name, _number(name, getattr(self, name), low=0, high=0.5))
        self._set("mixup", _number("mixup", self.mixup, low=0))
        _check(isinstance(self.balance_classes, bool),
               f"balance_classes must be true or false, got {self.balance_classes!r}")
        for name, low in (("warmup_epochs", 0), ("epochs", 1), ("batch_size", 1),
                          ("step_epochs", 1), ("lr_warmup_epochs", 0), ("patience", 0),
                          ("time_masks", 0), ("time_width", 0), ("freq_masks", 0),
                          ("freq_width", 0)):
            self._set(name, _number(name, getattr(self, name), low=low, integer=True))
        _check(self.time_width < 197 and self.freq_width < 40,
               "time_width must be < 197 frames and freq_width < 40 filters")

    @property
    def distills(self) -> bool:
        """True when the run trains a teacher (or reuses one) and distils a student from it."""
        return self.variant in DISTILLATION_VARIANTS

    @property
    def student_mode(self) -> str:
        """The Distiller mode of the student phase (``ce`` for the CE-only variants)."""
        return self.variant if self.distills else "ce"

    def to_dict(self) -> dict:
        values = super().to_dict()
        values["recipe"] = values.pop("name")  # the flat key: "name" alone would be ambiguous
        return values


# Fields of the run itself (beside data and recipe), and where each flat key belongs.
_RUN_FIELDS = ("seed", "teacher", "devices")
# The teacher's path (its bytes count, through the recorded SHA-256), the recipe's name (a
# label: its values count) and the number of devices (where the steps run, not what they
# compute, up to float rounding) do not change what a run computes.
_RESULT_NEUTRAL = frozenset({"teacher", "recipe", "devices"}) | DataOptions.location_fields()


@dataclass(frozen=True)
class RunOptions(_Options):
    """Everything that decides what a training run computes.

    Args:
        data: the :class:`DataOptions`.
        recipe: the :class:`Recipe`.
        seed: seeds the weights, the batch order and (unless ``data.split_seed``) the splits.
        teacher: a trained teacher ``.keras`` to reuse instead of training one (distillation
            variants only). Its bytes, not its path, are what a run depends on: the training
            records their SHA-256.
        devices: train data-parallel over this many devices (:mod:`keras_dkd.distribution`;
            JAX and TensorFlow); ``recipe.batch_size`` stays the global batch and must divide
            evenly over them. Where a run computes, not what: a run may resume with another
            count.

    Example:
        >>> options = RunOptions.from_flat(dataset="emodb", variant="ce", epochs=5)
        >>> options.recipe.epochs, options.data.config
        (5, 'four_class')
    """

    data: DataOptions = field(default_factory=DataOptions)
    recipe: Recipe = field(default_factory=Recipe)
    seed: int = 0
    teacher: str | None = None
    devices: int = 1

    def __post_init__(self):
        _check(isinstance(self.data, DataOptions), "data must be a DataOptions")
        _check(isinstance(self.recipe, Recipe), "recipe must be a Recipe")
        self._set("seed", _number("seed", self.seed, low=0, high=2**32 - 1, integer=True))
        self._set("devices", _number("devices", self.devices, low=1, integer=True))
        _check(self.recipe.batch_size % self.devices == 0,
               f"batch_size {self.recipe.batch_size} does not divide evenly over {self.devices} "
               f"devices (each takes an equal share of the global batch); use a multiple of "
               f"{self.devices}")
        self._set("teacher", _optional_path("teacher", self.teacher))
        if self.teacher is not None and not self.recipe.distills:
            raise UserError(
                f"variant {self.recipe.variant!r} trains without a teacher; drop --teacher or "
                f"use one of {', '.join(DISTILLATION_VARIANTS)}"
            )

    # -------------------------------------------------------------- flat views
    @classmethod
    def from_flat(cls, **options) -> RunOptions:
        """Build from flat keyword arguments (``dataset=..., fold=..., epochs=..., seed=...``).

        ``recipe`` names the recipe of :mod:`keras_dkd.recipes` the other values start from
        (default ``"default"``); every option given explicitly wins over it.

        Raises:
            UserError: an unknown option name or a bad value.
        """
        from keras_dkd.recipes import recipe_values

        options = {**recipe_values(options.get("recipe", "default")), **options}
        parts = _split(options)
        return cls(data=DataOptions(**parts["data"]), recipe=Recipe(**parts["recipe"]),
                   **parts["run"])

    def to_dict(self) -> dict:
        """One flat dict of every option (the ``options`` of ``config.json``)."""
        return {**self.data.to_dict(), **self.recipe.to_dict(), "seed": self.seed,
                "teacher": self.teacher, "devices": self.devices}

    @classmethod
    def from_dict(cls, values) -> RunOptions:
        """Read :meth:`to_dict`'s dict back (e.g. from ``config.json``), checking every value.

        Raises:
            UserError: not a dict, an unknown key, or a bad value.
        """
        _check(isinstance(values, dict), f"options must be a JSON object, got {values!r:.60}")
        # An option missing from an older config did not exist when its run was made: the run
        # behaved as the option's field default says (not as today's named recipe sets it, e.g.
        # default's student_init or freq_warp), except that runs made before val_order existed
        # chose their validation speakers the seeded way.
        before = {f.name: f.default for part in (DataOptions, Recipe) for f in fields(part)
                  if f.name != "name" and f.default is not dataclasses.MISSING}
        return cls.from_flat(**{**before, "val_order": "seeded", **values})

    def replace(self, **changes) -> RunOptions:
        """A copy with some fields changed, named flat (``replace(variant="kd", fold=3)``).

        ``recipe="paper"`` switches to that named recipe's values (the other changes win).
        """
        if "recipe" in changes:
            from keras_dkd.recipes import recipe_values

            changes = {**recipe_values(changes["recipe"]), **changes}
        parts = _split(changes)
        return dataclasses.replace(
            self,
            data=dataclasses.replace(self.data, **parts["data"]),
            recipe=dataclasses.replace(self.recipe, **parts["recipe"]),
            **parts["run"],
        )

    # -------------------------------------------------------------- resuming
    def differences(self, other: RunOptions | dict) -> list[str]:
        """The options that change what a run computes and differ from ``other``'s
        (empty: a run made with ``other`` may be resumed with these options)."""
        theirs = other.to_dict() if isinstance(other, RunOptions) else dict(other)
        return result_differences(theirs, self.to_dict())

    @property
    def split_seed(self) -> int:
        """The seed of the data splits."""
        return self.data.resolved_split_seed(self.seed)


def _split(values: dict) -> dict[str, dict]:
    """Flat option values sorted into ``{"data": ..., "recipe": ..., "run": ...}`` by field."""
    parts: dict[str, dict] = {"data": {}, "recipe": {}, "run": {}}
    for key, value in values.items():
        parts[_owner(key)][_field(key)] = value
    return parts


def _field(key: str) -> str:
    return "name" if key == "recipe" else key


def _owner(key: str) -> str:
    if key in DataOptions.field_names():
        return "data"
    if key == "recipe" or (key in Recipe.field_names() and key != "name"):
        return "recipe"
    if key in _RUN_FIELDS:
        return "run"
    raise UserError(f"unknown option {key!r}")


def result_differences(old: dict, new: dict, neutral: frozenset[str] = frozenset()) -> list[str]:
    """``"key old -> new"`` for each key whose value differs between two flat option dicts,
    leaving out the options that do not change what a run computes (locations, the teacher's
    path) and ``neutral``."""
    skip = _RESULT_NEUTRAL | neutral
    if not {old.get("variant"), new.get("variant")} & set(DISTILLATION_VARIANTS):
        skip = skip | {"student_init"}  # no teacher to start from: it changes nothing
    keys = sorted((set(old) | set(new)) - skip, key=str)
    return [f"{key} {old.get(key)!r} -> {new.get(key)!r}" for key in keys
            if _canonical(old.get(key)) != _canonical(new.get(key))]


def _canonical(value: Any):
    if isinstance(value, bool) or value is None or isinstance(value, str):
        return value
    if isinstance(value, int | float):
        return float(value)
    if isinstance(value, list | tuple):
        return [_canonical(v) for v in value]
    return value
