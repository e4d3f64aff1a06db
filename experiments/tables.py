"""Result tables and Pareto plots from finished runs' metrics.json files; nothing is re-run.

    python -m experiments.tables outputs multirun --out experiments/results/tables [--no-plot]

Each RUN_DIR is a run directory or any folder above run directories (searched recursively for metrics.json).
Only each run's `metrics.json` is read, and its `.hydra/config.yaml` for what older files lack (`seed`, `metric`).

Written to --out:
  main.{md,tex,csv}                 one row per model x task x transfer x method x setting: the primary test score
                                    (test/avg/<metric>), the dense base (`asg.method=none`, same model x task x
                                    transfer), score / base in %, kept parameters and bytes of the embedding, seeds
  lang_<task>_<model>.{md,tex,csv}  one per task x model, a table per transfer: rows = test languages (+ avg), a
                                    column per method and setting, and score / base in % per language where a base
                                    exists
  pareto_<task>_<model>.png         relative score against kept bytes (log x), one line per method; only where a
                                    base and at least one compressed run exist (skip with --no-plot)

Repeated configurations (seeds) are shown as mean ± sample standard deviation; with a single run the ± part is
left out. Relative % is the ratio of the means. A missing value is `—` in markdown, `---` in LaTeX and an empty
field in CSV; it is never filled in. Run notes (e.g. stand-in training data) are listed under the tables, and so
are caveats found while grouping: runs of one cell or its base evaluated on different languages or trained on
different sample counts, and seeds that repeat within a cell.

A row's setting is m / k / rank from the fitted compression's stats (else from the `asg` config), `asg.budget_pct`
when set, and every other `asg` key that differs between runs of the same model x task x transfer x method (e.g.
codebook_lr_scale), so different configurations are never pooled as seeds. A metrics.json that cannot be read
(e.g. without `metric` and without a config) is skipped with a warning, and listed under the main table.
"""

from __future__ import annotations

import argparse
import csv
import io
import json
import re
import statistics
import sys
from collections import Counter, defaultdict
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from itertools import cycle
from pathlib import Path
from typing import Any

import yaml

from asg.results import write_bytes_atomic, write_text_atomic
from experiments.runner import RESULTS

DEFAULT_OUT = RESULTS / "tables"
BASE_METHOD = "none"
# Keys naming a compression's size; taken from the fitted compression's stats (what was built), else from `asg`.
STRUCTURE_KEYS = ("m", "k", "rank")
# asg keys that cannot change a result; any other asg key that differs between runs splits them into rows.
IGNORED_ASG_KEYS = {"method", "seed", "progress", "cache_dir"}
MISSING = {"md": "—", "tex": "---", "csv": ""}
SCORE_DECIMALS, KEPT_DECIMALS = 2, 3


@dataclass(frozen=True)
class Run:
    path: Path
    task: str
    model: str
    model_label: str
    transfer: str
    metric: str
    method: str
    seed: int | None
    scores: Mapping[str, float]
    params_kept_pct: float | None
    bytes_kept_pct: float | None
    train_samples: int | None
    notes: tuple[str, ...]
    structure: tuple[tuple[str, Any], ...]  # the size keys, e.g. (("m", 8), ("k", 1024))
    asg: Mapping[str, Any]

    def score(self, lang: str = "avg") -> float | None:
        return self.scores.get(f"test/{lang}/{self.metric}")

    @property
    def languages(self) -> tuple[str, ...]:
        pattern = re.compile(rf"test/([^/]+)/{re.escape(self.metric)}")
        found = (pattern.fullmatch(key) for key in self.scores)
        return tuple(sorted(m.group(1) for m in found if m and m.group(1) != "avg"))


@dataclass(frozen=True)
class Stat:
    mean: float
    std: float | None  # None with a single run
    n: int


@dataclass
class Cell:
    """The runs of one configuration (seeds pooled), with its base cell where one exists."""

    task: str
    model: str
    model_label: str
    transfer: str
    metric: str
    method: str
    setting: str
    order: tuple
    runs: list[Run]
    base: Cell | None = None

    @property
    def label(self) -> str:
        return f"{self.method} ({self.setting})" if self.method == BASE_METHOD else f"{self.method} {self.setting}"

    @property
    def where(self) -> str:
        return f"{self.task} / {self.model_label} / {self.transfer}"

    def stat(self, lang: str = "avg") -> Stat | None:
        values = [s for s in (run.score(lang) for run in self.runs) if s is not None]
        if not values:
            return None
        return Stat(statistics.fmean(values), statistics.stdev(values) if len(values) > 1 else None, len(values))

    def relative(self, lang: str = "avg") -> float | None:
        """Score / base score in %, from the means; None without a base or a score."""
        if self.base is None:
            return None
        score, base = self.stat(lang), self.base.stat(lang)
        if score is None or base is None or base.mean == 0:
            return None
        return 100 * score.mean / base.mean

    def kept(self, key: str) -> float | None:
        values = [v for v in (getattr(run, key) for run in self.runs) if v is not None]
        return statistics.fmean(values) if values else None


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


def _config_value(config: Mapping[str, Any], dotted: str) -> Any:
    value: Any = config
    for part in dotted.split("."):
        if not isinstance(value, Mapping) or part not in value:
            return None
        value = value[part]
    # an unresolved interpolation is not a value
    return None if isinstance(value, str) and "${" in value else value


def load_run(path: Path) -> Run:
    """One run from its metrics.json; `seed`, `metric`, label and transfer fall back to `.hydra/config.yaml`."""
    metrics = json.loads(path.read_text(encoding="utf-8"))
    config_path = path.parent / ".hydra" / "config.yaml"
    config = yaml.safe_load(config_path.read_text(encoding="utf-8")) if config_path.is_file() else {}
    config = config or {}
    transfer = metrics.get("transfer") or {}

    def pick(value: Any, dotted: str) -> Any:
        return value if value is not None else _config_value(config, dotted)

    metric = pick(metrics.get("metric"), "task.metric")
    if metric is None:
        raise ValueError(f"{path}: no `metric` in metrics.json and no task.metric in {config_path}")
    compression = metrics.get("compression") or {}
    method = compression.get("method") or (metrics.get("asg") or {}).get("method")
    if method is None:
        raise ValueError(f"{path}: no compression.method or asg.method")
    asg = {} if method == BASE_METHOD else dict(metrics.get("asg") or {})
    source = compression if any(key in compression for key in STRUCTURE_KEYS) else asg
    transfer_name = pick(transfer.get("name"), "transfer.name")
    train_lang = pick(transfer.get("train_lang"), "transfer.train_lang")
    seed = pick(metrics.get("seed"), "seed")
    return Run(
        path=path,
        task=metrics["task"],
        model=metrics["model"],
        model_label=pick(metrics.get("model_label"), "model.label") or metrics["model"],
        transfer=f"{transfer_name} ({train_lang})" if train_lang else str(transfer_name or "unknown"),
        metric=metric,
        method=method,
        seed=int(seed) if seed is not None else None,
        scores={key: float(value) for key, value in (metrics.get("scores") or {}).items()},
        params_kept_pct=compression.get("params_kept_pct"),
        bytes_kept_pct=compression.get("bytes_kept_pct"),
        train_samples=metrics.get("train_samples"),
        notes=tuple(metrics.get("notes") or ()),
        structure=tuple((key, source[key]) for key in STRUCTURE_KEYS if source.get(key) is not None),
        asg=asg,
    )


# ---------------------------------------------------------------- grouping


def _value_text(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:g}"
    return value if isinstance(value, str) else json.dumps(value, sort_keys=True)


def _order_value(value: Any) -> tuple:
    # numbers in numeric order, anything else after them by its text
    number = isinstance(value, (int, float)) and not isinstance(value, bool)
    return (0, value, "") if number else (1, 0, _value_text(value))


def group(runs: list[Run]) -> list[Cell]:
    """Pool runs that differ only in seed into cells, attach each cell's base, and sort them."""
    families: dict[tuple, list[Run]] = defaultdict(list)
    for run in runs:
        families[(run.task, run.model, run.transfer, run.metric, run.method)].append(run)

    cells: dict[tuple, Cell] = {}
    for family_key, members in families.items():
        asg_keys = sorted({key for run in members for key in run.asg} - IGNORED_ASG_KEYS - set(STRUCTURE_KEYS))
        # settings other than the size that this family sweeps, e.g. codebook_lr_scale, become part of the row
        varying = [k for k in asg_keys if len({_value_text(run.asg.get(k)) for run in members}) > 1]
        for run in members:
            items = list(run.structure)
            if run.asg.get("budget_pct") is not None and "budget_pct" not in varying:
                items.append(("budget_pct", run.asg["budget_pct"]))
            items += [(k, run.asg.get(k)) for k in varying]
            setting = " ".join(f"{k}={_value_text(v)}" for k, v in items) or "dense"
            order = tuple((k, *_order_value(v)) for k, v in items)
            key = (*family_key, setting)
            if key not in cells:
                cells[key] = Cell(
                    run.task, run.model, run.model_label, run.transfer, run.metric, run.method, setting, order, []
                )
            cells[key].runs.append(run)

    bases = {(c.task, c.model, c.transfer, c.metric): c for c in cells.values() if c.method == BASE_METHOD}
    for cell in cells.values():
        cell.base = bases.get((cell.task, cell.model, cell.transfer, cell.metric))
    for cell in cells.values():
        cell.runs.sort(key=lambda r: (r.seed is None, r.seed or 0, str(r.path)))

    def sort_key(c: Cell) -> tuple:
        return (c.task, c.model_label, c.model, c.transfer, c.metric, c.method != BASE_METHOD, c.method, c.order)

    return sorted(cells.values(), key=sort_key)


def _differences(cell: Cell, attr: Callable[[Run], Any], what: str) -> list[str]:
    """A caveat when the cell's runs, or the cell and its base, disagree on `attr`."""
    own = {attr(run) for run in cell.runs}
    if len(own) > 1:
        return [f"{cell.where}: {cell.label} runs differ in {what} ({'; '.join(sorted(map(str, own)))})"]
    if cell.base is None or cell.base is cell:
        return []
    base = {attr(run) for run in cell.base.runs}
    if len(base) == 1 and base != own:
        return [f"{cell.where}: {cell.label} differs from its base in {what} ({own.pop()} vs {base.pop()})"]
    return []


def caveats(cells: list[Cell]) -> list[str]:
    found = []
    for cell in cells:
        found += _differences(cell, lambda r: ", ".join(r.languages), "evaluated languages")
        found += _differences(cell, lambda r: r.train_samples, "training samples")
        repeated = sorted(s for s, n in Counter(r.seed for r in cell.runs if r.seed is not None).items() if n > 1)
        if repeated:
            found.append(f"{cell.where}: {cell.label} repeats seed(s) {', '.join(map(str, repeated))}")
        if any(run.seed is None for run in cell.runs):
            found.append(f"{cell.where}: {cell.label} has run(s) with no recorded seed")
    return found


def notes(cells: list[Cell]) -> list[str]:
    """Each distinct run note once, followed by where it applies."""
    where: dict[str, set[str]] = defaultdict(set)
    for cell in cells:
        for run in cell.runs:
            for note in run.notes:
                where[note].add(f"{run.task} / {run.model_label}")
    return [f"{note} ({'; '.join(sorted(places))})" for note, places in sorted(where.items())]


# ---------------------------------------------------------------- rendering


@dataclass
class Table:
    columns: list[str]
    align: str  # one LaTeX alignment letter per column
    rows: list[list[str | None]]  # None is a missing value


def _num(value: float | None, decimals: int) -> str | None:
    return None if value is None else f"{value:.{decimals}f}"


def _stat_text(stat: Stat | None, full_n: int | None = None) -> str | None:
    if stat is None:
        return None
    text = f"{stat.mean:.{SCORE_DECIMALS}f}"
    if stat.std is not None:
        text += f" ± {stat.std:.{SCORE_DECIMALS}f}"
    if full_n is not None and stat.n < full_n:
        text += f" (n={stat.n})"  # fewer of the column's runs have this language
    return text


def to_markdown(table: Table) -> str:
    def row(cells: Iterable[str | None]) -> str:
        return "| " + " | ".join(MISSING["md"] if c is None else c.replace("|", "\\|") for c in cells) + " |"

    rule = "|" + "|".join("---:" if a == "r" else "---" for a in table.align) + "|"
    return "\n".join([row(table.columns), rule, *map(row, table.rows)]) + "\n"


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


def to_tex(table: Table) -> str:
    def row(cells: Iterable[str | None]) -> str:
        return " & ".join(MISSING["tex"] if c is None else tex_escape(c) for c in cells) + r" \\"

    lines = [rf"\begin{{tabular}}{{{table.align}}}", r"\toprule", row(table.columns), r"\midrule"]
    return "\n".join([*lines, *map(row, table.rows), r"\bottomrule", r"\end{tabular}"]) + "\n"


def to_csv(table: Table) -> str:
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(table.columns)
    writer.writerows([MISSING["csv"] if c is None else c for c in row] for row in table.rows)
    return out.getvalue()


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


# ---------------------------------------------------------------- tables


# (header, LaTeX alignment) of the main table as shown, and the columns of main.csv
MAIN_COLUMNS = (
    ("model", "l"), ("task", "l"), ("transfer", "l"), ("metric", "l"), ("method", "l"), ("setting", "l"),
    ("score", "r"), ("base", "r"), ("rel. %", "r"), ("params kept %", "r"), ("bytes kept %", "r"), ("n seeds", "r"),
)  # fmt: skip
MAIN_CSV_COLUMNS = (
    "model model_label task transfer metric method setting score_mean score_std base_mean base_std relative_pct "
    "params_kept_pct bytes_kept_pct n_seeds seeds notes"
).split()


def main_tables(cells: list[Cell]) -> tuple[Table, Table]:
    """(display table for md / tex, data table for csv) with one row per cell."""
    display = Table([name for name, _ in MAIN_COLUMNS], "".join(align for _, align in MAIN_COLUMNS), [])
    data = Table(list(MAIN_CSV_COLUMNS), "", [])
    for c in cells:
        score, base = c.stat(), c.base.stat() if c.base else None
        common = {
            "task": c.task,
            "transfer": c.transfer,
            "metric": c.metric,
            "method": c.method,
            "setting": c.setting,
            "rel. %": _num(c.relative(), SCORE_DECIMALS),
            "params kept %": _num(c.kept("params_kept_pct"), KEPT_DECIMALS),
            "bytes kept %": _num(c.kept("bytes_kept_pct"), KEPT_DECIMALS),
            "n seeds": str(score.n) if score else "0",
        }
        shown = common | {"model": c.model_label, "score": _stat_text(score), "base": _stat_text(base)}
        display.rows.append([shown[name] for name in display.columns])
        raw = common | {
            "model": c.model,
            "model_label": c.model_label,
            "score_mean": _num(score.mean if score else None, SCORE_DECIMALS),
            "score_std": _num(score.std if score else None, SCORE_DECIMALS),
            "base_mean": _num(base.mean if base else None, SCORE_DECIMALS),
            "base_std": _num(base.std if base else None, SCORE_DECIMALS),
            "relative_pct": common["rel. %"],
            "params_kept_pct": common["params kept %"],
            "bytes_kept_pct": common["bytes kept %"],
            "n_seeds": common["n seeds"],
            "seeds": " ".join(str(r.seed) for r in c.runs if r.seed is not None and r.score() is not None) or None,
            "notes": " | ".join(sorted({note for r in c.runs for note in r.notes})) or None,
        }
        data.rows.append([raw[name] for name in data.columns])
    return display, data


def _views(cells: list[Cell]) -> dict[tuple[str, str], dict[tuple[str, str], list[Cell]]]:
    """task x model -> (transfer, metric) -> cells, in table order."""
    views: dict[tuple[str, str], dict[tuple[str, str], list[Cell]]] = defaultdict(lambda: defaultdict(list))
    for c in cells:
        views[(c.task, c.model)][(c.transfer, c.metric)].append(c)
    return views


def language_tables(cells: list[Cell]) -> tuple[Table, Table]:
    """One transfer x metric of one task x model: (display table, data table); rows are languages, then avg."""
    languages = sorted({lang for c in cells for run in c.runs for lang in run.languages}) + ["avg"]
    display = Table(["language"], "l", [[lang] for lang in languages])
    transfer, metric = cells[0].transfer, cells[0].metric
    data = Table(["transfer", "metric", "language"], "", [[transfer, metric, lang] for lang in languages])
    for c in cells:
        with_rel = c.base is not None and c is not c.base
        display.columns.append(c.label)
        data.columns += [f"{c.label} mean", f"{c.label} std", f"{c.label} n"]
        if with_rel:
            display.columns.append(f"{c.label} rel. %")
            data.columns.append(f"{c.label} relative_pct")
        display.align += "rr" if with_rel else "r"
        full_n = len(c.runs)
        for lang, shown, row in zip(languages, display.rows, data.rows, strict=True):
            stat, rel = c.stat(lang), _num(c.relative(lang), SCORE_DECIMALS) if with_rel else None
            shown.append(_stat_text(stat, full_n))
            if stat is None:
                row += [None, None, "0"]
            else:
                row += [_num(stat.mean, SCORE_DECIMALS), _num(stat.std, SCORE_DECIMALS), str(stat.n)]
            if with_rel:
                shown.append(rel)
                row.append(rel)
    return display, data


def _merge_csv(tables: list[Table]) -> Table:
    """Several views' data tables as one, over the union of their columns."""
    columns: list[str] = []
    for t in tables:
        columns += [c for c in t.columns if c not in columns]
    rows = [[dict(zip(t.columns, row, strict=True)).get(c) for c in columns] for t in tables for row in t.rows]
    return Table(columns, "", rows)


# ---------------------------------------------------------------- plot


def pareto_plot(cells: list[Cell], title: str) -> bytes | None:
    """PNG of relative score against kept bytes (log x), one line per method; None without a base or a point."""
    points: dict[str, list[tuple[float, float]]] = defaultdict(list)
    several_transfers = len({c.transfer for c in cells}) > 1
    several_metrics = len({c.metric for c in cells}) > 1
    for c in cells:
        if c.method == BASE_METHOD or c.base is None:
            continue
        x, y = c.kept("bytes_kept_pct"), c.relative()
        if x is not None and y is not None and x > 0:
            name = (
                c.method
                + (f", {c.transfer}" if several_transfers else "")
                + (f", {c.metric}" if several_metrics else "")
            )
            points[name].append((x, y))
    if not points:
        return None
    bases = {id(c.base): c.base for c in cells if c.base is not None and c.base.stat() is not None}
    base_x = [x for x in (b.kept("bytes_kept_pct") for b in bases.values()) if x is not None and x > 0]

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
    "rel. % = score / base × 100, the base being the dense (`asg.method=none`) run of the same model, task and "
    "transfer. Kept % are of the input embedding's parameters and bytes. — = missing."
)
LANG_INTRO = (
    "Scores: `test/<language>/<metric>` in % (avg: each run's own `test/avg/<metric>`), mean ± sample std over "
    "seeds (± only with 2 or more runs; (n=...) where fewer of the column's runs have the language). "
    "rel. % = score / base × 100, the base being the dense (`asg.method=none`) run. — = missing."
)


def write_tables(
    cells: list[Cell], out: Path, *, n_runs: int, skipped: Sequence[str] = (), plot: bool = True
) -> list[Path]:
    """Every table (and plot) for these cells into `out`; returns the written paths.

    `skipped` names the metrics.json files that could not be read, listed under the main table.
    """
    built = f"Built by `python -m experiments.tables` from {n_runs} metrics.json file(s)."
    display, data = main_tables(cells)
    extra_md = [_md_list("Notes", notes(cells)), _md_list("Caveats", caveats(cells)), _md_list("Skipped", skipped)]
    extra_tex = [_tex_list("Notes", notes(cells)), _tex_list("Caveats", caveats(cells)), _tex_list("Skipped", skipped)]
    written = [
        write_text_atomic(
            out / "main.md", _document(["# Results", built, MAIN_INTRO, to_markdown(display), *extra_md])
        ),
        write_text_atomic(out / "main.tex", _document([to_tex(display), *extra_tex])),
        write_text_atomic(out / "main.csv", to_csv(data)),
    ]

    for (task, model), views in _views(cells).items():
        label = next(iter(views.values()))[0].model_label
        stem = f"{_slug(task)}_{_slug(model)}"
        md, tex, csv_tables = [f"# {task}: {label}, test score per language", built, LANG_INTRO], [], []
        for (transfer, metric), view in views.items():
            shown, raw = language_tables(view)
            md += [f"## {transfer}, test {metric}", to_markdown(shown)]
            tex.append(f"% {tex_escape(f'{task}, {label}, {transfer}, test {metric}')}\n{to_tex(shown)}")
            csv_tables.append(raw)
        view_cells = [c for view in views.values() for c in view]
        md += [_md_list("Notes", notes(view_cells)), _md_list("Caveats", caveats(view_cells))]
        tex += [_tex_list("Notes", notes(view_cells)), _tex_list("Caveats", caveats(view_cells))]
        written.append(write_text_atomic(out / f"lang_{stem}.md", _document(md)))
        written.append(write_text_atomic(out / f"lang_{stem}.tex", _document(tex)))
        written.append(write_text_atomic(out / f"lang_{stem}.csv", to_csv(_merge_csv(csv_tables))))
        png = pareto_plot(view_cells, f"{label} on {task}") if plot else None
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
    runs, skipped = [], []
    for path in paths:
        try:
            runs.append(load_run(path))
        except (ValueError, KeyError, TypeError, yaml.YAMLError) as err:
            # one unreadable run (e.g. an old file without `metric`) must not hide the others, nor vanish silently
            skipped.append(f"{path}: {err!r}")
            print(f"tables: skipping {path}: {err!r}", file=sys.stderr)
    if not runs:
        raise SystemExit(f"tables: none of the {len(paths)} metrics.json file(s) could be read")
    written = write_tables(group(runs), args.out, n_runs=len(runs), skipped=skipped, plot=not args.no_plot)
    print(f"read {len(runs)} run(s), skipped {len(skipped)}; wrote {len(written)} file(s) to {args.out}:")
    for path in written:
        print(f"  {path}")
    return written


if __name__ == "__main__":
    main()
