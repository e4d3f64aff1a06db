"""Settings chosen on dev, then tested once over seeds: every method gets its own search of the same grid.

    python -m experiments.dev_selection --setting bc5cdr_minilm --data-dir ../shared/data [--methods pq,none]
    python -m experiments.dev_selection --setting bc5cdr_minilm --report-only

Each compressed method (pq, rq, sg, lowrank, and tiered at conf/asg/tiered.yaml's tiers; at 0.4% of the embedding
parameters) trains every point of optimizer lr x codebook lr scale (3 x 3; pq and rq at the default m=32, then m=8
and m=16 at their best lr and scale); the dense model every lr. A choice on the edge of what was tried for lr or the
scale also tries the next value beyond it (`LADDERS`, at most `MAX_EXTENSIONS` more points per method). Each run is
seed 42, validated on the dev split after each epoch (BC5CDR `devel`; English dev for zero-shot WikiANN, the
training language only) and not tested. The point and epoch count with the best dev score are chosen, and only that
configuration is tested, with seeds 1, 2 and 3 (the seed drives the k-means fit and the fine-tune). Every run is its
own `run.py` process in experiments/results/dev_selection_<setting>/runs/, whose metrics.json and .hydra/config.yaml
are committed; a finished run is reused, so the study spans sessions, and two processes with disjoint `--methods`
share the work. The report is written whole from the runs there are.

Equal stored bytes: each compressed method then runs at every `BYTES_BUDGETS` share of the float32 embedding's
bytes (`asg.budget_bytes_pct`, code table bit-packed as exported), with its dev-chosen lr, scale and epochs and the
same test seeds; pq and rq at the most sub-spaces that leave 64 centroids or more (`asg.methods.widest_m`, a
sizing rule, not a dev selection); pq and tiered also with float16 codebooks (`HALF_STORAGE`), and with
weighted k-means (`WEIGHTED`): by the unigram probabilities of a sentencepiece tokenizer, else by the training
split's token counts (`asg.row_weights`, the setting's `row_weights`). pareto_bytes.png
draws each fully-run cell's mean test score, as a share of the dense mean, against its bytes kept.
"""

from __future__ import annotations

import argparse
import itertools
import statistics
from collections.abc import Callable
from typing import Any

import torch
from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf

from asg.methods import get_method, widest_m
from asg.results import exported_bytes_pct, size_text, write_bytes_atomic, write_json_atomic, write_text_atomic
from experiments import languages, tables
from experiments.ablation import SETTINGS as ABLATION
from experiments.runner import RESULTS, ROOT, fit_version_notes, mean_std, read_run, run_config

CONF = ROOT / "conf"
SELECT_SEED = 42
TEST_SEEDS = (1, 2, 3)
MAX_EPOCHS = 2  # the dev curve's length; the chosen epoch count (1 or 2) is what the test runs train
LRS = (1e-4, 2e-4, 4e-4)  # optimizer lr (model.lr); 1e-4 is the models' default
SCALES = (1, 10, 30)  # asg.codebook_lr_scale; 10 is the default
SIZES = (8, 16)  # the other asg.m values pq and rq try, at their best (lr, scale) with m=32, the default
# where a choice lies on the edge of what was tried, the next value of its ladder is tried too (at most
# MAX_EXTENSIONS more points per method), so that no choice is an artefact of where the grid stopped
LADDERS = {
    "model.lr": (2.5e-5, 5e-5, 1e-4, 2e-4, 4e-4, 8e-4, 1.6e-3),
    "asg.codebook_lr_scale": (0.1, 0.3, 1, 3, 10, 30, 100),
}
MAX_EXTENSIONS = 4
BUDGET = ["asg.budget_pct=0.4"]
BYTES_BUDGETS = (0.5, 1, 2, 5)  # % of the float32 embedding's bytes, every stored tensor counted
# the methods that also run the byte budgets with half-precision codebooks (asg.storage_dtype), and their run-name tag
HALF_STORAGE = {"pq": "f16", "tiered": "f16"}
# pq and tiered also fit with weighted k-means (asg.row_weights, from the setting's `row_weights`): the weights'
# power is chosen on dev at WEIGHT_SELECT_BUDGET % of the bytes (seed 42, the dev curve, no test), then tested at
# every byte budget with the test seeds
WEIGHTED = ("pq", "tiered")
# asg.row_weights -> the weighted runs' name tag, their label in the report, and what the weights are
WEIGHTINGS = {
    "unigram": ("uw", "unigram-weighted fit", "the tokenizer's unigram probabilities"),
    "train": (
        "tw",
        "fit weighted by the training split's tokens",
        "the training split's token counts, add-one smoothed",
    ),
}
# tiered's weighted fits where the vocabulary is not in frequency order (the setting's `frequency_tiers`) are also
# tested with their tiers filled by those weights (asg.tier_order=frequency), at the power chosen for id tiers
ORDERED_TAG = "o"
WEIGHT_POWERS = (0.5, 1.0)
WEIGHT_SELECT_BUDGET = 1
SHORT = {"model.lr": "lr", "asg.m": "m", "asg.codebook_lr_scale": "cb"}  # run-name prefixes of the grid keys
# method -> (fixed overrides, grid axes): every compressed method searches lr x codebook lr scale (9 points); pq
# and rq then 2 more sub-space counts (11); the dense model searches lr (3)
GRIDS: dict[str, tuple[list[str], dict[str, tuple]]] = {
    "none": (["asg=none"], {"model.lr": LRS}),
    "pq": (["asg=pq", *BUDGET], {"asg.m": (32,), "model.lr": LRS, "asg.codebook_lr_scale": SCALES}),
    "rq": (["asg=rq", "asg.stages=2", *BUDGET], {"asg.m": (32,), "model.lr": LRS, "asg.codebook_lr_scale": SCALES}),
    "sg": (["asg=sg", *BUDGET], {"model.lr": LRS, "asg.codebook_lr_scale": SCALES}),
    "lowrank": (["asg=lowrank", *BUDGET], {"model.lr": LRS, "asg.codebook_lr_scale": SCALES}),
    "tiered": (["asg=tiered", *BUDGET], {"model.lr": LRS, "asg.codebook_lr_scale": SCALES}),
}


def _data(setting: str) -> list[str]:
    """The methods ablation's model, task and data overrides; not its lighter k-means (`asg.*`): fits run at the
    defaults here."""
    return [o for o in ABLATION[setting]["overrides"] if not o.startswith("asg.")]


SETTINGS: dict[str, dict] = {
    "bc5cdr_minilm": {
        "overrides": _data("bc5cdr_minilm"),
        "shape": ABLATION["bc5cdr_minilm"]["shape"],
        "describe": (
            "all-MiniLM-L6-v2 on BC5CDR: the first 1,000 training sentences; dev = the first 1,000 `devel` "
            "sentences, test = the first 1,000 test sentences"
        ),
        "row_weights": "train",  # WordPiece keeps no unigram scores: weights from the training split's tokens
        "frequency_tiers": True,  # nor are its ids in frequency order
        "dev_metric": "val/en/f1",
        "test_metric": "test/avg/f1",
    },
    "wikiann_e5": {
        "overrides": _data("wikiann_e5"),
        "shape": ABLATION["wikiann_e5"]["shape"],
        "describe": (
            "multilingual-e5-small (Q4-dequantized) on WikiANN: 2,000 English training sentences (at most 64 "
            "tokens); dev = the first 200 English dev sentences (zero-shot: no target-language data chooses "
            "anything), test = the first 200 test sentences of every shared language"
        ),
        "dev_metric": "val/en/f1",
        "test_metric": "test/avg/f1",
        "row_weights": "unigram",  # a sentencepiece unigram tokenizer: its pieces' probabilities
    },
}
# every run: no logger or checkpoint left behind (metrics.json holds the scores and the dev curve)
COMMON = ["trainer=cpu", "trainer.enable_progress_bar=false", "logger=none", "checkpoint.keep=none"]


def _points(method: str, axes: dict[str, tuple]) -> list[tuple[str, list[str]]]:
    fixed = GRIDS[method][0]
    points = []
    for values in itertools.product(*axes.values()):
        pairs = list(zip(axes, values, strict=True))
        name = method + "".join(f"_{SHORT[key]}{value:g}" for key, value in pairs)
        points.append((name, [*fixed, *(f"{key}={value}" for key, value in pairs)]))
    return points


def grid(method: str) -> list[tuple[str, list[str]]]:
    """(run name, overrides) of every point of a method's first grid."""
    return _points(method, GRIDS[method][1])


def sizes_grid(method: str, overrides: list[str]) -> list[tuple[str, list[str]]]:
    """pq's and rq's second grid: the other sub-space counts at the first grid's best lr and scale."""
    if "asg.m" not in GRIDS[method][1]:
        return []
    axes = {key: (_value(key, overrides),) for key in GRIDS[method][1]}
    return _points(method, axes | {"asg.m": SIZES})


def _value(key: str, overrides: list[str]) -> float | None:
    text = next((o.split("=", 1)[1] for o in overrides if o.startswith(f"{key}=")), None)
    return None if text is None else int(text) if text.isdigit() else float(text)


def beyond_edges(method: str, points: list[tuple[str, list[str]]], chosen: str) -> list[tuple[str, list[str]]]:
    """Points one ladder step past each edge of the tried values that the chosen point lies on."""
    overrides = dict(points)[chosen]
    axes = {key: (_value(key, overrides),) for key in GRIDS[method][1]}
    more = []
    for key, ladder in LADDERS.items():
        if key not in axes:
            continue
        tried = {_value(key, o) for _, o in points}
        value = axes[key][0]
        lower = [v for v in ladder if v < min(tried)]
        higher = [v for v in ladder if v > max(tried)]
        for step in ([lower[-1]] if value == min(tried) and lower else []) + (
            [higher[0]] if value == max(tried) and higher else []
        ):
            more += _points(method, axes | {key: (step,)})
    return [p for p in more if p[0] not in dict(points)]


def best(runs: dict[str, dict | None], names: list[str], metric: str) -> tuple[str, int, float] | None:
    """(run, epoch count, dev score) of the best dev point over the runs' curves; None until all have run."""
    if any(runs.get(n) is None for n in names):
        return None
    points = [(n, p["epoch"] + 1, p["scores"][metric]) for n in names for p in runs[n]["val_history"]]
    return max(points, key=lambda point: point[2])


def run_study(setting: str, args: argparse.Namespace) -> dict[str, dict]:
    """Every run's metrics (None where not run or failed) and each method's choice."""
    spec = SETTINGS[setting]
    runs_dir = (RESULTS / f"dev_selection_{setting}" / "runs").relative_to(ROOT)
    base = [*spec["overrides"], f"data.dir={args.data_dir}", *COMMON]
    if setting.endswith("_e5"):
        base.append(f"model.name_or_path={args.e5_dir}")
    started = set(args.methods.split(",")) if args.methods else set(GRIDS)
    if args.report_only:
        started = set()

    def run(name: str, overrides: list[str], start: bool) -> dict | None:
        return run_config(name, overrides, runs_dir) if start else read_run(ROOT / runs_dir / name)

    study: dict[str, dict] = {}
    for method in GRIDS:
        start = method in started
        points = grid(method)
        dev_only = [f"trainer.max_epochs={MAX_EPOCHS}", f"seed={SELECT_SEED}", "+trainer.limit_test_batches=0"]
        runs = {name: run(name, [*base, *o, *dev_only], start) for name, o in points}
        chosen = best(runs, [n for n, _ in points], spec["dev_metric"])
        if chosen is not None and (more := sizes_grid(method, dict(points)[chosen[0]])):
            points += more
            runs |= {name: run(name, [*base, *o, *dev_only], start) for name, o in more}
            chosen = best(runs, [n for n, _ in points], spec["dev_metric"])
        extensions = 0
        while chosen is not None and extensions < MAX_EXTENSIONS and (more := beyond_edges(method, points, chosen[0])):
            more = more[: MAX_EXTENSIONS - extensions]
            extensions += len(more)
            points += more
            runs |= {name: run(name, [*base, *o, *dev_only], start) for name, o in more}
            chosen = best(runs, [n for n, _ in points], spec["dev_metric"])
        tests = {}
        if chosen is not None:
            name, epochs, _ = chosen
            overrides = dict(points)[name]
            for seed in TEST_SEEDS:
                test_name = f"{name}_ep{epochs}_seed{seed}"
                tests[test_name] = run(
                    test_name, [*base, *overrides, f"trainer.max_epochs={epochs}", f"seed={seed}"], start
                )
        entry = {"grid": runs, "overrides": dict(points), "chosen": chosen, "tests": tests}
        # weighted fits first: a resumed study starts these before the older budgets' remaining runs
        if chosen is not None and method in WEIGHTED and spec.get("row_weights"):
            entry["weighted"] = weighted_runs(method, overrides, spec, lambda n, o, go=start: run(n, [*base, *o], go))
        # variant ("" for float32 codebooks) -> budget -> its seeds' runs ({} where none fits)
        at_bytes: dict[str, dict[str, dict[str, dict | None]]] = {}
        storages = {"float32": "", **({"float16": f"_{HALF_STORAGE[method]}"} if method in HALF_STORAGE else {})}
        for storage, tag in storages.items() if chosen is not None and method != "none" else ():
            variant = "" if storage == "float32" else f"{storage} codebooks"
            at_bytes[variant] = {}
            for budget in BYTES_BUDGETS:
                at_bytes[variant][f"{budget:g}"] = {}
                if (moved := bytes_overrides(method, overrides, budget, spec["shape"], storage)) is None:
                    continue
                for seed in TEST_SEEDS:
                    test_name = f"{method}{tag}_bytes{budget:g}_ep{epochs}_seed{seed}"
                    at_bytes[variant][f"{budget:g}"][test_name] = run(
                        test_name, [*base, *moved, f"trainer.max_epochs={epochs}", f"seed={seed}"], start
                    )
        if (power := entry.get("weighted", {}).get("power")) is not None:
            label = f"{WEIGHTINGS[spec['row_weights']][1]}, power {power:g}"
            at_bytes[label] = entry["weighted"].pop("tests")
            if "ordered" in entry["weighted"]:
                at_bytes[f"tiers by frequency, {label}"] = entry["weighted"].pop("ordered")
        study[method] = entry | {"bytes": at_bytes}
    return study


def weighted_runs(
    method: str, overrides: list[str], spec: dict, run: Callable[[str, list[str]], dict | None]
) -> dict[str, Any]:
    """A method's weighted fits (asg.row_weights from `spec`): the dev runs of each power at WEIGHT_SELECT_BUDGET %
    of the bytes, the chosen (run, epochs, dev score) and power, and the test seeds' runs at each of BYTES_BUDGETS."""
    dev_only = [f"trainer.max_epochs={MAX_EPOCHS}", f"seed={SELECT_SEED}", "+trainer.limit_test_batches=0"]
    shape = spec["shape"]

    def weighted(budget: float, power: float) -> list[str] | None:
        """None where no size of the method meets the budget."""
        if (moved := bytes_overrides(method, overrides, budget, shape)) is None:
            return None
        return [*moved, f"asg.row_weights={spec['row_weights']}", f"asg.row_weight_power={power}"]

    tag = WEIGHTINGS[spec["row_weights"]][0]
    names = {f"{method}_{tag}{p:g}_bytes{WEIGHT_SELECT_BUDGET:g}": p for p in WEIGHT_POWERS}
    grid = {name: run(name, [*weighted(WEIGHT_SELECT_BUDGET, p), *dev_only]) for name, p in names.items()}
    chosen = best(grid, list(grid), spec["dev_metric"])
    out = {"grid": grid, "chosen": chosen, "power": None if chosen is None else names[chosen[0]], "tests": {}}
    if chosen is None:
        return out
    epochs = chosen[1]
    orders = {"tests": ("", [])}
    if method == "tiered" and spec.get("frequency_tiers"):
        out["ordered"] = {}
        orders["ordered"] = (ORDERED_TAG, ["asg.tier_order=frequency"])
    for budget in BYTES_BUDGETS:
        moved = weighted(budget, out["power"])
        for key, (suffix, order) in orders.items():
            tests = out[key][f"{budget:g}"] = {}
            for seed in TEST_SEEDS if moved is not None else ():
                name = f"{method}_{tag}{out['power']:g}{suffix}_bytes{budget:g}_ep{epochs}_seed{seed}"
                tests[name] = run(name, [*moved, *order, f"trainer.max_epochs={epochs}", f"seed={seed}"])
    return out


def bytes_overrides(
    method: str, overrides: list[str], budget: float, shape: tuple[int, int], storage: str = "float32"
) -> list[str] | None:
    """A dev-chosen point's overrides moved from 0.4% of the parameters to `budget` % of the bytes, its floats
    stored in `storage`; None where no size of the method meets it (pq and rq: with 64 centroids or more; lowrank:
    within 5%, a rank at a time), which the run would refuse."""
    moved = [o for o in overrides if o not in BUDGET and not o.startswith("asg.m=")]
    moved += ["asg.budget_pct=null", f"asg.budget_bytes_pct={budget}"]
    if storage != "float32":  # the float32 runs leave the default, as the grid's runs do
        moved.append(f"asg.storage_dtype={storage}")
    stages, width = _value("asg.stages", overrides) or 1, getattr(torch, storage).itemsize
    try:
        if "asg.m" in GRIDS[method][1]:
            moved.append(f"asg.m={widest_m(budget, *shape, stages=stages, float_bytes=width)}")
        get_method(method).resolve(_asg_config(moved), *shape)
    except ValueError:
        return None
    return moved


def _asg_config(overrides: list[str]) -> dict:
    """The `asg` group a run with these overrides composes (its k left to the budget, as the run's model would)."""
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        cfg = compose("config", overrides=[o for o in overrides if o.startswith("asg")])
    return OmegaConf.to_container(cfg.asg) | {"k": None}


def grid_edges(points: dict[str, list[str]], chosen: str) -> list[str]:
    """The axes on whose lowest or highest tried value the chosen point lies: the optimum may be beyond them."""
    edges = []
    for key in ("model.lr", "asg.codebook_lr_scale", "asg.m"):
        tried = {v for o in points.values() if (v := _value(key, o)) is not None}
        value = _value(key, points[chosen])
        if len(tried) > 1 and value in (min(tried), max(tried)):
            edges.append(f"{key}={value:g} ({'highest' if value == max(tried) else 'lowest'} tried)")
    return edges


def _lowest_language(runs: list[dict], dense_runs: list[dict], test: str) -> str | None:
    """The runs' language with the smallest share of dense's mean score, e.g. "ru 67.5%"; None where the test metric
    is no average over several languages."""
    found = languages.languages(runs)  # the tested languages, then "avg"
    if not test.startswith("test/avg/") or len(found) < 3:
        return None
    metric = test.removeprefix("test/avg/")
    return languages.lowest(languages.relative_to_dense(runs, dense_runs, metric, found))


def equal_bytes(study: dict[str, dict], test: str, dense: float | None, row_weights: str | None = None) -> list[str]:
    """The equal-bytes section: every method at each budget, and the best mean test score per budget;
    `row_weights` is the setting's source of the weighted fits' weights."""
    lines = [
        "",
        "## Equal stored bytes (test)",
        "",
        "Each compressed method at `asg.budget_bytes_pct` (a share of the float32 V x d bytes; code table bit-packed",
        "as exported, every stored tensor counted) with the lr, codebook lr scale and epochs it chose on dev above",
        "(chosen at 0.4% of the parameters, not again at each budget); pq and rq at the most sub-spaces that leave",
        f"64 centroids or more. Seeds {', '.join(map(str, TEST_SEEDS))}. {', '.join(HALF_STORAGE)} also runs with",
        "float16 codebooks (`asg.storage_dtype=float16`: counted at 2 bytes, rounded before the test).",
        *(
            [
                f"{', '.join(WEIGHTED)} also fits with weighted k-means (`asg.row_weights={row_weights}`: "
                f"{WEIGHTINGS[row_weights][2]}), its power ({', '.join(f'{p:g}' for p in WEIGHT_POWERS)}) and",
                f"epochs chosen on dev at {WEIGHT_SELECT_BUDGET:g}% of the bytes (runs "
                f"`*_{WEIGHTINGS[row_weights][0]}*` in the grids below), then tested at every budget.",
            ]
            if row_weights and any("weighted" in entry for entry in study.values())
            else []
        ),
        "",
        "| bytes budget % | method | size | bytes kept % | params kept % | fit rel. error | test mean ± std | seeds "
        "| rel. % of dense mean |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    winners, pooled = [], {}  # pooled: the seeds of each (method, budget) cell
    dense_runs = [r for r in study.get("none", {}).get("tests", {}).values() if r]
    for budget in (f"{b:g}" for b in BYTES_BUDGETS):
        cells = []
        for method, entry in study.items():
            for variant, at_budget in entry.get("bytes", {}).items():
                if budget not in at_budget:  # a variant run at fewer budgets
                    continue
                label = f"{method}, {variant}" if variant else method
                done = [r for r in at_budget[budget].values() if r]
                if not at_budget[budget]:
                    lines.append(f"| {budget} | {label} | no size meets this budget | | | | | | |")
                    continue
                if not done:
                    lines.append(f"| {budget} | {label} | not run yet | | | | | | |")
                    continue
                scores = [r["scores"][test] for r in done]
                c = done[0]["compression"]
                error = statistics.mean(r["compression"]["rel_error"] for r in done)
                rel = f"{100 * statistics.mean(scores) / dense:.1f}" if dense else "—"
                lines.append(
                    f"| {budget} | {label} | {size_text(c)} | {exported_bytes_pct(c):.3f} | "
                    f"{c['params_kept_pct']:.3f} | {error:.3f} | {mean_std(scores)} | {len(scores)} | {rel} |"
                )
                if len(scores) == len(TEST_SEEDS):
                    cells.append((statistics.mean(scores), label, mean_std(scores), done))
                pooled[f"{label} at {budget}% of the bytes"] = done
        if cells:
            cells.sort(key=lambda cell: cell[:2], reverse=True)  # equal means: ordered by label, the same every run
            tie = len(cells) > 1 and cells[1][0] == cells[0][0]
            runner_up = f" ({'tied with' if tie else 'next'}: {cells[1][1]}, {cells[1][2]})" if len(cells) > 1 else ""
            lowest = _lowest_language(cells[0][3], dense_runs, test)
            lowest = f"; lowest language {lowest} of dense's" if lowest else ""
            winners.append(f"- {budget}% of the bytes: **{cells[0][1]}**, {cells[0][2]}{lowest}{runner_up}")
    if winners:
        lines += ["", "Best mean test score at each budget, among the methods with every seed run:", "", *winners]
    if pareto_points(study, test, dense):
        lines += ["", "Every cell with all its seeds, and the 0.4%-of-parameters tests, by bytes kept:", ""]
        lines.append("![test score as % of dense against bytes kept %](pareto_bytes.png)")
    return lines + fit_version_notes(pooled)


def report(setting: str, study: dict[str, dict], command: str) -> str:
    spec = SETTINGS[setting]
    dev, test = spec["dev_metric"], spec["test_metric"]
    lines = [
        f"# Dev selection: {setting}",
        "",
        f"Command: `{command}`",
        "",
        f"Setting: {spec['describe']}. Compressed methods at `asg.budget_pct=0.4`. Short CPU runs, one torch thread.",
        "",
        f"Each grid point trains {MAX_EPOCHS} epochs (seed {SELECT_SEED}) with `{dev}` after every epoch and no test;",
        "the best (point, epoch) is chosen, and that configuration, trained for the chosen number of epochs (its",
        f"learning-rate schedule fitted to that length), is tested with seeds {', '.join(map(str, TEST_SEEDS))}.",
        "Test scores choose nothing.",
        "",
        f"Grids: optimizer lr in {', '.join(f'{v:g}' for v in LRS)} x codebook lr scale in "
        f"{', '.join(f'{v:g}' for v in SCALES)} for every compressed method (pq and rq at m=32, then m in "
        f"{', '.join(map(str, SIZES))} at their best lr and scale); lr alone for dense. The k-means fit runs at the "
        "defaults (`asg.iters=25`, every row).",
        "",
        "## Test, dev-chosen settings",
        "",
    ]
    dense = [r["scores"][test] for r in study["none"]["tests"].values() if r]
    lines += [
        "| method | chosen (dev) | dev | test mean ± std | seeds | rel. % of dense mean | params kept % | bytes kept % "
        "| fit rel. error |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for method, entry in study.items():
        if entry["chosen"] is None:
            lines.append(f"| {method} | grid not finished | | | | | | | |")
            continue
        name, epochs, score = entry["chosen"]
        done = [r for r in entry["tests"].values() if r]
        scores = [r["scores"][test] for r in done]
        rel = f"{100 * statistics.mean(scores) / statistics.mean(dense):.1f}" if scores and dense else "—"
        c = done[0]["compression"] if done else None  # the size is the seeds'; the fit error their mean
        error = statistics.mean(r["compression"]["rel_error"] for r in done) if done else None
        kept = [f"{c['params_kept_pct']:.3f}", f"{exported_bytes_pct(c):.3f}", f"{error:.3f}"] if c else ["—"] * 3
        lines.append(
            f"| {method} | `{name}`, {epochs} epoch(s) | {score:.2f} | {mean_std(scores)} | {len(scores)} | {rel} | "
            + " | ".join(kept)
            + " |"
        )
    lines += fit_version_notes({method: [r for r in entry["tests"].values() if r] for method, entry in study.items()})
    edges = [
        f"- {method}: {', '.join(found)}"
        for method, entry in study.items()
        if entry["chosen"] and (found := grid_edges(entry["overrides"], entry["chosen"][0]))
    ]
    if edges:
        lines += ["", "Chosen on an edge of what was tried (a wider search may find a better dev score):", "", *edges]
    lines += equal_bytes(study, test, statistics.mean(dense) if dense else None, SETTINGS[setting].get("row_weights"))
    lines += ["", "## Grids (dev score after each epoch)", ""]
    for method, entry in study.items():
        lines += [f"### {method}", "", "| run | " + " | ".join(f"dev ep {e + 1}" for e in range(MAX_EPOCHS)) + " |"]
        lines.append("|---|" + "---|" * MAX_EPOCHS)
        for name, r in (entry["grid"] | entry.get("weighted", {}).get("grid", {})).items():
            curve = {p["epoch"]: p["scores"][dev] for p in (r or {}).get("val_history", [])}
            cells = [f"{curve[e]:.2f}" if e in curve else "—" for e in range(MAX_EPOCHS)]
            lines.append(f"| {name} | " + " | ".join(cells) + " |")
        lines.append("")
    return "\n".join(lines)


def tested_cells(study: dict[str, dict], test: str, dense: float | None) -> list[dict[str, Any]]:
    """Each tested configuration with every seed run: its method (and codebook storage), where it was sized, its
    seeds, bytes kept as exported, mean fit error, mean test score as % of `dense`, the dense mean, and its first
    seed's `asg` config; none without a dense score."""
    groups = []
    for method, entry in study.items() if dense else ():
        if method == "none":
            continue
        groups.append((method, "0.4% of the parameters", entry.get("tests", {})))
        for variant, budgets in entry.get("bytes", {}).items():
            label = f"{method}, {variant}" if variant else method
            groups += [(label, f"{budget}% of the bytes", runs) for budget, runs in budgets.items()]
    cells = []
    for label, size, runs in groups:
        if runs and all(runs.values()):
            done = list(runs.values())
            cells.append(
                {
                    "method": label,
                    "size": size,
                    "seeds": len(done),
                    "bytes_pct": exported_bytes_pct(done[0]["compression"]),
                    "rel_error": statistics.mean(r["compression"]["rel_error"] for r in done),
                    "score_pct": 100 * statistics.mean(r["scores"][test] for r in done) / dense,
                    "asg": done[0]["asg"],  # the first seed's config, to fit it again
                }
            )
    return cells


def pareto_points(study: dict[str, dict], test: str, dense: float | None) -> dict[str, list[tuple[float, float]]]:
    """Per method (and codebook storage), the (bytes kept %, score % of dense) of its `tested_cells`."""
    points: dict[str, list[tuple[float, float]]] = {}
    for cell in tested_cells(study, test, dense):
        points.setdefault(cell["method"], []).append((cell["bytes_pct"], cell["score_pct"]))
    return points


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--setting", choices=sorted(SETTINGS), required=True)
    parser.add_argument("--data-dir", default="../shared/data")
    parser.add_argument("--e5-dir", default=".cache/e5-small")
    parser.add_argument("--methods", default=None, help=f"comma-separated, of {','.join(GRIDS)}: start only these")
    parser.add_argument("--report-only", action="store_true", help="start no run; write the files from those done")
    args = parser.parse_args(argv)
    study = run_study(args.setting, args)
    out = RESULTS / f"dev_selection_{args.setting}"
    out.mkdir(parents=True, exist_ok=True)
    # the command that makes every run (and, run again, writes these files)
    command = f"python -m experiments.dev_selection --setting {args.setting} --data-dir {args.data_dir}"
    if args.setting.endswith("_e5"):
        command += f" --e5-dir {args.e5_dir}"
    chosen = {method: entry["chosen"] for method, entry in study.items()}
    write_json_atomic(out / "dev_selection.json", {"command": command, "chosen": chosen, "study": study})
    text = report(args.setting, study, command)
    write_text_atomic(out / "README.md", text)
    test = SETTINGS[args.setting]["test_metric"]
    dense = [r["scores"][test] for r in study["none"]["tests"].values() if r]
    if points := pareto_points(study, test, statistics.mean(dense) if dense else None):
        title = f"{args.setting}: dev-chosen settings, mean of {len(TEST_SEEDS)} seeds"
        write_bytes_atomic(out / "pareto_bytes.png", tables.pareto_png(points, [100.0], title))
    print(text)


if __name__ == "__main__":
    main()
