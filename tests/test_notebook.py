"""The concept-inspection notebook runs end to end on the real e5 embedding, and the checked-in copy is executed."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

nbformat = pytest.importorskip("nbformat")
nbclient = pytest.importorskip("nbclient")

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOK = ROOT / "notebooks" / "concepts.ipynb"
# a smaller fit than the stored run (m=8, k=1024 on 20,000 rows): same code paths, uint8 codes instead of int16
PARAMS = {"ASG_NB_M": "8", "ASG_NB_K": "256", "ASG_NB_SAMPLE_ROWS": "4096", "ASG_NB_ITERS": "5", "ASG_NB_SEED": "1"}


def _stream_text(cell) -> str:
    return "".join(out.get("text", "") for out in cell.outputs if out.output_type == "stream" and out.name == "stdout")


def _errors(nb) -> list[str]:
    return [
        f"{out.get('ename')}: {out.get('evalue')}"
        for cell in nb.cells
        if cell.cell_type == "code"
        for out in cell.outputs
        if out.output_type == "error"
    ]


def _checks_result(nb) -> dict:
    """The JSON summary the notebook's final 'checks' cell prints after its assertions pass."""
    cells = [c for c in nb.cells if c.cell_type == "code" and "checks" in c.metadata.get("tags", [])]
    assert len(cells) == 1, "the notebook should have exactly one cell tagged 'checks'"
    lines = [line for line in _stream_text(cells[0]).splitlines() if line.startswith("INVARIANTS OK ")]
    assert lines, "the checks cell did not print its summary"
    return json.loads(lines[-1].removeprefix("INVARIANTS OK "))


def test_checked_in_notebook_is_executed():
    """GitHub renders the stored outputs, so every code cell must have run, in order, without an error."""
    nb = nbformat.read(NOTEBOOK, as_version=4)
    code = [c for c in nb.cells if c.cell_type == "code"]
    assert code and [c.execution_count for c in code] == list(range(1, len(code) + 1))
    assert not _errors(nb)
    assert any("image/png" in out.get("data", {}) for c in code for out in c.outputs), "usage plot missing"
    result = _checks_result(nb)
    assert (result["m"], result["k"]) == (8, 1024)
    assert result["usage_sums"] == [result["V"]] * result["m"]
    assert NOTEBOOK.stat().st_size < 400_000, "stored outputs should stay small"


def test_notebook_executes(e5_dir, monkeypatch):
    nb = nbformat.read(NOTEBOOK, as_version=4)
    for name, value in {**PARAMS, "ASG_E5_SMALL_DIR": e5_dir, "HF_HUB_OFFLINE": "1"}.items():
        monkeypatch.setenv(name, value)  # the kernel inherits this process's environment
    client = nbclient.NotebookClient(
        nb, kernel_name="python3", timeout=300, record_timing=False, resources={"metadata": {"path": str(ROOT)}}
    )
    client.execute()  # raises CellExecutionError, with the traceback, if any cell fails
    assert not _errors(nb)

    result = _checks_result(nb)
    config = json.loads((Path(e5_dir) / "config.json").read_text())
    m, k = int(PARAMS["ASG_NB_M"]), int(PARAMS["ASG_NB_K"])
    assert (result["V"], result["m"], result["k"]) == (config["vocab_size"], m, k)
    assert result["usage_sums"] == [config["vocab_size"]] * m
    assert 0 <= result["empty_centroids"] <= m * k
    assert 0 < result["rel_error"] < 1
    for key in ("translation_mean_shared", "mismatched_mean_shared", "random_mean_shared"):
        assert 0 <= result[key] <= m
    # translations share far more concept ids than random pairs (about 1 vs 0.01 of 8 with k=1024)
    assert result["translation_mean_shared"] > 5 * result["random_mean_shared"]

    text = "".join(_stream_text(c) for c in nb.cells if c.cell_type == "code")
    assert "multilingual-e5-small (Q4-dequantized)" in text
    assert f"m={m}, k={k}" in text
    assert "concepts:" in text and "dense   :" in text  # the neighbour lists were printed
