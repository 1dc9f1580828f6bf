"""Where JAX's CPU training step goes: each convolution of the network, forward and backward.

Run by hand on a quiet machine, never in CI::

    .venv/bin/python benchmarks/jax_conv.py --json docs/results/jax_conv.json

For each convolution of the DKDFMH network at batch 32 (channels_last, the layout keras-dkd
uses on JAX) it times, with XLA's CPU backend (``jax.jit``, medians of ``--rounds``):

- the forward convolution;
- the input gradient (``jax.vjp`` with respect to the input: a transposed convolution);
- the kernel gradient as XLA differentiates it (another convolution, whose "kernel" is the
  whole feature map);
- the kernel gradient as ``keras_dkd.conv.conv2d`` computes it on JAX: one matrix product per
  kernel tap over the flattened (batch, time, frequency) positions.

It also checks that the two kernel gradients agree. Writes a markdown table to stdout and, with
``--json``, the figures (and ``--markdown`` the table).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import time

os.environ.setdefault("KERAS_BACKEND", "jax")

#: (name, input height, input width, in channels, out channels, kernel, padding) per convolution.
CONVOLUTIONS = (
    ("conv1 branch a (10x2)", 205, 40, 1, 8, (10, 2), "valid"),
    ("conv1 branch b (2x8)", 197, 46, 1, 8, (2, 8), "valid"),
    ("conv2", 196, 39, 16, 32, (3, 3), "same"),
    ("conv3", 98, 19, 32, 48, (3, 3), "same"),
    ("conv4", 49, 9, 48, 64, (3, 3), "same"),
    ("conv5", 49, 9, 64, 80, (3, 3), "same"),
)


def _median_ms(fn, args, rounds):
    import jax

    jax.block_until_ready(fn(*args))
    samples = []
    for _ in range(rounds):
        start = time.perf_counter()
        jax.block_until_ready(fn(*args))
        samples.append(time.perf_counter() - start)
    return 1000 * statistics.median(samples)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--rounds", type=int, default=10)
    parser.add_argument("--json", metavar="PATH")
    parser.add_argument("--markdown", metavar="PATH")
    args = parser.parse_args(argv)

    import jax
    import keras
    import numpy as np

    from keras_dkd.conv import conv2d

    if keras.backend.backend() != "jax":
        print("run with KERAS_BACKEND=jax", file=sys.stderr)
        return 2
    rng = np.random.default_rng(0)
    rows = []
    for name, height, width, cin, cout, kernel, padding in CONVOLUTIONS:
        x = jax.numpy.asarray(rng.normal(size=(args.batch_size, height, width, cin)), "float32")
        w = jax.numpy.asarray(rng.normal(size=(*kernel, cin, cout)), "float32")

        def stock(x, w, padding=padding):
            return jax.lax.conv_general_dilated(x, w, (1, 1), padding.upper(),
                                                dimension_numbers=("NHWC", "HWIO", "NHWC"))

        def ours(x, w, padding=padding):
            return conv2d(x, w, padding=padding, data_format="channels_last")

        y = jax.jit(stock)(x, w)
        dy = jax.numpy.asarray(rng.normal(size=y.shape), "float32")
        forward = jax.jit(stock)
        input_grad = jax.jit(lambda x, w, g, f=stock: jax.vjp(lambda x: f(x, w), x)[1](g)[0])
        xla_kernel_grad = jax.jit(
            lambda x, w, g, f=stock: jax.vjp(lambda w: f(x, w), w)[1](g)[0])
        matmul_kernel_grad = jax.jit(
            lambda x, w, g, f=ours: jax.vjp(lambda w: f(x, w), w)[1](g)[0])
        a, b = xla_kernel_grad(x, w, dy), matmul_kernel_grad(x, w, dy)
        error = float(jax.numpy.max(jax.numpy.abs(a - b)) / jax.numpy.max(jax.numpy.abs(a)))
        gflop = 2 * args.batch_size * y.shape[1] * y.shape[2] * kernel[0] * kernel[1] * cin * cout
        gflop /= 1e9
        row = {"convolution": name, "gflop": gflop, "relative_difference": error}
        for key, fn, fn_args in (("forward_ms", forward, (x, w)),
                                 ("input_grad_ms", input_grad, (x, w, dy)),
                                 ("xla_kernel_grad_ms", xla_kernel_grad, (x, w, dy)),
                                 ("matmul_kernel_grad_ms", matmul_kernel_grad, (x, w, dy))):
            row[key] = _median_ms(fn, fn_args, args.rounds)
        rows.append(row)
        print(f"{name}: " + ", ".join(f"{k} {v:.3g}" for k, v in row.items() if k != "convolution"),
              flush=True)

    total = {key: sum(r[key] for r in rows) for key in
             ("forward_ms", "input_grad_ms", "xla_kernel_grad_ms", "matmul_kernel_grad_ms")}
    lines = [
        f"# JAX (XLA CPU) convolutions of the network, batch {args.batch_size}, channels_last",
        "",
        f"- Command: `python benchmarks/jax_conv.py --rounds {args.rounds}`; medians; "
        f"jax {jax.__version__}, {os.cpu_count()} CPUs ({platform.processor() or 'x86_64'}).",
        "",
        "| convolution | GFLOP | forward | input gradient | kernel gradient (XLA) "
        "| kernel gradient (matrix products) | speed-up |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for r in rows + [{"convolution": "**all**", "gflop": sum(r["gflop"] for r in rows),
                      **total}]:
        lines.append(
            f"| {r['convolution']} | {r['gflop']:.2f} | {r['forward_ms']:.1f} ms "
            f"| {r['input_grad_ms']:.1f} ms | {r['xla_kernel_grad_ms']:.1f} ms "
            f"({1000 * r['gflop'] / r['xla_kernel_grad_ms']:.0f} GFLOP/s) "
            f"| {r['matmul_kernel_grad_ms']:.1f} ms "
            f"({1000 * r['gflop'] / r['matmul_kernel_grad_ms']:.0f} GFLOP/s) "
            f"| {r['xla_kernel_grad_ms'] / r['matmul_kernel_grad_ms']:.2f}× |")
    lines += ["", "conv1's branches have one input channel: there `conv2d` keeps XLA's own kernel "
              "gradient, so both kernel-gradient columns time the same computation."]
    table = "\n".join(lines) + "\n"
    print()
    print(table)
    if args.markdown:
        with open(args.markdown, "w", encoding="utf-8") as f:
            f.write(table)
    if args.json:
        info = {"jax": jax.__version__, "cpu_count": os.cpu_count(),
                "batch_size": args.batch_size, "rounds": args.rounds,
                "load_average": os.getloadavg()}
        with open(args.json, "w", encoding="utf-8") as f:
            json.dump({"info": info, "rows": rows, "total": total}, f, indent=2)
    return 0


if __name__ == "__main__":
    sys.exit(main())
