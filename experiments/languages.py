"""Per-language test tables over seeds: each configuration's mean ± std per language and its ratio to dense."""

from __future__ import annotations

import statistics

from asg.results import exported_bytes_pct, size_text
from experiments.runner import mean_std


def languages(runs: list[dict]) -> list[str]:
    """The languages the runs were tested on, sorted, then their average."""
    langs = sorted({key.split("/")[1] for r in runs for key in r["scores"] if key.startswith("test/")} - {"avg"})
    return [*langs, "avg"]


def relative_to_dense(runs: list[dict], dense_runs: list[dict], metric: str, langs: list[str]) -> dict[str, float]:
    """Per language: the runs' mean test score as a % of dense's mean there; languages where dense has no runs or
    scores 0 are left out."""
    relative = {}
    for lang in langs:
        dense = [r["scores"][f"test/{lang}/{metric}"] for r in dense_runs]
        if dense and statistics.mean(dense) > 0:
            scores = [r["scores"][f"test/{lang}/{metric}"] for r in runs]
            relative[lang] = 100 * statistics.mean(scores) / statistics.mean(dense)
    return relative


def lowest(relative: dict[str, float]) -> str | None:
    """The language (not the average) with the smallest share, e.g. "ru 67.5%"; None where there is none."""
    per_lang = {lang: share for lang, share in relative.items() if lang != "avg"}
    if not per_lang:
        return None
    lang = min(per_lang, key=per_lang.get)
    return f"{lang} {per_lang[lang]:.1f}%"


def table(done: dict[str, list[dict]], metric: str) -> list[str]:
    """Markdown rows: a configuration per row (its size, bytes, fit error, seeds, per-language mean ± std and lowest
    language relative to dense), each compressed one followed by its ratio of means to `done["none"]`."""
    langs = languages([r for runs in done.values() for r in runs])
    lines = [
        "| method | size | bytes kept % | params kept % | fit rel. error | seeds | "
        + " | ".join(langs)
        + " | lowest language, relative |",
        "|---|---|---|---|---|---|" + "---|" * len(langs) + "---|",
    ]
    for prefix, runs in done.items():
        if not runs:
            lines.append(f"| {prefix} | not run yet |" + " |" * (len(langs) + 4))
            continue
        c = runs[0]["compression"]
        size = "—" if prefix == "none" else size_text(c)
        error = statistics.mean(r["compression"]["rel_error"] for r in runs) if prefix != "none" else 0.0
        cells = [mean_std([r["scores"][f"test/{lang}/{metric}"] for r in runs]) for lang in langs]
        relative = relative_to_dense(runs, done.get("none", []), metric, langs)
        worst = lowest(relative) if prefix != "none" else None
        lines.append(
            f"| {prefix} | {size} | {exported_bytes_pct(c):.3f} | {c['params_kept_pct']:.3f} | {error:.3f} | "
            f"{len(runs)} | " + " | ".join(cells) + f" | {worst or '—'} |"
        )
        if prefix != "none" and relative:
            lines.append(
                f"| {prefix} / dense | | | | | | "
                + " | ".join(f"{relative[lang]:.1f}%" if lang in relative else "—" for lang in langs)
                + " | |"
            )
    return lines
