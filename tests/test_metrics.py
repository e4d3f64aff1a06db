"""Golden cases for NER scoring: first-sub-token alignment, ignored positions, entity-level (not token) F1."""

from __future__ import annotations

import pytest
import torch
from transformers import AutoTokenizer

from asg.data.conll import read_conll
from asg.data.ner import IGNORE, PadCollator, encode_sentence
from asg.metrics import ner_scores, word_predictions

LABELS = ["O", "B-Chemical", "I-Chemical", "B-Disease", "I-Disease"]
L2I = {label: i for i, label in enumerate(LABELS)}
I2L = dict(enumerate(LABELS))


@pytest.fixture(scope="module")
def tokenizer(minilm_dir):
    return AutoTokenizer.from_pretrained(minilm_dir)


def test_only_first_sub_token_is_labelled(tokenizer):
    words = ["Naloxone", "reverses", "clonidine", "hypotension"]
    tags = ["B-Chemical", "O", "B-Chemical", "B-Disease"]
    enc = encode_sentence(words, tags, tokenizer, L2I, max_length=64)
    pieces = tokenizer.convert_ids_to_tokens(enc["input_ids"])
    assert pieces[0] == "[CLS]" and pieces[-1] == "[SEP]" and len(pieces) > len(words) + 2  # words were split
    firsts = [i for i, lab in enumerate(enc["labels"]) if lab != IGNORE]
    assert [pieces[i].startswith("##") for i in firsts] == [False] * 4
    assert [enc["labels"][i] for i in firsts] == [L2I[t] for t in tags]
    assert [enc["word_index"][i] for i in firsts] == [0, 1, 2, 3]
    assert all(lab == IGNORE for i, lab in enumerate(enc["labels"]) if i not in firsts)


def test_continuation_and_special_token_predictions_are_ignored(tokenizer):
    words = ["Naloxone", "reverses", "clonidine", "hypotension"]
    tags = ["B-Chemical", "O", "B-Chemical", "B-Disease"]
    enc = encode_sentence(words, tags, tokenizer, L2I, max_length=64)
    # Right label at each word's first sub-token, a wrong one (I-Disease) everywhere else.
    preds = torch.tensor([[lab if lab != IGNORE else L2I["I-Disease"] for lab in enc["labels"]]])
    pred_tags = word_predictions(preds, torch.tensor([enc["word_index"]]), [4], I2L)
    assert pred_tags == [tags]
    assert ner_scores([tags], pred_tags) == {"precision": 100.0, "recall": 100.0, "f1": 100.0}


def test_padding_is_ignored_and_truncated_words_count_as_missed(tokenizer):
    long_words = ["aspirin"] + ["the"] * 20 + ["fever"]
    long_tags = ["B-Chemical"] + ["O"] * 20 + ["B-Disease"]
    short = encode_sentence(["fever"], ["B-Disease"], tokenizer, L2I, max_length=8) | {"example_id": 0}
    cut = encode_sentence(long_words, long_tags, tokenizer, L2I, max_length=8) | {"example_id": 1}
    batch = PadCollator(tokenizer)([short, cut])
    assert batch["labels"].shape == batch["input_ids"].shape == (2, 8)
    assert (batch["labels"][0, 3:] == IGNORE).all() and (batch["word_index"][0, 3:] == IGNORE).all()
    # A model that predicts every seen position correctly: the truncated "fever" is never seen.
    preds = batch["labels"].clamp(min=0)
    pred_tags = word_predictions(preds, batch["word_index"], [1, len(long_words)], I2L)
    assert pred_tags[1][-1] == "O" and pred_tags[1][0] == "B-Chemical"
    scores = ner_scores([["B-Disease"], long_tags], pred_tags)
    assert scores["precision"] == 100.0 and scores["recall"] == pytest.approx(200 / 3)
    assert scores["f1"] == pytest.approx(80.0)


def test_f1_is_entity_level_not_token_level():
    gold = [["B-Disease", "I-Disease", "O", "B-Chemical"]]
    pred = [["B-Disease", "O", "O", "B-Chemical"]]  # 3 of 4 tokens right, 1 of 2 entities right
    assert ner_scores(gold, pred) == pytest.approx({"precision": 50.0, "recall": 50.0, "f1": 50.0})
    with pytest.raises(ValueError, match="same shapes"):
        ner_scores(gold, [["O"]])


def test_conll_reader_on_the_real_bc5cdr_release(shared_data):
    sentences = read_conll(shared_data / "bc5cdr" / "BC5CDR-IOB" / "train.tsv")
    assert len(sentences) == 4560
    assert sum(len(s["tokens"]) for s in sentences) == 118170
    assert sum(t == "B-Chemical" for s in sentences for t in s["tags"]) == 5203
    assert sentences[0]["tokens"][:2] == ["Selegiline", "-"] and sentences[0]["tags"][0] == "B-Chemical"
