"""XNLI and extractive QA with multilingual-e5-small: dense against ASG at the paper's 0.4%, zero-shot from English.

    python -m experiments.xnli_qa_e5 --study xnli --data-dir ../shared/data --e5-dir .cache/e5-small
    python -m experiments.xnli_qa_e5 --study qa --data-dir ../shared/data --e5-dir .cache/e5-small

Each study runs its configurations one after another as separate `run.py` processes, in
experiments/results/<study>/runs/<name>/ (each run's metrics.json and .hydra/config.yaml are kept, checkpoints
are not), and writes experiments/results/<study>/<study>.{md,json} whole from those runs. A run that finished
before is reused, so a study killed or spread over sessions continues with the runs it lacks; `--only NAME,...`
starts only the named runs (the others are read if they finished), `--report-only` starts none.

Selection uses the held-out English dev pairs alone (zero-shot: no target-language data chooses anything). The
XNLI study checks why ASG trails the dense model with dev-only runs (`+trainer.limit_test_batches=0`): the
codebook learning rate and the number of epochs. The ASG configuration with the best final dev accuracy is then
tested once; test scores never choose anything. Then the dense model and the chosen ASG configuration run again
with seeds 1 and 2 (`SEEDS`: the seed drives the k-means fit and the fine-tune), and the test table gives the
mean ± sample std over the seeds that have run.
"""

from __future__ import annotations

import argparse
import json
import shlex
import statistics
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from omegaconf import OmegaConf

from asg.results import exported_bytes_pct, write_json_atomic, write_text_atomic
from experiments.runner import RESULTS, ROOT, fit_version_notes, mean_std, run_config

MODEL_LABEL = "multilingual-e5-small (Q4-dequantized)"
ASG = ["asg=pq", "asg.m=32", "asg.k=1024"]  # k=1024 of 250,037 rows: the paper's 0.4%
SEEDS = (42, 1, 2)  # 42: the selection runs' seed (the config default); the others repeat dense and the chosen ASG
DEV_ONLY = ["+trainer.limit_test_batches=0"]  # candidates are scored on dev alone; only the chosen one is tested
# every run: no logger or checkpoint left behind (metrics.json holds the scores and the dev learning curve)
COMMON = ["trainer=cpu", "trainer.enable_progress_bar=false", "logger=none", "checkpoint.keep=none"]


@dataclass
class Study:
    name: str
    task: str  # conf/task name
    metric: str  # the test metric of the table
    dev_metric: str  # the held-out dev score that selects
    title: str
    caveats: list[str]
    overrides: Callable[[argparse.Namespace, int], list[str]]  # (args, epochs) -> overrides every run shares
    epochs: int
    reference: str  # a public figure of the paper's (full-data) setting, with its source
    # ASG candidates checked on dev: name -> (extra overrides, epochs, what it tests)
    candidates: dict[str, tuple[list[str], int, str]] = field(default_factory=dict)

    @property
    def runs_dir(self) -> Path:
        return RESULTS / self.name / "runs"


def xnli_overrides(args: argparse.Namespace, epochs: int) -> list[str]:
    return [
        "model=e5_small",
        f"model.name_or_path={args.e5_dir}",
        "task=xnli",
        f"data.dir={args.data_dir}",
        f"trainer.max_epochs={epochs}",
        "transfer.eval_langs=[en,de,el,sw,zh]",
        "+trainer.val_check_interval=0.5",  # two points of the dev learning curve per epoch
        *COMMON,
    ]


def qa_overrides(args: argparse.Namespace, epochs: int) -> list[str]:
    return [
        "model=e5_small",
        f"model.name_or_path={args.e5_dir}",
        "task=xquad",
        f"data.dir={args.data_dir}",
        f"trainer.max_epochs={epochs}",
        "transfer.eval_langs=[en,de,zh]",
        "+trainer.val_check_interval=0.5",
        *COMMON,
    ]


STUDIES = {
    "xnli": Study(
        name="xnli_e5",
        task="xnli",
        metric="accuracy",
        dev_metric="val/en/accuracy",
        title=f"XNLI zero-shot from English, {MODEL_LABEL}: dense against ASG at 0.4%",
        caveats=[
            "Trained on XNLI English **dev** (2,490 pairs less the held-out ones and the 2 that share a premise "
            "with them), not on MultiNLI train (393k pairs) as the paper: no MultiNLI copy is offline.",
            "Validation (the learning curve, and every choice) is the last 490 English dev pairs, held out; test is "
            "each language's full XNLI test split (5,010 pairs, labels joined by row), scored once per tested run.",
            f"Model: {MODEL_LABEL}, a stand-in for the paper's mBERT / XLM-R (the only multilingual checkpoint "
            "these machines load); 2 CPU cores (one torch thread).",
        ],
        overrides=xnli_overrides,
        epochs=3,
        reference=(
            "mBERT-base fine-tuned on all of English MultiNLI (393k pairs), zero-shot XNLI test accuracy: en 81.4, "
            "de 70.5, zh 63.8 (google-research/bert, multilingual.md, 'BERT - Zero Shot Uncased'). That is ~200x "
            "the training pairs here and a 2x wider encoder (768 vs 384 hidden, ~4x the non-embedding parameters); "
            "no public figure for e5-small "
            "trained on ~2k XNLI dev pairs is known to us. The ASG paper reports >95% of the dense score at 0.4-0.5% "
            "of the embedding parameters in its full-data setting."
        ),
        # the default's training loss stays above the dense one's: larger codebook steps, or more steps
        candidates={
            "pq_cb3": (["asg.codebook_lr_scale=3"], 3, "codebook learning rate 3x optimizer.lr (default 10x)"),
            "pq_cb30": (["asg.codebook_lr_scale=30"], 3, "codebook learning rate 30x optimizer.lr (default 10x)"),
            "pq_ep6": ([], 6, "twice the steps (6 epochs)"),
        },
    ),
    "qa": Study(
        name="qa_e5",
        task="xquad",
        metric="f1",
        dev_metric="val/en/f1",
        title=f"Extractive QA zero-shot from English (TyDiQA-GoldP en -> XQuAD), {MODEL_LABEL}",
        caveats=[
            "Trained on TyDiQA-GoldP English train (its 3,696 questions less the held-out ones), not on SQuAD "
            "v1.1 train as the paper: no SQuAD copy is offline. TyDiQA questions were written without seeing the "
            "answer passage, so they are less lexically tied to it than SQuAD/XQuAD questions.",
            "Validation is the last 300 TyDiQA-GoldP en train questions, held out (with the 30 training questions "
            "that share their passages); test is XQuAD (1,190 questions per language), scored once per tested run "
            "with the SQuAD v1.1 normaliser (f1, exact_match) and MLQA's language-aware one (lang_f1).",
            f"Model: {MODEL_LABEL}, a stand-in for the paper's mBERT / XLM-R; 2 CPU cores (one torch thread).",
        ],
        overrides=qa_overrides,
        epochs=2,
        reference=(
            "mBERT-base fine-tuned on SQuAD v1.1 train (87.6k questions), zero-shot XQuAD F1 / EM: en 83.5 / 72.2, "
            "de 70.6 / 54.0, zh 58.0 / 48.3 (google-deepmind/xquad README, Baselines). That is ~26x the training "
            "questions here, from the same Wikipedia/SQuAD distribution as XQuAD, and a 2x wider encoder."
        ),
    ),
}


def run_all(study: Study, args: argparse.Namespace, only: set[str] | None) -> dict[str, dict | None]:
    """The study's runs in the order they run; None where a run failed or is not in `only` and has not finished."""

    def run(name: str, overrides: list[str] | None) -> dict | None:  # overrides None: read a finished run only
        run_dir = study.runs_dir / name
        if overrides is None or (only is not None and name not in only):
            path = run_dir / "metrics.json"
            metrics = json.loads(path.read_text()) if path.is_file() else None
        else:
            metrics = run_config(name, overrides, study.runs_dir.relative_to(ROOT))
        if metrics is not None:  # the trainer settings the table shows come from the run's own config
            metrics["epochs"] = OmegaConf.load(run_dir / ".hydra" / "config.yaml").trainer.max_epochs
        return metrics

    base = study.overrides(args, study.epochs)
    runs = {"none": run("none", [*base, "asg=none"]), "pq": run("pq", [*base, *ASG])}
    for name, (extra, epochs, _) in study.candidates.items():
        runs[name] = run(name, [*study.overrides(args, epochs), *ASG, *extra, *DEV_ONLY])
    chosen = choose(study, runs)
    if chosen is None:
        return runs
    extra, epochs = ([], study.epochs) if chosen == "pq" else study.candidates[chosen][:2]
    asg = [*study.overrides(args, epochs), *ASG, *extra]
    if chosen != "pq":
        runs[f"{chosen}_test"] = run(f"{chosen}_test", asg)
    for seed in SEEDS[1:]:
        runs[f"none_s{seed}"] = run(f"none_s{seed}", [*base, "asg=none", f"seed={seed}"])
        runs[f"{tested(chosen)}_s{seed}"] = run(f"{tested(chosen)}_s{seed}", [*asg, f"seed={seed}"])
        if chosen != "pq":  # the default's repeats from when it was the choice, read for comparison, never started
            runs[f"pq_s{seed}"] = run(f"pq_s{seed}", None)
    return runs


def tested(chosen: str | None) -> str:
    """The run whose test scores stand for ASG: the default `pq` until a candidate is chosen on dev."""
    return f"{chosen}_test" if chosen not in (None, "pq") else "pq"


def seed_runs(runs: dict[str, dict | None], name: str) -> list[dict]:
    """The finished runs of one configuration: seed 42's and its repeats with the other SEEDS."""
    return [r for r in (runs.get(name), *(runs.get(f"{name}_s{seed}") for seed in SEEDS[1:])) if r]


def choose(study: Study, runs: dict[str, dict | None]) -> str | None:
    """The ASG run with the best final held-out dev score, once every candidate has one (else None); a study
    without candidates chooses the default `pq` once it has run."""
    names = ["pq", *study.candidates]
    if any(runs.get(n) is None for n in names):
        return None
    return max(names, key=lambda n: runs[n]["scores"][study.dev_metric])


def _fmt(value: float | None, digits: int = 2) -> str:
    return "—" if value is None else f"{value:.{digits}f}"


def score_table(study: Study, runs: dict[str, dict | None], asg_name: str) -> list[str]:
    """Test scores per language, mean ± sample std over the seeds each side has, and ASG's mean over dense's."""
    base, asg = seed_runs(runs, "none"), seed_runs(runs, asg_name)
    langs = next((r["transfer"]["eval_langs"] for r in (*base, *asg)), [])
    metrics = [study.metric, "exact_match"] if study.task == "xquad" else [study.metric]
    head = " | ".join(f"dense {m} | ASG {m} | ASG / dense" for m in metrics)
    lines = [
        f"Seeds: dense {len(base)}, ASG {len(asg)} (of {', '.join(map(str, SEEDS))}).",
        "",
        f"| language | {head} |",
        "|---|" + "---|---|---|" * len(metrics),
    ]
    for lang in [*langs, "avg"]:
        cells = []
        for metric in metrics:
            b = [r["scores"][f"test/{lang}/{metric}"] for r in base if f"test/{lang}/{metric}" in r["scores"]]
            a = [r["scores"][f"test/{lang}/{metric}"] for r in asg if f"test/{lang}/{metric}" in r["scores"]]
            rel = f"{100 * statistics.mean(a) / statistics.mean(b):.1f}%" if a and b and statistics.mean(b) else "—"
            cells += [mean_std(b), mean_std(a), rel]
        lines.append(f"| {lang} | {' | '.join(cells)} |")
    return lines + fit_version_notes({f"ASG (`{asg_name}`)": asg})


def curve_table(study: Study, runs: dict[str, dict | None]) -> list[str]:
    """Held-out dev score (and mean training loss since the previous point) against optimizer steps, per run."""
    repeats = tuple(f"_s{seed}" for seed in SEEDS[1:])
    names = [n for n, r in runs.items() if r and r.get("val_history") and not n.endswith(("_test", *repeats))]
    points = sorted({(p["step"], p["epoch"]) for n in names for p in runs[n]["val_history"]})
    lines = [
        "| step | epoch | " + " | ".join(f"{n} dev (train loss)" for n in names) + " |",
        "|---|---|" + "---|" * len(names),
    ]
    for step, epoch in points:
        cells = []
        for n in names:
            p = next((p for p in runs[n]["val_history"] if p["step"] == step), None)
            cells.append(f"{p['scores'][study.dev_metric]:.2f} ({_fmt(p['train_loss'], 3)})" if p else "")
        lines.append(f"| {step} | {epoch + 1} | " + " | ".join(cells) + " |")
    return lines


def epoch_choice(study: Study, runs: dict[str, dict | None]) -> list[str]:
    """Where each run's held-out dev curve peaks, the training length dev chooses among the curve's points, and how
    much the score still rose over the last epoch: near zero where training has saturated."""
    lines, at_end = [], 0
    curves = {name: r["val_history"] for name, r in runs.items() if r and r.get("val_history")}
    for name, history in curves.items():
        score = [p["scores"][study.dev_metric] for p in history]
        best = max(range(len(history)), key=score.__getitem__)  # the earliest of equal scores
        at_end += best == len(history) - 1
        earlier = [i for i, p in enumerate(history) if p["epoch"] == history[-1]["epoch"] - 1]
        gain = (
            f"{score[earlier[-1]]:.2f} -> {score[-1]:.2f} ({score[-1] - score[earlier[-1]]:+.2f}) over its last epoch; "
            if earlier
            else ""
        )
        lines.append(f"- `{name}`: {gain}best dev point at step {history[best]['step']} of {history[-1]['step']}")
    if not curves:
        return []
    summary = (
        f"The best held-out dev point is the last one in {at_end} of {len(curves)} runs; in those, dev chooses the "
        "longest training tried, the edge of the grid, so longer training might still help."
    )
    return [summary, "", *lines]


def run_rows(study: Study, runs: dict[str, dict | None]) -> list[str]:
    lines = [
        "| run | asg | codebook lr scale | train examples | epochs | steps | final dev | params kept % | "
        "bytes kept % | fit rel. error | train s | tested |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for name, r in runs.items():
        if r is None:
            lines.append(f"| {name} | not run or failed | | | | | | | | | | |")
            continue
        c = r["compression"]
        tested = any(k.startswith("test/") for k in r["scores"])
        scale = r["asg"]["codebook_lr_scale"] if c["method"] != "none" else "—"
        lines.append(
            f"| {name} | {c['method']} | {scale} | {r['train_samples']:,} | {r['epochs']} | {r['steps']} | "
            f"{_fmt(r['scores'].get(study.dev_metric))} | {c['params_kept_pct']:.3f} | {exported_bytes_pct(c):.3f} | "
            f"{_fmt(c.get('rel_error'), 4)} | {r['train_seconds']:.0f} | {'yes' if tested else 'no (dev only)'} |"
        )
    return lines


def report(study: Study, runs: dict[str, dict | None], command: str) -> str:
    chosen = choose(study, runs)
    asg_name = tested(chosen)
    lines = [f"# {study.title}", "", f"Command: `{command}`", "", "## Setting", ""]
    lines += [f"- {c}" for c in study.caveats]
    notes = sorted({n for r in runs.values() if r for n in r["notes"]})
    lines += ["", "Notes the runs recorded (metrics.json `notes`):", "", *(f"- {n}" for n in notes)]
    lines += ["", "## Runs", "", *run_rows(study, runs), ""]
    lines.append("Each run's overrides: `runs/<run>/.hydra/overrides.yaml`; its scores: `runs/<run>/metrics.json`.")
    if study.candidates:
        lines += ["", "## Selection (held-out English dev only)", ""]
        lines += [f"- `{n}`: {what}" for n, (_, _, what) in study.candidates.items()]
        if chosen is None:
            lines.append("- not every candidate has run yet: nothing chosen, the ASG column is the default `pq`")
        else:
            dev = runs[chosen]["scores"][study.dev_metric]
            lines.append(
                f"- chosen by final dev {study.dev_metric.split('/')[-1]}: `{chosen}` ({dev:.2f}); "
                + ("it is the default, tested as `pq`" if chosen == "pq" else f"tested once as `{chosen}_test`")
            )
    lines += ["", f"## Test ({study.metric}, ASG = `{asg_name}`)", "", *score_table(study, runs, asg_name)]
    if asg_name != "pq" and len(seed_runs(runs, "pq")) > 1:  # the default has repeats: it was once the choice
        title = "## Test of the default `pq`, for comparison (not the dev choice; its repeats ran while it was)"
        lines += ["", title, "", *score_table(study, runs, "pq")]
    lines += ["", f"Public reference (the paper's setting, not this one): {study.reference}"]
    lines += ["", "## Learning curve (held-out English dev)", "", *curve_table(study, runs), ""]
    lines += [*epoch_choice(study, runs), ""]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--study", choices=sorted(STUDIES), required=True)
    parser.add_argument("--data-dir", default="../shared/data")
    parser.add_argument("--e5-dir", default=".cache/e5-small")
    parser.add_argument("--only", default=None, help="comma-separated run names: start only these")
    parser.add_argument("--report-only", action="store_true", help="start no run; write the files from those done")
    args = parser.parse_args(argv)
    study = STUDIES[args.study]
    only = set() if args.report_only else set(args.only.split(",")) if args.only else None
    runs = run_all(study, args, only)
    # the command that makes every run (and, run again, writes these files)
    flags = {"--study": args.study, "--data-dir": args.data_dir, "--e5-dir": args.e5_dir}
    command = "python -m experiments.xnli_qa_e5 " + shlex.join(str(x) for pair in flags.items() for x in pair)
    out = RESULTS / study.name
    out.mkdir(parents=True, exist_ok=True)
    write_json_atomic(out / f"{study.name}.json", {"command": command, "chosen": choose(study, runs), "runs": runs})
    text = report(study, runs, command)
    write_text_atomic(out / f"{study.name}.md", text)
    print(text)


if __name__ == "__main__":
    main()
