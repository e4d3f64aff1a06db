"""Extractive QA data: SQuAD v1.1 JSON reader, strided question+context windows, the Lightning datamodule."""

from __future__ import annotations

import json
import logging
import os
import re
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import torch
from transformers import PreTrainedTokenizerBase

from asg.data.conll import load_hub_split, task_dir
from asg.data.loaders import LanguageDataModule

log = logging.getLogger(__name__)

Example = dict[str, Any]  # {"id", "context", "question", "answers": {"text": [...], "answer_start": [...]}}
MODEL_KEYS = ("input_ids", "attention_mask", "token_type_ids")


def read_squad_json(path: str | os.PathLike) -> list[Example]:
    """Every question of a SQuAD v1.1-format file (XQuAD, MLQA, TyDiQA-GoldP), in file order.

    Ids are kept as in the file; they are not always unique (TyDiQA-GoldP train numbers questions per passage).
    """
    with open(path, encoding="utf-8") as f:
        articles = json.load(f)["data"]
    return [
        {
            "id": qa["id"],
            "context": paragraph["context"],
            "question": qa["question"],
            "answers": {
                "text": [a["text"] for a in qa["answers"]],
                "answer_start": [a["answer_start"] for a in qa["answers"]],
            },
        }
        for article in articles
        for paragraph in article["paragraphs"]
        for qa in paragraph["qas"]
    ]


def _windows(examples: Sequence[Example], tokenizer: PreTrainedTokenizerBase, max_length: int, doc_stride: int):
    # Question first, context cut into windows of max_length tokens that overlap by doc_stride tokens.
    return tokenizer(
        [e["question"].lstrip() for e in examples],  # some questions start with runs of spaces
        [e["context"] for e in examples],
        truncation="only_second",
        max_length=max_length,
        stride=doc_stride,
        return_overflowing_tokens=True,
        return_offsets_mapping=True,
    )


def _inputs(enc: Any, i: int) -> dict[str, list[int]]:
    return {key: enc[key][i] for key in MODEL_KEYS if key in enc}


def train_features(
    examples: Sequence[Example], tokenizer: PreTrainedTokenizerBase, *, max_length: int, doc_stride: int
) -> list[dict[str, Any]]:
    """Windows with the first gold answer's start/end token; windows that do not contain it point at CLS."""
    enc = _windows(examples, tokenizer, max_length, doc_stride)
    features = []
    for i, offsets in enumerate(enc["offset_mapping"]):
        example = examples[enc["overflow_to_sample_mapping"][i]]
        sequence = enc.sequence_ids(i)
        context = [t for t, s in enumerate(sequence) if s == 1]
        cls = enc["input_ids"][i].index(tokenizer.cls_token_id) if tokenizer.cls_token_id is not None else 0
        start = end = cls
        texts, char_starts = example["answers"]["text"], example["answers"]["answer_start"]
        if context and texts and texts[0]:
            char_start, char_end = char_starts[0], char_starts[0] + len(texts[0])
            if offsets[context[0]][0] <= char_start and char_end <= offsets[context[-1]][1]:
                # First context token ending after the answer start, last one starting before its end.
                start = next(t for t in context if offsets[t][1] > char_start)
                end = next(t for t in reversed(context) if offsets[t][0] < char_end)
        features.append(_inputs(enc, i) | {"start_positions": start, "end_positions": end})
    return features


def eval_features(
    examples: Sequence[Example], tokenizer: PreTrainedTokenizerBase, *, max_length: int, doc_stride: int
) -> list[dict[str, Any]]:
    """Windows carrying `example_id` (the example's position) and offsets for context tokens only (else None)."""
    enc = _windows(examples, tokenizer, max_length, doc_stride)
    features = []
    for i, offsets in enumerate(enc["offset_mapping"]):
        sequence = enc.sequence_ids(i)
        features.append(
            _inputs(enc, i)
            | {
                "example_id": enc["overflow_to_sample_mapping"][i],
                "feature_index": i,
                "offset_mapping": [tuple(o) if s == 1 else None for o, s in zip(offsets, sequence, strict=True)],
            }
        )
    return features


class QACollator:
    """Pads model inputs with the tokenizer; integer columns (targets, feature index) become tensors."""

    def __init__(self, tokenizer: PreTrainedTokenizerBase) -> None:
        self.tokenizer = tokenizer

    def __call__(self, features: list[dict[str, Any]]) -> dict[str, torch.Tensor]:
        inputs = [{key: f[key] for key in MODEL_KEYS if key in f} for f in features]
        batch = dict(self.tokenizer.pad(inputs, padding=True, return_tensors="pt"))
        for key in ("start_positions", "end_positions", "feature_index"):
            if key in features[0]:
                batch[key] = torch.tensor([f[key] for f in features])
        return batch


def _local_languages(root: Path, pattern: str) -> list[str]:
    """Languages whose file exists for a path pattern with one or more `{lang}` fields."""
    regex = re.escape(pattern).replace(re.escape("{lang}"), "(?P<lang>[A-Za-z_-]+)", 1)
    regex = regex.replace(re.escape("{lang}"), "(?P=lang)")
    found = (re.fullmatch(regex, p.relative_to(root).as_posix()) for p in root.glob(pattern.replace("{lang}", "*")))
    return sorted(m["lang"] for m in found if m)


class QADataModule(LanguageDataModule):
    """Train on English extractive QA, evaluate zero-shot per language (XQuAD by default).

    Local data (`data_dir`): TyDiQA-GoldP en train stands in for SQuAD v1.1, which no offline copy holds; its
    last `val_size` questions are held out for validation (the shared TyDiQA-GoldP dev files carry no gold
    answers), and questions sharing a passage with them are dropped from training. Hub (`data_dir=None`):
    SQuAD v1.1 train / validation as in the paper, evaluation sets from `hub_eval`: a Hub dataset, or with
    `hub_eval_file` set, the URL of a release archive holding SQuAD-format files (MLQA, whose Hub repository is a
    loading script that datasets >= 3 refuses). `eval_split` names the benchmark split the evaluation data is; when
    it is not test, the scores are logged under its name (e.g. dev/<lang>/f1) and `notes` say so.
    """

    def __init__(
        self,
        tokenizer: PreTrainedTokenizerBase,
        *,
        train_file: str,
        eval_file: str,
        hub_languages: Sequence[str],
        hub_train: str = "rajpurkar/squad",
        hub_eval: str = "google/xquad",
        hub_eval_config: str | None = "xquad.{lang}",
        hub_eval_split: str | None = "validation",
        hub_eval_file: str | None = None,
        eval_split: str = "test",
        val_size: int = 300,
        max_length: int = 384,  # QA windows: task.max_length, not data.max_length
        doc_stride: int = 128,
        **shared: Any,  # LanguageDataModule's settings
    ) -> None:
        super().__init__(tokenizer, max_length=max_length, **shared)
        if doc_stride >= max_length:
            raise ValueError(f"doc_stride={doc_stride} must be smaller than max_length={max_length}")
        self.train_file, self.eval_file = train_file, eval_file
        self.hub_train, self.hub_eval = hub_train, hub_eval
        self.hub_eval_config, self.hub_eval_split, self.hub_eval_file = hub_eval_config, hub_eval_split, hub_eval_file
        self.val_size, self.doc_stride = val_size, doc_stride
        self.root = Path(self.data_dir) if self.data_dir else None
        if self.root is not None:
            for pattern in (train_file, eval_file):  # clear errors for a missing data.dir or dataset folder
                task_dir(self.data_dir, Path(pattern).parts[0], None)
            train_available = _local_languages(self.root, train_file)
            eval_available = _local_languages(self.root, eval_file)
            if not eval_available:
                raise FileNotFoundError(
                    f"data.dir={self.data_dir!r} holds no file matching task.eval_file={eval_file!r} for any language: "
                    "point task.eval_file (or task.eval_split, where the file names hold it) at files it has"
                )
            self.notes = [
                "trained on TyDiQA-GoldP en train, not SQuAD v1.1: not the paper's setting",
                f"validation: the last {val_size} TyDiQA-GoldP en train questions, held out from training",
            ]
        else:
            train_available, eval_available = ["en"], list(hub_languages)  # SQuAD v1.1 is English only
            self.notes = []
        self.eval_split = eval_split  # the scores are named for it (asg.tasks.common.log_language_scores)
        if eval_split != "test":
            self.notes.append(
                f"evaluated on {self.task} {eval_split}, not test: scores are logged as {eval_split}/<lang>"
            )
        self._resolve_languages(train_available, eval_available)
        self.val_langs = [self.train_lang]
        self.examples: dict[tuple[str, str], list[Example]] = {}
        self.features: dict[tuple[str, str], list[dict[str, Any]]] = {}

    @property
    def num_train_samples(self) -> int:
        """Training questions (each gives one or more windows)."""
        return len(self.examples[("train", self.train_lang)])

    def _train_and_val(self, lang: str) -> tuple[list[Example], list[Example]]:
        if self.root is None:
            train, val = (load_hub_split(self.hub_train, None, s, "task.hub_train") for s in ("train", "validation"))
            return list(map(dict, train)), list(map(dict, val))
        examples = read_squad_json(self.root / self.train_file.format(lang=lang))
        val = examples[-self.val_size :] if self.val_size else []
        held_out = {e["context"] for e in val}
        return [e for e in examples[: len(examples) - len(val)] if e["context"] not in held_out], val

    def _test(self, lang: str) -> list[Example]:
        if self.root is not None:
            return read_squad_json(self.root / self.eval_file.format(lang=lang))
        if self.hub_eval_file:
            return read_squad_json(self._archive_file(lang))
        config = self.hub_eval_config.format(lang=lang)
        return list(map(dict, load_hub_split(self.hub_eval, config, self.hub_eval_split, "task.hub_url")))

    def _archive_file(self, lang: str) -> Path:
        """One language's file of the `hub_eval` archive (a URL or a local path), downloaded and extracted once."""
        import datasets

        name = self.hub_eval_file.format(lang=lang)
        path = Path(datasets.DownloadManager().download_and_extract(self.hub_eval)) / name
        if not path.is_file():
            raise FileNotFoundError(
                f"task.hub_url={self.hub_eval!r} has no {name}: point task.hub_url at the release archive, or set "
                f"task.eval_split to a split it holds, or leave {lang} out of transfer.eval_langs"
            )
        return path

    def _store(self, stage: str, lang: str, examples: list[Example], limit: int | None) -> None:
        examples = examples[:limit] if limit else examples
        if stage != "train" and not all(any(t.strip() for t in e["answers"]["text"]) for e in examples):
            raise ValueError(f"{self.task} {stage}/{lang}: some questions have no gold answer text to score against")
        build = train_features if stage == "train" else eval_features
        self.examples[(stage, lang)] = examples
        self.features[(stage, lang)] = build(
            examples, self.tokenizer, max_length=self.max_length, doc_stride=self.doc_stride
        )
        log.info(
            "%s %s/%s: %d questions, %d windows",
            self.task,
            stage,
            lang,
            len(examples),
            len(self.features[(stage, lang)]),
        )

    def setup(self, stage: str | None = None) -> None:
        lang = self.train_lang
        if stage in (None, "fit", "validate") and ("val", lang) not in self.examples:
            train, val = self._train_and_val(lang)
            self._store("train", lang, train, self.max_train_samples)
            self._store("val", lang, val, self.max_eval_samples)
        # On the Hub path the test sets are read before training too, so a language the dataset lacks fails at once.
        if stage in (None, "test") or (stage == "fit" and self.root is None):
            for lang in self.eval_langs:
                if ("test", lang) not in self.examples:
                    self._store("test", lang, self._test(lang), self.max_eval_samples)

    def collator(self) -> Callable[[list[dict[str, Any]]], dict]:
        return QACollator(self.tokenizer)

    def _rows(self, stage: str, lang: str) -> list[dict[str, Any]]:
        return self.features[(stage, lang)]
