"""Extractive question answering with per-language SQuAD v1.1 and MLQA-style EM/F1."""

from __future__ import annotations

import logging
from collections import defaultdict
from typing import Any

import torch
from transformers import PreTrainedModel

from asg.data.qa import MODEL_KEYS
from asg.squad import best_answers, qa_scores
from asg.tasks.common import TaskModule, log_language_scores, model_inputs

log = logging.getLogger(__name__)


class QuestionAnsweringModule(TaskModule):
    """Fine-tunes a `*ForQuestionAnswering` model; scores answer text picked from all windows of each question.

    Per language it logs `exact_match` / `f1` (SQuAD v1.1's English normaliser, as XQuAD is reported) and
    `lang_exact_match` / `lang_f1` (MLQA's language-aware normaliser: Unicode punctuation, the language's
    articles, Chinese scored per character).
    """

    def __init__(
        self,
        model: PreTrainedModel,
        *,
        n_best: int = 20,
        max_answer_length: int = 30,
        **common: Any,  # TaskModule settings: optimizer, warmup_ratio, codebook_lr_scale, asg
    ) -> None:
        super().__init__(model, **common)
        self.n_best, self.max_answer_length = n_best, max_answer_length
        # dataloader index -> feature index -> (start logits, end logits), each (T,)
        self._logits: dict[int, dict[int, tuple[torch.Tensor, torch.Tensor]]] = defaultdict(dict)

    def training_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> torch.Tensor:
        out = self.model(
            **model_inputs(batch, MODEL_KEYS),
            start_positions=batch["start_positions"],
            end_positions=batch["end_positions"],
        )
        self.log("train/loss", out.loss, prog_bar=True)
        return out.loss

    def _eval_step(self, batch: dict[str, torch.Tensor], dataloader_idx: int) -> None:
        out = self.model(**model_inputs(batch, MODEL_KEYS))
        starts, ends = out.start_logits.float().cpu(), out.end_logits.float().cpu()  # (B, T)
        for row, index in enumerate(batch["feature_index"].tolist()):
            self._logits[dataloader_idx][index] = (starts[row], ends[row])

    def _score(self, stage: str) -> None:
        datamodule = self.trainer.datamodule
        langs = datamodule.val_langs if stage == "val" else datamodule.eval_langs
        per_lang = {}
        for idx, lang in enumerate(langs):
            examples, features = datamodule.examples[(stage, lang)], datamodule.features[(stage, lang)]
            logits = self._logits[idx]
            seen = [f for f in features if f["feature_index"] in logits]
            predicted = best_answers(
                {i: e["context"] for i, e in enumerate(examples)},
                seen,
                [logits[f["feature_index"]][0] for f in seen],
                [logits[f["feature_index"]][1] for f in seen],
                n_best=self.n_best,
                max_answer_length=self.max_answer_length,
            )
            done = sorted(predicted)
            if not done:
                log.warning("%s/%s: no question was evaluated; no score", stage, lang)
                continue
            if len(done) < len(examples):  # limit_*_batches or fast_dev_run: score what was seen, say so
                log.warning("%s/%s: scored %d of %d questions", stage, lang, len(done), len(examples))
            predictions = [predicted[i] for i in done]
            answers = [examples[i]["answers"] for i in done]
            per_lang[lang] = qa_scores(predictions, answers, lang)
        self._logits.clear()
        self.scores.update(log_language_scores(self, stage, per_lang))
