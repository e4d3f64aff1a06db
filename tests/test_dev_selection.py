"""The dev-selection study: grids of equal size, the choice made on dev curves alone, and the test runs it starts."""

from __future__ import annotations

import argparse

import pytest

from experiments import dev_selection as study


def _metrics(dev: list[float], test: float | None = None) -> dict:
    scores = {"val/en/f1": dev[-1]} | ({"test/avg/f1": test} if test is not None else {})
    history = [{"epoch": e, "step": 10 * (e + 1), "scores": {"val/en/f1": d}} for e, d in enumerate(dev)]
    compression = {"method": "pq", "m": 8, "k": 64, "params_kept_pct": 0.4, "bytes_kept_pct": 2.5, "rel_error": 0.7}
    return {"scores": scores, "val_history": history, "compression": compression, "asg": {"method": "pq", "k": 64}}


def test_every_compressed_method_searches_the_same_lr_x_scale_grid():
    sizes = {method: len(study.grid(method)) for method in study.GRIDS}
    assert sizes.pop("none") == 3 and set(sizes.values()) == {9}
    for method in ("pq", "rq", "sg", "lowrank", "tiered"):
        lrs = {o for _, overrides in study.grid(method) for o in overrides if o.startswith("model.lr=")}
        scales = {o for _, overrides in study.grid(method) for o in overrides if o.startswith("asg.codebook_lr_scale")}
        assert len(lrs) == len(scales) == 3
    names = [name for method in study.GRIDS for name, _ in study.grid(method)]
    assert len(names) == len(set(names))  # one run dir per point


def test_pq_and_rq_then_try_the_other_sizes_at_their_best_lr_and_scale():
    name, overrides = study.grid("pq")[4]
    more = study.sizes_grid("pq", overrides)
    assert [n for n, _ in more] == [name.replace("_m32", f"_m{m}") for m in study.SIZES]
    assert all(set(o) - set(overrides) == {f"asg.m={m}"} for (_, o), m in zip(more, study.SIZES, strict=True))
    assert study.sizes_grid("sg", study.grid("sg")[0][1]) == []


@pytest.mark.parametrize("setting", sorted(study.SETTINGS))
def test_every_grid_point_composes_and_resolves_its_budget(tmp_path, setting):
    from asg.methods import get_method
    from tests.test_pipeline import make_cfg

    shape = {"bc5cdr_minilm": (30522, 384), "wikiann_e5": (250037, 384)}[setting]
    for method in study.GRIDS:
        for _, overrides in study.grid(method):
            cfg = make_cfg(tmp_path, *study.SETTINGS[setting]["overrides"], *overrides)
            if method in ("pq", "rq", "sg"):  # the same centroid budget, 0.4% of the rows
                settings = get_method(cfg.asg.method).resolve(dict(cfg.asg), *shape)
                assert settings["k"] == round(0.004 * shape[0]) and settings["m"] in (1, 32)


def test_best_is_the_best_dev_point_of_any_epoch_and_waits_for_the_whole_grid():
    runs = {"a": _metrics([50.0, 52.0]), "b": _metrics([55.0, 51.0]), "c": None}
    assert study.best(runs, ["a", "b", "c"], "val/en/f1") is None
    assert study.best(runs, ["a", "b"], "val/en/f1") == ("b", 1, 55.0)  # b's first epoch beats a's second


def test_the_chosen_point_is_tested_over_the_seeds_at_its_epoch_count(monkeypatch, tmp_path):
    started: dict[str, list[str]] = {}

    def fake_run(name: str, overrides: list[str], runs_dir) -> dict:
        started[name] = overrides
        if "+trainer.limit_test_batches=0" in overrides:  # grid: pq_m16_lr0.0002_cb10 peaks on dev after epoch 1
            return _metrics(
                {"pq_m32_lr0.0002_cb10": [50.0, 52.0], "pq_m16_lr0.0002_cb10": [60.0, 58.0]}.get(name, [40.0, 45.0])
            )
        seed = int(name.rsplit("seed", 1)[1])
        score = 40.0 + seed + ("_f16" in name) + 2 * ("_tw" in name)
        return _metrics([0.0], test=score if name.startswith("pq") else 50.0)

    monkeypatch.setattr(study, "run_config", fake_run)
    # the methods not started read finished runs from the results folder: an empty one here, not the repository's
    monkeypatch.setattr(study, "RESULTS", tmp_path / "experiments" / "results")
    monkeypatch.setattr(study, "ROOT", tmp_path)
    args = argparse.Namespace(data_dir="data", e5_dir="e5", methods="pq,none", report_only=False)
    result = study.run_study("bc5cdr_minilm", args)

    chosen = "pq_m16_lr0.0002_cb10"
    assert "pq_m8_lr0.0002_cb10" in started and "pq_m8_lr0.0001_cb10" not in started  # m at the best lr and scale
    assert result["pq"]["chosen"] == (chosen, 1, 60.0)
    tests = [name for name in started if name.startswith(f"{chosen}_ep1_seed")]
    assert tests == [f"{chosen}_ep1_seed{s}" for s in study.TEST_SEEDS]
    overrides = started[f"{chosen}_ep1_seed2"]
    assert "trainer.max_epochs=1" in overrides and "seed=2" in overrides and "asg.m=16" in overrides
    assert "+trainer.limit_test_batches=0" not in overrides  # tested, unlike the grid
    assert not any(name.startswith(("rq", "sg", "lowrank")) for name in started)  # --methods pq,none

    text = study.report("bc5cdr_minilm", result, "python -m experiments.dev_selection")
    row = next(line for line in text.splitlines() if line.startswith("| pq |"))
    assert f"`{chosen}`, 1 epoch(s) | 60.00 | 42.00 ± 1.00 | 3 | 84.0 |" in row  # (41, 42, 43) vs dense 50
    assert "| rq | grid not finished |" in text
    # dense's lr 1e-4 was its grid's lowest, so 5e-5 was tried too; pq's choice lies inside what it tried
    assert "none_lr5e-05" in started and "Chosen on an edge" not in text

    # then pq at every byte budget, with its dev-chosen lr, scale and epochs, and m sized for the budget; and again
    # with float16 codebooks, whose halved cost the sizing counts
    for budget in study.BYTES_BUDGETS:
        for tag, width in (("", 4), ("_f16", 2)):
            overrides = started[f"pq{tag}_bytes{budget:g}_ep1_seed3"]
            assert f"asg.budget_bytes_pct={budget}" in overrides and "asg.budget_pct=null" in overrides
            assert "asg.budget_pct=0.4" not in overrides and "model.lr=0.0002" in overrides and "seed=3" in overrides
            assert "asg.codebook_lr_scale=10" in overrides and "trainer.max_epochs=1" in overrides
            m = study.widest_m(budget, 30522, 384, float_bytes=width)
            assert [o for o in overrides if o.startswith("asg.m=")] == [f"asg.m={m}"]
            assert ("asg.storage_dtype=float16" in overrides) == (tag == "_f16")
    assert not any(name.startswith("none_bytes") for name in started)  # dense has no budget
    # WordPiece keeps no unigram scores: the weighted fits count the training split's tokens instead
    assert not any("_uw" in name for name in started)
    assert {"asg.row_weights=train", "asg.row_weight_power=0.5", "+trainer.limit_test_batches=0"} <= set(
        started["pq_tw0.5_bytes1"]
    )
    assert {"asg.row_weights=train", "asg.budget_bytes_pct=5", "seed=3"} <= set(started["pq_tw0.5_bytes5_ep2_seed3"])
    assert "(`asg.row_weights=train`: the training split's token counts, add-one smoothed)" in text
    assert "| 0.5 | pq | m=8, k=64 | 2.500 | 0.400 | 0.700 | 42.00 ± 1.00 | 3 | 84.0 |" in text
    assert "| 0.5 | pq, float16 codebooks | m=8, k=64 | 2.500 | 0.400 | 0.700 | 43.00 ± 1.00 | 3 | 86.0 |" in text
    weighted = "pq, fit weighted by the training split's tokens, power 0.5"
    assert f"- 5% of the bytes: **{weighted}**, 44.00 ± 1.00 (next: pq, float16 codebooks, 43.00 ± 1.00)" in text
    # the Pareto figure's points: every fully-run cell as % of the dense mean (50), by bytes kept
    points = study.pareto_points(result, "test/avg/f1", 50.0)
    assert points == {"pq": [(2.5, 84.0)] * 5, "pq, float16 codebooks": [(2.5, 86.0)] * 4, weighted: [(2.5, 88.0)] * 4}
    assert "![test score as % of dense against bytes kept %](pareto_bytes.png)" in text
    result["pq"]["tests"][f"{chosen}_ep1_seed1"] = None  # a cell short of a seed is left out
    assert study.pareto_points(result, "test/avg/f1", 50.0)["pq"] == [(2.5, 84.0)] * 4
    assert study.pareto_points(result, "test/avg/f1", None) == {}  # no dense score: nothing to divide by


def test_unigram_weighting_chooses_its_power_on_dev_then_tests_the_weighted_budgets(monkeypatch, tmp_path):
    started: dict[str, list[str]] = {}

    def fake_run(name: str, overrides: list[str], runs_dir) -> dict:
        started[name] = overrides
        if "+trainer.limit_test_batches=0" in overrides:  # power 1 peaks on dev after epoch 2
            return _metrics({"pq_uw1_bytes1": [55.0, 61.0], "pq_uw0.5_bytes1": [58.0, 59.0]}.get(name, [40.0, 45.0]))
        return _metrics([0.0], test=45.0 if "_uw" in name else 40.0 if name.startswith("pq") else 50.0)

    monkeypatch.setattr(study, "run_config", fake_run)
    monkeypatch.setattr(study, "RESULTS", tmp_path / "experiments" / "results")
    monkeypatch.setattr(study, "ROOT", tmp_path)
    args = argparse.Namespace(data_dir="data", e5_dir="e5", methods="pq,none", report_only=False)
    result = study.run_study("wikiann_e5", args)

    assert result["pq"]["weighted"]["chosen"] == ("pq_uw1_bytes1", 2, 61.0)
    for power in study.WEIGHT_POWERS:  # each power's dev run at 1% of the bytes, pq's dev-chosen lr and scale
        overrides = started[f"pq_uw{power:g}_bytes1"]
        assert "asg.row_weights=unigram" in overrides and f"asg.row_weight_power={power}" in overrides
        assert "asg.budget_bytes_pct=1" in overrides and "+trainer.limit_test_batches=0" in overrides
    tests = sorted(name for name in started if name.startswith("pq_uw") and "seed" in name)
    assert tests == sorted(f"pq_uw1_bytes{b:g}_ep2_seed{s}" for b in study.BYTES_BUDGETS for s in study.TEST_SEEDS)
    overrides = started["pq_uw1_bytes0.5_ep2_seed3"]
    assert {"asg.row_weights=unigram", "asg.row_weight_power=1.0", "asg.budget_bytes_pct=0.5", "seed=3"} <= set(
        overrides
    )
    assert "trainer.max_epochs=2" in overrides and "+trainer.limit_test_batches=0" not in overrides

    text = study.report("wikiann_e5", result, "python -m experiments.dev_selection")
    row = "| 1 | pq, unigram-weighted fit, power 1 | m=8, k=64 | 2.500 | 0.400 | 0.700 | 45.00 ± 0.00 | 3 | 90.0 |"
    assert row in text
    assert "| 5 | pq, unigram-weighted fit, power 1 | m=8, k=64 |" in text  # every budget is tested
    assert "| pq_uw0.5_bytes1 | 58.00 | 59.00 |" in text  # the power's dev curves are listed with the grids
    assert "- 1% of the bytes: **pq, unigram-weighted fit, power 1**, 45.00" in text


def test_a_choice_on_an_edge_tries_the_next_ladder_step_beyond_it():
    points = study.grid("pq")
    more = study.beyond_edges("pq", points, "pq_m32_lr0.0004_cb1")  # the highest lr and the lowest scale
    assert more == [
        (
            "pq_m32_lr0.0008_cb1",
            ["asg=pq", "asg.budget_pct=0.4", "asg.m=32", "model.lr=0.0008", "asg.codebook_lr_scale=1"],
        ),
        (
            "pq_m32_lr0.0004_cb0.3",
            ["asg=pq", "asg.budget_pct=0.4", "asg.m=32", "model.lr=0.0004", "asg.codebook_lr_scale=0.3"],
        ),
    ]
    assert study.beyond_edges("pq", points, "pq_m32_lr0.0002_cb10") == []  # inside on both axes
    assert study.grid_edges(dict(points), "pq_m32_lr0.0004_cb1") == [
        "model.lr=0.0004 (highest tried)",
        "asg.codebook_lr_scale=1 (lowest tried)",
    ]


def test_bytes_overrides_move_a_choice_to_a_byte_budget_or_say_none_fits():
    _, pq = study.grid("pq")[0]
    moved = study.bytes_overrides("pq", pq, 1, (30522, 384))
    assert "asg.budget_bytes_pct=1" in moved and f"asg.m={study.widest_m(1, 30522, 384)}" in moved
    assert not any(o.startswith("asg.m=32") for o in moved)
    _, rq = study.grid("rq")[0]
    assert f"asg.m={study.widest_m(1, 30522, 384, stages=2)}" in study.bytes_overrides("rq", rq, 1, (30522, 384))
    assert study.bytes_overrides("pq", pq, 0.01, (30522, 384)) is None  # 64 centroids alone exceed 0.01%
    half = study.bytes_overrides("pq", pq, 1, (30522, 384), "float16")
    assert "asg.storage_dtype=float16" in half and f"asg.m={study.widest_m(1, 30522, 384, float_bytes=2)}" in half
    _, sg = study.grid("sg")[0]
    assert not any(o.startswith("asg.m=") for o in study.bytes_overrides("sg", sg, 0.5, (30522, 384)))
    _, lowrank = study.grid("lowrank")[0]  # a rank of MiniLM's factors is 0.264% of the bytes: 1% is no multiple
    assert study.bytes_overrides("lowrank", lowrank, 1, (30522, 384)) is None
    assert "asg.budget_bytes_pct=5" in study.bytes_overrides("lowrank", lowrank, 5, (30522, 384))  # rank 19
    _, tiered = study.grid("tiered")[0]  # its tiers come from conf/asg/tiered.yaml
    assert "asg.storage_dtype=float16" in study.bytes_overrides("tiered", tiered, 1, (250037, 384), "float16")
    assert study.bytes_overrides("tiered", tiered, 0.05, (250037, 384)) is None  # its code tables alone exceed it


def test_equal_scores_at_a_budget_are_named_a_tie():
    runs = {f"s{seed}": _metrics([0.0], test=60.0 + seed) for seed in study.TEST_SEEDS}
    at_budget = {f"{b:g}": runs for b in study.BYTES_BUDGETS}
    entry = {"bytes": {"": at_budget, "float16 codebooks": at_budget}}
    lines = study.equal_bytes({"pq": entry}, "test/avg/f1", 70.0)
    assert "- 1% of the bytes: **pq, float16 codebooks**, 62.00 ± 1.00 (tied with: pq, 62.00 ± 1.00)" in lines


def test_seeds_at_a_budget_from_two_k_means_versions_are_named():
    runs = {f"s{seed}": _metrics([0.0], test=60.0) | {"seed": seed, "fit_version": 4} for seed in study.TEST_SEEDS}
    for run in runs.values():
        run["compression"]["code_bytes"] = 1
    assert not any("k-means versions" in line for line in study.equal_bytes(_at_every_budget(runs), "test/avg/f1", 70))
    runs["s1"]["fit_version"] = 3
    lines = study.equal_bytes(_at_every_budget(runs), "test/avg/f1", 70.0)
    assert "- pq at 1% of the bytes pools seeds fitted by different k-means versions: seed 1 at version 3" in "\n".join(
        lines
    )


def _at_every_budget(runs: dict) -> dict:
    return {"pq": {"bytes": {"": {f"{b:g}": runs for b in study.BYTES_BUDGETS}}}}


@pytest.mark.parametrize("setting", ["bc5cdr_minilm", "wikiann_e5"])
def test_weighted_tiered_also_tests_frequency_tiers_where_ids_are_not_in_frequency_order(
    monkeypatch, tmp_path, setting
):
    started: dict[str, list[str]] = {}

    def fake_run(name: str, overrides: list[str], runs_dir) -> dict:
        started[name] = overrides
        if "+trainer.limit_test_batches=0" in overrides:
            return _metrics([40.0, 45.0 + ("_tw1" in name or "_uw1" in name)])
        return _metrics([0.0], test=40.0 + int(name.rsplit("seed", 1)[1]))

    monkeypatch.setattr(study, "run_config", fake_run)
    monkeypatch.setattr(study, "RESULTS", tmp_path / "experiments" / "results")
    monkeypatch.setattr(study, "ROOT", tmp_path)
    args = argparse.Namespace(data_dir="data", e5_dir="e5", methods="tiered", report_only=False)
    result = study.run_study(setting, args)
    ordered = [name for name in started if "o_bytes" in name]
    if setting == "wikiann_e5":  # sentencepiece ids are in unigram order already
        assert ordered == [] and "tiered_uw1_bytes5_ep2_seed3" in started
        return
    assert len(ordered) == len(study.BYTES_BUDGETS) * len(study.TEST_SEEDS)
    overrides = set(started["tiered_tw1o_bytes1_ep2_seed2"])  # the power chosen for id tiers (1)
    assert {"asg.tier_order=frequency", "asg.row_weights=train", "asg.row_weight_power=1.0", "seed=2"} <= overrides
    assert "asg.tier_order=frequency" not in started["tiered_tw1_bytes1_ep2_seed2"]
    label = "tiers by frequency, fit weighted by the training split's tokens, power 1"
    assert set(result["tiered"]["bytes"][label]["1"]) == {f"tiered_tw1o_bytes1_ep2_seed{s}" for s in study.TEST_SEEDS}
    assert f"| 1 | tiered, {label} |" in study.report(setting, result, "python -m experiments.dev_selection")


def test_the_best_cell_at_a_budget_names_its_lowest_language_against_dense():
    def run(seed: int, en: float, ru: float) -> dict:
        scores = {"test/en/f1": en, "test/ru/f1": ru, "test/zh/f1": 0.0, "test/avg/f1": (en + ru) / 3}
        return _metrics([0.0], test=scores["test/avg/f1"]) | {"seed": seed, "scores": scores}

    runs = {f"s{seed}": run(seed, 72.0, 30.0 + seed) for seed in study.TEST_SEEDS}  # en 90% of dense, ru 32 / 40
    dense = {f"s{seed}": run(seed, 80.0, 40.0) for seed in study.TEST_SEEDS}  # zh 0 for dense too: no share
    entry = {"pq": {"bytes": {"": {f"{b:g}": runs for b in study.BYTES_BUDGETS}}}, "none": {"tests": dense}}
    winner = next(line for line in study.equal_bytes(entry, "test/avg/f1", 40.0) if line.startswith("- 1% "))
    assert "; lowest language ru 80.0% of dense's" in winner
    single = next(line for line in study.equal_bytes(entry, "test/en/f1", 80.0) if line.startswith("- 1% "))
    assert "lowest language" not in single  # a one-language metric has none to name
    no_dense = next(line for line in study.equal_bytes({"pq": entry["pq"]}, "test/avg/f1", 40.0) if "- 1% " in line)
    assert "lowest language" not in no_dense
    english = {name: r | {"scores": {"test/en/f1": 72.0, "test/avg/f1": 72.0}} for name, r in runs.items()}
    one = {"pq": {"bytes": {"": {f"{b:g}": english for b in study.BYTES_BUDGETS}}}, "none": {"tests": dense}}
    only_en = next(line for line in study.equal_bytes(one, "test/avg/f1", 80.0) if line.startswith("- 1% "))
    assert "lowest language" not in only_en  # BC5CDR averages over English alone: no lowest to name
