"""Result tables and Pareto plots from finished runs' metrics.json files; nothing is re-run.

    python -m experiments.tables outputs multirun --out experiments/results/tables [--no-plot]

Each RUN_DIR is a run directory or any folder above run directories (searched recursively for metrics.json).
A run is its `metrics.json` and the `.hydra/config.yaml` beside it.

Written to --out:
  main.{md,tex,csv}                 one row per model x task x transfer x method x setting: the primary test score
                                    (test/avg/<metric>), the dense base, score / base in %, kept parameters and
                                    bytes of the embedding, seeds
  lang_<task>_<model>.{md,tex,csv}  one per task x model, a table per transfer: rows = test languages (+ avg), a
                                    column per method and setting, and score / base in % per language where a base
                                    exists
  pareto_<task>_<model>.png         relative score against kept bytes (log x), one line per method; only where a
                                    base and at least one compressed run exist (skip with --no-plot)

Runs are pooled as seeds only when their whole configuration is the same but for IGNORED_KEYS, the keys that cannot
change a result (the seed, where and how a run is recorded, display text), compressed runs only with the same
k-means version (`asg.fit_version`: recorded, or read from the run's commit by `asg.results.fit_version`; `—` where
unknown); a dense base (`asg.method=none`) must match its rows in everything but `asg`, else the base is missing. A
row's setting tells it apart from the other rows of its model x task x transfer: m / k / rank from the fitted
compression's stats (else from `asg`), `asg.budget_pct` when set, the `asg` keys that differ between that method's
runs, then each other config key that differs between the runs (e.g. `m=8 k=1024 asg.codebook_lr_scale=1
optimizer.lr=5e-05`; `key=—` where a run lacks the key). Runs that differ only in lr are therefore two rows, and
never each other's base.

Repeated configurations (seeds) are shown as mean ± sample standard deviation; with a single run the ± part is
left out. Relative % is the ratio of the means. A missing value is `—` in markdown, `---` in LaTeX and an empty
field in CSV; it is never filled in. Run notes (e.g. stand-in training data) are listed under the tables, and so
are caveats: runs of one cell or its base evaluated on different languages or trained on different sample counts,
and seeds that repeat within a cell. A run that cannot be read (e.g. without `.hydra/config.yaml`) is skipped
with a warning, and listed under the main table.
"""

from __future__ import annotations

import argparse
import io
import json
import re
import sys
from collections.abc import Iterable, Mapping, Sequence
from itertools import cycle
from pathlib import Path
from typing import Any

import pandas as pd
import yaml
from omegaconf import OmegaConf
from omegaconf.errors import OmegaConfBaseException

from asg.results import exported_bytes_pct, fit_version, flatten, write_bytes_atomic, write_text_atomic
from experiments.runner import RESULTS

DEFAULT_OUT = RESULTS / "tables"
BASE_METHOD = "none"
# Keys naming a compression's size; taken from the fitted compression's stats (what was built), else from `asg`.
STRUCTURE_KEYS = ("m", "k", "rank")
BUDGET_KEYS = ("budget_pct", "budget_bytes_pct")  # a run sized by a budget shows it next to its size
# Config keys (with the keys below them) that cannot change a result. `callbacks` is not one: a callback such as
# EarlyStopping changes training. `data.dir` becomes where the data came from: the Hub or a local copy.
IGNORED_KEYS = (
    *("seed", "asg.seed"),  # what a cell pools over (asg.seed is ${seed})
    *("hydra", "paths", "logger", "resume", "resume_sweep", "checkpoint"),  # how a run is recorded or continued
    *("trainer.default_root_dir", "trainer.enable_checkpointing", "trainer.enable_progress_bar"),
    *("trainer.enable_model_summary", "trainer.log_every_n_steps"),
    *("data.num_workers", "asg.progress"),  # loader processes, console output
    *("asg.cache_dir", "model.name_or_path", "model.local_only"),  # where files are, whether the Hub may be asked
    *("model.label", "model.hint", "task.label"),  # display text
    "model.activation_checkpointing",  # recomputes activations: the same training step (tests/test_pipeline.py)
)
# config keys added after runs were made, with the value the older runs had: without one, such a run still
# pools with newer runs at that value
LATER_KEYS = {"asg.storage_dtype": "float32", "asg.row_weights": "null", "asg.row_weight_power": "0.5"}
FAMILY = ["task", "model", "transfer", "metric"]  # rows that are compared with each other and share a base
UNSET = "—"  # a config key a run does not have
MISSING = {"md": "—", "tex": "---", "csv": ""}
SCORE_DECIMALS, KEPT_DECIMALS = 2, 3


# ---------------------------------------------------------------- reading


def find_metrics(dirs: Iterable[str | Path]) -> list[Path]:
    """Every metrics.json at or below the given folders, sorted, each once."""
    found: set[Path] = set()
    for d in map(Path, dirs):
        if (d / "metrics.json").is_file():
            found.add((d / "metrics.json").resolve())
        if d.is_dir():
            found.update(p.resolve() for p in d.rglob("metrics.json") if p.is_file())
    return sorted(found)


def _ignored(key: str) -> bool:
    return any(key == k or key.startswith(f"{k}.") for k in IGNORED_KEYS)


def _value_text(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:g}" if float(f"{value:g}") == value else repr(value)  # short unless that drops digits
    return value if isinstance(value, str) else json.dumps(value, sort_keys=True)


def _comparable(cfg: Any, metrics: Mapping[str, Any], method: str) -> dict[str, str]:
    """The resolved config as {dotted key: value text}, without IGNORED_KEYS (and without `asg` for a dense run).

    Hydra saves the config unresolved, so `asg` and the data source come from what metrics.json recorded at run
    time; ignored keys are blanked before resolving, so that their copies by interpolation (e.g.
    older runs' task.datamodule.num_workers: ${data.num_workers}) compare equal too.
    """
    if metrics.get("asg"):
        OmegaConf.update(cfg, "asg", metrics["asg"], merge=True)
    data = metrics.get("data")  # which folder held a local copy cannot change a result; the Hub instead can
    OmegaConf.update(cfg, "data.dir", data if data in (None, "hub") else "local copy")
    for key in filter(_ignored, flatten(OmegaConf.to_container(cfg))):
        OmegaConf.update(cfg, key, None)
    if method == BASE_METHOD:
        later = {}
    else:  # an unknown fit version stays apart from every known one
        version = fit_version(metrics)
        later = LATER_KEYS | {"asg.fit_version": UNSET if version is None else _value_text(version)}
    return later | {
        key: _value_text(value)
        for key, value in flatten(OmegaConf.to_container(cfg, resolve=True)).items()
        if not _ignored(key) and not (method == BASE_METHOD and key.startswith("asg."))
    }


def load_run(path: Path) -> dict[str, Any]:
    """One run from its metrics.json and `.hydra/config.yaml` (which older files' `seed` and `metric` come from)."""
    metrics = json.loads(path.read_text(encoding="utf-8"))
    config_path = path.parent / ".hydra" / "config.yaml"
    if not config_path.is_file():
        raise ValueError(f"{path}: no {config_path}, so nothing tells which runs are the same experiment")
    cfg = OmegaConf.load(config_path)

    def pick(value: Any, dotted: str) -> Any:
        return value if value is not None else OmegaConf.select(cfg, dotted, throw_on_resolution_failure=False)

    metric = pick(metrics.get("metric"), "task.metric")
    if metric is None:
        raise ValueError(f"{path}: no `metric` in metrics.json and no task.metric in {config_path}")
    compression = metrics.get("compression") or {}
    method = compression.get("method") or (metrics.get("asg") or {}).get("method")
    if method is None:
        raise ValueError(f"{path}: no compression.method or asg.method")
    asg = {} if method == BASE_METHOD else dict(metrics.get("asg") or {})
    source = compression if any(key in compression for key in STRUCTURE_KEYS) else asg
    size = [(key, source[key]) for key in STRUCTURE_KEYS if source.get(key) is not None]
    size += [(key, asg[key]) for key in BUDGET_KEYS if asg.get(key) is not None]
    transfer = {k: pick((metrics.get("transfer") or {}).get(k), f"transfer.{k}") for k in ("name", "train_lang")}
    transfer_text = str(transfer["name"] or "unknown") + (
        f" ({transfer['train_lang']})" if transfer["train_lang"] else ""
    )
    seed = pick(metrics.get("seed"), "seed")
    pattern = re.compile(rf"test/([^/]+)/{re.escape(metric)}")
    scores = {m.group(1): float(v) for k, v in (metrics.get("scores") or {}).items() if (m := pattern.fullmatch(k))}
    return {
        "path": str(path),
        "task": metrics["task"],
        "model": metrics["model"],
        "model_label": pick(metrics.get("model_label"), "model.label") or metrics["model"],
        "transfer": transfer_text,
        "metric": metric,
        "method": method,
        "seed": int(seed) if seed is not None else None,
        "scores": scores,  # language (and avg) -> test score
        "languages": ", ".join(sorted(lang for lang in scores if lang != "avg")),
        "params_kept_pct": compression.get("params_kept_pct"),
        "bytes_kept_pct": exported_bytes_pct(compression),  # as shipped: code tables bit-packed
        "rel_error": compression.get("rel_error"),  # the fit's ||E - Ê|| / ||E||, beside the score it is not
        "train_samples": metrics.get("train_samples"),
        "notes": tuple(metrics.get("notes") or ()),
        "size": [(key, _value_text(value)) for key, value in size],
        "config": _comparable(cfg, metrics, method),  # last: it rewrites cfg
    }


# ---------------------------------------------------------------- grouping


def _order_value(text: str) -> tuple:
    # numbers in numeric order, anything else after them by its text
    try:
        return (0, float(text), "")
    except ValueError:
        return (1, 0, text)


def _items_text(items: Iterable[tuple[str, str]]) -> str:
    return " ".join(f"{key}={value}" for key, value in items)


def group(records: list[dict[str, Any]]) -> pd.DataFrame:
    """The runs, each with its `setting`, `cell` (numbered in table order; the seeds of one configuration share a
    cell) and `base` (its dense base's cell, missing without one)."""
    runs = pd.DataFrame(records, dtype=object)
    config = pd.DataFrame(list(runs.config), index=runs.index).fillna(UNSET).sort_index(axis=1)
    family = [runs[c] for c in FAMILY]
    is_asg = config.columns.str.startswith("asg.")
    # asg keys that differ between one method's runs, other keys that differ between any runs of the family
    varies = pd.concat(
        [
            config.loc[:, is_asg].groupby([*family, runs.method]).transform("nunique") > 1,
            config.loc[:, ~is_asg].groupby(family).transform("nunique") > 1,
        ],
        axis=1,
    ).drop(columns=[f"asg.{key}" for key in (*BUDGET_KEYS, *STRUCTURE_KEYS)], errors="ignore")  # in the size
    varying = [[(key, config.at[i, key]) for key in varies.columns[varies.loc[i]]] for i in runs.index]
    runs["experiment"] = [_items_text((k, v) for k, v in kv if not k.startswith("asg.")) for kv in varying]
    runs["setting"] = [
        f"{_items_text(size) or 'dense'} {_items_text(kv)}".strip()
        for size, kv in zip(runs["size"], varying, strict=True)
    ]
    order = [tuple((k, *_order_value(v)) for k, v in size + kv) for size, kv in zip(runs["size"], varying, strict=True)]
    keys = [
        (r.task, r.model_label, r.model, r.transfer, r.metric, r.method != BASE_METHOD, r.method, o, r.setting)
        for r, o in zip(runs.itertuples(), order, strict=True)
    ]
    number = {key: i for i, key in enumerate(sorted(set(keys)))}
    runs["cell"] = [number[key] for key in keys]
    bases = runs.loc[runs.method == BASE_METHOD, [*FAMILY, "experiment", "cell"]]
    bases = bases.drop_duplicates([*FAMILY, "experiment"]).rename(columns={"cell": "base"})
    runs = runs.merge(bases, on=[*FAMILY, "experiment"], how="left")
    return runs.sort_values(["cell", "seed", "path"]).reset_index(drop=True)


def _distinct(values: pd.Series) -> tuple[str, ...]:
    return tuple(sorted(set(map(str, values))))


def cell_table(runs: pd.DataFrame) -> pd.DataFrame:
    """One row per cell, in table order: what its runs share, their mean kept %, seeds, notes and caveats."""
    scored_seed = runs.seed.where(runs.scores.map(lambda s: "avg" in s))
    cells = (
        runs.assign(scored_seed=scored_seed)
        .groupby("cell")
        .agg(
            **{c: (c, "first") for c in [*FAMILY, "model_label", "method", "setting", "base"]},
            params_kept_pct=("params_kept_pct", lambda s: s.astype(float).mean()),
            bytes_kept_pct=("bytes_kept_pct", lambda s: s.astype(float).mean()),
            rel_error=("rel_error", lambda s: s.astype(float).mean()),
            n_runs=("path", "size"),
            seeds=("scored_seed", lambda s: " ".join(map(str, s.dropna())) or None),
            unseeded=("seed", lambda s: s.isna().any()),
            repeated=("seed", lambda s: tuple(sorted(k for k, n in s.dropna().value_counts().items() if n > 1))),
            notes=("notes", lambda s: tuple(sorted(set().union(*s)))),
            languages=("languages", _distinct),
            train_samples=("train_samples", _distinct),
        )
    )
    base = cells.method == BASE_METHOD
    cells["label"] = (cells.method + " (" + cells.setting + ")").where(base, cells.method + " " + cells.setting)
    cells["where"] = cells.task + " / " + cells.model_label + " / " + cells.transfer
    cells["caveats"] = [_caveats(cell, cells) for cell in cells.itertuples()]
    return cells


def _caveats(cell: Any, cells: pd.DataFrame) -> list[str]:
    """Where the cell's runs, or the cell and its base, disagree on what was evaluated or trained on."""
    found = []
    base = None if pd.isna(cell.base) or cell.base == cell.Index else cells.loc[cell.base]
    for column, what in (("languages", "evaluated languages"), ("train_samples", "training samples")):
        own = getattr(cell, column)
        if len(own) > 1:
            found.append(f"{cell.where}: {cell.label} runs differ in {what} ({'; '.join(own)})")
        elif base is not None and len(base[column]) == 1 and base[column] != own:
            found.append(f"{cell.where}: {cell.label} differs from its base in {what} ({own[0]} vs {base[column][0]})")
    if cell.repeated:
        found.append(f"{cell.where}: {cell.label} repeats seed(s) {', '.join(map(str, cell.repeated))}")
    if cell.unseeded:
        found.append(f"{cell.where}: {cell.label} has run(s) with no recorded seed")
    return found


def statistics(runs: pd.DataFrame, cells: pd.DataFrame) -> pd.DataFrame:
    """Per cell and language (avg last): number, mean and sample std of the runs' scores, the base's mean and
    std, and the mean as % of the base's mean."""
    scores = pd.DataFrame(
        [(r.cell, lang, score) for r in runs.itertuples() for lang, score in r.scores.items()],
        columns=["cell", "lang", "score"],
    )
    languages = [*sorted(set(scores.lang) - {"avg"}), "avg"]
    grid = pd.MultiIndex.from_product([cells.index, languages], names=["cell", "lang"])
    stats = scores.groupby(["cell", "lang"]).score.agg(n="count", mean="mean", std="std").reindex(grid)
    stats["n"] = stats.n.fillna(0).astype(int)
    base = stats[["mean", "std"]].add_prefix("base_")
    stats = stats.join(cells.base, on="cell").join(base, on=["base", "lang"]).drop(columns="base")
    stats["rel"] = 100 * stats["mean"] / stats.base_mean.where(stats.base_mean != 0)
    return stats


# ---------------------------------------------------------------- rendering


def _num(value: Any, decimals: int = SCORE_DECIMALS) -> str | None:
    return None if pd.isna(value) else f"{value:.{decimals}f}"


def _stat_text(mean: float, std: float, n: int | None = None, full_n: int | None = None) -> str | None:
    if pd.isna(mean):
        return None
    text = _num(mean) + ("" if pd.isna(std) else f" ± {_num(std)}")
    return text + (f" (n={n})" if full_n is not None and n < full_n else "")  # fewer of the column's runs had it


def to_markdown(table: pd.DataFrame, left: int) -> str:
    """`left` columns left-aligned, the others right-aligned."""

    def row(cells: Iterable[Any]) -> str:
        return "| " + " | ".join(MISSING["md"] if pd.isna(c) else c.replace("|", "\\|") for c in cells) + " |"

    rule = "|" + "|".join(["---"] * left + ["---:"] * (table.shape[1] - left)) + "|"
    return "\n".join([row(table.columns), rule, *map(row, table.itertuples(index=False))]) + "\n"


_TEX_SPECIAL = {c: "\\" + c for c in "&%$#_{}"} | {
    "\\": r"\textbackslash{}",
    "~": r"\textasciitilde{}",
    "^": r"\textasciicircum{}",
    "±": r"$\pm$",
    "—": "---",
    "×": r"$\times$",
}


def tex_escape(text: str) -> str:
    return "".join(_TEX_SPECIAL.get(c, c) for c in text)


def to_tex(table: pd.DataFrame, left: int) -> str:
    def row(cells: Iterable[Any]) -> str:
        return " & ".join(MISSING["tex"] if pd.isna(c) else tex_escape(c) for c in cells) + r" \\"

    align = "l" * left + "r" * (table.shape[1] - left)
    lines = [rf"\begin{{tabular}}{{{align}}}", r"\toprule", row(table.columns), r"\midrule"]
    return "\n".join([*lines, *map(row, table.itertuples(index=False)), r"\bottomrule", r"\end{tabular}"]) + "\n"


def to_csv(table: pd.DataFrame) -> str:
    return table.to_csv(index=False, lineterminator="\n")


def _md_list(title: str, items: Sequence[str]) -> str:
    return f"## {title}\n\n" + "".join(f"- {item}\n" for item in items) if items else ""


def _tex_list(title: str, items: Sequence[str]) -> str:
    if not items:
        return ""
    body = "".join(f"\\item {tex_escape(item)}\n" for item in items)
    return f"{{\\footnotesize {title}:\n\\begin{{itemize}}\n{body}\\end{{itemize}}}}\n"


def _document(blocks: Iterable[str]) -> str:
    """Non-empty blocks separated by one blank line."""
    return "\n\n".join(b.strip("\n") for b in blocks if b) + "\n"


def notes(cells: pd.DataFrame) -> list[str]:
    """Each distinct run note once, followed by where it applies."""
    rows = cells.explode("notes").dropna(subset=["notes"])
    places = (rows.task + " / " + rows.model_label).groupby(rows.notes).agg(lambda s: "; ".join(sorted(set(s))))
    return [f"{note} ({where})" for note, where in places.items()]


def caveats(cells: pd.DataFrame) -> list[str]:
    return [c for found in cells.caveats for c in found]


# ---------------------------------------------------------------- tables


# header in main.{md,tex} -> the column of main.csv it shows (score and base: mean ± std)
MAIN_COLUMNS = {
    "model": "model_label", "task": "task", "transfer": "transfer", "metric": "metric", "method": "method",
    "setting": "setting", "score": "score", "base": "base", "rel. %": "relative_pct",
    "params kept %": "params_kept_pct", "bytes kept %": "bytes_kept_pct", "fit rel. error": "rel_error",
    "n seeds": "n_seeds",
}  # fmt: skip


def main_tables(cells: pd.DataFrame, stats: pd.DataFrame) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(display table for md / tex, data table for csv) with one row per cell."""
    t = cells.join(stats.xs("avg", level="lang"))
    data = t[["model", "model_label", "task", "transfer", "metric", "method", "setting"]].assign(
        score_mean=t["mean"].map(_num),
        score_std=t["std"].map(_num),
        base_mean=t.base_mean.map(_num),
        base_std=t.base_std.map(_num),
        relative_pct=t.rel.map(_num),
        params_kept_pct=t.params_kept_pct.map(lambda v: _num(v, KEPT_DECIMALS)),
        bytes_kept_pct=t.bytes_kept_pct.map(lambda v: _num(v, KEPT_DECIMALS)),
        rel_error=t.rel_error.map(lambda v: _num(v, 4)),
        n_seeds=t.n.map(str),
        seeds=t.seeds,
        notes=t.notes.map(lambda notes: " | ".join(notes) or None),
    )
    display = data.assign(
        score=[_stat_text(m, s) for m, s in zip(t["mean"], t["std"], strict=True)],
        base=[_stat_text(m, s) for m, s in zip(t.base_mean, t.base_std, strict=True)],
    )
    return display[list(MAIN_COLUMNS.values())].set_axis(list(MAIN_COLUMNS), axis=1), data


def language_tables(view: pd.DataFrame, stats: pd.DataFrame) -> tuple[pd.DataFrame, pd.DataFrame]:
    """One transfer x metric of one task x model: (display table, data table); rows are languages, then avg."""
    counts = stats.n.loc[view.index].groupby(level="lang", sort=False).sum()
    languages = [lang for lang, n in counts.items() if n and lang != "avg"] + ["avg"]
    shown: dict[str, list] = {"language": languages}
    data: dict[str, list] = {"transfer": [view.transfer.iat[0]] * len(languages)}
    data |= {"metric": [view.metric.iat[0]] * len(languages), "language": languages}
    for c in view.itertuples():
        rows = stats.loc[c.Index].loc[languages]
        shown[c.label] = [_stat_text(r.mean, r.std, r.n, c.n_runs) for r in rows.itertuples()]
        data[f"{c.label} mean"] = rows["mean"].map(_num).tolist()
        data[f"{c.label} std"] = rows["std"].map(_num).tolist()
        data[f"{c.label} n"] = rows.n.map(str).tolist()
        if not pd.isna(c.base) and c.base != c.Index:
            shown[f"{c.label} rel. %"] = data[f"{c.label} relative_pct"] = rows.rel.map(_num).tolist()
    return pd.DataFrame(shown), pd.DataFrame(data)


# ---------------------------------------------------------------- plot


def pareto_plot(cells: pd.DataFrame, stats: pd.DataFrame, title: str) -> bytes | None:
    """PNG of relative score against kept bytes (log x), one line per method; None without a base or a point."""
    points: dict[str, list[tuple[float, float]]] = {}
    several_transfers, several_metrics = cells.transfer.nunique() > 1, cells.metric.nunique() > 1
    for c in cells[cells.method != BASE_METHOD].itertuples():
        x, y = c.bytes_kept_pct, stats.rel[c.Index, "avg"]
        if not pd.isna(y) and x > 0:  # y is missing without a base
            name = ", ".join([c.method] + [c.transfer] * several_transfers + [c.metric] * several_metrics)
            points.setdefault(name, []).append((x, y))
    if not points:
        return None
    bases = cells[cells.index.isin(cells.base)].bytes_kept_pct
    base_x = [x for c, x in bases.items() if stats.n[c, "avg"] and x > 0]  # NaN is not > 0
    return pareto_png(points, base_x, title)


def pareto_png(points: Mapping[str, Sequence[tuple[float, float]]], base_x: Sequence[float], title: str) -> bytes:
    """PNG of (kept bytes %, relative score %) points, log x, one line per name; the dense bases as stars at 100."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure
    from matplotlib.ticker import FuncFormatter, LogLocator, NullFormatter

    fig = Figure(figsize=(6, 4), dpi=120)
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    for marker, (name, xy) in zip(cycle("osD^vP*X"), sorted(points.items())):
        xs, ys = zip(*sorted(xy), strict=True)
        ax.plot(xs, ys, marker=marker, label=name)
    ax.axhline(100, color="grey", linestyle="--", linewidth=1)
    if base_x:
        ax.plot(base_x, [100] * len(base_x), "k*", markersize=10, linestyle="none", label="none (dense base)")
    ax.set_xscale("log")
    # plain numbers at 1-2-5 steps read better than 10^x on a few decades
    ax.xaxis.set_major_locator(LogLocator(subs=(1, 2, 5)))
    ax.xaxis.set_major_formatter(FuncFormatter(lambda value, _: f"{value:g}"))
    ax.xaxis.set_minor_formatter(NullFormatter())
    ax.set_xlabel("kept embedding bytes (%)")
    ax.set_ylabel("score / dense base (%)")
    ax.set_title(title)
    ax.grid(True, which="both", alpha=0.3)
    ax.legend()
    fig.tight_layout()
    out = io.BytesIO()
    fig.savefig(out, format="png")
    return out.getvalue()


# ---------------------------------------------------------------- command


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "-", text).strip("-")


MAIN_INTRO = (
    "Scores: `test/avg/<metric>` in %, mean ± sample std over seeds (± only with 2 or more runs). "
    "rel. % = score / base × 100, the base being the dense (`asg.method=none`) run whose configuration is the row's "
    "but for `asg`. The setting is the compression's size, then each config key that tells the row apart from the "
    "other rows of its model, task and transfer. Kept % are of the input embedding's parameters and bytes, the "
    "bytes as exported (code tables bit-packed at ceil(log2 k) bits per code). "
    "— = missing."
)
LANG_INTRO = (
    "Scores: `test/<language>/<metric>` in % (avg: each run's own `test/avg/<metric>`), mean ± sample std over "
    "seeds (± only with 2 or more runs; (n=...) where fewer of the column's runs have the language). "
    "rel. % = score / base × 100, the base being the dense (`asg.method=none`) run whose configuration is the "
    "column's but for `asg`. — = missing."
)


def write_tables(runs: pd.DataFrame, out: Path, *, skipped: Sequence[str] = (), plot: bool = True) -> list[Path]:
    """Every table (and plot) for these grouped runs into `out`; returns the written paths.

    `skipped` names the metrics.json files that could not be read, listed under the main table.
    """
    cells = cell_table(runs)
    stats = statistics(runs, cells)
    built = f"Built by `python -m experiments.tables` from {len(runs)} metrics.json file(s)."
    display, data = main_tables(cells, stats)
    extra_md = [_md_list("Notes", notes(cells)), _md_list("Caveats", caveats(cells)), _md_list("Skipped", skipped)]
    extra_tex = [_tex_list("Notes", notes(cells)), _tex_list("Caveats", caveats(cells)), _tex_list("Skipped", skipped)]
    written = [
        write_text_atomic(
            out / "main.md", _document(["# Results", built, MAIN_INTRO, to_markdown(display, 6), *extra_md])
        ),
        write_text_atomic(out / "main.tex", _document([to_tex(display, 6), *extra_tex])),
        write_text_atomic(out / "main.csv", to_csv(data)),
    ]

    for (task, model), view_cells in cells.groupby(["task", "model"], sort=False):
        label = view_cells.model_label.iat[0]
        stem = f"{_slug(task)}_{_slug(model)}"
        md, tex, csv_tables = [f"# {task}: {label}, test score per language", built, LANG_INTRO], [], []
        for (transfer, metric), view in view_cells.groupby(["transfer", "metric"], sort=False):
            shown, raw = language_tables(view, stats)
            md += [f"## {transfer}, test {metric}", to_markdown(shown, 1)]
            tex.append(f"% {tex_escape(f'{task}, {label}, {transfer}, test {metric}')}\n{to_tex(shown, 1)}")
            csv_tables.append(raw)
        md += [_md_list("Notes", notes(view_cells)), _md_list("Caveats", caveats(view_cells))]
        tex += [_tex_list("Notes", notes(view_cells)), _tex_list("Caveats", caveats(view_cells))]
        written.append(write_text_atomic(out / f"lang_{stem}.md", _document(md)))
        written.append(write_text_atomic(out / f"lang_{stem}.tex", _document(tex)))
        written.append(write_text_atomic(out / f"lang_{stem}.csv", to_csv(pd.concat(csv_tables, sort=False))))
        png = pareto_plot(view_cells, stats, f"{label} on {task}") if plot else None
        if png is not None:
            written.append(write_bytes_atomic(out / f"pareto_{stem}.png", png))
    return written


def main(argv: list[str] | None = None) -> list[Path]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run_dirs", nargs="+", metavar="RUN_DIR", help="run directories or folders above them")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help=f"output folder (default {DEFAULT_OUT})")
    parser.add_argument("--no-plot", action="store_true", help="skip the Pareto PNGs")
    args = parser.parse_args(argv)

    absent = [d for d in args.run_dirs if not Path(d).exists()]
    if absent:  # a mistyped folder would otherwise drop its runs from the tables unnoticed
        raise SystemExit(f"tables: no such folder: {', '.join(absent)}")
    paths = find_metrics(args.run_dirs)
    if not paths:
        raise SystemExit(f"tables: no metrics.json found under {', '.join(args.run_dirs)}")
    records, skipped = [], []
    for path in paths:
        try:
            records.append(load_run(path))
        except (ValueError, KeyError, TypeError, yaml.YAMLError, OmegaConfBaseException) as err:
            # one unreadable run (e.g. an old file without `metric`) must not hide the others, nor vanish silently
            skipped.append(f"{path}: {err!r}")
            print(f"tables: skipping {path}: {err!r}", file=sys.stderr)
    if not records:
        raise SystemExit(f"tables: none of the {len(paths)} metrics.json file(s) could be read")
    written = write_tables(group(records), args.out, skipped=skipped, plot=not args.no_plot)
    print(f"read {len(records)} run(s), skipped {len(skipped)}; wrote {len(written)} file(s) to {args.out}:")
    for path in written:
        print(f"  {path}")
    return written


if __name__ == "__main__":
    main()
