"""Reports: mean ± sd summaries, Markdown tables, plots and protocol statements.

Pure functions of the dicts :mod:`keras_dkd.studies` returns (``table.json``, ``cv.json``): they
train nothing and read no data, so tables can be redrawn from saved results.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from keras_dkd.corpora import group_unit

__all__ = [
    "PAPER_TABLE1",
    "format_ablation",
    "format_cv",
    "format_pm",
    "plot_ablation",
    "protocol_description",
    "summarize",
]

#: The paper's Table 1 (IEMOCAP improvised, random 80/20 split), WA / UA in %.
PAPER_TABLE1 = {
    "CNN": (74.5, 72.2),
    "CNN+MHA": (76.2, 74.8),
    "+KD": (76.9, 76.4),
    "TCKD": (75.3, 72.6),
    "NCKD": (77.7, 76.9),
    "DKD": (79.1, 77.1),
}


def protocol_description(description: dict | None, protocol: str, fold=None) -> str:
    """A one-line statement of the evaluation protocol, for tables and reports.

    Args:
        description: ``DataBundle.describe()`` (None: a generic statement).
        protocol: ``"random"`` or ``"loso"``.
        fold: the LOSO fold.

    Example:
        >>> protocol_description({"dataset": "emodb", "test_group": "speaker03"}, "loso", 0)
        'speaker-independent: leave-one-speaker-out, fold 0 (test speaker03)'
    """
    description = description or {}
    unit = group_unit(description.get("dataset", ""))
    if protocol == "loso":
        group = description.get("test_group") or ", ".join(description.get("test_groups") or [])
        text = f"speaker-independent: leave-one-{unit}-out, fold {fold}"
        text += f" (test {group})" if group else ""
        if description.get("val_speakers"):
            text += f"; validation speakers {', '.join(description['val_speakers'])}"
        return text
    text = "speaker-dependent: random 80/20 utterance split"
    if "split_seed" in description:
        text += f" (seed {description['split_seed']})"
    if description.get("val_fraction"):
        text += f"; validation {description['val_fraction']:.0%} of the training utterances"
    return text


def summarize(values: Sequence[float]) -> dict:
    """``{"mean", "std", "n", "values"}`` of ``values``; ``std`` is the sample standard deviation
    (ddof 1; 0 for a single value)."""
    array = np.asarray([float(v) for v in values], np.float64)
    n = int(array.size)
    return {
        "mean": float(array.mean()) if n else float("nan"),
        "std": float(array.std(ddof=1)) if n > 1 else 0.0,
        "n": n,
        "values": [float(v) for v in array],
    }


def format_pm(summary: dict, scale=100.0, digits=1) -> str:
    if not summary["n"]:
        return "—"
    mean = summary["mean"] * scale
    if summary["n"] == 1:
        return f"{mean:.{digits}f}"
    return f"{mean:.{digits}f} ± {summary['std'] * scale:.{digits}f}"


def format_ablation(table: dict) -> str:
    """``table.md``: the ablation as a Markdown table with its protocol and command."""
    seeds = table["seeds"]
    lines = [
        f"# Ablation on {table['dataset']} ({table['config']})",
        "",
        f"- Protocol: {table['protocol']}.",
        f"- {len(seeds)} seed(s) ({', '.join(str(s) for s in seeds)}); "
        f"{table['epochs']} epochs per phase, batch {table['batch_size']}, Adam "
        f"{table['learning_rate']:g}; model selection: "
        + ("best validation UA" if table["select"] == "best" else "last epoch")
        + f"; backend {table['backend']}.",
        "- Cells: mean ± sample standard deviation over the seeds, utterance level, "
        "test split, in %.",
    ]
    if table.get("command"):
        lines.append(f"- Command: `{table['command']}`")
    lines.append("")
    if table["mode"] == "table":
        lines += [
            "| model | WA (%) | UA (%) | macro-F1 (%) | paper WA / UA (IEMOCAP, random split) |",
            "| --- | --- | --- | --- | --- |",
        ]
        for row in table["rows"]:
            paper = row.get("paper")
            paper_text = f"{paper[0]:.1f} / {paper[1]:.1f}" if paper else "—"
            lines.append(
                f"| {row['name']} | {format_pm(row['wa'])} | {format_pm(row['ua'])} | "
                f"{format_pm(row['macro_f1'])} | {paper_text} |"
            )
    else:
        lines += ["| model | WA (%) | UA (%) | macro-F1 (%) |", "| --- | --- | --- | --- |"]
        for row in table["rows"]:
            lines.append(
                f"| {row['name']} | {format_pm(row['wa'])} | {format_pm(row['ua'])} | "
                f"{format_pm(row['macro_f1'])} |"
            )
    lines.append("")
    lines.append("Per seed (WA / UA %):")
    lines.append("")
    lines.append("| model | " + " | ".join(f"seed {s}" for s in seeds) + " |")
    lines.append("| --- |" + " --- |" * len(seeds))
    for row in table["rows"]:
        cells = [
            f"{w * 100:.1f} / {u * 100:.1f}"
            for w, u in zip(row["wa"]["values"], row["ua"]["values"], strict=True)
        ]
        lines.append(f"| {row['name']} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def plot_ablation(table: dict, path) -> None:
    """A bar plot of the ablation (WA and UA, mean with ± std error bars)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = table["rows"]
    x = np.arange(len(rows))
    width = 0.38
    fig, ax = plt.subplots(figsize=(max(6, 1.2 * len(rows) + 2), 4))
    try:
        for offset, key, label in ((-width / 2, "wa", "WA"), (width / 2, "ua", "UA")):
            means = [r[key]["mean"] * 100 for r in rows]
            stds = [r[key]["std"] * 100 for r in rows]
            ax.bar(x + offset, means, width, yerr=stds, capsize=3, label=label)
        ax.set_xticks(x, [r["name"] for r in rows], rotation=20, ha="right")
        ax.set_ylabel("%")
        ax.set_ylim(0, 100)
        ax.set_title(
            f"{table['dataset']} ({table['config']}), {len(table['seeds'])} seed(s)", fontsize=10
        )
        ax.legend()
        ax.grid(axis="y", alpha=0.3)
        fig.tight_layout()
        fig.savefig(path, format="png", dpi=120)
    finally:
        plt.close(fig)


def format_cv(report: dict) -> str:
    """``cv.md``: per-fold and mean ± std metrics of a cross-validation."""
    models = list(report["summary"])
    unit = group_unit(report["dataset"])
    lines = [
        f"# Leave-one-{unit}-out cross-validation on {report['dataset']} ({report['config']})",
        "",
        f"- Variant {report['variant']}, seed {report['seed']}, backend {report['backend']}; "
        f"{len(report['folds'])} of {len(report['groups'])} folds.",
        "- Utterance level, each fold's held-out group, in %; mean ± sample standard deviation "
        "over the folds.",
    ]
    if report.get("command"):
        lines.append(f"- Command: `{report['command']}`")
    lines += [
        "",
        "| fold | held out | n | " + " | ".join(f"{m} WA | {m} UA | {m} F1" for m in models) + " |",
        "| --- | --- | --- |" + " --- | --- | --- |" * len(models),
    ]
    for fold in report["folds"]:
        n = fold[models[0]]["n_utterances"] if models else ""
        cells = []
        for m in models:
            cells += [
                f"{fold[m]['wa'] * 100:.1f}",
                f"{fold[m]['ua'] * 100:.1f}",
                f"{fold[m]['macro_f1'] * 100:.1f}",
            ]
        lines.append(f"| {fold['fold']} | {fold['group']} | {n} | " + " | ".join(cells) + " |")
    cells = []
    for m in models:
        cells += [format_pm(report["summary"][m][k]) for k in ("wa", "ua", "macro_f1")]
    lines.append("| **mean ± std** | | | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"
