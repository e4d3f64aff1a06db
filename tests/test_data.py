"""Data loading: the Hub paths convert to the same sentences as the local release files; local errors are clear."""

from __future__ import annotations

import datasets
import pytest

from asg.data import conll


def test_wikiann_hub_rows_become_tag_strings(monkeypatch):
    names = ["O", "B-PER", "I-PER", "B-ORG", "I-ORG", "B-LOC", "I-LOC"]
    features = datasets.Features(
        {
            "tokens": datasets.Sequence(datasets.Value("string")),
            "ner_tags": datasets.Sequence(datasets.ClassLabel(names=names)),
        }
    )
    fake = datasets.Dataset.from_dict(
        {"tokens": [["Anton", "Wilhelm", "in", "Paris"]], "ner_tags": [[1, 2, 0, 5]]}, features=features
    )
    calls = []
    monkeypatch.setattr(datasets, "load_dataset", lambda *a, **kw: calls.append((a, kw)) or fake)
    sentences = conll.load_hub("wikiann", "unimelb-nlp/wikiann", None, "validation", "de")
    assert calls == [(("unimelb-nlp/wikiann", "de"), {"split": "validation"})]
    assert sentences == [{"tokens": ["Anton", "Wilhelm", "in", "Paris"], "tags": ["B-PER", "I-PER", "O", "B-LOC"]}]


def test_bc5cdr_hub_downloads_the_original_release_file(monkeypatch, shared_data):
    urls = []
    local = shared_data / "bc5cdr" / "BC5CDR-IOB" / "devel.tsv"
    monkeypatch.setattr(datasets.DownloadManager, "download", lambda self, url: urls.append(url) or str(local))
    sentences = conll.load_hub("bc5cdr", "https://example.org/data", "BC5CDR-IOB", "validation", "en")
    assert urls == ["https://example.org/data/BC5CDR-IOB/devel.tsv"]
    assert len(sentences) == 4581


def test_local_languages_are_read_from_file_names(shared_data):
    folder = conll.task_dir(shared_data, "wikiann", None)
    assert conll.local_languages(folder, "wikiann", "train") == ["en"]
    assert len(conll.local_languages(folder, "wikiann", "test")) == 14
    assert conll.local_languages(conll.task_dir(shared_data, "bc5cdr", "BC5CDR-IOB"), "bc5cdr", "test") == ["en"]


def test_bad_local_files_are_reported(tmp_path):
    with pytest.raises(FileNotFoundError, match="has no bc5cdr data: expected the folder"):
        conll.task_dir(tmp_path, "bc5cdr", "BC5CDR-IOB")
    bad = tmp_path / "bad.tsv"
    bad.write_text("token-without-tag\n")
    with pytest.raises(ValueError, match=r"bad.tsv:1: expected 'token<TAB>tag'"):
        conll.read_conll(bad)
