"""Zero-shot cross-lingual NER with multilingual-e5-small: dense against ASG at 0.41% of the parameters, over seeds.

    python -m experiments.wikiann_xlingual --data-dir ../shared/data --e5-dir .cache/e5-small
    python -m experiments.wikiann_xlingual --report-only

WikiANN English training (the first --train-samples sentences, one epoch), every shared language tested on its
first --eval-samples test sentences (seqeval entity F1). The dense model and ASG (pq, m=32, k=1024: 0.41% of
e5-small's 250,037-row embedding) run at the configs' default lr and codebook lr scale: nothing here is chosen on
dev (`experiments.dev_selection` does that), and test scores choose nothing. Seeds 1-3 drive the k-means fit and
the fine-tune. Every run is its own `run.py` process under experiments/results/wikiann_xlingual_e5/runs/ (its
metrics.json and .hydra/config.yaml are committed; finished runs are reused, so the study spans sessions), and
README.md and results.json there are written whole from the runs there are.
"""

from __future__ import annotations

import argparse
import statistics

from asg.results import exported_bytes_pct, write_json_atomic, write_text_atomic
from experiments import languages
from experiments.dev_selection import COMMON
from experiments.runner import RESULTS, ROOT, mean_std, read_run, run_config

OUT = RESULTS / "wikiann_xlingual_e5"
SEEDS = (1, 2, 3)
CONFIGS = {"none": ["asg=none"], "pq": ["asg=pq", "asg.m=32", "asg.k=1024"]}


def run_study(args: argparse.Namespace) -> dict[str, dict[str, dict | None]]:
    """Every configuration's runs by name (None where not run or failed), the seeds interleaved so that a study
    cut short leaves dense and ASG with the same seeds."""
    runs_dir = (OUT / "runs").relative_to(ROOT)
    base = [
        "model=e5_small",
        f"model.name_or_path={args.e5_dir}",
        "task=wikiann",
        "transfer=zero_shot",
        f"data.dir={args.data_dir}",
        f"data.max_train_samples={args.train_samples}",
        f"data.max_eval_samples={args.eval_samples}",
        "trainer.max_epochs=1",
        *COMMON,
    ]
    study: dict[str, dict[str, dict | None]] = {prefix: {} for prefix in CONFIGS}
    for seed in SEEDS:
        for prefix, overrides in CONFIGS.items():
            name = f"{prefix}_seed{seed}"
            run = [*base, *overrides, f"seed={seed}"]
            study[prefix][name] = (
                read_run(ROOT / runs_dir / name) if args.report_only else run_config(name, run, runs_dir)
            )
    return study


def report(study: dict[str, dict[str, dict | None]], args: argparse.Namespace, command: str) -> str:
    done = {prefix: [r for r in runs.values() if r] for prefix, runs in study.items()}
    asg = done["pq"][0]["compression"] if done["pq"] else None
    size = (
        f"{asg['params_kept_pct']:.3f}% of the embedding parameters, {exported_bytes_pct(asg):.3f}% of its bytes as "
        f"exported (fit rel. error {statistics.mean(r['compression']['rel_error'] for r in done['pq']):.3f})"
        if asg
        else "not run yet"
    )
    lines = [
        "# Zero-shot WikiANN NER from English, multilingual-e5-small (Q4-dequantized)",
        "",
        f"Command: `{command}`",
        "",
        f"Trained on the first {args.train_samples:,} English train sentences for one epoch; tested on the first "
        f"{args.eval_samples:,} test sentences of each language (seqeval entity F1). ASG: pq, m=32, k=1024: {size}.",
        "Both at the configs' default lr and codebook lr scale (not chosen on dev). Mean ± std over seeds "
        f"{', '.join(map(str, SEEDS))} (the k-means fit and the fine-tune); dense {len(done['none'])} and ASG "
        f"{len(done['pq'])} seeds run; ASG / dense is the ratio of the means. A short budget on 2 CPU cores (one",
        "torch thread), so absolute F1 is low; ja and zh (character-tokenised in WikiANN) sit near the floor for both",
        "models, which makes their ratios noise. Stand-in model for XLM-R / mBERT.",
        "",
        "| language | dense F1 | ASG F1 | ASG / dense |",
        "|---|---|---|---|",
    ]
    for lang in languages.languages([r for runs in done.values() for r in runs]):
        dense, ours = ([r["scores"][f"test/{lang}/f1"] for r in done[p]] for p in ("none", "pq"))
        rel = f"{100 * statistics.mean(ours) / statistics.mean(dense):.1f}%" if dense and ours else "—"
        lines.append(f"| {lang} | {mean_std(dense)} | {mean_std(ours)} | {rel} |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data-dir", default="../shared/data")
    parser.add_argument("--e5-dir", default=".cache/e5-small")
    parser.add_argument("--train-samples", type=int, default=2000)
    parser.add_argument("--eval-samples", type=int, default=500, help="test sentences per language")
    parser.add_argument("--report-only", action="store_true", help="start no run; write the report from those done")
    args = parser.parse_args(argv)
    study = run_study(args)
    command = (
        f"python -m experiments.wikiann_xlingual --data-dir {args.data_dir} --e5-dir {args.e5_dir} "
        f"--train-samples {args.train_samples} --eval-samples {args.eval_samples}"
    )
    text = report(study, args, command)
    write_json_atomic(OUT / "results.json", {"command": command, "study": study})
    write_text_atomic(OUT / "README.md", text)
    print(text)


if __name__ == "__main__":
    main()
