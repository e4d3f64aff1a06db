"""The GPU check's CPU-runnable parts: its data slice, and every check at toy sizes with the CPU as the device."""

from __future__ import annotations

import json

import pytest

from experiments import gpu_check


@pytest.fixture(scope="module")
def work(tmp_path_factory, shared_data):
    root = tmp_path_factory.mktemp("gpu_check")
    gpu_check.prepare_data(shared_data.parent, root)
    return root


def test_prepare_writes_the_release_layout_slice(work):
    from asg.data.conll import read_conll

    for split, sentences in gpu_check.SLICE.items():
        rows = read_conll(work / "data" / "bc5cdr" / "BC5CDR-IOB" / f"{split}.tsv")
        assert len(rows) == sentences and all(len(r["tokens"]) == len(r["tags"]) for r in rows)
    assert len((work / "corpus.txt").read_text().splitlines()) > 1000


def test_every_check_runs_on_the_cpu(work, tmp_path):
    result = gpu_check.run(gpu_check.torch.device("cpu"), quick=True, work=work, out=tmp_path)
    failed = {name: check.get("error") for name, check in result["checks"].items() if not check["ok"]}
    assert not failed, failed
    checks = {name: check["result"] for name, check in result["checks"].items()}
    fit = checks["pq_fit"]
    assert fit["device_rel_error"] == fit["cpu_rel_error"] and fit["codes_agree_pct"] == 100.0  # CPU twice
    assert fit["device_repeat_identical"]
    assert checks["head"]["max_abs_diff"] < 1e-3
    assert checks["export"] == {"fit_device": "cpu", "identical_logits": True}
    rows = checks["fine_tune"]
    cpu_runs = [run for run in gpu_check.RUNS if run[2] != "16-mixed"]
    assert [(r["model"], r["method"], r["precision"]) for r in rows] == cpu_runs
    for row in rows:
        assert row["steps"] == gpu_check.QUICK["steps"] and 0 <= row["test_f1"] <= 100, row
        assert row["fit_device"] == ("cpu" if row["method"] == "pq" else None), row
    assert {r["head"] for r in rows if r["model"] == "mt5"} == {"none"}  # BC5CDR runs mT5's encoder
    on_disk = json.loads((tmp_path / "gpu_check.json").read_text())
    assert on_disk["checks"].keys() == result["checks"].keys()
    assert "## fine_tune: ok" in (tmp_path / "gpu_check.md").read_text()


def test_run_needs_the_prepared_folder(tmp_path):
    with pytest.raises(FileNotFoundError, match="run `python -m experiments.gpu_check prepare` first"):
        gpu_check.run(gpu_check.torch.device("cpu"), quick=True, work=tmp_path, out=tmp_path)
