"""The Distiller: trains a student from a frozen teacher with DKD, KD, TCKD, NCKD or plain CE.

``Distiller`` is a ``keras.Model`` whose ``train_step`` is written once per backend (a
``GradientTape`` step on TensorFlow, an autograd step on PyTorch, a stateless
``jax.value_and_grad`` step on JAX) around one shared loss computation,
:meth:`Distiller.compute_losses`. It is the only place in keras-dkd (with ``export`` and
``distribution``) that holds backend-specific code. Under data-parallel TensorFlow (a
``tf.distribute`` strategy, :mod:`keras_dkd.distribution`) each replica's loss is divided by the
number of replicas, as Keras' own losses do.

The student objective is (mode ``dkd``, the DKDFMH recipe)::

    loss = ce_weight · CE(y, z_s) + w(epoch) · (α · TCKD + β · NCKD)
    w(epoch) = min(epoch / warmup_epochs, 1)          (epoch 1-based; 1 when warmup_epochs == 0)

The other modes replace the distillation term: ``tckd`` → α · TCKD, ``nckd`` → β · NCKD,
``kd`` → α · KD, ``ce`` → nothing (no teacher needed), so a whole ablation runs on one code path.

Cached teacher logits: the frozen teacher gives the same logits for a segment in every epoch
when the student's inputs are not augmented, so they can be computed once
(:func:`teacher_logits_of`) and passed with the inputs as ``{"features": x, "teacher_logits":
t}``; the step then skips the teacher's forward pass and a distillation step costs about a
cross-entropy step. Plain inputs still run the teacher in every step.
"""

from __future__ import annotations

import keras
from keras import ops

from keras_dkd import losses
from keras_dkd.errors import UserError

__all__ = ["CACHED_LOGITS", "FEATURES", "MODES", "Distiller", "teacher_logits_of"]

MODES = ("dkd", "kd", "tckd", "nckd", "ce")
#: The keys of a batch's inputs that carry precomputed teacher logits.
FEATURES, CACHED_LOGITS = "features", "teacher_logits"


def teacher_logits_of(teacher, features, batch_size=256):
    """The frozen teacher's logits for every segment, computed once (float32 NumPy).

    Pass them with the segments, ``{"features": x, "teacher_logits": t}``, to
    :meth:`Distiller.fit` (or yield such batches) so that no step runs the teacher. Valid only
    when the student sees the same inputs as the teacher did here (no augmentation).

    Args:
        teacher: the trained teacher ``keras.Model``.
        features: its inputs, ``(n, ...)``.
        batch_size: segments per forward pass.

    Returns:
        ``(n, classes)`` float32 logits (inference mode).

    Example:
        >>> t = teacher_logits_of(teacher, x)                                # doctest: +SKIP
        >>> distiller.fit({"features": x, "teacher_logits": t}, y, epochs=5)  # doctest: +SKIP
    """
    import numpy as np

    from keras_dkd.distribution import inference

    with inference():  # not partitioned over the devices of a data-parallel run
        logits = teacher.predict(features, batch_size=batch_size, verbose=0)
    return np.asarray(logits, np.float32)


def _split_inputs(x):
    """``(features, cached teacher logits or None)`` of a batch's inputs."""
    if isinstance(x, dict):
        if set(x) != {FEATURES, CACHED_LOGITS}:
            raise UserError(
                f"Distiller inputs as a dict need exactly the keys {FEATURES!r} and "
                f"{CACHED_LOGITS!r}, got {sorted(x)}"
            )
        return x[FEATURES], x[CACHED_LOGITS]
    return x, None

# The distillation terms each mode logs (unweighted, already multiplied by T²).
_MODE_TERMS = {
    "dkd": ("tckd", "nckd"),
    "tckd": ("tckd", "nckd"),
    "nckd": ("tckd", "nckd"),
    "kd": ("kd",),
    "ce": (),
}


class _LastValue(keras.metrics.Metric):
    """A metric whose result is the last value it was given (used to log the warm-up weight)."""

    def __init__(self, name, **kwargs):
        super().__init__(name=name, **kwargs)
        # "mean": under a tf.distribute strategy each replica holds the same value; reading
        # it across replicas must not sum them (the metrics' default).
        self.last = self.add_variable(shape=(), initializer="zeros", aggregation="mean",
                                      name="last")

    def update_state(self, value):
        self.last.assign(ops.cast(value, self.dtype))

    def result(self):
        return ops.copy(self.last.value)

    def reset_state(self):
        self.last.assign(ops.zeros((), dtype=self.dtype))


class _WarmupSchedule(keras.callbacks.Callback):
    """Sets the distiller's warm-up weight to ``min((epoch + 1) / warmup_epochs, 1)`` each epoch
    (``epoch`` 0-based, so the weight is that of the DKD reference's 1-based count).

    ``Distiller.fit`` adds it by itself. The weight is a model variable: on TensorFlow and
    PyTorch the compiled step reads the variable; on JAX the trainer gathers the model's
    non-trainable variables into the step's state at the start of every epoch, after
    ``on_epoch_begin``, so the new value reaches the jitted step too.
    """

    def __init__(self, distiller):
        super().__init__()
        self._distiller = distiller

    def on_epoch_begin(self, epoch, logs=None):
        self._distiller.warmup_weight.assign(self._distiller.warmup_value(epoch))


@keras.saving.register_keras_serializable(package="keras_dkd")
class Distiller(keras.Model):
    """Train ``student`` from a frozen ``teacher`` with decoupled knowledge distillation.

    The teacher is frozen: ``teacher.trainable`` is set to False, it is always called with
    ``training=False`` (its BatchNorm statistics never move) and its logits go through
    ``stop_gradient`` (on PyTorch its forward pass also runs under ``torch.no_grad``).
    ``call`` returns the student's logits, ``evaluate`` / ``test_step`` evaluate the student
    (``loss`` = cross-entropy, ``accuracy``), and ``distiller.student`` is a plain Keras model
    that saves and loads on its own.

    Training logs: ``loss`` (the whole objective), ``ce``, the distillation terms (``tckd`` and
    ``nckd`` for modes ``dkd``/``tckd``/``nckd``, ``kd`` for ``kd``; unweighted, already × T²),
    ``accuracy`` and ``warmup`` (the warm-up weight of the epoch).

    The warm-up weight ``min(epoch / warmup_epochs, 1)`` (1-based epochs) is the non-trainable
    variable ``warmup_weight``; :meth:`fit` updates it at the start of every epoch by itself (no
    callback to pass), also when training resumes at a later epoch (``initial_epoch`` or
    ``keras.callbacks.BackupAndRestore``). Outside ``fit`` (``train_on_batch``) it keeps its
    value, initially that of the first epoch.

    Checkpoints: the distiller's weights (``save_weights`` / ``load_weights``) hold the student,
    the teacher, the warm-up weight and, once compiled, the optimizer state (``compile`` builds
    the optimizer, so ``load_weights`` right after ``compile`` restores it). Resume with
    ``fit(..., initial_epoch=k)``, or let ``keras.callbacks.BackupAndRestore`` do both steps.
    ``distiller.save("x.keras")`` / ``keras.saving.load_model`` also round-trip the whole
    distiller, compiled.

    Compile settings: the defaults (``jit_compile="auto"``) are the fast ones measured here:
    XLA-jitted steps on JAX; eager steps on PyTorch (``torch.compile`` compiled for about a
    minute and then ran slower); no XLA on TensorFlow on CPU (Keras' own "auto" choice).

    Args:
        teacher: the trained teacher ``keras.Model`` (logits out); may be None for mode ``ce``.
        student: the ``keras.Model`` to train (logits out, same classes as the teacher).
        mode: ``"dkd"`` (α·TCKD + β·NCKD), ``"kd"`` (α·KD), ``"tckd"`` (α·TCKD),
            ``"nckd"`` (β·NCKD) or ``"ce"`` (cross-entropy only, no teacher).
        alpha: weight of TCKD (modes dkd, tckd) or of KD (mode kd).
        beta: weight of NCKD (modes dkd, nckd).
        temperature: softmax temperature T of the distillation terms.
        ce_weight: weight of the student's cross-entropy.
        warmup_epochs: epochs over which the distillation weight ramps linearly from 0 to 1
            (0: full weight from the first epoch).
        label_smoothing: label smoothing ``ε`` of the student's cross-entropy term
            (:func:`keras_dkd.losses.cross_entropy`; 0: none). The distillation terms and the
            evaluation loss are unchanged.
        name: model name.

    Example:
        >>> distiller = Distiller(teacher, student, mode="dkd", alpha=1.0, beta=8.0,
        ...                       temperature=4.0)                        # doctest: +SKIP
        >>> distiller.compile(optimizer=keras.optimizers.Adam(1e-4))     # doctest: +SKIP
        >>> history = distiller.fit(train_ds, epochs=50)                 # doctest: +SKIP
        >>> distiller.student.save("student.keras")                      # doctest: +SKIP
    """

    def __init__(
        self,
        teacher,
        student,
        mode="dkd",
        alpha=1.0,
        beta=8.0,
        temperature=4.0,
        ce_weight=1.0,
        warmup_epochs=20,
        label_smoothing=0.0,
        name="distiller",
        **kwargs,
    ):
        super().__init__(name=name, **kwargs)
        if mode not in MODES:
            raise UserError(f"unknown distillation mode {mode!r}; use one of {', '.join(MODES)}")
        if not isinstance(student, keras.Model):
            raise UserError(f"student must be a keras.Model, got {type(student).__name__}")
        if mode != "ce":
            if teacher is None:
                raise UserError(f"mode {mode!r} needs a teacher model; pass one, or use mode 'ce'")
            if not isinstance(teacher, keras.Model):
                raise UserError(f"teacher must be a keras.Model, got {type(teacher).__name__}")
        if teacher is not None and teacher is student:
            raise UserError("teacher and student are the same model object; pass two models")
        if not temperature > 0:
            raise UserError(f"temperature must be > 0, got {temperature}")
        if alpha < 0 or beta < 0 or ce_weight < 0:
            raise UserError("alpha, beta and ce_weight must be >= 0")
        if int(warmup_epochs) != warmup_epochs or warmup_epochs < 0:
            raise UserError(f"warmup_epochs must be an integer >= 0, got {warmup_epochs}")
        if not 0 <= label_smoothing < 1:
            raise UserError(f"label_smoothing must be in [0, 1), got {label_smoothing}")
        if teacher is not None:
            _check_same_classes(teacher, student)
            teacher.trainable = False

        self.teacher = teacher
        self.student = student
        self.mode = mode
        self.alpha = float(alpha)
        self.beta = float(beta)
        self.temperature = float(temperature)
        self.ce_weight = float(ce_weight)
        self.warmup_epochs = int(warmup_epochs)
        self.label_smoothing = float(label_smoothing)

        self.warmup_weight = self.add_weight(
            shape=(),
            initializer=keras.initializers.Constant(self.warmup_value(0)),
            trainable=False,
            dtype="float32",
            name="warmup_weight",
        )
        self.loss_tracker = keras.metrics.Mean(name="loss")
        self.term_trackers = [keras.metrics.Mean(name=n) for n in ("ce", *_MODE_TERMS[mode])]
        self.accuracy_metric = keras.metrics.SparseCategoricalAccuracy(name="accuracy")
        self.warmup_tracker = _LastValue(name="warmup")
        # The student and teacher are built (functional) models: so is the distiller. This lets
        # BackupAndRestore restore weights before the first step.
        if student.built:
            self.built = True

    # ------------------------------------------------------------------ configuration
    def warmup_value(self, epoch):
        """The warm-up weight for (0-based) ``epoch``: ``min((epoch + 1) / warmup_epochs, 1)``.

        As in the DKD reference, which counts epochs from 1: the first epoch already gets
        ``1 / warmup_epochs`` of the distillation term, and full weight arrives at epoch
        ``warmup_epochs`` (1-based).
        """
        if self.warmup_epochs == 0:
            return 1.0
        return min(float(epoch + 1) / self.warmup_epochs, 1.0)

    @property
    def metrics(self):
        return [self.loss_tracker, *self.term_trackers, self.accuracy_metric, self.warmup_tracker]

    def compile(self, optimizer="adam", loss=None, metrics=None, **kwargs):
        """Configure training: the optimizer, plus ``jit_compile``, ``steps_per_execution``...

        The losses are fixed by the distiller's mode and ``accuracy`` is always logged, so
        ``loss`` and ``metrics`` must be left out.

        Args:
            optimizer: an optimizer or its name (default Adam).
            **kwargs: other ``keras.Model.compile`` arguments (``jit_compile``,
                ``steps_per_execution``, ``run_eagerly``, ``auto_scale_loss``).
        """
        if loss is not None or metrics is not None:
            raise UserError(
                "Distiller.compile takes no loss or metrics: its loss is set by its mode "
                "and it always logs accuracy; pass only the optimizer"
            )
        super().compile(optimizer=optimizer, **kwargs)
        if self.built and not self.optimizer.built:
            # Create the optimizer's variables now, so that load_weights() right after
            # compile() restores the optimizer state (moments, step counter) as well.
            self.optimizer.build(self.trainable_variables)

    def compile_from_config(self, config):
        """Re-compile from ``get_compile_config()`` when a saved Distiller is loaded."""
        config = keras.saving.deserialize_keras_object(config)
        self.compile(**{k: v for k, v in config.items() if v is not None})

    def get_config(self):
        return {
            "name": self.name,
            "trainable": self.trainable,
            "teacher": (
                None if self.teacher is None else keras.saving.serialize_keras_object(self.teacher)
            ),
            "student": keras.saving.serialize_keras_object(self.student),
            "mode": self.mode,
            "alpha": self.alpha,
            "beta": self.beta,
            "temperature": self.temperature,
            "ce_weight": self.ce_weight,
            "warmup_epochs": self.warmup_epochs,
            "label_smoothing": self.label_smoothing,
        }

    @classmethod
    def from_config(cls, config, custom_objects=None):
        config = dict(config)
        for key in ("teacher", "student"):
            if config.get(key) is not None:
                config[key] = keras.saving.deserialize_keras_object(
                    config[key], custom_objects=custom_objects
                )
        return cls(**config)

    # ------------------------------------------------------------------ forward + losses
    def call(self, inputs, training=False):
        """The student's logits (of ``inputs["features"]`` when given cached teacher logits)."""
        return self.student(_split_inputs(inputs)[0], training=training)

    def teacher_logits(self, x):
        """The frozen teacher's logits (inference mode, no gradient), or None in mode ``ce``.

        ``x`` is the segments, or ``{"features": ..., "teacher_logits": ...}``: then the given
        (cached) logits are returned and the teacher does not run.
        """
        if self.mode == "ce":
            return None
        features, cached = _split_inputs(x)
        if cached is not None:
            return ops.stop_gradient(ops.cast(cached, "float32"))
        return ops.stop_gradient(self.teacher(features, training=False))

    def compute_losses(self, student_logits, teacher_logits, labels):
        """The student objective and its logged terms (shared by every backend's step).

        Args:
            student_logits: ``(batch, classes)`` student logits.
            teacher_logits: ``(batch, classes)`` teacher logits, or None in mode ``ce``.
            labels: integer class ids ``(batch,)``.

        Returns:
            ``(total, terms)``: the scalar objective and a dict of scalar terms (``ce`` and the
            mode's unweighted distillation terms).
        """
        logits = ops.cast(student_logits, "float32")
        labels = ops.reshape(ops.cast(labels, "int32"), (-1,))
        ce = (losses.cross_entropy(logits, labels, self.label_smoothing) if self.label_smoothing
              else _cross_entropy(logits, labels))
        terms = {"ce": ce}
        total = self.ce_weight * ce
        if self.mode == "ce":
            return total, terms
        teacher_logits = ops.cast(teacher_logits, "float32")
        if self.mode == "kd":
            kd = losses.kd_loss(logits, teacher_logits, self.temperature)
            terms["kd"] = kd
            distill = self.alpha * kd
        else:
            tckd, nckd = losses.dkd_terms(logits, teacher_logits, labels, self.temperature)
            terms["tckd"] = ops.mean(tckd)
            terms["nckd"] = ops.mean(nckd)
            distill = 0.0
            if self.mode in ("dkd", "tckd"):
                distill = distill + self.alpha * terms["tckd"]
            if self.mode in ("dkd", "nckd"):
                distill = distill + self.beta * terms["nckd"]
        warmup = ops.cast(self.warmup_weight.value, "float32")
        return total + warmup * distill, terms

    def _update_train_metrics(self, total, terms, student_logits, labels):
        batch = ops.cast(ops.shape(student_logits)[0], "float32")
        self.loss_tracker.update_state(total, sample_weight=batch)
        for tracker in self.term_trackers:
            tracker.update_state(terms[tracker.name], sample_weight=batch)
        self.accuracy_metric.update_state(ops.reshape(labels, (-1,)), student_logits)
        self.warmup_tracker.update_state(self.warmup_weight.value)
        return {m.name: m.result() for m in self.metrics}

    def _evaluate_batch(self, x, y):
        """Student-only evaluation of one batch: updates and returns ``loss`` and ``accuracy``."""
        logits = self.student(_split_inputs(x)[0], training=False)
        batch = ops.cast(ops.shape(logits)[0], "float32")
        self.loss_tracker.update_state(_cross_entropy(logits, y), sample_weight=batch)
        self.accuracy_metric.update_state(ops.reshape(y, (-1,)), logits)
        return {"loss": self.loss_tracker.result(), "accuracy": self.accuracy_metric.result()}

    @staticmethod
    def _unpack(data):
        x, y, sample_weight = keras.utils.unpack_x_y_sample_weight(data)
        if y is None:
            raise UserError("Distiller.fit needs labels: pass (features, labels) batches")
        if sample_weight is not None:
            raise UserError(
                "Distiller does not support sample_weight or class_weight; "
                "rebalance the training data instead"
            )
        return x, y

    # ------------------------------------------------------------------ per-backend steps
    def train_step(self, *args):
        backend = keras.backend.backend()
        if backend == "jax":
            return self._jax_train_step(*args)
        if backend == "torch":
            return self._torch_train_step(*args)
        if backend == "tensorflow":
            return self._tensorflow_train_step(*args)
        raise UserError(f"the Distiller does not support the {backend!r} Keras backend")

    def test_step(self, *args):
        if keras.backend.backend() == "jax":
            return self._jax_test_step(*args)
        x, y = self._unpack(args[0])
        return self._evaluate_batch(x, y)

    def _tensorflow_train_step(self, data):
        import tensorflow as tf

        from keras_dkd.distribution import replicas

        x, y = self._unpack(data)
        teacher_logits = self.teacher_logits(x)  # outside the tape: nothing to record
        with tf.GradientTape() as tape:
            student_logits = self.student(_split_inputs(x)[0], training=True)
            total, terms = self.compute_losses(student_logits, teacher_logits, y)
            # Under a tf.distribute strategy each replica has an equal share of the batch and
            # the optimizer sums the replicas' gradients: the mean of the global batch is the
            # replica's mean divided by the number of replicas.
            scaled = self.optimizer.scale_loss(total / replicas())
        variables = self.trainable_variables
        gradients = tape.gradient(scaled, variables)
        self.optimizer.apply(gradients, variables)
        return self._update_train_metrics(total, terms, student_logits, y)

    def _torch_train_step(self, data):
        import torch

        x, y = self._unpack(data)
        with torch.no_grad():  # no autograd graph for the teacher at all
            teacher_logits = self.teacher_logits(x)
        self.zero_grad(set_to_none=True)
        student_logits = self.student(_split_inputs(x)[0], training=True)
        total, terms = self.compute_losses(student_logits, teacher_logits, y)
        self.optimizer.scale_loss(total).backward()
        variables = self.trainable_variables
        gradients = [v.value.grad for v in variables]
        with torch.no_grad():
            self.optimizer.apply(gradients, variables)
        return self._update_train_metrics(
            total.detach(), {k: v.detach() for k, v in terms.items()}, student_logits.detach(), y
        )

    def _jax_train_step(self, state, data):
        import jax

        trainable, non_trainable, optimizer_values, metrics_values = state
        x, y = self._unpack(data)
        trainable_variables = self.trainable_variables
        non_trainable_variables = self.non_trainable_variables

        def objective(trainable_values):
            mapping = [
                *zip(trainable_variables, trainable_values, strict=True),
                *zip(non_trainable_variables, non_trainable, strict=True),
            ]
            with keras.StatelessScope(state_mapping=mapping) as scope:
                teacher_logits = self.teacher_logits(x)
                student_logits = self.student(_split_inputs(x)[0], training=True)
                total, terms = self.compute_losses(student_logits, teacher_logits, y)
            # Student BatchNorm statistics moved; the teacher's and the warm-up weight did not
            # (get_current_value returns the value passed in for those).
            new_non_trainable = [scope.get_current_value(v) for v in non_trainable_variables]
            scaled = total
            if self.optimizer is not None:
                with keras.StatelessScope(
                    state_mapping=list(zip(self.optimizer.variables, optimizer_values, strict=True))
                ):
                    scaled = self.optimizer.scale_loss(total)
            return scaled, (total, terms, student_logits, new_non_trainable)

        (_, (total, terms, student_logits, non_trainable)), gradients = jax.value_and_grad(
            objective, has_aux=True
        )(trainable)
        trainable, optimizer_values = self.optimizer.stateless_apply(
            optimizer_values, gradients, trainable
        )
        mapping = [
            *zip(self.metrics_variables, metrics_values, strict=True),
            *zip(non_trainable_variables, non_trainable, strict=True),
        ]
        with keras.StatelessScope(state_mapping=mapping) as scope:
            logs = self._update_train_metrics(total, terms, student_logits, y)
        metrics_values = [scope.get_current_value(v) for v in self.metrics_variables]
        return logs, (trainable, non_trainable, optimizer_values, metrics_values)

    def _jax_test_step(self, state, data):
        trainable, non_trainable, metrics_values = state
        x, y = self._unpack(data)
        mapping = [
            *zip(self.trainable_variables, trainable, strict=True),
            *zip(self.non_trainable_variables, non_trainable, strict=True),
            *zip(self.metrics_variables, metrics_values, strict=True),
        ]
        with keras.StatelessScope(state_mapping=mapping) as scope:
            logs = self._evaluate_batch(x, y)
        metrics_values = [scope.get_current_value(v) for v in self.metrics_variables]
        return logs, (trainable, non_trainable, metrics_values)

    # ------------------------------------------------------------------ training loop
    def fit(
        self, x=None, y=None, batch_size=None, epochs=1, verbose="auto", callbacks=None, **kwargs
    ):
        """``keras.Model.fit``, plus the per-epoch warm-up schedule (added automatically).

        Resuming works as usual: ``initial_epoch=k``, or a ``keras.callbacks.BackupAndRestore``
        callback, restarts the warm-up at ``min(k / warmup_epochs, 1)``.
        """
        schedule = _WarmupSchedule(self)
        if callbacks is None:
            callbacks = [schedule]
        elif isinstance(callbacks, keras.callbacks.CallbackList):
            schedule.set_model(self)
            callbacks.callbacks.insert(0, schedule)
        else:
            callbacks = [schedule, *callbacks]
        return super().fit(
            x=x,
            y=y,
            batch_size=batch_size,
            epochs=epochs,
            verbose=verbose,
            callbacks=callbacks,
            **kwargs,
        )


def _cross_entropy(logits, labels):
    """Batch-mean sparse cross-entropy from logits, computed in float32."""
    logits = ops.cast(logits, "float32")
    labels = ops.reshape(ops.cast(labels, "int32"), (-1,))
    return ops.mean(ops.sparse_categorical_crossentropy(labels, logits, from_logits=True))


def _check_same_classes(teacher, student):
    """Raise UserError if teacher and student do not output the same number of classes."""
    try:
        t_classes = teacher.outputs[0].shape[-1]
        s_classes = student.outputs[0].shape[-1]
    except (AttributeError, IndexError, TypeError, ValueError):
        return  # subclassed models without symbolic outputs: checked at run time
    if t_classes is not None and s_classes is not None and t_classes != s_classes:
        raise UserError(
            f"teacher outputs {t_classes} classes but student outputs {s_classes}; "
            "distil between models of the same classes"
        )
