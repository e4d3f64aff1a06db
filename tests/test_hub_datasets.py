"""The Hub path (`data.dir=null`) end to end on local replicas of the real Hub datasets and the MLQA release archive.

Each datamodule is built from its task config with the replica's path in place of the Hub id, reads it through
`datasets.load_dataset` (or the download manager, for MLQA), and must give the same rows and labels as the local
release files the replicas were cut from.
"""

from __future__ import annotations

import datasets
import pytest
from transformers import AutoTokenizer

from asg.data.conll import read_conll
from asg.data.loaders import build_datamodule
from asg.data.qa import read_squad_json
from asg.data.xnli import read_xnli_local
from tests import hub_datasets as hd
from tests.test_pipeline import make_cfg
from tests.tiny_models import save_tiny_bert

ROWS = 12  # rows per replica split
MLQA_DEV_NOTE = "evaluated on mlqa dev, not test: scores are logged as dev/<lang>"


@pytest.fixture(scope="module")
def hub(tmp_path_factory, shared_data):
    """Replica name -> its path (folders named like the Hub ids), with a datasets cache of their own."""
    root = tmp_path_factory.mktemp("hub")
    with pytest.MonkeyPatch.context() as mp:
        cache = root / "cache"
        mp.setattr(datasets.config, "HF_DATASETS_CACHE", cache)
        mp.setattr(datasets.config, "DOWNLOADED_DATASETS_PATH", cache / "downloads")
        mp.setattr(datasets.config, "EXTRACTED_DATASETS_PATH", cache / "downloads" / "extracted")
        yield {
            "wikiann": hd.wikiann_replica(root / "unimelb-nlp" / "wikiann", shared_data, ["en", "de", "sw"], ROWS),
            "xnli": hd.xnli_replica(root / "facebook" / "xnli", shared_data, ["en", "de", "sw"], ROWS),
            "xquad": hd.xquad_replica(root / "google" / "xquad", shared_data, ["en", "de", "zh"], ROWS),
            "squad": hd.squad_replica(root / "rajpurkar" / "squad", shared_data, ROWS),
            "mlqa": hd.mlqa_archive(root / "MLQA_V1.zip", shared_data, ["en", "de", "zh"]),
        }


@pytest.fixture(scope="module")
def tokenizer(minilm_dir):
    return AutoTokenizer.from_pretrained(minilm_dir)


def hub_datamodule(tmp_path, tokenizer, *overrides: str):
    """The task's datamodule as train.py builds it, on the Hub path."""
    cfg = make_cfg(tmp_path, "data.dir=null", *overrides)
    return build_datamodule(cfg.task.datamodule, cfg, tokenizer)


def test_replicas_have_the_hub_repositories_layout(hub):
    expected = {
        "wikiann": {"en": ["validation", "test", "train"], "de": ["validation", "test"], "sw": ["validation", "test"]},
        "xnli": {lang: ["train", "test", "validation"] for lang in ("en", "de", "sw")},
        "xquad": {f"xquad.{lang}": ["validation"] for lang in ("en", "de", "zh")},
        "squad": {"plain_text": ["train", "validation"]},
    }
    for name, configs in expected.items():
        assert datasets.get_dataset_config_names(str(hub[name])) == list(configs)
        for config, splits in configs.items():
            assert datasets.get_dataset_split_names(str(hub[name]), config) == splits
            for split in splits:
                assert (hub[name] / config / f"{split}-00000-of-00001.parquet").is_file()
                assert len(datasets.load_dataset(str(hub[name]), config, split=split)) == ROWS
    wikiann = datasets.load_dataset(str(hub["wikiann"]), "de", split="test").features
    assert wikiann["ner_tags"] == datasets.List(datasets.ClassLabel(names=hd.WIKIANN_TAGS))
    assert set(wikiann) == {"tokens", "ner_tags", "langs", "spans"}
    xnli = datasets.load_dataset(str(hub["xnli"]), "sw", split="test").features
    assert xnli["label"].names == ["entailment", "neutral", "contradiction"]
    squad = datasets.load_dataset(str(hub["squad"]), split="validation")  # no config name: plain_text is the only one
    assert squad.features["answers"] == {
        "text": datasets.List(datasets.Value("string")),
        "answer_start": datasets.List(datasets.Value("int32")),
    }
    assert list(squad.features) == ["id", "title", "context", "question", "answers"]
    assert squad[0]["title"] == "Super_Bowl_50"
    assert hd._spans(["Anton", "Wilhelm", "in", "Paris", "."], ["B-PER", "I-PER", "O", "B-LOC", "O"]) == [
        "PER: Anton Wilhelm",
        "LOC: Paris",
    ]


def test_wikiann_hub_path_gives_the_local_sentences(hub, tokenizer, tmp_path, shared_data):
    dm = hub_datamodule(
        tmp_path, tokenizer, "task=wikiann", f"task.hub_url={hub['wikiann']}", "transfer.eval_langs=[de,sw]"
    )
    dm.setup("fit")  # reads the test sets too, before any training
    assert dm.num_train_samples == ROWS and len(dm.encoded[("val", "en")]) == ROWS
    for lang in ("de", "sw"):
        local = read_conll(shared_data / "wikiann" / f"test-{lang}.tsv")[:ROWS]
        assert dm.gold[("test", lang)] == [s["tags"] for s in local]  # ClassLabel ids back to tag names
        first = [label for label in dm.encoded[("test", lang)][0]["labels"] if label != -100]
        assert first == [dm.label2id[tag] for tag in local[0]["tags"]]


def test_xnli_hub_path_trains_validates_and_tests(hub, tokenizer, tmp_path, shared_data):
    dm = hub_datamodule(tmp_path, tokenizer, "task=xnli", f"task.hub_url={hub['xnli']}", "transfer.eval_langs=[de,sw]")
    dm.setup("fit")
    assert (dm.val_langs, dm.notes, dm.num_train_samples) == (["en"], [], ROWS)  # MultiNLI train: no held-out dev
    dev = read_xnli_local(shared_data, "validation", "en")
    assert [row["labels"] for row in dm.encoded[("val", "en")]] == [dm.label2id[p["label"]] for p in dev[:ROWS]]
    for lang in ("de", "sw"):
        gold = [dm.label2id[p["label"]] for p in read_xnli_local(shared_data, "test", lang)[:ROWS]]
        assert [row["labels"] for row in dm.encoded[("test", lang)]] == gold


def test_xquad_hub_path_trains_on_squad_and_tests_on_xquad(hub, tokenizer, tmp_path, shared_data):
    dm = hub_datamodule(
        tmp_path,
        tokenizer,
        "task=xquad",
        f"task.hub_url={hub['xquad']}",
        f"task.hub_train={hub['squad']}",
        "transfer.eval_langs=[de,zh]",
    )
    assert dm.notes == []  # XQuAD's one split is its test set
    dm.setup("fit")
    assert dm.num_train_samples == len(dm.examples[("val", "en")]) == ROWS
    assert dm.examples[("val", "en")][0]["id"] == "56beb4343aeaaa14008c925b"  # SQuAD v1.1 dev ids
    for lang in ("de", "zh"):
        assert dm.examples[("test", lang)] == read_squad_json(shared_data / "xquad" / f"xquad.{lang}.json")[:ROWS]
        assert len(dm.features[("test", lang)]) >= ROWS


@pytest.mark.parametrize("as_url", [False, True])
def test_mlqa_hub_path_reads_the_release_archive(hub, tokenizer, tmp_path, shared_data, as_url):
    archive = hub["mlqa"].as_uri() if as_url else str(hub["mlqa"])
    dm = hub_datamodule(
        tmp_path,
        tokenizer,
        "task=mlqa",
        f"task.hub_url='{archive}'",
        f"task.hub_train={hub['squad']}",
        "transfer.eval_langs=[de,zh]",
        f"data.max_eval_samples={ROWS}",
    )
    assert dm.notes == [MLQA_DEV_NOTE]  # the default eval split is dev, and the notes say so
    dm.setup("fit")
    for lang in ("de", "zh"):
        local = read_squad_json(shared_data / "mlqa" / "dev" / f"dev-context-{lang}-question-{lang}.json")
        assert dm.examples[("test", lang)] == local[:ROWS]


def test_local_mlqa_scores_are_named_dev_too(tokenizer, tmp_path, shared_data):
    def local(*overrides: str):
        cfg = make_cfg(tmp_path, "task=mlqa", f"data.dir={shared_data}", *overrides)
        return lambda tokenizer: build_datamodule(cfg.task.datamodule, cfg, tokenizer)

    assert local()(tokenizer).notes[-1] == MLQA_DEV_NOTE
    with pytest.raises(FileNotFoundError, match="holds no file matching task.eval_file='mlqa/test/test-context-"):
        local("task.eval_split=test")(tokenizer)


@pytest.mark.parametrize(
    ("overrides", "error", "match"),
    [
        # fr is a WikiANN language (task.languages) that this copy lacks: found at fit, not after training
        (
            ["task=wikiann", "task.hub_url={wikiann}", "transfer.eval_langs=[de,fr]"],
            ValueError,
            "config 'fr'.*'fr' not found",
        ),
        (["task=xnli", "task.hub_url={root}/nowhere"], FileNotFoundError, "from task.hub_url='.*nowhere'"),
        (
            ["task=xquad", "task.hub_url={xquad}", "task.hub_train={squad}", "task.hub_eval_split=test"],
            ValueError,
            "split 'test' of config 'xquad.en'.*Unknown split",
        ),
        (
            ["task=mlqa", "task.hub_url={mlqa}", "task.hub_train={squad}", "task.eval_split=test"],
            FileNotFoundError,
            "has no MLQA_V1/test/test-context-en-question-en.json: .* set task.eval_split",
        ),
    ],
)
def test_missing_hub_data_fails_before_training_and_names_the_fix(hub, tokenizer, tmp_path, overrides, error, match):
    paths = {name: str(path) for name, path in hub.items()} | {"root": str(tmp_path)}
    dm = hub_datamodule(tmp_path, tokenizer, *(o.format(**paths) for o in overrides), "data.max_eval_samples=4")
    with pytest.raises(error, match=match):
        dm.setup("fit")


@pytest.fixture(scope="module")
def tiny_bert(tmp_path_factory, minilm_dir):
    return save_tiny_bert(tmp_path_factory.mktemp("tiny") / "bert", minilm_dir)


@pytest.mark.parametrize(
    ("task", "overrides", "notes", "split"),
    [
        ("wikiann", ["task.hub_url={wikiann}"], [], "test"),
        ("xnli", ["task.hub_url={xnli}"], [], "test"),
        (
            "mlqa",
            ["task.hub_url={mlqa}", "task.hub_train={squad}", "task.max_length=128", "task.doc_stride=32"],
            [MLQA_DEV_NOTE],
            "dev",
        ),
    ],
)
def test_training_runs_on_the_hub_path(hub, tiny_bert, tmp_path, task, overrides, notes, split):
    from asg.train import train

    paths = {name: str(path) for name, path in hub.items()}
    metrics = train(
        make_cfg(
            tmp_path,
            f"task={task}",
            "model=mbert",
            f"model.name_or_path={tiny_bert}",
            "data.dir=null",
            *(o.format(**paths) for o in overrides),
            "transfer.eval_langs=[de]",
            "data.max_train_samples=8",
            "data.max_eval_samples=8",
            "data.batch_size=4",
            "logger=csv",
            "trainer.fast_dev_run=true",
            "trainer.accelerator=cpu",
            "asg.iters=3",
            "asg.k=32",
        )
    )
    assert (metrics["data"], metrics["notes"], metrics["steps"]) == ("hub", notes, 1)
    assert f"{split}/de/{metrics['metric']}" in metrics["scores"]
    assert not any(name.startswith("test/") for name in metrics["scores"]) or split == "test"  # dev is never "test"
