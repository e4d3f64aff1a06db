"""NER sentences from local release files (`token<TAB>tag`, blank line between sentences) or the Hub.

Also where every task finds its data: local task folders and Hub splits, with errors that name the setting to fix.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import datasets

Sentence = dict[str, list[str]]  # {"tokens": [...], "tags": [...]}

SPLIT_FILES = {
    # split -> file name pattern in the original releases
    "wikiann": {"train": "train-{lang}.tsv", "validation": "dev-{lang}.tsv", "test": "test-{lang}.tsv"},
    "bc5cdr": {"train": "train.tsv", "validation": "devel.tsv", "test": "test.tsv"},
}


def read_conll(path: str | os.PathLike) -> list[Sentence]:
    """Sentences of a `token<TAB>tag` file; blank lines end sentences."""
    sentences: list[Sentence] = []
    tokens: list[str] = []
    tags: list[str] = []
    with open(path, encoding="utf-8") as f:
        for line_no, line in enumerate(f, 1):
            line = line.rstrip("\n")
            if not line.strip():
                if tokens:
                    sentences.append({"tokens": tokens, "tags": tags})
                    tokens, tags = [], []
                continue
            token, sep, tag = line.rpartition("\t")
            if not sep:
                raise ValueError(f"{path}:{line_no}: expected 'token<TAB>tag', got {line!r}")
            tokens.append(token)
            tags.append(tag)
    if tokens:
        sentences.append({"tokens": tokens, "tags": tags})
    return sentences


def task_dir(data_dir: str | os.PathLike, task: str, variant: str | None) -> Path:
    """Folder of one task inside a local data dir, with errors that say what to point data.dir at."""
    root = Path(data_dir)
    if not root.is_dir():
        raise FileNotFoundError(
            f"data.dir={str(data_dir)!r} does not exist. Point data.dir (or ASG_DATA_DIR) at a folder holding the "
            f"release files (../shared/data has the expected layout), or set data.dir=null to use the Hub."
        )
    folder = root / task / (variant or "")
    if not folder.is_dir():
        raise FileNotFoundError(f"data.dir={str(data_dir)!r} has no {task} data: expected the folder {folder}")
    return folder


def load_hub_split(source: str, config: str | None, split: str, setting: str) -> datasets.Dataset:
    """One split of a Hub dataset: a repository id, or a local folder with the repository's layout and card.

    `setting` names the config key that gave `source`, so a missing dataset, config or split says what to change.
    """
    import datasets

    try:
        return datasets.load_dataset(source, config, split=split)
    except (FileNotFoundError, ValueError) as e:  # how datasets reports no such dataset, config or split
        kind = FileNotFoundError if isinstance(e, FileNotFoundError) else ValueError
        raise kind(
            f"cannot read split {split!r} of config {config!r} from {setting}={source!r}: {e}\n"
            f"Point {setting} at a Hub dataset (or a local copy of its repository) with that config and split, "
            "or leave the language out of transfer.eval_langs."
        ) from e


def local_languages(folder: Path, task: str, split: str) -> list[str]:
    """Languages whose `split` file exists in a local task folder."""
    pattern = SPLIT_FILES[task][split]
    if "{lang}" not in pattern:
        return ["en"] if (folder / pattern).is_file() else []
    prefix, suffix = pattern.split("{lang}")
    return sorted(p.name[len(prefix) : -len(suffix)] for p in folder.glob(pattern.format(lang="*")))


def load_local(folder: Path, task: str, split: str, lang: str) -> list[Sentence]:
    return read_conll(folder / SPLIT_FILES[task][split].format(lang=lang))


def load_hub(task: str, source: str, variant: str | None, split: str, lang: str) -> list[Sentence]:
    """The same sentences from the Hugging Face Hub (WikiANN) or the original release URL (BC5CDR)."""
    if task == "bc5cdr":
        import datasets

        url = f"{source}/{variant}/{SPLIT_FILES[task][split]}"
        return read_conll(datasets.DownloadManager().download(url))
    dataset = load_hub_split(source, lang, split, "task.hub_url")
    names = dataset.features["ner_tags"].feature.names
    return [{"tokens": row["tokens"], "tags": [names[t] for t in row["ner_tags"]]} for row in dataset]
