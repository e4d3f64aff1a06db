"""The performance benchmark's quick mode writes its table, and the optimizer-state accounting is exact."""

from __future__ import annotations

import json

import pytest

from experiments.performance import MODELS, main


@pytest.mark.slow
def test_quick_mode_writes_one_table_with_exact_accounting(tmp_path, e5_dir, minilm_dir):
    main(["--quick", "--threads", "1", "--out-dir", str(tmp_path), "--e5-dir", e5_dir, "--minilm-dir", minilm_dir])
    assert sorted(p.name for p in tmp_path.iterdir()) == ["performance.json", "performance.md"]  # no temp files left
    payload = json.loads((tmp_path / "performance.json").read_text())
    md = (tmp_path / "performance.md").read_text()
    assert "Command: `python -m experiments.performance --quick" in md.splitlines()[2]
    assert {"torch", "transformers"} <= set(payload["versions"]) and "torch threads [1]" in payload["cpus"]

    rows = payload["rows"]
    per_model = ["train step", "trainable parameters", "optimizer state", "peak RSS while", "peak RSS, whole"]
    expected = [(setting["label"], measure) for setting in MODELS.values() for measure in per_model]
    lookup = ["forward+backward vs nn.Embedding (dense", "forward+backward vs nn.Embedding(sp", "forward+backward, "]
    lookup += ["backward only", "forward+backward+optimizer step, AdamW", "forward+backward+optimizer step, ASG(sp"]
    lookup += ["forward only", "backward only vs one read"]
    expected += [("embedding lookup", measure) for measure in lookup]
    expected += [("export, multilingual-e5-small", "dense float32")]
    assert len(rows) == len(expected) == md.count("\n| ") - 1  # one Markdown line per row, below the header
    for row, (what, measure) in zip(rows, expected, strict=True):
        assert row["what"].startswith(what) and row["measure"].startswith(measure)
        assert row["ratio"] == pytest.approx(row["asg"] / row["baseline"])

    for name, setting in MODELS.items():
        model = payload["raw"]["models"][name]
        vocab, dim = model["stats"]["vocab_size"], model["stats"]["hidden_size"]
        dense, asg = model["train"]["none"], model["train"]["asg"]
        # AdamW keeps two float32 moments per trainable value: ASG trains k x d codebook values instead of V x d
        saved = dense["optimizer_state_bytes"] - asg["optimizer_state_bytes"]
        assert saved == (vocab * dim - setting["k"] * dim) * 2 * 4
        assert dense["trainable_params"] - asg["trainable_params"] == vocab * dim - setting["k"] * dim
    export = rows[-1]
    assert export["baseline"] / export["asg"] >= 4
    assert abs(payload["raw"]["models"]["e5_small"]["sizes"]["arithmetic_diff_pct"]) < 2


def test_head_rows_time_and_measure_both_heads_per_shape():
    from experiments.performance import head, head_rows

    job = {"threads": 0, "vocab": 500, "dim": 32, "m": 4, "k": 16, "shapes": [[2, 1], [2, 3]], "warmup": 0, "reps": 1}
    result = head(job)
    rows = head_rows(result)
    assert [shape["length"] for shape in result["shapes"]] == [1, 3]
    assert len(rows) == 2 * 2 * 2  # per shape: forward and forward+backward, each time and peak memory
    for what, measure, unit, baseline, asg, _ in rows:
        assert what.startswith("output head, V=500 d=32") and ("hidden 2x1x32" in measure or "2x3x32" in measure)
        assert (unit == "ms" and baseline > 0 and asg > 0) or (unit == "bytes" and baseline >= 0 and asg >= 0)


def test_skip_training_runs_the_lookup_alone(tmp_path, e5_dir):
    main(["--quick", "--skip-training", "--threads", "1", "--out-dir", str(tmp_path), "--e5-dir", e5_dir])
    payload = json.loads((tmp_path / "performance.json").read_text())
    assert payload["raw"]["models"] == {}
    assert [row["what"].split(",")[0] for row in payload["rows"]] == ["embedding lookup"] * 8
    lookup_ms = payload["raw"]["lookup"]["median_ms"]
    for name in ("dense", "sparse", "asg", "asg_sparse"):  # the backward is a part of forward + backward
        assert 0 < lookup_ms[f"{name}_backward"] < lookup_ms[f"{name}_train"]
    assert lookup_ms.keys() >= {"sparse_step", "asg_step", "asg_sparse_step"} and "dense_step" not in lookup_ms
    assert lookup_ms["read_upstream"] > 0
    assert payload["raw"]["lookup"]["vocab"] == 250037 and payload["raw"]["lookup"]["dim"] == 384
