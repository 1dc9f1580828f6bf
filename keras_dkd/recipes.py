"""Named training recipes: ``paper``, ``headfusion`` and ``default``.

A recipe is a set of option values, of the recipe (:class:`keras_dkd.options.Recipe`) and of the
data side (:class:`keras_dkd.options.DataOptions`: normalisation, padding, short utterances).
:meth:`keras_dkd.options.RunOptions.from_flat` and every command start from one (``default``
unless ``recipe=`` / ``--recipe`` names another) and apply the options given explicitly on top;
``config.json`` then records every value, so a run says exactly what trained it.

- ``paper``: DKDFMH as published: Adam, learning rate 1e-4, batch 32, 50 epochs, α 1, β 8, T 4,
  distillation warm-up 20 epochs. Its "decay 1e-6" is read as in its lineage (the Head Fusion
  code's ``Adam(weight_decay=1e-6)``): a weight decay of 1e-6, not a learning-rate decay.
  Keras applies weight decay decoupled (AdamW-style), PyTorch's Adam as an L2 term; at 1e-6
  neither changes the weights measurably. Raw features, zero padding.
- ``headfusion``: the Head Fusion code's training: Adam, learning rate 1e-3, weight decay 1e-6,
  divided by 10 every 10 epochs, batch 32, 50 epochs, utterances of 2 s or less dropped (from
  the test split too: its numbers are over fewer utterances).
- ``default``: the recipe keras-dkd trains with unless told otherwise: AdamW 1e-3 (weight decay
  1e-4), 2 warm-up epochs then cosine, 40 epochs, features normalised inside the model, zero
  padding, per-head attention init, and since 2026-12-01 vocal-tract-length perturbation
  (``freq_warp`` 0.1): higher than the previous ``default`` on rotating validation speakers
  (+2.1 selected epoch, +1.5 last epoch, 10 folds; ``docs/results/recipes_rotate.md``). Chosen
  on validation speakers
  (``docs/results/recipes_explore.md``): SpecAugment masks (2 × 20 frames, 2 × 6 filters)
  lowered validation UA on all 3 folds tried, so they are off; repeat padding was below zero
  padding on both folds tried (2 folds, 1 seed: weak evidence), so zero stays; averaged
  weights (``ema=0.98``), dropout 0.3, class-balanced batches (``balance_classes``) and denser
  training segments each lowered validation UA over 10 folds (paired), so they stay off; a
  weight decay of 0.5 and ``label_smoothing`` 0.1 did not raise it (within the noise of
  retraining ``default`` itself), so they stay off too, as do speed perturbation
  (``speed`` 0.1, 10 folds × 2 seeds) and ``mixup`` 0.4. Speaker normalisation
  (``speaker_norm``) was 4-5 points lower on validation with seeded validation speakers and
  1.9-3.4 points higher with rotating ones (20 pairs, ``docs/results/recipes_rotate2.md``), but
  only when a speaker's utterances are standardised together: served one utterance at a time,
  as ``predict`` on one file and the exported waveform signatures do, the same models lose
  34.9 points of validation UA (``docs/results/speaker_norm_serving_val.md``), so it stays off.
  ``default``'s weight decay of 1e-4 is, in effect, none (Keras decays by ``lr · wd`` per
  step: 0.003 % over a run). These were judged with ``val_order="seeded"``, whose validation
  speaker was nearly the same in every fold (speaker 14 or 13 with seed 0, 03 with seed 1), and
  the validation difference from ``default`` did not foretell the test difference
  (``docs/results/recipes_round1.md``). Judged again with rotating validation speakers
  (``docs/results/recipes_rotate.md``), weight decay 0.5 and label smoothing 0.1 stay lower
  and frequency warping is higher, so it joined ``default``. ``default`` keeps the
  last epoch of its budget (``select="last"``, since 2026-12-02): judged on a second held-out
  training speaker (``docs/results/selection.md``, 10 trainings, seed 0), the last epoch scored
  2.1 points higher than the epoch the validation speakers scored best, which ``paper`` and
  ``headfusion`` keep (``select="best"``). ``docs/results/recipes_round2.md`` holds the study
  made before, under ``select="best"``. Since 2026-12-03 a distilled student starts from a copy
  of its teacher's trained weights (``student_init="teacher"``; ``paper`` and ``headfusion``
  keep the paper's fresh initialisation): over 10 folds (seed 1, ``docs/results/students.md``)
  such students scored 4.0 ± 8.1 points higher on their validation speakers than students
  distilled from their own initial weights, and 0.8 ± 4.7 above their teachers, where the
  freshly initialised ones were 3.2 ± 7.4 below.

Example:
    >>> recipe_values("headfusion")["schedule"]
    'step'
"""

from __future__ import annotations

from keras_dkd.errors import UserError

__all__ = ["RECIPES", "recipe_values"]

_PAPER = {
    "normalize": False,
    "speaker_norm": False,
    "padding": "zero",
    "drop_short": False,
    "optimizer": "adam",
    "learning_rate": 1e-4,
    "weight_decay": 1e-6,
    "schedule": "constant",
    "lr_decay": 0.0,
    "lr_warmup_epochs": 0,
    "epochs": 50,
    "batch_size": 32,
    "patience": 0,
    "time_masks": 0,
    "time_width": 0,
    "freq_masks": 0,
    "freq_width": 0,
    "speed": 0.0,
    "freq_warp": 0.0,
    "mixup": 0.0,
    "label_smoothing": 0.0,
    "dropout": 0.0,
    "ema": 0.0,
    "balance_classes": False,
    "head_init": "fused",
    "select": "best",
    "student_init": "random",
}

#: The named recipes: flat option values (data and recipe fields).
RECIPES: dict[str, dict] = {
    "paper": _PAPER,
    "headfusion": {
        **_PAPER,
        "drop_short": True,
        "learning_rate": 1e-3,
        "schedule": "step",
        "step_epochs": 10,
        "step_factor": 0.1,
    },
    "default": {
        **_PAPER,
        "normalize": True,
        "optimizer": "adamw",
        "learning_rate": 1e-3,
        "weight_decay": 1e-4,
        "schedule": "cosine",
        "lr_warmup_epochs": 2,
        "epochs": 40,
        "patience": 0,
        "head_init": "per_head",
        "freq_warp": 0.1,
        "select": "last",
        "student_init": "teacher",
    },
}


def recipe_values(name: str) -> dict:
    """The option values of the named recipe, with ``recipe`` set to its name.

    Raises:
        UserError: an unknown name.
    """
    if name not in RECIPES:
        raise UserError(f"unknown recipe {name!r}; use one of {', '.join(RECIPES)}")
    return {**RECIPES[name], "recipe": name}
