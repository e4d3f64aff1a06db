"""Methods at one share of the embedding's bytes, at their default settings, over seeds: per-language scores.

    python -m experiments.bytes_frontier --setting wikiann_e5 --data-dir ../shared/data --e5-dir .cache/e5-small
    python -m experiments.bytes_frontier --setting wikiann_e5 --report-only

The dense model and each compressed method (`methods`: plain ASG at the most sub-spaces that leave 64 centroids,
`asg.methods.widest_m`, frequency-tiered ASG at conf/asg/tiered.yaml's tiers, and, on e5-small, `tiered_search`:
the tier layout `experiments.tier_search` chose at this budget from the English training text) at
`asg.budget_bytes_pct` (code tables bit-packed, every stored tensor counted), float16 codebooks, trained one epoch
with the configs' default lr and codebook lr scale: no training run is chosen on dev, and test scores choose
nothing. Seeds 1-3
drive the k-means fit and the fine-tune. The setting (model, task, data) is `experiments.dev_selection`'s. Every run
is its own `run.py` process under experiments/results/bytes_frontier_<setting>/runs/ (metrics.json and config
committed, finished runs reused); the report is written whole from the runs there are.
"""

from __future__ import annotations

import argparse
import json

from asg.methods import widest_m
from asg.results import write_text_atomic
from experiments import languages, tier_search
from experiments.dev_selection import COMMON, SETTINGS
from experiments.runner import RESULTS, ROOT, read_run, run_config

SEEDS = (1, 2, 3)
STORAGE = "float16"


def methods(budget: float, shape: tuple[int, int]) -> dict[str, list[str]]:
    """Run-name prefix -> overrides of each configuration at `budget` % of the float32 embedding's bytes."""
    size = [f"asg.budget_bytes_pct={budget}", f"asg.storage_dtype={STORAGE}"]
    return {
        "none": ["asg=none"],
        "pq": ["asg=pq", f"asg.m={widest_m(budget, *shape, float_bytes=2)}", *size],
        "tiered": ["asg=tiered", *size],
    }


def searched_layout(setting: str, budget: float) -> list[str] | None:
    """Overrides of the tier layout `experiments.tier_search` chose for e5-small at this budget (from its
    results.json); None where it has not been run at this budget."""
    path = tier_search.OUT / "results.json"
    if setting != "wikiann_e5" or not path.is_file():
        return None
    found = json.loads(path.read_text())
    if found["budget"] != budget:
        return None
    choice = {key: json.dumps(found["choice"][key], separators=(",", ":")) for key in ("tier_fractions", "tier_m")}
    return [f"asg.tier_fractions={choice['tier_fractions']}", f"asg.tier_m={choice['tier_m']}"]


def run_study(setting: str, budget: float, args: argparse.Namespace) -> dict[str, dict[str, dict | None]]:
    """Every configuration's runs by name (None where not run or failed)."""
    spec = SETTINGS[setting]
    runs_dir = (RESULTS / f"bytes_frontier_{setting}" / "runs").relative_to(ROOT)
    base = [*spec["overrides"], f"data.dir={args.data_dir}", *COMMON, "trainer.max_epochs=1"]
    if setting.endswith("_e5"):
        base.append(f"model.name_or_path={args.e5_dir}")
    study: dict[str, dict[str, dict | None]] = {}
    configurations = methods(budget, spec["shape"])
    if (layout := searched_layout(setting, budget)) is not None:
        configurations["tiered_search"] = [*configurations["tiered"], *layout]
    for prefix, overrides in configurations.items():
        study[prefix] = {}
        for seed in SEEDS:
            name = f"{prefix}_bytes{budget:g}_seed{seed}" if prefix != "none" else f"none_seed{seed}"
            run = [*base, *overrides, f"seed={seed}"]
            study[prefix][name] = (
                read_run(ROOT / runs_dir / name) if args.report_only else run_config(name, run, runs_dir)
            )
    return study


def report(setting: str, budget: float, study: dict[str, dict[str, dict | None]], command: str) -> str:
    spec = SETTINGS[setting]
    metric = spec["test_metric"].split("/")[-1]
    done = {prefix: [r for r in runs.values() if r] for prefix, runs in study.items()}
    lines = [
        f"# Methods at {budget:g}% of the embedding's bytes: {setting}",
        "",
        f"Command: `{command}`",
        "",
        f"Setting: {spec['describe']}. One epoch; every method at the configs' default lr and codebook lr scale (not",
        f"chosen on dev); compressed methods at `asg.budget_bytes_pct={budget:g}` with `asg.storage_dtype={STORAGE}`",
        "(codebooks stored and counted at 2 bytes, rounded before the test). pq at the most sub-spaces that leave 64",
        "centroids; tiered at conf/asg/tiered.yaml's tiers"
        + (
            "; tiered_search at the layout experiments.tier_search chose (lowest fit error over the English "
            "training text's tokens, results/tier_search_e5)"
            if "tiered_search" in study
            else ""
        )
        + f". Mean ± std over seeds {', '.join(map(str, SEEDS))}; relative = ratio of the means. Short CPU runs, one "
        "torch thread.",
        "",
        *languages.table(done, metric),
    ]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--setting", choices=sorted(SETTINGS), required=True)
    parser.add_argument("--budget", type=float, default=1.0, help="asg.budget_bytes_pct of every compressed method")
    parser.add_argument("--data-dir", default="../shared/data")
    parser.add_argument("--e5-dir", default=".cache/e5-small")
    parser.add_argument("--report-only", action="store_true", help="start no run; write the report from those done")
    args = parser.parse_args(argv)
    study = run_study(args.setting, args.budget, args)
    command = f"python -m experiments.bytes_frontier --setting {args.setting} --budget {args.budget:g}"
    command += f" --data-dir {args.data_dir}" + (f" --e5-dir {args.e5_dir}" if args.setting.endswith("_e5") else "")
    text = report(args.setting, args.budget, study, command)
    write_text_atomic(RESULTS / f"bytes_frontier_{args.setting}" / "README.md", text)
    print(text)


if __name__ == "__main__":
    main()
