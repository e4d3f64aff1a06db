"""Extractive QA: windows map back to the answer text, n-best selection and EM/F1 golden cases, the pipeline runs."""

from __future__ import annotations

from types import SimpleNamespace

import datasets
import pytest
import torch
from transformers import AutoTokenizer

from asg import squad
from asg.data.loaders import build_datamodule
from asg.data.qa import QACollator, QADataModule, eval_features, read_squad_json, train_features
from asg.squad import best_answers, mlqa_scores, normalize_answer, normalize_answer_mlqa, squad_scores, token_f1
from asg.tasks.question_answering import QuestionAnsweringModule
from tests.test_pipeline import make_cfg, tiny_run

LONG_ID = "5726938af1498d1400e8e44a"  # XQuAD en: 619-token context, answer near its end


@pytest.fixture(scope="module")
def tokenizer(minilm_dir):
    return AutoTokenizer.from_pretrained(minilm_dir)


@pytest.fixture(scope="module")
def xquad_en(shared_data):
    return read_squad_json(shared_data / "xquad" / "xquad.en.json")


def qa_datamodule(tokenizer, tmp_path, *overrides, data_dir=None):
    cfg = make_cfg(tmp_path, "task=xquad", f"data.dir={data_dir}" if data_dir else "data.dir=null", *overrides)
    dm = build_datamodule(cfg.task.datamodule, cfg, tokenizer)
    assert isinstance(dm, QADataModule)
    return dm


def answer_gold(text: str) -> dict:
    return {"text": [text], "answer_start": [0]}


# --- reading and windows ---------------------------------------------------------------------------------------


def test_read_squad_json_flattens_every_release(shared_data, xquad_en):
    assert len(xquad_en) == 1190
    first = xquad_en[0]
    assert set(first) == {"id", "context", "question", "answers"}
    start, text = first["answers"]["answer_start"][0], first["answers"]["text"][0]
    assert first["context"][start : start + len(text)] == text == "308"
    assert len(read_squad_json(shared_data / "tydiqa_goldp" / "train" / "tydiqa.goldp.en.train.json")) == 3696
    assert len(read_squad_json(shared_data / "mlqa" / "dev" / "dev-context-zh-question-zh.json")) == 504


def test_long_context_windows_map_back_to_the_exact_answer(tokenizer, xquad_en):
    example = next(e for e in xquad_en if e["id"] == LONG_ID)
    gold = example["answers"]["text"][0]
    feats = train_features([example], tokenizer, max_length=256, doc_stride=128)
    evals = eval_features([example], tokenizer, max_length=256, doc_stride=128)
    assert len(feats) == len(evals) == 5 and all(len(f["input_ids"]) <= 256 for f in feats)
    found = []
    for feat, ev in zip(feats, evals, strict=True):
        offsets = ev["offset_mapping"]
        assert ev["example_id"] == 0 and offsets[0] is None  # CLS and question tokens carry no offsets
        if feat["start_positions"] == 0:  # answer not (wholly) in this window: target is CLS
            assert feat["end_positions"] == 0
            continue
        s, e = feat["start_positions"], feat["end_positions"]
        found.append(example["context"][offsets[s][0] : offsets[e][1]])
    assert found and found == [gold] * len(found)
    assert len(found) >= 2  # the overlap shows the answer to two windows
    # Windows overlap by doc_stride tokens: each later window repeats the end of the one before it.
    context_ids = [
        [t for t, o in zip(f["input_ids"], ev["offset_mapping"], strict=True) if o]
        for f, ev in zip(feats, evals, strict=True)
    ]
    for prev, nxt in zip(context_ids, context_ids[1:], strict=False):
        assert prev[-128:] == nxt[:128]


def test_all_xquad_en_answers_are_recovered_from_their_windows(tokenizer, xquad_en):
    evals = eval_features(xquad_en, tokenizer, max_length=384, doc_stride=128)
    feats = train_features(xquad_en, tokenizer, max_length=384, doc_stride=128)
    exact, with_answer = 0, set()
    for feat, ev in zip(feats, evals, strict=True):
        if feat["start_positions"]:
            example = xquad_en[ev["example_id"]]
            span = ev["offset_mapping"][feat["start_positions"]][0], ev["offset_mapping"][feat["end_positions"]][1]
            exact += example["context"][span[0] : span[1]] == example["answers"]["text"][0]
            with_answer.add(ev["example_id"])
    assert len(with_answer) == 1190
    # One gold answer ends inside a word piece ('(2,70' of '(2,700'); every other span is character-exact.
    assert exact == sum(bool(f["start_positions"]) for f in feats) - 1


def test_oracle_logits_score_100(tokenizer, xquad_en):
    """Features + n-best + EM/F1 end to end: logits peaking at each gold span give EM = F1 = 100."""
    examples = xquad_en[:40]
    evals = eval_features(examples, tokenizer, max_length=128, doc_stride=48)
    targets = train_features(examples, tokenizer, max_length=128, doc_stride=48)
    starts = [
        torch.nn.functional.one_hot(torch.tensor(t["start_positions"]), len(t["input_ids"])) * 5.0 for t in targets
    ]
    ends = [torch.nn.functional.one_hot(torch.tensor(t["end_positions"]), len(t["input_ids"])) * 5.0 for t in targets]
    predicted = best_answers({i: e["context"] for i, e in enumerate(examples)}, evals, starts, ends)
    assert [predicted[i] for i in range(40)] == [e["answers"]["text"][0] for e in examples]
    assert squad_scores(list(predicted.values()), [e["answers"] for e in examples]) == {
        "exact_match": 100.0,
        "f1": 100.0,
    }


def test_collator_pads_inputs_and_keeps_targets(tokenizer, xquad_en):
    feats = train_features(xquad_en[:3], tokenizer, max_length=384, doc_stride=128)
    batch = QACollator(tokenizer)(feats)
    width = max(len(f["input_ids"]) for f in feats)
    assert batch["input_ids"].shape == batch["token_type_ids"].shape == (3, width)
    assert batch["start_positions"].tolist() == [f["start_positions"] for f in feats]
    assert int(batch["attention_mask"].sum()) == sum(len(f["input_ids"]) for f in feats)


# --- n-best post-processing ------------------------------------------------------------------------------------

CONTEXT = "Paris is the capital of France and Berlin is the capital of Germany"
# tokens: [CLS] q q [SEP] Paris is the capital of France and Berlin ... (offsets None outside the context)
WORDS = [(0, 5), (6, 8), (9, 12), (13, 20), (21, 23), (24, 30), (31, 34), (35, 41), (42, 44), (45, 48)]


def window(offsets: list, scores: dict[int, tuple[float, float]]) -> tuple[dict, torch.Tensor, torch.Tensor]:
    """A feature of example "q" with start/end logits set at chosen token positions (-10 elsewhere)."""
    starts, ends = torch.full((len(offsets),), -10.0), torch.full((len(offsets),), -10.0)
    for position, (s, e) in scores.items():
        starts[position], ends[position] = s, e
    return {"example_id": "q", "offset_mapping": offsets}, starts, ends


def pick(*windows: tuple[dict, torch.Tensor, torch.Tensor], **kwargs) -> str:
    features, starts, ends = zip(*windows, strict=True)
    return best_answers({"q": CONTEXT}, features, starts, ends, **kwargs)["q"]


def test_overlapping_windows_best_score_wins():
    head = [None] * 4  # CLS, two question tokens, SEP
    # Window 1 holds words 0-7 at positions 4-11, window 2 words 4-9 at positions 4-9: "France" (word 5) is in both.
    first = window(head + WORDS[:8], {4: (2.5, 2.5), 9: (2.0, 2.0)})  # "Paris" 5.0, "France" 4.0
    second = window(head + WORDS[4:], {5: (3.0, 3.0)})  # "France" 6.0
    assert pick(first) == "Paris"
    assert pick(first, second) == pick(second, first) == "France"  # the best window wins, in any order
    weaker = window(head + WORDS[4:], {5: (2.0, 2.25)})  # "France" 4.25 < "Paris" 5.0
    assert pick(first, weaker) == "Paris"
    # Windows of other questions do not compete.
    other = ({"example_id": "r", "offset_mapping": head + WORDS}, torch.full((14,), 9.0), torch.full((14,), 9.0))
    features, starts, ends = zip(first, second, other, strict=True)
    assert best_answers({"q": CONTEXT, "r": CONTEXT}, features, starts, ends)["q"] == "France"


def test_spans_outside_the_context_are_never_chosen():
    offsets = [None, None, None, None] + WORDS + [None, None]  # CLS, question, SEP ... context ... SEP, padding
    feature, starts, ends = window(offsets, {0: (50.0, 50.0), 2: (40.0, 40.0), 15: (30.0, 30.0), 9: (1.0, 1.0)})
    assert pick((feature, starts, ends)) == "France"
    # Logits longer than the offsets (batch padding) are cut, never read as context.
    padded = torch.cat([starts, torch.tensor([99.0])]), torch.cat([ends, torch.tensor([99.0])])
    assert pick((feature, *padded)) == "France"
    # No valid span at all: the answer is empty rather than question text.
    assert pick(window(offsets, {0: (50.0, 50.0)}), n_best=1) == ""


def test_max_answer_length_and_order_are_respected():
    offsets = [None] + WORDS
    # Best pair spans words 0..9 (10 tokens); with max_answer_length=3 the best short span wins.
    feature = window(offsets, {1: (9.0, -10.0), 10: (-10.0, 9.0), 6: (2.0, 1.0), 8: (-10.0, 1.5)})
    assert pick(feature, max_answer_length=10) == CONTEXT[:48]
    assert pick(feature, max_answer_length=3) == "France and Berlin"
    assert pick(feature, max_answer_length=1) == "France"
    # End before start is dropped even when it scores best.
    backwards = window(offsets, {8: (9.0, -10.0), 5: (-10.0, 9.0), 6: (3.0, -10.0), 7: (-10.0, 2.0)})
    assert pick(backwards) == "France and"  # 3 + 2; the reversed pair (8, 5) would score 18


# --- EM / F1 ---------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "normalized"),
    [
        ("The Quick, brown fox!", "quick brown fox"),
        ("an apple a day", "apple day"),
        ("Theatre of the absurd", "theatre of absurd"),  # articles only as whole words
        ("U.S.A.", "usa"),  # punctuation removed, not replaced by spaces
        ("  multiple\tspaces\n here ", "multiple spaces here"),
        ("«Hola» — señor", "«hola» — señor"),  # SQuAD v1.1 knows ASCII punctuation only
        ("北京大学", "北京大学"),
    ],
)
def test_squad_normalisation_matches_the_official_definition(text, normalized):
    assert normalize_answer(text) == normalized


def test_squad_em_f1_golden_values():
    answers = [answer_gold("cat on a mat"), {"text": ["Denver Broncos", "the Broncos"], "answer_start": [0, 0]}]
    # pred tokens {cat, sat, on, mat}, gold {cat, on, mat}: P = 3/4, R = 1, F1 = 6/7. Second: EM via 2nd gold.
    scores = squad_scores(["the cat sat on the mat", "Broncos."], answers)
    assert scores["exact_match"] == pytest.approx(50.0)
    assert scores["f1"] == pytest.approx(100 * (6 / 7 + 1.0) / 2)
    assert token_f1("Denver Broncos", "Broncos") == pytest.approx(2 * 0.5 * 1 / 1.5)
    assert token_f1("a", "the") == 0.0  # both normalise to nothing: no overlap, F1 0 as in v1.1
    with pytest.raises(ValueError, match="one prediction per example"):
        squad_scores(["x"], answers)


def test_squad_scores_use_the_hub_metric_when_it_loads(monkeypatch):
    calls = []

    class FakeSquad:
        def compute(self, predictions, references):
            calls.append((predictions, references))
            return {"exact_match": 12.5, "f1": 25.0}

    import evaluate

    monkeypatch.setattr(evaluate, "load", lambda name: FakeSquad() if name == "squad" else None)
    squad._hub_squad_metric.cache_clear()
    try:
        assert squad_scores(["Broncos"], [answer_gold("Denver Broncos")]) == {"exact_match": 12.5, "f1": 25.0}
    finally:
        squad._hub_squad_metric.cache_clear()
    assert calls == [
        (
            [{"id": "0", "prediction_text": "Broncos"}],
            [{"id": "0", "answers": {"text": ["Denver Broncos"], "answer_start": [0]}}],
        )
    ]


def test_squad_scores_fall_back_offline(monkeypatch):
    import evaluate

    def offline(name):
        raise FileNotFoundError("Couldn't find a module script")

    monkeypatch.setattr(evaluate, "load", offline)
    squad._hub_squad_metric.cache_clear()
    try:
        assert squad_scores(["Broncos"], [answer_gold("Denver Broncos")])["f1"] == pytest.approx(200 / 3)
    finally:
        squad._hub_squad_metric.cache_clear()


@pytest.mark.parametrize(
    ("lang", "prediction", "gold", "em", "f1"),
    [
        ("zh", "北京", "北京大学", 0.0, 100 * 2 * 0.5 * 1 / 1.5),  # per character: P = 1, R = 2/4
        ("zh", "北京大学。", "北京大学", 100.0, 100.0),  # full-width punctuation is punctuation
        ("zh", "在 2008年", "2008年", 0.0, 100 * 2 * (2 / 3) * 1 / (5 / 3)),  # 在 / 2008 / 年
        ("es", "el perro", "perro", 100.0, 100.0),
        ("de", "der Hund", "ein Hund", 100.0, 100.0),
        ("vi", "những con mèo", "con mèo", 100.0, 100.0),
        ("ar", "الكتاب", "كتاب", 100.0, 100.0),
        ("en", "«the» answer", "answer", 100.0, 100.0),
        ("hi", "एक किताब", "किताब", 0.0, 100 * 2 * 0.5 * 1 / 1.5),  # no Hindi articles
        ("ru", "книга", "книга!", 100.0, 100.0),  # outside MLQA: punctuation only, whitespace tokens
    ],
)
def test_mlqa_language_aware_golden_values(lang, prediction, gold, em, f1):
    scores = mlqa_scores([prediction], [answer_gold(gold)], lang)
    assert scores["exact_match"] == pytest.approx(em) and scores["f1"] == pytest.approx(f1)


def test_chinese_scores_differ_between_squad_and_mlqa():
    assert normalize_answer_mlqa("北京大学 Peking", "zh") == "北 京 大 学 peking"
    assert squad_scores(["北京"], [answer_gold("北京大学")])["f1"] == 0.0  # one whitespace token each


# --- datamodule ------------------------------------------------------------------------------------------------


def test_offline_data_trains_on_tydiqa_and_holds_out_validation(tokenizer, tmp_path, shared_data):
    dm = qa_datamodule(tokenizer, tmp_path, data_dir=shared_data)
    assert (dm.train_lang, dm.eval_langs) == ("en", ["en", "ar", "de", "es", "hi", "ru", "th", "vi", "zh"])
    assert dm.notes[0] == "trained on TyDiQA-GoldP en train, not SQuAD v1.1: not the paper's setting"
    dm.setup("fit")
    train, val = dm.examples[("train", "en")], dm.examples[("val", "en")]
    assert len(val) == 300 and dm.num_train_samples == len(train) == 3366  # 30 shared a passage with val
    assert not {e["context"] for e in train} & {e["context"] for e in val}
    assert len(dm.features[("train", "en")]) > len(train)  # long passages give several windows
    mlqa = qa_datamodule(tokenizer, tmp_path, "task=mlqa", data_dir=shared_data)
    assert mlqa.eval_langs == ["en", "ar", "de", "es", "hi", "vi", "zh"]


def test_unlabelled_eval_files_fail_clearly(tokenizer, tmp_path, shared_data):
    dm = qa_datamodule(
        tokenizer,
        tmp_path,
        "task.eval_file='tydiqa_goldp/dev/tydiqa.goldp.{lang}.dev.json'",
        "transfer.eval_langs=[sw]",
        data_dir=shared_data,
    )
    with pytest.raises(ValueError, match="test/sw: some questions have no gold answer"):
        dm.setup("test")
    with pytest.raises(ValueError, match="no evaluation data for language.*el"):
        qa_datamodule(tokenizer, tmp_path, "transfer.eval_langs=[el]", data_dir=shared_data)


def test_hub_path_trains_on_squad_and_evaluates_on_google_xquad(tokenizer, tmp_path, monkeypatch, xquad_en):
    calls = []

    def load_dataset(*args, **kwargs):
        calls.append((args, kwargs))
        return datasets.Dataset.from_list(xquad_en[:5])

    monkeypatch.setattr(datasets, "load_dataset", load_dataset)
    dm = qa_datamodule(tokenizer, tmp_path, "transfer.eval_langs=[de,ro]")
    assert (dm.eval_langs, dm.notes) == (["de", "ro"], [])
    dm.setup()
    assert calls == [
        (("rajpurkar/squad", None), {"split": "train"}),
        (("rajpurkar/squad", None), {"split": "validation"}),
        (("google/xquad", "xquad.de"), {"split": "validation"}),
        (("google/xquad", "xquad.ro"), {"split": "validation"}),
    ]
    assert dm.examples[("test", "ro")][0] == xquad_en[0]


def test_module_scores_each_language_from_gathered_logits(tokenizer, tmp_path, shared_data, caplog):
    dm = qa_datamodule(tokenizer, tmp_path, "transfer.eval_langs=[en,de]", data_dir=shared_data)
    dm.max_eval_samples = 30
    dm.setup("test")
    module = QuestionAnsweringModule(torch.nn.Linear(1, 1), optimizer=torch.optim.AdamW)
    module._trainer = SimpleNamespace(datamodule=dm)
    module.log_dict = lambda *args, **kwargs: None
    for idx, lang in enumerate(dm.eval_langs):
        examples, evals = dm.examples[("test", lang)], dm.features[("test", lang)]
        targets = train_features(examples, tokenizer, max_length=dm.max_length, doc_stride=dm.doc_stride)
        seen = evals if lang == "en" else evals[: len(evals) // 2]  # de: as if only some batches ran
        for ev, t in zip(seen, targets, strict=False):
            width = len(ev["input_ids"])
            start = torch.nn.functional.one_hot(torch.tensor(t["start_positions"]), width).float()
            end = torch.nn.functional.one_hot(torch.tensor(t["end_positions"]), width).float()
            module._logits[idx][ev["feature_index"]] = (start, end)
    module.on_test_epoch_end()
    assert module.scores["test/en/exact_match"] == module.scores["test/en/lang_f1"] == 100.0
    assert module.scores["test/de/f1"] == 100.0  # every question that was seen is answered right
    assert module.scores["test/avg/f1"] == 100.0
    assert "test/de: scored" in caplog.text and not module._logits


# --- pipeline --------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(("model", "task"), [("mbert", "xquad"), ("xlmr", "xquad"), ("mbert", "mlqa")])
def test_fast_dev_run_question_answering(tmp_path, tiny_dirs, shared_data, model, task):
    # Tiny models have 128 positions; short windows also make several windows per question.
    metrics = tiny_run(
        tmp_path,
        tiny_dirs,
        shared_data,
        model,
        f"task={task}",
        "task.max_length=128",
        "task.doc_stride=32",
        "transfer.eval_langs=[de,zh]",
    )
    assert metrics["steps"] == 1 and metrics["family"] == "question_answering"
    assert metrics["notes"][0].startswith("trained on TyDiQA-GoldP en train")
    evaluated = "dev" if task == "mlqa" else "test"  # offline MLQA is its dev split, and its scores say so
    names = {
        f"{split}/{lang}/{m}"
        for split, lang in [("val", "en"), (evaluated, "de"), (evaluated, "zh"), (evaluated, "avg")]
        for m in ("exact_match", "f1", "lang_exact_match", "lang_f1")
    }
    assert names <= set(metrics["scores"])
    assert all(0.0 <= v <= 100.0 for v in metrics["scores"].values())


# Measured with one torch thread (OMP_NUM_THREADS=1) on a 2-core machine whose other core ran other jobs, this exact
# configuration: 1,200 TyDiQA-GoldP en train questions, one epoch of 107 steps of 16 windows, lr 5e-4, m=32 k=128.
# The held-out TyDiQA questions (the first 200 of the last 300) scored EM 20.5 / F1 32.8 with this test's seed 42
# and EM 18.0 / F1 28.8 with seed=1; the first 200 XQuAD en questions EM 7.5 / F1 12.5 and EM 3.5 / F1 8.4
# (6.9-7.2 min wall). Within CPU minutes the model learns the training distribution but barely transfers to
# XQuAD (an untrained head scored EM 0.0, F1 4.1 on the first 100 XQuAD en), so the learning bar is on the
# held-out TyDiQA F1, 8.8 under the lower seed; the XQuAD bar only says the answers are not an untrained head's.
# The earlier budget (200 questions, 25 steps of 8, lr 5e-4) scored XQuAD en EM 6.0 / F1 8.5; this budget at lr
# 1e-4 or 3e-4 scored XQuAD en EM 5.0 / F1 8.7 and EM 6.5 / F1 11.1 (seed 42).
VAL_F1_THRESHOLD = 20.0
XQUAD_F1_THRESHOLD = 6.0


@pytest.mark.slow
def test_minilm_asg_learns_extractive_qa(tmp_path, shared_data):
    from asg.train import train

    cfg = make_cfg(
        tmp_path,
        "model=minilm",
        "task=xquad",
        f"data.dir={shared_data}",
        "transfer.eval_langs=[en]",
        "task.max_length=192",
        "data.max_train_samples=1200",
        "data.max_eval_samples=200",
        "model.lr=5e-4",
        "asg.m=32",
        "asg.k=128",
        "asg.iters=10",
        "logger=none",
        "trainer.accelerator=cpu",
        "trainer.enable_progress_bar=false",
    )
    metrics = train(cfg)
    scores = metrics["scores"]
    assert metrics["compression"]["params_kept_pct"] == pytest.approx(100 * 128 / 30522)
    assert metrics["train_samples"] == 1200 and metrics["steps"] == 107
    assert scores["val/en/f1"] > VAL_F1_THRESHOLD, scores
    assert scores["test/en/f1"] > XQUAD_F1_THRESHOLD, scores
    assert scores["test/en/f1"] >= scores["test/en/exact_match"]
