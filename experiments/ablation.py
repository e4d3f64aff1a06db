"""ASG against the baselines at equal kept-parameter (and stored-byte) budgets, on real data, with tables and a
Pareto figure.

    python -m experiments.ablation --setting bc5cdr_minilm --data-dir ../shared/data
    python -m experiments.ablation --setting wikiann_e5 --data-dir ../shared/data --e5-dir .cache/e5-small \
        [--bytes-budgets 0.5,1,2,5]

Each setting runs the `ablation_methods` preset (pq, sg, lowrank, rq x asg.budget_pct) as one Hydra multirun,
SG at its own 5-40% budgets where it is affordable, and the dense base run. With --bytes-budgets, every method
also runs at each asg.budget_bytes_pct, pq and rq at the most sub-spaces that leave them 64 centroids or more
(`asg.methods.widest_m`: a sizing rule, not a dev selection; where no m can, that method is skipped). Then
`experiments.tables` writes the tables and `pareto_*.png` into experiments/results/ablation_<setting>/. Runs are
short (a training subset, one epoch) so the whole comparison fits an afternoon on 2 CPU cores; the results file
says so.
"""

from __future__ import annotations

import argparse
import shlex
import subprocess
import sys
from pathlib import Path

from asg.methods import widest_m
from asg.results import write_text_atomic
from experiments import tables
from experiments.runner import RESULTS, ROOT, command_line

SETTINGS: dict[str, dict] = {
    "bc5cdr_minilm": {
        "shape": (30522, 384),  # the embedding's V x d, for the byte budgets' sub-space counts
        "overrides": [
            "model=minilm",
            "task=bc5cdr",
            "transfer=in_language",
            "data.max_train_samples=1000",
            "data.max_eval_samples=1000",
        ],
        "describe": "all-MiniLM-L6-v2 on BC5CDR: 1,000 training sentences, one epoch, the first 1,000 test sentences",
        "sg_own_budgets": "10,20,40",
    },
    "wikiann_e5": {
        "shape": (250037, 384),
        "overrides": [
            "model=e5_small",
            "task=wikiann",
            "transfer=zero_shot",
            # 2,000 sentences (125 steps): 600 (38 steps) left even the dense model at F1 0 on every language
            "data.max_train_samples=2000",
            "data.max_eval_samples=200",
            "data.max_length=64",
            # k-means at 5% of a 250k vocabulary is 12.5k centroids per sub-space: fit the centroids on 50k rows
            # (then assign all) with fewer Lloyd iterations
            "asg.iters=8",
            "asg.sample_rows=50000",
        ],
        "describe": (
            "multilingual-e5-small (Q4-dequantized) on WikiANN: 2,000 English training sentences, one epoch, "
            "zero-shot to 13 languages, the first 200 test sentences of each"
        ),
        "sg_own_budgets": None,  # SG at 10-40% of 250k rows needs 25k-100k centroids: hours of k-means here
    },
}
# every run: no per-epoch validation (one epoch, test scores are what the table reads), CSV logs, no checkpoints
COMMON = [
    "trainer=cpu",
    "trainer.limit_val_batches=0",
    "trainer.enable_progress_bar=false",
    "logger=csv",
    "checkpoint.keep=none",
    "checkpoint.every_n_steps=null",
]


def run(args: list[str]) -> int:
    cmd = [sys.executable, "run.py", *args]
    print("$", shlex.join(cmd), flush=True)
    return subprocess.run(cmd, cwd=ROOT).returncode


def bytes_jobs(budget: float, vocab: int, hidden: int) -> list[list[str]]:
    """Overrides of each method's run at one stored-byte budget; pq and rq at their widest m."""
    size = f"asg.budget_bytes_pct={budget}"
    jobs = [["asg=sg,lowrank", size]]
    for method, stages in (("pq", 1), ("rq", 2)):
        try:
            jobs.append([f"asg={method}", f"asg.m={widest_m(budget, vocab, hidden, stages=stages)}", size])
        except ValueError as err:  # the table shows the cell as missing
            print(f"{method} skipped at {size}: {err}", flush=True)
    return jobs


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--setting", choices=sorted(SETTINGS), required=True)
    parser.add_argument("--data-dir", required=True)
    parser.add_argument("--e5-dir", default=".cache/e5-small")
    parser.add_argument("--budgets", default="0.2,0.4,1,5", help="asg.budget_pct values, comma-separated")
    parser.add_argument("--bytes-budgets", default=None, help="asg.budget_bytes_pct values, comma-separated")
    parser.add_argument("--runs-dir", type=Path, default=None, help="default: multirun/ablation_<setting>")
    parser.add_argument("--no-sg-own", action="store_true", help="skip SG at its own 10-40%% budgets")
    parser.add_argument("--tables-only", action="store_true", help="only rebuild the tables from finished runs")
    args = parser.parse_args(argv)

    setting = SETTINGS[args.setting]
    runs = (args.runs_dir or ROOT / "multirun" / f"ablation_{args.setting}").resolve()
    overrides = [*COMMON, f"data.dir={Path(args.data_dir).resolve()}", *setting["overrides"]]
    if args.setting.endswith("_e5"):
        overrides.append(f"model.name_or_path={Path(args.e5_dir).resolve()}")
    base = [*overrides, "experiment=ablation_methods"]
    if not args.tables_only:
        run([*base, "asg=none", f"hydra.run.dir={runs / 'base'}"])
        run(["-m", *base, f"asg.budget_pct={args.budgets}", f"hydra.sweep.dir={runs / 'methods'}"])
        if setting["sg_own_budgets"] and not args.no_sg_own:
            sg_budgets = f"asg.budget_pct={setting['sg_own_budgets']}"
            run(["-m", *base, "asg=sg", sg_budgets, f"hydra.sweep.dir={runs / 'sg_own'}"])
        for budget in args.bytes_budgets.split(",") if args.bytes_budgets else []:
            for job in bytes_jobs(float(budget), *setting["shape"]):
                run(["-m", *base, *job, f"hydra.sweep.dir={runs / f'bytes_{budget}'}"])

    out = RESULTS / f"ablation_{args.setting}"
    tables.main([str(runs), "--out", str(out)])
    write_text_atomic(
        out / "README.md",
        f"# Ablation: methods at equal budgets ({args.setting})\n\n"
        f"Made by `{command_line('experiments.ablation')}`.\n\n"
        f"Setting: {setting['describe']}. Short runs on CPU, not the paper's full fine-tuning: compare methods "
        "with each other here, not with the paper's absolute scores.\n\n"
        f"Run overrides: `{' '.join(overrides)}`.\n\n"
        "Tables: [main.md](main.md) (also .tex, .csv); the Pareto figure is `pareto_*.png`.\n",
    )
    print(f"results in {out}")


if __name__ == "__main__":
    main()
