"""MiniLM on the full BC5CDR train split, one epoch: the dense baseline against ASG at k=128 for several m, over seeds.

    python -m experiments.bc5cdr_benchmark --data-dir ../shared/data
    python -m experiments.bc5cdr_benchmark --report-only

Every configuration runs at the configs' default lr and codebook lr scale (nothing chosen on dev; that is
`experiments.dev_selection`), with seeds 1-3 (the k-means fit and the fine-tune), each run its own `run.py` process
under experiments/results/bc5cdr_minilm/runs/ (metrics.json and .hydra/config.yaml committed; finished runs are
reused, so the study spans sessions). README.md and results.json there are written whole from the runs there are.
"""

from __future__ import annotations

import argparse
import statistics

from asg.results import exported_bytes_pct, write_json_atomic, write_text_atomic
from experiments.dev_selection import COMMON
from experiments.runner import RESULTS, ROOT, fit_version_notes, mean_std, read_run, run_config

OUT = RESULTS / "bc5cdr_minilm"
SEEDS = (1, 2, 3)
METRIC = "test/avg/f1"


def configs(ms: list[int], k: int) -> dict[str, list[str]]:
    """Run-name prefix -> overrides: the dense model, then ASG at k centroids for each m."""
    return {"none": ["asg=none"]} | {f"pq_m{m}": ["asg=pq", f"asg.m={m}", f"asg.k={k}"] for m in ms}


def run_study(args: argparse.Namespace) -> dict[str, dict[str, dict | None]]:
    """Every configuration's runs by name (None where not run or failed), a seed at a time across configurations."""
    runs_dir = (OUT / "runs").relative_to(ROOT)
    base = ["model=minilm", "task=bc5cdr", f"data.dir={args.data_dir}", "trainer.max_epochs=1", *COMMON]
    study: dict[str, dict[str, dict | None]] = {prefix: {} for prefix in configs(args.ms, args.k)}
    for seed in SEEDS:
        for prefix, overrides in configs(args.ms, args.k).items():
            name = f"{prefix}_seed{seed}"
            run = [*base, *overrides, f"seed={seed}"]
            study[prefix][name] = (
                read_run(ROOT / runs_dir / name) if args.report_only else run_config(name, run, runs_dir)
            )
    return study


def report(study: dict[str, dict[str, dict | None]], command: str) -> str:
    done = {prefix: [r for r in runs.values() if r] for prefix, runs in study.items()}
    dense = [r["scores"][METRIC] for r in done["none"]]
    lines = [
        "# MiniLM (all-MiniLM-L6-v2) on BC5CDR, full train split, 1 epoch, test F1 (seqeval entity)",
        "",
        f"Command: `{command}`",
        "",
        "Every run at the configs' default lr and codebook lr scale (not chosen on dev); mean ± std over seeds "
        f"{', '.join(map(str, SEEDS))}; relative = ratio of the means. Bytes kept: as exported (codebooks in float32,",
        "the code table bit-packed). Stand-in model for BioBERT; 2 CPU cores, one torch thread per run.",
        "",
        "| method | m | k | test F1 | of dense | seeds | params kept % | bytes kept % | fit rel. error |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for prefix, runs in done.items():
        if not runs:
            lines.append(f"| {prefix} | not run yet | | | | | | | |")
            continue
        c = runs[0]["compression"]
        scores = [r["scores"][METRIC] for r in runs]
        rel = f"{100 * statistics.mean(scores) / statistics.mean(dense):.1f}%" if dense else "—"
        error = statistics.mean(r["compression"]["rel_error"] for r in runs)
        size = ["-", "-"] if prefix == "none" else [str(c["m"]), str(c["k"])]
        lines.append(
            f"| {'none' if prefix == 'none' else 'asg'} | {' | '.join(size)} | {mean_std(scores)} | {rel} | "
            f"{len(runs)} | {c['params_kept_pct']:.3f} | {exported_bytes_pct(c):.3f} | {error:.3f} |"
        )
    lines += fit_version_notes(done)
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data-dir", default="../shared/data")
    parser.add_argument("--ms", type=int, nargs="+", default=[8, 16, 32])
    parser.add_argument("--k", type=int, default=128)
    parser.add_argument("--report-only", action="store_true", help="start no run; write the report from those done")
    args = parser.parse_args(argv)
    study = run_study(args)
    command = f"python -m experiments.bc5cdr_benchmark --data-dir {args.data_dir} --ms {' '.join(map(str, args.ms))}"
    command += f" --k {args.k}"
    text = report(study, command)
    write_json_atomic(OUT / "results.json", {"command": command, "study": study})
    write_text_atomic(OUT / "README.md", text)
    print(text)


if __name__ == "__main__":
    main()
