"""Throughput of the DKDFMH network under the current Keras backend, against plain PyTorch.

Run by hand, never in CI (it takes a few minutes and its figures depend on the machine)::

    KERAS_BACKEND=torch      .venv/bin/python benchmarks/throughput.py
    KERAS_BACKEND=jax        .venv/bin/python benchmarks/throughput.py --steps 30
    KERAS_BACKEND=tensorflow .venv/bin/python benchmarks/throughput.py --json tf.json
    KERAS_BACKEND=torch      .venv/bin/python benchmarks/throughput.py --precisions float32

It times, at batch 32 of (197, 40) segments, in the same process and for each precision
(``float32`` and ``mixed_bfloat16``, Keras dtype policies, by default both):

- one training step (Adam, sparse categorical cross-entropy on logits) of
  ``keras_dkd.models.build_model()`` compiled with the backend's recommended ``jit_compile``;
- one inference batch (``predict_on_batch``);
- one DKD step of ``keras_dkd.distiller.Distiller`` (teacher forward plus student forward and
  backward, ``train_on_batch``);
- one DKD step with cached teacher logits (``{"features", "teacher_logits"}`` inputs: no
  teacher forward), as keras-dkd trains when the inputs are not augmented; compared with plain
  PyTorch's DKD step, which runs its teacher;

and the same steps for a plain PyTorch implementation of the same network, written below the
way a user would write it (NCHW, one 1x1 ``Conv2d`` per head for each of Q, K and V), both in
eager float32 and under ``torch.autocast(device, torch.bfloat16)``. The baseline runs on the GPU
when PyTorch sees one (``--device``; each of its steps waits for the GPU to finish, as the Keras
steps do when they return their results), else on the CPU, in a child process of its own
(TensorFlow or JAX in the same process slow PyTorch down), driven step by step over a pipe, so
that the Keras and PyTorch steps alternate round after round and see the same machine load.
Figures are medians over the rounds; ratios > 1 mean Keras is faster: the ratio of the two
medians, and in brackets the median of the per-round ratios, which resists load that
drifts during the run.

The floor is the step's FLOP count (direct convolutions, matrix products; a training step
counts three forward passes, a DKD step with its teacher four) at the peak matrix-product rate
that PyTorch reaches on this machine (measured in the baseline process; for bfloat16 the faster
of the float32 and bfloat16 rates): no implementation of the same arithmetic runs faster.

The last lines are markdown table rows for the README.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import time

NUM_CLASSES = 4
INPUT_SHAPE = (197, 40)


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--steps", type=int, default=20, help="timed rounds (default 20)")
    parser.add_argument("--warmup", type=int, default=3, help="untimed rounds first (default 3)")
    parser.add_argument("--batch-size", type=int, default=32, help="segments per batch")
    parser.add_argument(
        "--jit-compile",
        choices=["recommended", "auto", "true", "false"],
        default="recommended",
        help="jit_compile for model.compile (default: keras_dkd's recommendation per backend)",
    )
    parser.add_argument(
        "--threads", type=int, default=None, help="limit every runtime to N threads"
    )
    parser.add_argument(
        "--precisions", nargs="+", default=["float32", "mixed_bfloat16"],
        choices=["float32", "mixed_bfloat16"], help="Keras dtype policies to time (default both)",
    )
    parser.add_argument("--no-distiller", action="store_true", help="skip the DKD section")
    parser.add_argument("--no-torch", action="store_true", help="skip the plain PyTorch baseline")
    parser.add_argument(
        "--no-autocast", action="store_true",
        help="skip plain PyTorch under bfloat16 autocast (on a CPU without bfloat16 arithmetic its "
             "multi-second steps, alternated with the others, perturb the float32 timings)",
    )
    parser.add_argument(
        "--device", choices=["auto", "cpu", "cuda"], default="auto",
        help="where the plain PyTorch baseline runs (default: cuda when PyTorch sees a GPU); the "
             "Keras side runs where its backend puts it",
    )
    parser.add_argument("--json", metavar="PATH", help="also write all figures as JSON")
    parser.add_argument("--serve-baseline", action="store_true", help=argparse.SUPPRESS)
    return parser.parse_args(argv)


def limit_threads(threads):
    """Must run before TensorFlow, JAX or PyTorch start their thread pools."""
    os.environ["XLA_FLAGS"] = (
        os.environ.get("XLA_FLAGS", "")
        + f" --xla_cpu_multi_thread_eigen={'false' if threads == 1 else 'true'}"
        + f" intra_op_parallelism_threads={threads}"
    ).strip()
    os.environ["OMP_NUM_THREADS"] = str(threads)
    os.environ["TF_NUM_INTRAOP_THREADS"] = str(threads)
    os.environ["TF_NUM_INTEROP_THREADS"] = "1"


# --------------------------------------------------------------------------- plain PyTorch


def plain_torch_network(num_classes=NUM_CLASSES, heads=4, hidden=64):
    """The network as a PyTorch user writes it: NCHW, separate 1x1 convolutions per head."""
    import torch
    import torch.nn.functional as F
    from torch import nn

    class HeadFusion(nn.Module):
        def __init__(self, channels=80):
            super().__init__()
            self.q = nn.ModuleList(nn.Conv2d(channels, hidden, 1) for _ in range(heads))
            self.k = nn.ModuleList(nn.Conv2d(channels, hidden, 1) for _ in range(heads))
            self.v = nn.ModuleList(nn.Conv2d(channels, hidden, 1) for _ in range(heads))

        def forward(self, x):
            maps = []
            for q, k, v in zip(self.q, self.k, self.v, strict=True):
                attention = F.softmax(q(x) * k(x), dim=1)
                maps.append(attention * v(x))
            fused = torch.cat(maps, dim=2)  # heads stacked along time
            return F.relu(fused).mean(dim=(2, 3))

    class Network(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv1a = nn.Conv2d(1, 8, (10, 2), padding=(4, 0))
            self.bn1a = nn.BatchNorm2d(8)
            self.conv1b = nn.Conv2d(1, 8, (2, 8), padding=(0, 3))
            self.bn1b = nn.BatchNorm2d(8)
            self.conv2 = nn.Conv2d(16, 32, 3, padding=1)
            self.bn2 = nn.BatchNorm2d(32)
            self.conv3 = nn.Conv2d(32, 48, 3, padding=1)
            self.bn3 = nn.BatchNorm2d(48)
            self.conv4 = nn.Conv2d(48, 64, 3, padding=1)
            self.bn4 = nn.BatchNorm2d(64)
            self.conv5 = nn.Conv2d(64, 80, 3, padding=1)
            self.bn5 = nn.BatchNorm2d(80)
            self.attention = HeadFusion()
            self.fc = nn.Linear(hidden, num_classes)

        def forward(self, x):
            x = x.unsqueeze(1)
            a = F.relu(self.bn1a(self.conv1a(x)))
            b = F.relu(self.bn1b(self.conv1b(x)))
            x = torch.cat([a, b], dim=1)
            x = F.max_pool2d(F.relu(self.bn2(self.conv2(x))), 2)
            x = F.max_pool2d(F.relu(self.bn3(self.conv3(x))), 2)
            x = F.relu(self.bn4(self.conv4(x)))
            x = F.relu(self.bn5(self.conv5(x)))
            return self.fc(self.attention(x))

    return Network()


def plain_torch_dkd_loss(student, teacher, labels, alpha=1.0, beta=8.0, temperature=4.0):
    """Decoupled KD as in the reference implementation (mdistiller), in plain PyTorch."""
    import torch
    import torch.nn.functional as F

    target = F.one_hot(labels, student.shape[1]).bool()
    p_s = F.softmax(student / temperature, dim=1)
    p_t = F.softmax(teacher / temperature, dim=1)
    b_s = torch.stack([(p_s * target).sum(1), (p_s * ~target).sum(1)], dim=1)
    b_t = torch.stack([(p_t * target).sum(1), (p_t * ~target).sum(1)], dim=1)
    tckd = F.kl_div(torch.log(b_s), b_t, reduction="batchmean") * temperature**2
    log_p_s = F.log_softmax(student / temperature - 1000.0 * target, dim=1)
    p_t_nt = F.softmax(teacher / temperature - 1000.0 * target, dim=1)
    nckd = F.kl_div(log_p_s, p_t_nt, reduction="batchmean") * temperature**2
    return alpha * tckd + beta * nckd


def baseline_device(choice="auto"):
    """The torch device of the plain PyTorch baseline: ``cuda`` if asked, or if ``auto`` and a
    GPU is visible; else ``cpu``."""
    import torch

    if choice == "auto":
        choice = "cuda" if torch.cuda.is_available() else "cpu"
    if choice == "cuda" and not torch.cuda.is_available():
        raise SystemExit("--device cuda: PyTorch sees no GPU")
    return torch.device(choice)


def synchronize(device):
    """Wait for the device's queued work (GPU kernels run asynchronously), so that a step's time
    is its whole time."""
    import torch

    if device.type == "cuda":
        torch.cuda.synchronize(device)


def plain_torch_steps(x_np, y_np, device=None):
    """Closures for plain PyTorch's training step, inference batch and DKD step, each in eager
    float32 (``train``, ``infer``, ``dkd``) and under bfloat16 autocast (``*_bf16``), on
    ``device`` (default CPU); each returns once the device has finished the step."""
    import contextlib

    import torch
    import torch.nn.functional as F

    device = device or torch.device("cpu")
    torch.manual_seed(0)
    x = torch.from_numpy(x_np).to(device)
    y = torch.from_numpy(y_np).long().to(device)
    model = plain_torch_network().to(device)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-4)
    teacher = plain_torch_network().to(device).eval()
    for p in teacher.parameters():
        p.requires_grad_(False)
    student = plain_torch_network().to(device)
    student_optimizer = torch.optim.Adam(student.parameters(), lr=1e-4)

    def precision(bf16):
        if not bf16:
            return contextlib.nullcontext()
        return torch.autocast(device.type, dtype=torch.bfloat16)

    def train(bf16=False):
        model.train()
        optimizer.zero_grad(set_to_none=True)
        with precision(bf16):
            loss = F.cross_entropy(model(x), y)
        loss.backward()
        optimizer.step()

    def infer(bf16=False):
        model.eval()
        with torch.no_grad(), precision(bf16):
            model(x)

    def dkd(bf16=False):
        with torch.no_grad(), precision(bf16):
            teacher_logits = teacher(x).float()
        student_optimizer.zero_grad(set_to_none=True)
        with precision(bf16):
            logits = student(x).float()
        loss = F.cross_entropy(logits, y) + plain_torch_dkd_loss(logits, teacher_logits, y)
        loss.backward()
        student_optimizer.step()

    def synchronized(step, bf16):
        def run():
            step(bf16)
            synchronize(device)

        return run

    plain = {"train": train, "infer": infer, "dkd": dkd}
    steps = {name: synchronized(step, False) for name, step in plain.items()}
    steps.update({f"{name}_bf16": synchronized(step, True) for name, step in plain.items()})
    return steps


def peak_matmul_gflops(dtype_name, size=1024, rounds=3, device=None):
    """PyTorch's best matrix-product rate on ``device`` (GFLOP/s) for a float32 or bfloat16
    product (size 4096 on a GPU, where 1024 is too small to fill it)."""
    import torch

    device = device or torch.device("cpu")
    if device.type == "cuda":
        size, rounds = max(size, 4096), max(rounds, 10)
    dtype = {"float32": torch.float32, "bfloat16": torch.bfloat16}[dtype_name]
    a = torch.randn(size, size, dtype=dtype, device=device)
    b = torch.randn(size, size, dtype=dtype, device=device)
    a @ b
    synchronize(device)
    best = float("inf")
    for _ in range(rounds):
        start = time.perf_counter()
        a @ b
        synchronize(device)
        best = min(best, time.perf_counter() - start)
    return 2 * size**3 / best / 1e9


def make_batch(batch_size):
    import numpy as np

    rng = np.random.default_rng(0)
    x = rng.normal(size=(batch_size, *INPUT_SHAPE)).astype("float32")
    y = rng.integers(0, NUM_CLASSES, size=batch_size).astype("int32")
    return x, y


def serve_baseline(args):
    """Child process: run one plain PyTorch step per command read from stdin, reply its time."""
    import torch

    if args.threads:
        torch.set_num_threads(args.threads)
    device = baseline_device(args.device)
    x, y = make_batch(args.batch_size)
    steps = plain_torch_steps(x, y.astype("int64"), device)
    params = count_torch_parameters()
    peaks = [peak_matmul_gflops(name, device=device) for name in ("float32", "bfloat16")]
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu"
    print(f"ready {params} {torch.__version__} {torch.get_num_threads()} {peaks[0]:.3f} "
          f"{peaks[1]:.3f} {device.type} {name.replace(' ', '_')}", flush=True)
    for line in sys.stdin:
        command = line.strip()
        if command == "quit":
            break
        start = time.perf_counter()
        steps[command]()
        print(time.perf_counter() - start, flush=True)
    return 0


class BaselineProcess:
    """The plain PyTorch baseline in a child process; ``step(name)`` returns its seconds."""

    def __init__(self, args):
        import subprocess

        command = [sys.executable, __file__, "--serve-baseline", "--device", args.device,
                   "--batch-size", str(args.batch_size)]
        command += ["--threads", str(args.threads)] if args.threads else []
        self.process = subprocess.Popen(
            command, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, bufsize=1
        )
        ready = self.process.stdout.readline().split()
        if not ready or ready[0] != "ready":
            raise RuntimeError("the plain PyTorch baseline process did not start")
        self.parameters, self.torch_version, self.threads = int(ready[1]), ready[2], int(ready[3])
        self.peak_gflops = {"float32": float(ready[4]), "mixed_bfloat16": float(ready[5])}
        self.device, self.device_name = ready[6], ready[7].replace("_", " ")

    def step(self, name):
        self.process.stdin.write(name + "\n")
        return float(self.process.stdout.readline())

    def close(self):
        self.process.stdin.write("quit\n")
        self.process.stdin.close()
        self.process.wait(timeout=60)


def count_torch_parameters():
    model = plain_torch_network()
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


# --------------------------------------------------------------------------- Keras


def keras_steps(x_np, y_np, jit_compile, with_distiller, precision="float32"):
    """The Keras model and its step closures, built under the dtype policy ``precision``."""
    import keras

    from keras_dkd.models import build_model

    previous = keras.config.dtype_policy()
    keras.config.set_dtype_policy(precision)
    try:
        keras.utils.set_random_seed(0)
        x = keras.ops.convert_to_tensor(x_np)
        y = keras.ops.convert_to_tensor(y_np)
        model = build_model()
        model.compile(
            optimizer=keras.optimizers.Adam(1e-4),
            loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
            jit_compile=jit_compile,
        )
        steps = {
            "train": lambda: model.train_on_batch(x, y),
            "infer": lambda: model.predict_on_batch(x),
        }
        notes = []
        if with_distiller:
            from keras_dkd.distiller import Distiller, teacher_logits_of

            teacher, student = build_model(), build_model()
            distiller = Distiller(teacher, student, mode="dkd", warmup_epochs=0)
            distiller.compile(optimizer=keras.optimizers.Adam(1e-4), jit_compile=jit_compile)
            steps["dkd"] = lambda: distiller.train_on_batch(x, y)
            # Cached teacher logits (computed once per run in keras-dkd's training): the step
            # skips the teacher's forward pass.
            cached = {"features": x, "teacher_logits": keras.ops.convert_to_tensor(
                teacher_logits_of(teacher, x_np))}
            steps["dkd_cached"] = lambda: distiller.train_on_batch(cached, y)
    finally:
        keras.config.set_dtype_policy(previous)
    return model, steps, notes


def forward_flops(model, batch_size):
    """Multiply-adds x 2 of one forward pass: convolutions counted directly, matrix products."""
    from keras_dkd.layers import ConvBlock, HeadFusion, ParallelConvBlock

    total = 0
    for layer in model.layers:
        if isinstance(layer, ParallelConvBlock):
            _, time_, freq = layer.input.shape
            out = (time_ - 1) * (freq - 1)  # both branches give (time - 1, freq - 1)
            kernel_taps = sum(a * b for a, b in (layer.KERNEL_A, layer.KERNEL_B))
            total += 2 * out * kernel_taps * layer.filters
        elif isinstance(layer, ConvBlock):
            kh, kw, cin, cout = layer.kernel.shape
            spatial = [layer.input.shape[a] for a in layer._spatial_axes]
            total += 2 * spatial[0] * spatial[1] * kh * kw * cin * cout  # before any pool
        elif isinstance(layer, HeadFusion):
            shape = layer.input.shape
            channels, width = layer.kernel.shape
            positions = shape[1] * shape[2] * shape[3] // channels
            total += 2 * positions * channels * width
        elif isinstance(layer, keras_dense()):
            total += 2 * layer.kernel.shape[0] * layer.kernel.shape[1]
    return total * batch_size


def keras_devices(backend):
    """Where the Keras backend runs its computations (its GPUs if it has any, else CPU)."""
    if backend == "torch":
        import torch

        return ([torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())]
                or ["cpu"])
    if backend == "jax":
        import jax

        return [str(d) for d in jax.devices()]
    import tensorflow as tf

    return [d.name for d in tf.config.list_logical_devices("GPU")] or ["cpu"]


def keras_dense():
    import keras

    return keras.layers.Dense


#: Forward passes in each step: training = forward + backward (about twice the forward).
FORWARD_PASSES = {"train": 3, "infer": 1, "dkd": 4, "dkd_cached": 3}


# --------------------------------------------------------------------------- timing


def interleaved(pairs, rounds, warmup, remote=()):
    """Time each callable of ``pairs`` (name -> fn) once per round, alternating the order.

    Callables named in ``remote`` time themselves (in the baseline process) and return seconds.
    """
    names = list(pairs)
    for _ in range(warmup):
        for name in names:
            pairs[name]()
    samples = {name: [] for name in names}
    for i in range(rounds):
        for name in names if i % 2 == 0 else reversed(names):
            start = time.perf_counter()
            value = pairs[name]()
            elapsed = time.perf_counter() - start
            samples[name].append(value if name in remote else elapsed)
    return samples


def summarize(seconds, batch_size):
    median = statistics.median(seconds)
    return {
        "median_ms": 1000 * median,
        "segments_per_s": batch_size / median,
        "min_ms": 1000 * min(seconds),
        "max_ms": 1000 * max(seconds),
        "samples_ms": [round(1000 * s, 2) for s in seconds],
    }


LABELS = {"train": "training step", "infer": "inference", "dkd": "DKD step",
          "dkd_cached": "DKD (cached)"}
SHORT = {"float32": "float32", "mixed_bfloat16": "bfloat16"}


def main(argv=None):
    args = parse_args(argv)
    if args.threads:
        limit_threads(args.threads)
    if args.serve_baseline:
        return serve_baseline(args)

    import importlib.util

    import keras
    import numpy as np

    from keras_dkd.allocator import allocator_setting, tune_allocator
    from keras_dkd.info import machine_text
    from keras_dkd.models import recommended_jit_compile

    backend = keras.backend.backend()
    tune_allocator(backend)  # before the first JAX computation, as the keras-dkd command does
    jit_compile = {
        "recommended": recommended_jit_compile(backend),
        "auto": "auto",
        "true": True,
        "false": False,
    }[args.jit_compile]
    if args.threads and backend == "tensorflow":
        import tensorflow as tf

        tf.config.threading.set_intra_op_parallelism_threads(args.threads)
        tf.config.threading.set_inter_op_parallelism_threads(1)
    if args.threads and backend == "torch":
        import torch

        torch.set_num_threads(args.threads)

    x, y = make_batch(args.batch_size)
    built = {p: keras_steps(x, y, jit_compile, not args.no_distiller, p) for p in args.precisions}
    model = built[args.precisions[0]][0]
    notes = [n for _, _, ns in built.values() for n in ns]
    jit_compile = model.jit_compile  # "auto" resolved by Keras
    flops = {kind: passes * forward_flops(model, args.batch_size)
             for kind, passes in FORWARD_PASSES.items()}
    baseline = None
    if args.no_torch or importlib.util.find_spec("torch") is None:
        notes.append("plain PyTorch baseline skipped (torch not installed or --no-torch)")
    else:
        baseline = BaselineProcess(args)

    load_before = os.getloadavg()
    results = {}
    try:
        for precision in args.precisions:
            ours = built[precision][1]
            for section in ("train", "infer", "dkd", "dkd_cached"):
                if section not in ours:
                    continue
                pairs = {"keras": ours[section]}
                if baseline is not None:  # plain PyTorch's DKD step runs its teacher in both
                    remote = "dkd" if section == "dkd_cached" else section
                    pairs["torch"] = lambda r=remote: baseline.step(r)
                    if not args.no_autocast:
                        pairs["torch_bf16"] = lambda r=remote: baseline.step(r + "_bf16")
                samples = interleaved(pairs, args.steps, args.warmup,
                                      remote=("torch", "torch_bf16"))
                figures = {name: summarize(s, args.batch_size) for name, s in samples.items()}
                for name in ("torch", "torch_bf16"):
                    if name not in samples:
                        continue
                    figures[f"ratio_{name}"] = (figures[name]["median_ms"]
                                                / figures["keras"]["median_ms"])
                    # Each round's torch time over the keras time next to it, then the median:
                    # robust to the machine's load drifting during the run.
                    rounds = zip(samples[name], samples["keras"], strict=True)
                    figures[f"paired_ratio_{name}"] = statistics.median(t / k for t, k in rounds)
                figures["gflop"] = flops[section] / 1e9
                if baseline is not None:
                    # The faster of the two arithmetics bounds a mixed-precision step (on a CPU
                    # without bfloat16 instructions, bfloat16 products are the slower).
                    peak = baseline.peak_gflops["float32"]
                    if precision == "mixed_bfloat16":
                        peak = max(peak, baseline.peak_gflops["mixed_bfloat16"])
                    floor_s = flops[section] / (peak * 1e9)
                    figures["floor_ms"] = 1000 * floor_s
                    figures["of_floor"] = floor_s * 1000 / figures["keras"]["median_ms"]
                results.setdefault(precision, {})[section] = figures
    finally:
        if baseline is not None:
            baseline.close()
    load_after = os.getloadavg()

    trainable = sum(int(np.prod(w.shape)) for w in model.trainable_weights)
    info = {
        "backend": backend,
        "jit_compile": jit_compile,
        "batch_size": args.batch_size,
        "steps": args.steps,
        "warmup": args.warmup,
        "threads": args.threads,
        "precisions": args.precisions,
        "cpu_count": os.cpu_count(),
        "load_average_before": load_before,
        "load_average_after": load_after,
        "keras": keras.__version__,
        "allocator": allocator_setting(),
        "python": platform.python_version(),
        "machine": machine_text(),
        "trainable_parameters": trainable,
        "forward_gflop": flops["infer"] / 1e9,
        "plain_torch_trainable_parameters": baseline.parameters if baseline else None,
        "notes": notes,
        "autocast_baseline": not args.no_autocast,
    }
    info["keras_devices"] = keras_devices(backend)
    if baseline is not None:
        info["torch"] = baseline.torch_version
        info["plain_torch_device"] = f"{baseline.device} ({baseline.device_name})"
        info["plain_torch_threads"] = baseline.threads
        info["peak_matmul_gflops"] = baseline.peak_gflops

    print(
        f"backend {backend}, jit_compile={jit_compile}, batch {args.batch_size}, "
        f"{args.steps} rounds after {args.warmup} warm-up; load average {load_before[0]:.1f} -> "
        f"{load_after[0]:.1f} on {os.cpu_count()} CPUs; host allocator: {allocator_setting()}"
    )
    print(
        f"trainable parameters: keras {trainable:,}"
        + (f", plain torch {baseline.parameters:,}" if baseline else "")
        + f"; forward pass {flops['infer'] / 1e9:.2f} GFLOP per batch"
    )
    print(f"keras runs on: {', '.join(info['keras_devices'])}"
          + (f"; plain PyTorch on: {info['plain_torch_device']}" if baseline else ""))
    if baseline is not None:
        print("peak matrix-product rate (PyTorch): "
              + ", ".join(f"{SHORT[p]} {g:.1f} GFLOP/s" for p, g in baseline.peak_gflops.items()))
    for note in notes:
        print(note)
    for precision, sections in results.items():
        for section, f in sections.items():
            line = (
                f"{SHORT[precision]:>8} {LABELS[section]:>14}: keras {f['keras']['median_ms']:7.1f}"
                f" ms ({f['keras']['segments_per_s']:6.1f} seg/s)"
            )
            if "torch" in f:
                line += (
                    f" | torch fp32 {f['torch']['median_ms']:7.1f} ms, ratio "
                    f"{f['ratio_torch']:.2f}x (paired {f['paired_ratio_torch']:.2f}x)"
                )
                if "torch_bf16" in f:
                    line += (f" | torch bf16 autocast {f['torch_bf16']['median_ms']:7.1f} ms, "
                             f"ratio {f['ratio_torch_bf16']:.2f}x")
                line += f" | floor {f['floor_ms']:.0f} ms"
            print(line)

    print()
    print("| backend | precision | step | keras | plain PyTorch fp32 | ratio | plain PyTorch "
          "bf16 autocast | ratio | FLOP floor |")
    print("| --- |" + " --- |" * 8)
    for precision, sections in results.items():
        for section, f in sections.items():
            k = f["keras"]
            cells = [backend, SHORT[precision], LABELS[section],
                     f"{k['median_ms']:.0f} ms ({k['segments_per_s']:.0f} seg/s)"]
            if "torch" in f:
                cells += [
                    f"{f['torch']['median_ms']:.0f} ms",
                    f"{f['ratio_torch']:.2f}× ({f['paired_ratio_torch']:.2f}×)",
                ]
                if "torch_bf16" in f:
                    cells += [f"{f['torch_bf16']['median_ms']:.0f} ms",
                              f"{f['ratio_torch_bf16']:.2f}× "
                              f"({f['paired_ratio_torch_bf16']:.2f}×)"]
                else:
                    cells += ["—", "—"]
                cells.append(f"{f['floor_ms']:.0f} ms ({f['gflop']:.1f} GFLOP)")
            else:
                cells += ["—"] * 5
            print("| " + " | ".join(cells) + " |")

    if args.json:
        with open(args.json, "w", encoding="utf-8") as f:
            json.dump({"info": info, "results": results}, f, indent=2)
    return 0


if __name__ == "__main__":
    sys.exit(main())
