"""One training phase of a run (the teacher's or the student's): build, resume, fit, select, save.

A phase trains a fresh model (seeded with :func:`keras_dkd.training.phase_seed`) with
cross-entropy, or through a :class:`keras_dkd.distiller.Distiller` against a frozen teacher,
from the epoch its checkpoint has reached, then keeps the selected epoch's weights and saves the
model as ``RUN_DIR/<phase>.keras``. A phase already complete is loaded, not retrained.
"""

from __future__ import annotations

import keras

from keras_dkd.batches import EpochBatches
from keras_dkd.callbacks import (
    AveragedWeights,
    EpochSetter,
    LearningRateLog,
    PatienceStop,
    PhaseCheckpoint,
    ScalarLogger,
    ValidationMetrics,
    patience_exhausted,
)
from keras_dkd.errors import UserError
from keras_dkd.io import save_model
from keras_dkd.losses import SparseCrossEntropy
from keras_dkd.options import Recipe, RunOptions
from keras_dkd.runs import RunDir, set_seed

__all__ = ["Phase", "make_optimizer"]


def make_optimizer(recipe: Recipe, steps_per_epoch: int):
    """The recipe's optimiser with its learning-rate schedule (:mod:`keras_dkd.schedules`)."""
    from keras_dkd.schedules import RecipeSchedule

    schedule = RecipeSchedule(
        recipe.learning_rate, steps_per_epoch, recipe.epochs, kind=recipe.schedule,
        warmup_epochs=recipe.lr_warmup_epochs, decay=recipe.lr_decay,
        period=recipe.step_epochs, factor=recipe.step_factor,
    )
    kind = keras.optimizers.AdamW if recipe.optimizer == "adamw" else keras.optimizers.Adam
    average = {"use_ema": True, "ema_momentum": recipe.ema} if recipe.ema else {}
    return kind(learning_rate=schedule, weight_decay=recipe.weight_decay or None, **average)


class Phase:
    """One phase of a run.

    Args:
        run: the :class:`keras_dkd.runs.RunDir`.
        name: ``"teacher"`` or ``"student"``.
        options: the run's :class:`keras_dkd.options.RunOptions`.
        bundle: the run's :class:`keras_dkd.data.DataBundle`.
        previous_rows: the history rows of the phases before this one (``history.csv`` holds
            them all).
        progress: a :class:`keras_dkd.training.Progress`.
    """

    def __init__(self, run: RunDir, name: str, options: RunOptions, bundle, *,
                 previous_rows=(), progress=None):
        from keras_dkd.training import Progress

        self.run, self.name, self.options, self.bundle = run, name, options, bundle
        self.previous_rows = list(previous_rows)
        self.progress = progress or Progress()
        self.checkpoint = PhaseCheckpoint(run.checkpoints(name), name, monitor="val_ua",
                                          on_history=self._on_history)

    def _on_history(self, rows):
        self.run.write_history(self.previous_rows + rows)

    def train(self, variant: str, *, mode: str, teacher=None):
        """Train (or resume, or load) the phase's model; return ``(model, info)``.

        Args:
            variant: the network, ``"cnn_mha"`` or ``"cnn"``.
            mode: ``"ce"`` or a distillation objective of the Distiller.
            teacher: the frozen teacher model (distillation modes).
        """
        from keras_dkd.io import load_model

        run, checkpoint = self.run, self.checkpoint
        if checkpoint.complete and run.model(self.name).is_file():
            info = self._info(checkpoint.epochs_completed, checkpoint.state.get("selected_epoch"),
                              checkpoint.state.get("selected_val_ua"))
            return load_model(run.model(self.name)), {**info, "skipped": True}
        batches = self._batches(teacher if mode != "ce" else None)
        model, trainer = self._build(variant, mode, teacher, len(batches))
        initial_epoch = checkpoint.restore(trainer)
        self._fit(trainer, model, batches, initial_epoch, mode, variant)
        recipe = self.options.recipe
        selected = checkpoint.epochs_completed
        if recipe.select == "best" and checkpoint.best_epoch is not None:
            selected = checkpoint.load_best(trainer)
        elif recipe.ema:
            checkpoint.restore(trainer)  # the last epoch's state, which holds the average
        row = next((r for r in checkpoint.history if int(r["epoch"]) == selected), {})
        save_model(model, run.model(self.name))
        checkpoint.mark_complete({"selected_epoch": selected, "selected_val_ua": row.get("val_ua")})
        info = self._info(checkpoint.epochs_completed, selected, row.get("val_ua"))
        return model, {**info, "resumed_from": initial_epoch or None, "skipped": False}

    def _info(self, epochs_run, selected, val_ua) -> dict:
        return {"path": str(self.run.model(self.name)), "epochs": self.options.recipe.epochs,
                "epochs_run": epochs_run, "selected_epoch": selected, "val_ua": val_ua,
                "resumed_from": None, "rows": self.checkpoint.history}

    def _batches(self, teacher=None) -> EpochBatches:
        """The phase's training batches; with a teacher and no augmentation, they carry the
        teacher's logits, computed once here (the step then skips the teacher)."""
        from keras_dkd.distiller import teacher_logits_of
        from keras_dkd.training import PHASE_SEEDS, train_arrays

        recipe = self.options.recipe
        augment = []
        if recipe.speed or recipe.freq_warp:
            from keras_dkd.features import HIGHFREQ, LOWFREQ
            from keras_dkd.perturb import SpeedPerturb

            augment.append(SpeedPerturb(speed=recipe.speed, freq_warp=recipe.freq_warp,
                                        lowfreq=LOWFREQ, highfreq=HIGHFREQ))
        if recipe.time_masks or recipe.freq_masks:
            from keras_dkd.augment import SpecAugment

            augment.append(SpecAugment(time_masks=recipe.time_masks, time_width=recipe.time_width,
                                       freq_masks=recipe.freq_masks, freq_width=recipe.freq_width))
        features, labels = train_arrays(self.bundle)
        cached = None
        if teacher is not None and not any(item.active for item in augment):
            cached = teacher_logits_of(teacher, features)
        mixup = None
        if recipe.mixup and teacher is None:  # cross-entropy phases only (keras_dkd.mixup)
            from keras_dkd.mixup import Mixup

            mixup = Mixup(recipe.mixup, len(self.bundle.class_names))
        return EpochBatches(features, labels, recipe.batch_size,
                            seed=[self.options.seed, PHASE_SEEDS[self.name]], augment=augment,
                            teacher_logits=cached, balance_classes=recipe.balance_classes,
                            mixup=mixup)

    def _build(self, variant, mode, teacher, steps_per_epoch):
        """The phase's model and what trains it (the model itself, or a Distiller), compiled."""
        from keras_dkd.distiller import Distiller
        from keras_dkd.models import build_model
        from keras_dkd.training import phase_seed

        recipe = self.options.recipe
        set_seed(phase_seed(self.options.seed, self.name))
        previous = keras.config.dtype_policy()
        keras.config.set_dtype_policy(recipe.precision)  # the layers keep it: scoped here
        try:
            model = build_model(variant=variant, class_names=self.bundle.class_names,
                                normalization=self.bundle.normalization, name=self.name,
                                dropout=recipe.dropout, head_init=recipe.head_init,
                                padding=self.options.data.padding,
                                speaker_norm=self.options.data.speaker_norm)
        finally:
            keras.config.set_dtype_policy(previous)
        if teacher is not None and recipe.student_init == "teacher":
            _copy_teacher_weights(teacher, model)
        optimizer = make_optimizer(recipe, steps_per_epoch)
        if mode == "ce" and teacher is None:
            if recipe.mixup:  # mixed batches carry soft (batch, classes) targets
                loss = keras.losses.CategoricalCrossentropy(
                    from_logits=True, label_smoothing=recipe.label_smoothing)
                accuracy = keras.metrics.CategoricalAccuracy(name="accuracy")
            else:
                loss = (SparseCrossEntropy(recipe.label_smoothing) if recipe.label_smoothing
                        else keras.losses.SparseCategoricalCrossentropy(from_logits=True))
                accuracy = keras.metrics.SparseCategoricalAccuracy(name="accuracy")
            model.compile(optimizer=optimizer, loss=loss, metrics=[accuracy])
            return model, model
        trainer = Distiller(teacher, model, mode=mode, alpha=recipe.alpha, beta=recipe.beta,
                            temperature=recipe.temperature, warmup_epochs=recipe.warmup_epochs,
                            label_smoothing=recipe.label_smoothing)
        trainer.compile(optimizer=optimizer)
        return model, trainer

    def _stopped_early(self) -> bool:
        """True when the phase's validation UA has not improved for ``patience`` epochs."""
        return patience_exhausted(self.checkpoint, self.options.recipe.patience)

    def _fit(self, trainer, model, batches, initial_epoch, mode, variant) -> None:
        recipe = self.options.recipe
        self.progress.emit(event="phase", phase=self.name, status="start", epochs=recipe.epochs,
                           initial_epoch=initial_epoch, mode=mode, model_variant=variant,
                           steps_per_epoch=len(batches),
                           teacher_logits="cached" if batches.teacher_logits is not None
                           else ("online" if mode != "ce" else None),
                           student_init=recipe.student_init if mode != "ce" else None)
        if initial_epoch >= recipe.epochs or self._stopped_early():
            return
        callbacks = [
            EpochSetter(batches),
            *([AveragedWeights(resumed=initial_epoch > 0)] if recipe.ema else []),
            ValidationMetrics(model, self.bundle.val, self.bundle.class_names),
            LearningRateLog(),
            self.checkpoint,
            ScalarLogger(self.run.logs(self.name)),
            *([PatienceStop(self._stopped_early)] if recipe.patience else []),
            *(self.progress.callbacks or []),
        ]
        trainer.fit(batches, epochs=recipe.epochs, initial_epoch=initial_epoch, shuffle=False,
                    verbose=self.progress.verbose, callbacks=callbacks)


def _copy_teacher_weights(teacher, student) -> None:
    """Start ``student`` from ``teacher``'s trained weights (``student_init="teacher"``)."""
    theirs, ours = teacher.get_weights(), student.get_weights()
    if [w.shape for w in theirs] != [w.shape for w in ours]:
        raise UserError(
            f"student_init 'teacher' needs the teacher's network, but {teacher.name!r} has "
            f"{len(theirs)} weights of other shapes than the student's {len(ours)}; use "
            "student_init 'random' or a teacher of the same network"
        )
    student.set_weights(theirs)
