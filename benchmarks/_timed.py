"""One resumable training for the benchmark studies, with the wall time of its sittings."""

from __future__ import annotations

import json
import time
from pathlib import Path


def train_timed(options, run_dir, callbacks=(), bundle=None) -> tuple[dict, float]:
    """``keras_dkd.training.train(options, run_dir)``, timed across sittings.

    The seconds of every sitting that trained (part of) the run are added up in
    ``RUN_DIR/wall.json``, rewritten at the end of every epoch, so a sitting that is killed
    loses at most the epoch it was in; finding the run already complete adds nothing.

    Args:
        options: the run's :class:`keras_dkd.options.RunOptions`.
        run_dir: its run directory.
        callbacks: more Keras callbacks for every phase (e.g. a study's own measurements).
        bundle: the prepared data, if the caller already has it.

    Returns:
        ``(result, wall_seconds)``: ``train``'s result and the run's training wall time so far.
    """
    import keras

    from keras_dkd.io import atomic_write_json
    from keras_dkd.training import Progress, train

    wall_file = Path(run_dir) / "wall.json"
    previous = json.loads(wall_file.read_text())["seconds"] if wall_file.is_file() else 0.0
    start = time.perf_counter()

    def record(*_):
        atomic_write_json(wall_file, {"seconds": previous + time.perf_counter() - start})

    clock = keras.callbacks.LambdaCallback(on_epoch_end=record)
    result = train(options, run_dir, progress=Progress(callbacks=[clock, *callbacks]),
                   bundle=bundle)
    if result["status"] != "complete" or not wall_file.is_file():
        record()
    return result, json.loads(wall_file.read_text())["seconds"]
