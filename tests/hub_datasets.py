"""Local replicas of the Hub datasets the datamodules read, built from the shared benchmark data.

A replica has its repository's layout: `<config>/<split>-00000-of-00001.parquet` files written by `datasets` (the
features ride in the parquet schema, as in files the Hub's converter wrote), and a README.md whose YAML header has
the card's `dataset_info` (features in the card's notation, split sizes) and `configs` (data files per split).
`datasets.load_dataset(<replica dir>, <config>, split=...)` then resolves configs, splits and features the way it
does for the Hub id. Each split holds the first `rows` rows of the same split in ../shared/data, except where no
offline copy exists: XNLI train (MultiNLI) holds that language's dev rows after the ones in validation, SQuAD
train holds TyDiQA-GoldP en train and SQuAD validation holds XQuAD en (240 SQuAD v1.1 dev paragraphs, one answer
per question). Splits with neither (WikiANN train outside English) are left out.

MLQA has no Hub dataset to copy (facebook/mlqa is a loading script): `mlqa_archive` writes a zip with the layout of
the release MLQA_V1.zip instead.
"""

from __future__ import annotations

import copy
import json
import zipfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import datasets
import yaml

from asg.data.conll import SPLIT_FILES, read_conll
from asg.data.qa import read_squad_json
from asg.data.xnli import read_xnli_local

WIKIANN_TAGS = ["O", "B-PER", "I-PER", "B-ORG", "I-ORG", "B-LOC", "I-LOC"]
XNLI_LABELS = ["entailment", "neutral", "contradiction"]


def _class_label(names: Sequence[str]) -> dict:
    return {"class_label": {"names": {str(i): name for i, name in enumerate(names)}}}


# Features as each repository's README.md writes them (the `sequence:` notation of the datasets that converted them).
ANSWERS = {
    "name": "answers",
    "sequence": [{"name": "text", "dtype": "string"}, {"name": "answer_start", "dtype": "int32"}],
}
CARD_FEATURES = {
    "wikiann": [
        {"name": "tokens", "sequence": "string"},
        {"name": "ner_tags", "sequence": _class_label(WIKIANN_TAGS)},
        {"name": "langs", "sequence": "string"},
        {"name": "spans", "sequence": "string"},
    ],
    "xnli": [
        {"name": "premise", "dtype": "string"},
        {"name": "hypothesis", "dtype": "string"},
        {"name": "label", "dtype": _class_label(XNLI_LABELS)},
    ],
    "xquad": [
        {"name": "id", "dtype": "string"},
        {"name": "context", "dtype": "string"},
        {"name": "question", "dtype": "string"},
        ANSWERS,
    ],
    "squad": [
        {"name": "id", "dtype": "string"},
        {"name": "title", "dtype": "string"},
        {"name": "context", "dtype": "string"},
        {"name": "question", "dtype": "string"},
        ANSWERS,
    ],
}


def write_repo(root: Path, card: list[dict], configs: dict[str, dict[str, list[dict[str, Any]]]]) -> Path:
    """A dataset repository in `root`: config -> split -> rows, with the card declaring what was written."""
    features = datasets.Features._from_yaml_list(card)  # the card is the one source of the features
    infos, entries = [], []
    for config, splits in configs.items():
        sizes, data_files, download_size = [], [], 0
        for split, rows in splits.items():
            path = root / config / f"{split}-00000-of-00001.parquet"
            path.parent.mkdir(parents=True, exist_ok=True)
            table = datasets.Dataset.from_list(rows, features=features)
            table.to_parquet(path)
            download_size += path.stat().st_size
            sizes.append({"name": split, "num_bytes": table.data.nbytes, "num_examples": len(table)})
            data_files.append({"split": split, "path": f"{config}/{split}-*"})
        dataset_size = sum(s["num_bytes"] for s in sizes)
        infos.append(
            {
                "config_name": config,
                "features": copy.deepcopy(card),  # a copy per config: the real cards repeat it, no YAML anchors
                "splits": sizes,
                "download_size": download_size,
                "dataset_size": dataset_size,
            }
        )
        entries.append({"config_name": config, "data_files": data_files})
    header = yaml.safe_dump({"dataset_info": infos, "configs": entries}, sort_keys=False, allow_unicode=True)
    (root / "README.md").write_text(f"---\n{header}---\n\n# Local replica for tests\n", encoding="utf-8")
    return root


def _spans(tokens: list[str], tags: list[str]) -> list[str]:
    """Entities as WikiANN's `spans` column has them ("PER: Anton Wilhelm von Webern"), ["None"] if none."""
    spans: list[tuple[str, list[str]]] = []
    previous = "O"
    for token, tag in zip(tokens, tags, strict=True):
        if tag != "O" and (tag.startswith("B-") or tag[2:] != previous[2:]):
            spans.append((tag[2:], [token]))
        elif tag != "O":
            spans[-1][1].append(token)
        previous = tag
    return [f"{kind}: {' '.join(words)}" for kind, words in spans] or ["None"]


def wikiann_replica(root: Path, shared: Path, langs: Sequence[str], rows: int) -> Path:
    """unimelb-nlp/wikiann: one config per language, splits validation/test/train, ner_tags as ClassLabel ids."""
    configs: dict[str, dict[str, list[dict[str, Any]]]] = {}
    for lang in langs:
        configs[lang] = {}
        for split in ("validation", "test", "train"):  # the card's order
            path = shared / "wikiann" / SPLIT_FILES["wikiann"][split].format(lang=lang)
            if path.is_file():
                configs[lang][split] = [
                    {
                        "tokens": s["tokens"],
                        "ner_tags": [WIKIANN_TAGS.index(t) for t in s["tags"]],
                        "langs": [lang] * len(s["tokens"]),
                        "spans": _spans(s["tokens"], s["tags"]),
                    }
                    for s in read_conll(path)[:rows]
                ]
    return write_repo(root, CARD_FEATURES["wikiann"], configs)


def xnli_replica(root: Path, shared: Path, langs: Sequence[str], rows: int) -> Path:
    """facebook/xnli: one config per language, splits train/test/validation, label a ClassLabel id."""

    def encode(pairs: list[dict[str, str]]) -> list[dict[str, Any]]:
        return [p | {"label": XNLI_LABELS.index(p["label"])} for p in pairs]

    configs = {}
    for lang in langs:
        dev = read_xnli_local(shared, "validation", lang)
        configs[lang] = {
            "train": encode(dev[rows : 2 * rows]),  # stand-in for MultiNLI train, disjoint from validation
            "test": encode(read_xnli_local(shared, "test", lang)[:rows]),
            "validation": encode(dev[:rows]),
        }
    return write_repo(root, CARD_FEATURES["xnli"], configs)


def xquad_replica(root: Path, shared: Path, langs: Sequence[str], rows: int) -> Path:
    """google/xquad: configs `xquad.<lang>`, each with a validation split only."""
    configs = {
        f"xquad.{lang}": {"validation": read_squad_json(shared / "xquad" / f"xquad.{lang}.json")[:rows]}
        for lang in langs
    }
    return write_repo(root, CARD_FEATURES["xquad"], configs)


def _with_titles(path: Path, rows: int) -> list[dict[str, Any]]:
    articles = json.loads(path.read_text(encoding="utf-8"))["data"]
    titles = {p["context"]: a.get("title", "") for a in articles for p in a["paragraphs"]}  # TyDiQA has none
    return [{"title": titles[e["context"]]} | e for e in read_squad_json(path)[:rows]]


def squad_replica(root: Path, shared: Path, rows: int) -> Path:
    """rajpurkar/squad: one config `plain_text` (so no config name is needed), splits train/validation, with titles."""
    splits = {
        "train": _with_titles(shared / "tydiqa_goldp" / "train" / "tydiqa.goldp.en.train.json", rows),
        "validation": _with_titles(shared / "xquad" / "xquad.en.json", rows),
    }
    return write_repo(root, CARD_FEATURES["squad"], {"plain_text": splits})


def mlqa_archive(path: Path, shared: Path, langs: Sequence[str]) -> Path:
    """MLQA_V1.zip with the release's layout, MLQA_V1/dev/dev-context-<l>-question-<l>.json (no test offline)."""
    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_DEFLATED) as archive:
        for lang in langs:
            name = f"dev/dev-context-{lang}-question-{lang}.json"
            archive.write(shared / "mlqa" / name, f"MLQA_V1/{name}")
    return path
