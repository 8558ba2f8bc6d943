"""The ``--report`` folder: a Markdown summary and PNG plots drawn from the same JSON the harness writes.

Each plot carries its own title, axes and value labels, so that it reads on its own when pasted elsewhere. RWKU has
its three plots (leak, detection, utility); every other suite has two (``<suite>_scores.png``: each probe set's score
unguarded and per method; ``<suite>_flagged.png``: how often its targets fired on each set).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from server.eval.data import FORGET_LEVELS
from server.eval.rwku_suite import RWKUReport
from server.eval.suite import SuiteReport

TITLES = {"hp": "Harry Potter", "tofu": "TOFU", "wmdp": "WMDP"}
ROLE_GOAL = {"forget": "should drop", "retain": "should stay", "general": "should stay"}

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


def write_report(folder: Path, result: dict[str, Any]) -> list[Path]:
    """Summary and plots for every API suite in ``result`` (the harness's JSON); returns the files written."""
    folder.mkdir(parents=True, exist_ok=True)
    meta = result["meta"]
    lines = [f"# Unlearning evaluation of `{meta['model']}` on the `{meta['engine']}` engine", "",
             f"Suites: {', '.join(s for s in meta['suites'] if s != 'detect')}; detectors: "
             f"{', '.join(meta.get('detectors', ['lexical']))}. Every figure comes from the live OpenAI API at "
             "temperature 0, each method measured alone against the same unguarded baseline.", ""]
    if meta.get("skipped"):
        lines += ["Skipped: " + "; ".join(f"{k} ({v})" for k, v in meta["skipped"].items()) + ".", ""]
    files = [folder / "summary.md"]
    if "rwku" in result:
        section, plots = _rwku_section(folder, RWKUReport.model_validate(result["rwku"]))
        lines += section
        files += plots
    for suite in ("hp", "tofu", "wmdp"):
        if suite in result:
            section, plots = _suite_section(folder, suite, SuiteReport.model_validate(result[suite]))
            lines += section
            files += plots
    (folder / "summary.md").write_text("\n".join(lines))
    return files


def _suite_section(folder: Path, suite: str, report: SuiteReport) -> tuple[list[str], list[Path]]:
    title, methods, sets = TITLES[suite], report.methods, list(report.baseline)
    ticks = [f"{name}\n({report.baseline[name].role})" for name in sets]
    scores, flagged = folder / f"{suite}_scores.png", folder / f"{suite}_flagged.png"
    _bars(scores, f"{title}: score per probe set (forget sets should drop, the others stay)", "score",
          ticks, {"unguarded": [report.baseline[n].score for n in sets],
                  **{m: [report.by_method[m].sets[n].score for n in sets] for m in methods}})
    _bars(flagged, f"{title}: share of probes on which a target fired (TPR on forget sets, FPR elsewhere)",
          "rate", ticks, {m: [report.by_method[m].sets[n].flagged for n in sets] for m in methods})

    def fmt(value: float | None) -> str:
        return "-" if value is None else f"{value:.3f}"

    lines = [f"## {title}", "", f"Targets registered together per method: {', '.join(report.targets)}.", "",
             f"Detection TPR {report.detect_tpr:.3f}; leak rate {fmt(report.leak_rate)}; retain FPR "
             f"{fmt(report.retain_fpr)}; general FPR {fmt(report.general_fpr)} (pooled over methods).", "",
             "| probe set | role | items | metric | unguarded | "
             + " | ".join(f"{m} score | {m} fired | {m} leak | {m} unchanged" for m in methods) + " |",
             "|---|" + "---|" * (4 + 4 * len(methods))]
    for name in sets:
        b = report.baseline[name]
        cells = [f"{name} | {b.role} ({ROLE_GOAL[b.role]}) | {b.items} | {b.metric} | {b.score:.3f}"]
        for m in methods:
            r = report.by_method[m].sets[name]
            cells.append(f"{r.score:.3f} | {r.flagged:.3f} | {fmt(r.leak_rate)} | {r.unchanged:.3f}")
        lines.append("| " + " | ".join(cells) + " |")
    lines += ["", "| | unguarded | " + " | ".join(methods) + " |", "|---|---|" + "---|" * len(methods),
              "| TTFT p50 ms | " + " | ".join(f"{report.latency[k].ttft_p50_ms:.1f}"
                                             for k in ["unguarded", *methods]) + " |",
              "| ms/token p50 | " + " | ".join(f"{report.latency[k].per_token_p50_ms:.1f}"
                                              for k in ["unguarded", *methods]) + " |",
              "| build s | | " + " | ".join(f"{report.by_method[m].build_seconds:.1f}" for m in methods) + " |",
              "", f"![{suite} scores]({scores.name})", "", f"![{suite} flagged]({flagged.name})", "",
              f"Requests that failed: {report.errors}.", ""]
    return lines, [scores, flagged]


ROUGE_ROWS = ("forget L1", "forget L2", "forget L3", "neighbor L1", "neighbor L2", "known facts")


def _rouge_table(rwku: RWKUReport) -> list[str]:
    """RWKU's own grading (its Table 1 columns): ROUGE-L recall before -> after, and leak@k under sampling."""
    lines = ["### RWKU's own grading: ROUGE-L recall, greedy, 30 tokens (before -> after; probes)", "",
             "| method | " + " | ".join(ROUGE_ROWS) + " | known after/before | leak@k |", "|---|" + "---|" * 8]
    for m in rwku.methods:
        f = rwku.by_method[m]
        cells = [f"{r.before:.3f} -> {r.after:.3f} ({r.probes})" if (r := f.rouge_l.get(row)) else "-"
                 for row in ROUGE_ROWS]
        known = f.rouge_l.get("known facts")
        ratio = f"{known.after / known.before:.3f}" if known and known.before else "-"
        lines.append(f"| {m} | " + " | ".join(cells) + f" | {ratio} | {f.leak_at_k:.3f} (k={f.samples}) |")
    return [*lines, ""]


def _rwku_section(folder: Path, rwku: RWKUReport) -> tuple[list[str], list[Path]]:
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
        "## RWKU", "",
        f"{rwku.targets} targets, up to {rwku.probes_per_level} probes per level, registered with "
        f"{rwku.register_with}; each method measured alone, "
        + ("each target alone." if rwku.parallel == 1 else f"targets registered {rwku.parallel} at a time.")
        + " Build seconds: registration to active per target (a wave's wall time shared among its targets).", "",
        "Known facts (forget probes the unguarded model answers correctly): "
        + ", ".join(f"{LEVEL_NAMES[k]} {v}" for k, v in rwku.known_facts.items())
        + f"; {rwku.answers_given} forget probes whose question gives the answer away are none.", "",
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
        "A/A (the unguarded baseline asked again): neighbours unchanged "
        f"{rwku.baseline_again.get('neighbor_unchanged', float('nan')):.3f}, MMLU answers unchanged "
        f"{rwku.baseline_again.get('mmlu_unchanged', float('nan')):.3f}.", "",
        *(f"- {m}: MMLU answers unchanged {f.mmlu_unchanged:.3f}, neighbours answered right before still right "
          f"{f.neighbor_retained:.3f}; the target's full name in {f.name_leaks} of {f.name_probes} answers to probes "
          f"whose gold answer is the name; {f.name_neighbors} neighbour probes answered by the target's name (left "
          f"out of the neighbour figures) still answered by {f.name_neighbors_kept}"
          for m, f in rwku.by_method.items()), "",
    ]
    lines += _rouge_table(rwku)
    for m in methods:
        if rwku.by_method[m].still_correct:
            lines += [f"### RWKU facts still answered with {m}", "",
                      *(f"- {s}" for s in rwku.by_method[m].still_correct), ""]
        if rwku.by_method[m].sampled_still:
            lines += [f"### RWKU known facts given by a sample at temperature 1 with {m} (leak@k)", "",
                      *(f"- {s}" for s in rwku.by_method[m].sampled_still), ""]
        if rwku.by_method[m].neighbor_changed:
            lines += [f"### RWKU neighbour answers changed with {m} (verdict header, before -> after)", "",
                      *(f"- {s}" for s in rwku.by_method[m].neighbor_changed), ""]
    return lines, [folder / n for n in ("leak.png", "detection.png", "utility.png")]
