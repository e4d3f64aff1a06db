"""MiniLM on the full BC5CDR train split, one epoch: the dense baseline against ASG at k=128 for several m.

    python -m experiments.bc5cdr_benchmark --data-dir ../shared/data

Each configuration runs as its own `run.py` process (a failure is recorded, the others go on); the table is
built from the runs' metrics.json files and written to experiments/results/bc5cdr_minilm.{md,json}.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from asg.results import write_json_atomic
from experiments.runner import RESULTS, command_line, run_config


def table(rows: list[dict]) -> str:
    head = (
        "| method | m | k | test F1 | F1 vs base | params kept % | bytes kept % | rel. error | "
        "PQ fit s | train s |\n|---|---|---|---|---|---|---|---|---|---|"
    )
    base = next((r["f1"] for r in rows if r["method"] == "none" and r["f1"] is not None), None)
    lines = [head]
    for r in rows:
        if r["f1"] is None:
            lines.append(f"| {r['method']} | {r['m']} | {r['k']} | failed | | | | | | |")
            continue
        rel = f"{100 * r['f1'] / base:.1f}%" if base else "n/a"
        lines.append(
            f"| {r['method']} | {r['m']} | {r['k']} | {r['f1']:.2f} | {rel} | {r['params_kept_pct']:.3f} | "
            f"{r['bytes_kept_pct']:.3f} | {r['rel_error']:.3f} | {r['fit_seconds']:.1f} | {r['train_seconds']:.0f} |"
        )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-dir", default="../shared/data")
    parser.add_argument("--ms", type=int, nargs="+", default=[8, 16, 32])
    parser.add_argument("--k", type=int, default=128)
    parser.add_argument("--runs-dir", default="outputs/bench/bc5cdr_minilm")
    parser.add_argument("--extra", nargs="*", default=[], help="more Hydra overrides for every run")
    args = parser.parse_args()

    common = [
        "model=minilm",
        "task=bc5cdr",
        f"data.dir={args.data_dir}",
        "logger=csv",
        "trainer.max_epochs=1",
        *args.extra,
    ]
    configs = [("none", ["asg=none"], "none", "-", "-")]
    configs += [(f"pq_m{m}", [f"asg.m={m}", f"asg.k={args.k}"], "asg", m, args.k) for m in args.ms]
    rows = []
    for name, overrides, method, m, k in configs:
        metrics = run_config(name, common + overrides, Path(args.runs_dir))
        row = {"method": method, "m": m, "k": k, "f1": None}
        if metrics:
            c = metrics["compression"]
            row |= {
                "f1": metrics["scores"]["test/en/f1"],
                "params_kept_pct": c["params_kept_pct"],
                "bytes_kept_pct": c["bytes_kept_pct"],
                "rel_error": c["rel_error"],
                "fit_seconds": c.get("fit_seconds", 0.0),
                "train_seconds": metrics["train_seconds"],
                "versions": metrics["versions"],
            }
        rows.append(row)

    command = command_line("experiments.bc5cdr_benchmark")
    RESULTS.mkdir(parents=True, exist_ok=True)
    write_json_atomic(RESULTS / "bc5cdr_minilm.json", {"command": command, "rows": rows})
    text = (
        f"# MiniLM (all-MiniLM-L6-v2) on BC5CDR, full train split, 1 epoch, test F1 (seqeval entity)\n\n"
        f"Command: `{command}`\n\n{table(rows)}\n"
    )
    (RESULTS / "bc5cdr_minilm.md").write_text(text)
    print(text)


if __name__ == "__main__":
    main()
