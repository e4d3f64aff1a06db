"""XNLI premise/hypothesis pairs from the local XTREME files (test labels joined by row) or the Hub."""

from __future__ import annotations

import csv
import logging
import os
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from transformers import DataCollatorWithPadding, PreTrainedTokenizerBase

from asg.data.conll import load_hub_split, task_dir
from asg.data.loaders import LanguageDataModule

log = logging.getLogger(__name__)

Pair = dict[str, str]  # {"premise": ..., "hypothesis": ..., "label": "entailment" | "neutral" | "contradiction"}

LOCAL_FILES = {"validation": "dev-{lang}.tsv", "test": "test-{lang}.tsv"}  # under <data_dir>/xnli/xtreme_format
# XTREME stripped the test labels; every language's test file is a row-by-row translation of this one, whose
# English columns say which pair each label belongs to.
TEST_LABELS = Path("myxnli") / "my.genre.test.tsv"
ENGLISH_COLUMNS = ("sentence1_en", "sentence2_en")  # premise, hypothesis


def _rows(path: Path, *, columns: int) -> list[list[str]]:
    """Tab-separated rows with exactly `columns` fields; quotes are text, not CSV quoting."""
    with open(path, encoding="utf-8", newline="") as f:
        rows = list(csv.reader(f, delimiter="\t", quoting=csv.QUOTE_NONE))
    for line_no, row in enumerate(rows, 1):
        if len(row) != columns:
            raise ValueError(f"{path}:{line_no}: expected {columns} tab-separated fields, got {len(row)}")
    return rows


def _check_count(path: Path, rows: int, labels_path: Path, labels: int) -> None:
    if rows != labels:
        raise ValueError(
            f"cannot join XNLI test labels by row: {path} has {rows} rows but {labels_path} has {labels} labels; "
            "the files must be the row-parallel XNLI test split"
        )


def _letters(text: str) -> str:
    # The two releases differ in 8 of the 10,020 English sentences, only in punctuation and spaces (a curly quote,
    # a mis-decoded character, a leading space), so the join compares letters and digits alone.
    return "".join(c for c in text if c.isalnum())


def _test_labels(root: Path) -> list[str]:
    """The gold test labels, after checking row by row that they belong to the pairs of test-en.tsv."""
    path = root / TEST_LABELS
    if not path.is_file():
        raise FileNotFoundError(f"XNLI test files carry no labels; the gold labels are expected in {path}")
    with open(path, encoding="utf-8", newline="") as f:
        reader = csv.DictReader(f, delimiter="\t", quoting=csv.QUOTE_NONE)
        if not {"label", *ENGLISH_COLUMNS} <= set(reader.fieldnames or []):
            raise ValueError(
                f"{path}: expected a header row with columns 'label', {', '.join(map(repr, ENGLISH_COLUMNS))}; "
                f"got {reader.fieldnames}"
            )
        rows = list(reader)
    english = root / "xtreme_format" / LOCAL_FILES["test"].format(lang="en")
    if not english.is_file():
        raise FileNotFoundError(f"the XNLI test labels are checked against the English pairs, expected in {english}")
    pairs = _rows(english, columns=2)
    _check_count(english, len(pairs), path, len(rows))
    for line_no, (pair, row) in enumerate(zip(pairs, rows, strict=True), 1):
        if list(map(_letters, pair)) != [_letters(row[c]) for c in ENGLISH_COLUMNS]:
            raise ValueError(
                f"cannot join XNLI test labels by row: {english}:{line_no} is {pair} but line {line_no + 1} of "
                f"{path} labels {[row[c] for c in ENGLISH_COLUMNS]}; the files must be in the same row order"
            )
    return [row["label"] for row in rows]


def xnli_dir(data_dir: str | os.PathLike) -> Path:
    """`<data_dir>/xnli`, with the same errors as the NER folders when data.dir is wrong."""
    return task_dir(data_dir, "xnli", "xtreme_format").parent


def local_languages(data_dir: str | os.PathLike, split: str) -> list[str]:
    """Languages whose `split` file ('validation' or 'test') exists locally."""
    prefix, suffix = LOCAL_FILES[split].split("{lang}")
    folder = xnli_dir(data_dir) / "xtreme_format"
    return sorted(p.name[len(prefix) : -len(suffix)] for p in folder.glob(f"{prefix}*{suffix}"))


def read_xnli_local(data_dir: str | os.PathLike, split: str, lang: str) -> list[Pair]:
    """Pairs of one language's 'validation' (dev) or 'test' split of a local data dir.

    Dev files carry their labels; test labels come from the English label file, joined by row index once its
    English pairs are checked to be test-en.tsv's.
    """
    if split not in LOCAL_FILES:
        raise ValueError(
            f"local XNLI has splits {sorted(LOCAL_FILES)}, not {split!r} (the MultiNLI train split is Hub-only)"
        )
    root = xnli_dir(data_dir)
    path = root / "xtreme_format" / LOCAL_FILES[split].format(lang=lang)
    if split == "validation":
        rows = _rows(path, columns=3)
        return [{"premise": p, "hypothesis": h, "label": label} for p, h, label in rows]
    rows, labels = _rows(path, columns=2), _test_labels(root)
    _check_count(path, len(rows), root / TEST_LABELS, len(labels))
    return [{"premise": p, "hypothesis": h, "label": label} for (p, h), label in zip(rows, labels, strict=True)]


def read_xnli_hub(source: str, split: str, lang: str, limit: int | None = None) -> list[Pair]:
    """The first `limit` pairs (all if None) of one language's split on the Hub, labels as names."""
    dataset = load_hub_split(source, lang, split, "task.hub_url")
    if limit:
        dataset = dataset.select(range(min(limit, len(dataset))))  # before conversion: train has 393k rows
    names = dataset.features["label"].names
    return [{"premise": r["premise"], "hypothesis": r["hypothesis"], "label": names[r["label"]]} for r in dataset]


class XNLIDataModule(LanguageDataModule):
    """XNLI from a local data dir (`data_dir`) or the Hub (`data_dir=None`), one evaluation loader per language.

    The Hub has MultiNLI train for every language (the paper's setting) and validates on the dev split. Offline
    there is no train split: the model trains on the train language's dev split, whose last `val_size` pairs are
    held out for validation (model selection stays on the train language, the zero-shot rule); training pairs that
    share a premise with them are dropped (XNLI gives each premise three hypotheses), and `notes` says so.
    """

    def __init__(
        self,
        tokenizer: PreTrainedTokenizerBase,
        *,
        labels: Sequence[str],
        hub_languages: Sequence[str] = ("en",),
        hub_source: str = "facebook/xnli",
        val_size: int = 490,
        **shared: Any,  # LanguageDataModule's settings
    ) -> None:
        super().__init__(tokenizer, **shared)
        self.hub_source = hub_source
        self.labels = list(labels)
        self.label2id = {label: i for i, label in enumerate(self.labels)}
        if self.data_dir:
            self._resolve_languages(
                local_languages(self.data_dir, "validation"), local_languages(self.data_dir, "test")
            )
        else:
            self._resolve_languages(list(hub_languages), list(hub_languages))
        if val_size < 0:
            raise ValueError(f"val_size={val_size} must be >= 0 (0: no validation)")
        self.val_size = val_size
        self.val_langs = [] if self.data_dir and not val_size else [self.train_lang]
        self.notes: list[str] = []
        self.encoded: dict[tuple[str, str], list[dict[str, Any]]] = {}

    @property
    def num_train_samples(self) -> int:
        return len(self.encoded[("train", self.train_lang)])

    def _local_train_and_val(self, lang: str) -> tuple[list[Pair], list[Pair]]:
        """Offline: the dev pairs but the last `val_size` for training (less those sharing a premise), those for val."""
        pairs = read_xnli_local(self.data_dir, "validation", lang)
        if self.val_size >= len(pairs):
            raise ValueError(f"val_size={self.val_size} leaves no training pairs: XNLI {lang} dev has {len(pairs)}")
        cut = len(pairs) - self.val_size
        held_out = {p["premise"] for p in pairs[cut:]}
        return [p for p in pairs[:cut] if p["premise"] not in held_out], pairs[cut:]

    def _pairs(self, stage: str, lang: str, limit: int | None) -> list[Pair]:
        if not self.data_dir:
            split = {"train": "train", "val": "validation", "test": "test"}[stage]
            pairs = read_xnli_hub(self.hub_source, split, lang, limit)
        elif stage == "test":
            pairs = read_xnli_local(self.data_dir, "test", lang)[:limit]
        else:
            train, val = self._local_train_and_val(lang)
            pairs = (train if stage == "train" else val)[:limit]
        unknown = {p["label"] for p in pairs} - set(self.label2id)
        if unknown:
            raise ValueError(
                f"{self.task} {stage}/{lang} has labels {sorted(unknown)} not in task.labels={self.labels}"
            )
        return pairs

    def _encode(self, stage: str, lang: str, limit: int | None) -> None:
        if (stage, lang) in self.encoded:
            return
        pairs = self._pairs(stage, lang, limit)
        enc = self.tokenizer(
            [p["premise"] for p in pairs],
            [p["hypothesis"] for p in pairs],
            truncation=True,
            max_length=self.max_length,
        )
        self.encoded[(stage, lang)] = [
            {key: values[i] for key, values in enc.items()} | {"labels": self.label2id[p["label"]]}
            for i, p in enumerate(pairs)
        ]
        log.info("%s %s/%s: %d pairs", self.task, stage, lang, len(pairs))

    def setup(self, stage: str | None = None) -> None:
        if stage in (None, "fit"):
            self._encode("train", self.train_lang, self.max_train_samples)
        if stage in (None, "fit", "validate"):
            for lang in self.val_langs:
                self._encode("val", lang, self.max_eval_samples)
        if stage in (None, "fit") and self.data_dir and not self.notes:
            lang, n = self.train_lang, self.num_train_samples
            self.notes.append(f"trained on XNLI {lang} dev ({n:,} pairs), not MultiNLI train: not the paper's setting")
            if self.val_langs:
                note = (
                    f"validation: the last {self.val_size:,} XNLI {lang} dev pairs, held out from training (as are "
                    "the training pairs that share a premise with them)"
                )
                scored = len(self.encoded[("val", lang)])
                if scored < self.val_size:
                    note += f"; the first {scored:,} of them scored (data.max_eval_samples)"
                self.notes.append(note)
            else:
                self.notes.append(f"no validation scores: val_size=0, all of XNLI {lang} dev is training data")
            log.warning("%s", "; ".join(self.notes))
        # On the Hub path the test sets are read before training too, so a language the dataset lacks fails at once.
        if stage in (None, "test") or (stage == "fit" and not self.data_dir):
            for lang in self.eval_langs:
                self._encode("test", lang, self.max_eval_samples)

    def collator(self) -> Callable[[list[dict[str, Any]]], dict]:
        return DataCollatorWithPadding(self.tokenizer)
