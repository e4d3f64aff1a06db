"""Zero-shot cross-lingual NER with multilingual-e5-small: WikiANN English training, every shared language tested.

    python -m experiments.wikiann_xlingual --data-dir ../shared/data --e5-dir .cache/e5-small

The dense baseline and ASG at k=1024 (0.41% of e5's 250,037-row embedding) run as separate processes; the
per-language table of F1 and ASG relative to the baseline goes to experiments/results/wikiann_xlingual_e5.{md,json}.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from asg.results import write_json_atomic
from experiments.runner import RESULTS, command_line, run_config


def _fmt(value: float | None) -> str:
    return "failed" if value is None else f"{value:.2f}"


def table(base: dict | None, asg: dict | None) -> str:
    langs = (base or asg or {}).get("transfer", {}).get("eval_langs", [])
    lines = ["| language | baseline F1 | ASG F1 | ASG / baseline |", "|---|---|---|---|"]
    for lang in [*langs, "avg"]:
        b = base["scores"][f"test/{lang}/f1"] if base else None
        a = asg["scores"][f"test/{lang}/f1"] if asg else None
        rel = f"{100 * a / b:.1f}%" if a is not None and b else "n/a"
        lines.append(f"| {lang} | {_fmt(b)} | {_fmt(a)} | {rel} |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-dir", default="../shared/data")
    parser.add_argument("--e5-dir", default=".cache/e5-small")
    parser.add_argument("--train-samples", type=int, default=2000)
    parser.add_argument("--eval-samples", type=int, default=1000, help="test sentences per language")
    parser.add_argument("--m", type=int, default=32)
    parser.add_argument("--k", type=int, default=1024)
    parser.add_argument("--runs-dir", default="outputs/bench/wikiann_xlingual_e5")
    args = parser.parse_args()

    common = [
        "model=e5_small",
        f"model.name_or_path={args.e5_dir}",
        "task=wikiann",
        "transfer=zero_shot",
        f"data.dir={args.data_dir}",
        f"data.max_train_samples={args.train_samples}",
        f"data.max_eval_samples={args.eval_samples}",
        "logger=csv",
        "trainer.max_epochs=1",
    ]
    base = run_config("none", [*common, "asg=none"], Path(args.runs_dir))
    asg = run_config(f"pq_m{args.m}_k{args.k}", [*common, f"asg.m={args.m}", f"asg.k={args.k}"], Path(args.runs_dir))

    command = command_line("experiments.wikiann_xlingual")
    RESULTS.mkdir(parents=True, exist_ok=True)
    write_json_atomic(RESULTS / "wikiann_xlingual_e5.json", {"command": command, "baseline": base, "asg": asg})
    kept = asg["compression"] if asg else {}
    text = (
        "# Zero-shot WikiANN NER from English, multilingual-e5-small (Q4-dequantized)\n\n"
        f"Command: `{command}`\n\n"
        f"Trained on the first {args.train_samples} English train sentences for one epoch; tested on the first "
        f"{args.eval_samples} test sentences of each language (seqeval entity F1). ASG: m={args.m}, k={args.k}, "
        f"{kept.get('params_kept_pct', float('nan')):.3f}% of embedding parameters, "
        f"{kept.get('bytes_kept_pct', float('nan')):.3f}% of its bytes with the code table.\n\n{table(base, asg)}\n"
    )
    (RESULTS / "wikiann_xlingual_e5.md").write_text(text)
    print(text)


if __name__ == "__main__":
    main()
