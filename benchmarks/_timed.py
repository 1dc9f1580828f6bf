"""One resumable training for the benchmark studies, with the wall time of its sittings."""

from __future__ import annotations

import json
import time
from pathlib import Path


def train_timed(options, run_dir) -> tuple[dict, float]:
    """``keras_dkd.training.train(options, run_dir)``, timed across sittings.

    The seconds of every sitting that trained (part of) the run are added up in
    ``RUN_DIR/wall.json``; finding the run already complete adds nothing.

    Returns:
        ``(result, wall_seconds)``: ``train``'s result and the run's training wall time so far.
    """
    from keras_dkd.training import train

    wall_file = Path(run_dir) / "wall.json"
    start = time.perf_counter()
    result = train(options, run_dir)
    wall = time.perf_counter() - start
    if result["status"] != "complete" or not wall_file.is_file():
        previous = json.loads(wall_file.read_text())["seconds"] if wall_file.is_file() else 0.0
        wall_file.write_text(json.dumps({"seconds": previous + wall}))
    return result, json.loads(wall_file.read_text())["seconds"]
