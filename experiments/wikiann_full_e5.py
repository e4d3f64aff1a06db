"""The headline claim at a full budget: zero-shot WikiANN NER from English with multilingual-e5-small.

    python -m experiments.wikiann_full_e5 --data-dir ../shared/data --e5-dir .cache/e5-small [--epochs 2]
        [--report-only]

Dense, ASG (pq, m=32, k=1024) and residual PQ (rq, 2 stages of k=512 at m=32: the same parameters) train on the
whole 20,000-sentence English train split, validating on 2,000 English dev sentences after every epoch (the
learning curve: zero-shot, no target-language data is looked at), and test on the first 2,000 test sentences of
every shared language. Runs go in the order that gives every method one seed first, then more seeds for pq and
dense. Each run is its own `run.py` process in experiments/results/wikiann_full_e5/runs/<name>/, whose
metrics.json and .hydra/config.yaml are committed; a run that finished is reused, so the study spans sessions
(stop it at any point: the next start continues with the runs it lacks). `--report-only` writes
wikiann_full_e5.{md,json} from the runs there are, whole, with mean ± sample std over the seeds.
"""

from __future__ import annotations

import argparse
import json
import statistics
from typing import Any

from asg.results import exported_bytes_pct, write_json_atomic, write_text_atomic
from experiments.runner import RESULTS, command_line, fit_version_notes, mean_std, run_config

STUDY = RESULTS / "wikiann_full_e5"
METHODS = {  # name -> label, overrides
    "none": ("dense", ["asg=none"]),
    "pq": ("ASG (pq, m=32, k=1024)", ["asg=pq", "asg.m=32", "asg.k=1024"]),
    "rq": ("residual PQ (rq, m=32, 2 x 512)", ["asg=rq", "asg.m=32", "asg.k=1024", "asg.stages=2"]),
}
ORDER = [("none", 0), ("pq", 0), ("rq", 0), ("pq", 1), ("none", 1), ("pq", 2), ("none", 2)]  # (method, seed)
EVAL_SENTENCES = 2000  # per language, dev and test
# no logger, no checkpoint left behind: metrics.json holds the scores and the dev curve
COMMON = ["trainer=cpu", "trainer.enable_progress_bar=false", "logger=none", "checkpoint.keep=none"]


def overrides(args: argparse.Namespace, method: str, seed: int) -> list[str]:
    return [
        "model=e5_small",
        f"model.name_or_path={args.e5_dir}",
        "task=wikiann",
        "transfer=zero_shot",
        f"data.dir={args.data_dir}",
        f"data.max_eval_samples={EVAL_SENTENCES}",
        f"trainer.max_epochs={args.epochs}",
        f"seed={seed}",
        *METHODS[method][1],
        *COMMON,
    ]


def _mean_std(values: list[float]) -> str:
    return f"{mean_std(values)} (n={len(values)})" if values else "—"


def report(runs: dict[tuple[str, int], dict[str, Any] | None], args: argparse.Namespace, command: str) -> str:
    """The study's Markdown, from the finished runs alone."""
    done = {key: metrics for key, metrics in runs.items() if metrics}
    langs = next((m["transfer"]["eval_langs"] for m in done.values()), [])
    f1 = {  # method -> language -> one F1 per seed
        method: {lang: [m["scores"][f"test/{lang}/f1"] for (name, _), m in done.items() if name == method]
                 for lang in [*langs, "avg"]}
        for method in METHODS
    }  # fmt: skip
    dense = {lang: statistics.mean(v) if v else None for lang, v in f1["none"].items()}
    header = "| language | " + " | ".join(label for label, _ in METHODS.values()) + " |"
    lines = [header, "|---" * (len(METHODS) + 1) + "|"]
    for lang in [*langs, "avg"]:
        cells = []
        for method in METHODS:
            scores = f1[method][lang]
            rel = f", {100 * statistics.mean(scores) / dense[lang]:.1f}%" if scores and dense[lang] else ""
            cells.append(_mean_std(scores) + ("" if method == "none" else rel))
        lines.append(f"| {lang} | " + " | ".join(cells) + " |")
    sizes = []
    for method in METHODS:
        kept = next((m["compression"] for (name, _), m in done.items() if name == method and "compression" in m), None)
        if kept:
            sizes.append(
                f"{METHODS[method][0]}: {kept['params_kept_pct']:.3f}% of the embedding's parameters, "
                f"{exported_bytes_pct(kept):.2f}% of its bytes as exported (code table bit-packed)"
            )
    curves = []
    for (method, seed), m in sorted(done.items()):
        points = [f"epoch {p['epoch'] + 1}: {p['scores']['val/en/f1']:.2f}" for p in m.get("val_history", [])]
        curves.append(f"- {METHODS[method][0]}, seed {seed}: " + ("; ".join(points) or "no dev scores"))
    missing = [f"{METHODS[method][0]} seed {seed}" for (method, seed), m in runs.items() if not m]
    pooled = fit_version_notes(
        {label: [m for (name, _), m in done.items() if name == method] for method, (label, _) in METHODS.items()}
    )
    return "\n".join(
        [
            "# Zero-shot WikiANN NER from English at a full budget, multilingual-e5-small (Q4-dequantized)",
            "",
            f"Command: `{command}`",
            "",
            f"Trained on all 20,000 English train sentences for {args.epochs} epochs; tested on the first "
            f"{EVAL_SENTENCES:,} test sentences of each language (seqeval entity F1, mean ± sample std over seeds; "
            "% is relative to the dense mean). The seed changes the k-means fit and the fine-tune.",
            "",
            *(f"- {text}" for text in sizes),
            "",
            *lines,
            *pooled,
            "",
            f"English dev F1 after each epoch (first {EVAL_SENTENCES:,} dev sentences; it chooses the number of "
            "epochs, test scores choose nothing):",
            "",
            *curves,
            "",
            "Not run yet: " + (", ".join(missing) if missing else "none") + ".",
            "",
        ]
    )


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data-dir", default="../shared/data")
    parser.add_argument("--e5-dir", default=".cache/e5-small")
    parser.add_argument("--epochs", type=int, default=2, help="at least 2; the dev curve says whether more help")
    parser.add_argument("--report-only", action="store_true", help="write the report from the finished runs")
    args = parser.parse_args(argv)
    command = command_line("experiments.wikiann_full_e5")
    runs: dict[tuple[str, int], dict[str, Any] | None] = {}
    for method, seed in ORDER:
        out = STUDY / "runs" / f"{method}_e{args.epochs}_s{seed}"
        if args.report_only:
            metrics = out / "metrics.json"
            runs[(method, seed)] = json.loads(metrics.read_text()) if metrics.is_file() else None
        else:
            runs[(method, seed)] = run_config(out.name, overrides(args, method, seed), out.parent)
        # after every run: the files always hold what has finished
        write_json_atomic(
            STUDY / "wikiann_full_e5.json", {"command": command, "runs": {f"{m}_s{s}": r for (m, s), r in runs.items()}}
        )
        write_text_atomic(STUDY / "wikiann_full_e5.md", report(runs, args, command))
    print((STUDY / "wikiann_full_e5.md").read_text())


if __name__ == "__main__":
    main()
