"""Every model x task cell of the grid composes and runs one training and evaluation step on tiny models."""

from __future__ import annotations

import pytest

from tests.test_pipeline import tiny_run

MODELS = ["mbert", "xlmr", "mt5", "biobert", "minilm", "e5_small"]
TASKS = {  # task -> (family, a score it must report, overrides)
    "bc5cdr": ("token_classification", "test/en/f1", []),
    "wikiann": ("token_classification", "test/de/f1", ["transfer.eval_langs=[en,de]"]),
    "xnli": ("sequence_classification", "test/de/accuracy", ["transfer.eval_langs=[en,de]"]),
    "xquad": ("question_answering", "test/de/f1", ["transfer.eval_langs=[en,de]"]),
}


@pytest.mark.parametrize("task", list(TASKS))
@pytest.mark.parametrize("model", MODELS)
def test_cell_runs_one_step(tmp_path, tiny_dirs, shared_data, model, task):
    family, score, overrides = TASKS[task]
    metrics = tiny_run(tmp_path, tiny_dirs, shared_data, model, f"task={task}", *overrides)
    # mT5 is generative where the task has a text-to-text form; its NER uses the encoder with a token head.
    assert metrics["family"] == ("text_to_text" if model == "mt5" and task in ("xnli", "xquad") else family)
    assert metrics["steps"] == 1 and score in metrics["scores"]
    assert 0.0 <= metrics["scores"][score] <= 100.0
