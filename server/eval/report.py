"""The ``--report`` folder: a Markdown summary and PNG plots drawn from the same JSON the harness writes.

Each plot carries its own title, axes and value labels, so that it reads on its own when pasted elsewhere.
"""

from __future__ import annotations

from pathlib import Path

from server.eval.data import FORGET_LEVELS
from server.eval.rwku_suite import RWKUReport

LEVEL_NAMES = {"l1": "L1 fill-in", "l2": "L2 questions", "l3": "L3 adversarial", "all": "all"}
# Two-line axis labels, so that neighbouring ones never overlap.
TICKS = {"l1": "L1\nfill-in", "l2": "L2\nquestions", "l3": "L3\nadversarial", "all": "all\nlevels"}


def _bars(path: Path, title: str, ylabel: str, groups: list[str], series: dict[str, list[float]],
          ylim: tuple[float, float] | None = (0, 1.12)) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(8, 4.5), dpi=120)
    width = 0.8 / max(len(series), 1)
    for k, (name, values) in enumerate(series.items()):
        xs = [i + (k - (len(series) - 1) / 2) * width for i in range(len(groups))]
        bars = ax.bar(xs, values, width, label=name)
        ax.bar_label(bars, labels=[f"{v:.2f}" for v in values], fontsize=7, padding=2)
    ax.set_xticks(range(len(groups)), groups)
    ax.set_title(title)
    ax.set_ylabel(ylabel)
    if ylim is not None:
        ax.set_ylim(*ylim)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def write_report(folder: Path, rwku: RWKUReport, model: str, engine: str) -> list[Path]:
    folder.mkdir(parents=True, exist_ok=True)
    methods = rwku.methods
    leak_levels = ["l1", "l2", "l3", "all"]
    _bars(folder / "leak.png", f"Leak rate on known RWKU facts ({rwku.targets} targets, lower is better)",
          "share still answered correctly", [TICKS[lvl] for lvl in leak_levels],
          {m: [rwku.by_method[m].leak_rate.get(lvl, 0.0) for lvl in leak_levels] for m in methods})
    _bars(folder / "detection.png", "Detection: TPR on forget probes, FPR on neighbours and MMLU",
          "rate", [*(f"TPR {TICKS[lvl]}" for lvl in FORGET_LEVELS), "FPR\nneighbour", "FPR\ngeneral (MMLU)"],
          {m: [*(rwku.by_method[m].detect_tpr[lvl] for lvl in FORGET_LEVELS), rwku.by_method[m].neighbor_fpr,
               rwku.by_method[m].general_fpr] for m in methods})
    _bars(folder / "utility.png", "Utility: MMLU accuracy and neighbour answers unchanged",
          "rate", ["MMLU accuracy", "neighbour answers\nunchanged"],
          {"unguarded": [rwku.utility["mmlu_accuracy_unguarded"], 1.0],
           **{m: [rwku.by_method[m].mmlu_accuracy, rwku.by_method[m].neighbor_unchanged] for m in methods}})
    lines = [
        "# Unlearning evaluation: RWKU", "",
        f"Model `{model}` on the `{engine}` engine; {rwku.targets} targets, up to {rwku.probes_per_level} probes per "
        f"level, registered by name{' and intro' if rwku.with_intro else ''}; each method and each target measured "
        "alone through the live OpenAI API at temperature 0.", "",
        "Known facts (forget probes the unguarded model answers correctly): "
        + ", ".join(f"{LEVEL_NAMES[k]} {v}" for k, v in rwku.known_facts.items()) + ".", "",
        "| method | leak L1 | leak L2 | leak L3 | leak all | TPR L1 | TPR L2 | TPR L3 | neighbour FPR | general FPR "
        "| MMLU acc. | neighbours unchanged | TTFT p50 ms | ms/token p50 | build s |",
        "|---|" + "---|" * 14,
    ]
    for m in methods:
        f = rwku.by_method[m]
        lines.append(
            f"| {m} | " + " | ".join(f"{f.leak_rate[lvl]:.2f}" if lvl in f.leak_rate else "-" for lvl in leak_levels)
            + " | " + " | ".join(f"{f.detect_tpr[lvl]:.2f}" for lvl in FORGET_LEVELS)
            + f" | {f.neighbor_fpr:.3f} | {f.general_fpr:.3f} | {f.mmlu_accuracy:.3f} | {f.neighbor_unchanged:.3f}"
            f" | {f.latency.ttft_p50_ms:.1f} | {f.latency.per_token_p50_ms:.1f} | {f.build_seconds_mean:.1f} |")
    base = rwku.latency["unguarded"]
    lines += [
        f"| unguarded | | | | | | | | | | {rwku.utility['mmlu_accuracy_unguarded']:.3f} | 1.000 "
        f"| {base.ttft_p50_ms:.1f} | {base.per_token_p50_ms:.1f} | |", "",
        "![leak](leak.png)", "", "![detection](detection.png)", "", "![utility](utility.png)", "",
        f"Requests that failed: {rwku.errors}.", "",
    ]
    for m in methods:
        if rwku.by_method[m].still_correct:
            lines += [f"## Still answered with {m}", "", *(f"- {s}" for s in rwku.by_method[m].still_correct), ""]
    (folder / "summary.md").write_text("\n".join(lines))
    return [folder / n for n in ("summary.md", "leak.png", "detection.png", "utility.png")]
