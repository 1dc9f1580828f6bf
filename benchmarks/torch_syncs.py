"""Where a Keras step on the PyTorch backend makes tensors of Python numbers, and (on a GPU) how
often it waits for the GPU.

Run by hand, never in CI::

    KERAS_BACKEND=torch python benchmarks/torch_syncs.py [--batch-size 32]

For each step of ``benchmarks/throughput.py`` (training step, inference, DKD step, DKD step with
cached teacher logits) it runs the step twice, then once more while counting

- the calls that turn a Python number or tuple into a tensor (``torch.as_tensor`` of a
  non-tensor, which Keras' PyTorch backend does for every Python number passed to a
  ``keras.ops`` function), grouped by the first line of code outside Keras' ops and backend that
  asked for it: on a GPU each one is a host-to-device copy after which the host waits for the
  GPU (``non_blocking=False``), so the Python work of the step no longer overlaps the GPU's;
- on a CUDA machine, the synchronizations PyTorch itself reports
  (``torch.cuda.set_sync_debug_mode("warn")``) during that step.

keras-dkd's layers pass Python numbers to tensors' own operators (``tensor * 0.9``), not to
``keras.ops``, so the lines left are mostly Keras' own: the optimizer's iteration counter and
step, and the metrics. ``train_on_batch`` resets the metrics at every call
(``reduction_metrics.py``'s ``reset_state``: 2 conversions in a CE step, 10 in a DKD step with
its five trackers), which ``fit`` does once per epoch.
"""

from __future__ import annotations

import argparse
import collections
import os
import sys
import traceback
import warnings

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(HERE))
sys.path.insert(0, HERE)

SKIP = ("keras/src/ops", "keras/src/backend", "site-packages/torch", "traceback_utils")


def _where(stack):
    """The innermost frame outside Keras' ops/backend and PyTorch, as 'path:line'."""
    for frame in reversed(stack):
        name = frame.filename.replace(os.sep, "/")
        if not any(part in name for part in SKIP):
            short = name.split("site-packages/")[-1]
            root = os.path.dirname(HERE).replace(os.sep, "/") + "/"
            return f"{short.removeprefix(root)}:{frame.lineno}"
    return "?"


def count_step(step, torch):
    """(conversions by source, GPU synchronizations or None) of one call of ``step``."""
    import keras.src.backend.torch.core as core

    sources = collections.Counter()
    original = core.torch.as_tensor

    def counting(data, *args, **kwargs):
        if not isinstance(data, torch.Tensor):
            sources[_where(traceback.extract_stack()[:-1])] += 1
        return original(data, *args, **kwargs)

    cuda = torch.cuda.is_available()
    core.torch.as_tensor = counting
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            if cuda:
                torch.cuda.synchronize()
                torch.cuda.set_sync_debug_mode("warn")
            try:
                step()
            finally:
                if cuda:
                    torch.cuda.set_sync_debug_mode("default")
                    torch.cuda.synchronize()
    finally:
        core.torch.as_tensor = original
    syncs = None
    if cuda:
        syncs = sum("synchroniz" in str(w.message).lower() for w in caught)
    return sources, syncs


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--batch-size", type=int, default=32)
    args = parser.parse_args(argv)

    import keras

    if keras.backend.backend() != "torch":
        print("Error: run with KERAS_BACKEND=torch", file=sys.stderr)
        return 1
    import torch
    from throughput import keras_steps, make_batch

    x, y = make_batch(args.batch_size)
    _, steps, _ = keras_steps(x, y, False, True, "float32")
    device = torch.cuda.get_device_name() if torch.cuda.is_available() else "cpu"
    print(f"torch {torch.__version__}, keras {keras.__version__}, on {device}, "
          f"batch {args.batch_size}")
    for name, step in steps.items():
        step()
        step()
        sources, syncs = count_step(step, torch)
        line = f"{name}: {sum(sources.values())} tensors made of Python values"
        if syncs is not None:
            line += f"; {syncs} GPU synchronizations reported by PyTorch"
        print(line)
        for source, n in sources.most_common():
            print(f"    {n:3d}  {source}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
