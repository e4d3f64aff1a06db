"""Export round trips: identical outputs after save/load (load_compressed and the Auto classes), no dense V x d table
on disk, sizes add up, no unpickling; transformers' own loaders refuse an export rather than load it wrong."""

from __future__ import annotations

import copy
import json
import math
import pickle
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf
from safetensors import safe_open
from safetensors.torch import save_file
from transformers import (
    AutoConfig,
    AutoModelForSeq2SeqLM,
    AutoModelForSequenceClassification,
    AutoModelForTokenClassification,
    AutoTokenizer,
    BertForTokenClassification,
    MT5ForConditionalGeneration,
    pipeline,
)

from asg import export
from asg.embedding import ASGEmbedding
from asg.export import embedding_classes, load_compressed, main, save_compressed
from asg.export_config import WEIGHTS, ASGConfig
from asg.methods import method_names
from asg.models import load_model
from asg.quantize import smallest_code_dtype
from asg.results import exported_bytes_pct
from asg.surgery import ASGOutputHead, apply_asg, compress_model
from asg.train import train
from tests.test_pipeline import CONF, make_cfg

NER_LABELS = ["O", "B-PER", "I-PER", "B-ORG", "I-ORG", "B-LOC", "I-LOC", "B-MISC", "I-MISC"]


def refuse_unpickling(monkeypatch) -> None:
    """Loading an export must not unpickle anything: every unpickling entry point raises from here on."""

    def refuse(*args, **kwargs):
        raise AssertionError("unpickling during load")

    for target, name in ((torch, "load"), (pickle, "load"), (pickle, "loads")):
        monkeypatch.setattr(target, name, refuse)


@pytest.fixture
def no_unpickling(monkeypatch):
    refuse_unpickling(monkeypatch)


def saved_tensors(out) -> dict[str, tuple[tuple[int, ...], torch.dtype]]:
    with safe_open(str(out / WEIGHTS), "pt") as f:
        return {name: (tuple(f.get_slice(name).get_shape()), f.get_tensor(name).dtype) for name in f.keys()}


def dense_tables(tensors, vocab: int, dim: int) -> list[str]:
    return [name for name, (shape, _) in tensors.items() if sorted(shape) == sorted((vocab, dim))]


def ids_for(vocab: int, batch: int = 2, length: int = 12, seed: int = 0) -> torch.Tensor:
    return torch.randint(3, vocab, (batch, length), generator=torch.Generator().manual_seed(seed))


def exported_config(out) -> dict:
    return json.loads((out / "config.json").read_text())


def test_bert_token_classification_round_trip(tmp_path, tiny_dirs, no_unpickling):
    model = load_model(str(tiny_dirs["mbert"]), "token_classification", labels=NER_LABELS)
    apply_asg(model, m=4, k=16, iters=2)
    ids = ids_for(model.config.vocab_size)
    before = model.eval()(input_ids=ids).logits
    tokenizer = AutoTokenizer.from_pretrained(tiny_dirs["mbert"])
    sizes = save_compressed(model, tmp_path, tokenizer, family="token_classification")

    loaded = load_compressed(tmp_path)
    assert isinstance(loaded.get_input_embeddings(), ASGEmbedding) and not loaded.training
    assert torch.equal(loaded(input_ids=ids).logits, before)
    assert loaded.config.id2label == model.config.id2label
    # `import asg` registered the export's config with the Auto classes, which hand it to load_compressed
    auto = AutoModelForTokenClassification.from_pretrained(tmp_path)
    assert type(auto) is BertForTokenClassification and not auto.training
    assert isinstance(auto.get_input_embeddings(), ASGEmbedding)
    assert torch.equal(auto(input_ids=ids).logits, before)
    config = AutoConfig.from_pretrained(tmp_path)
    assert isinstance(config, ASGConfig) and config.model_config().to_diff_dict() == loaded.config.to_diff_dict()
    tagger = pipeline("token-classification", model=str(tmp_path))  # asks for dtype="auto": as saved
    assert torch.equal(tagger.model(input_ids=ids).logits, before)
    tensors = saved_tensors(tmp_path)
    assert not dense_tables(tensors, model.config.vocab_size, 32)
    # V x 4 codes of 4 bits (k=16), bit-packed
    assert tensors["bert.embeddings.word_embeddings.codes"] == ((model.config.vocab_size * 4 * 4 // 8,), torch.uint8)
    assert tensors["bert.embeddings.word_embeddings.codebooks"] == ((4, 16, 8), torch.float32)
    assert {"config.json", "tokenizer.json", WEIGHTS} <= set(sizes["files"])
    assert "model.safetensors" not in sizes["files"]  # which every transformers model class would read
    saved = exported_config(tmp_path)
    assert (saved["model_type"], saved["architecture"], saved["family"], saved["specs"]["input"]["k"]) == (
        "asg",
        "BertForTokenClassification",
        "token_classification",
        16,
    )
    assert saved["base_config"]["model_type"] == "bert"


def test_save_pretrained_of_a_compressed_model_refuses_and_names_the_export(tmp_path, tiny_dirs):
    # transformers would write the codes and codebooks beside a dense config: reloading gives a random embedding
    model = load_model(str(tiny_dirs["mbert"]), "token_classification", labels=NER_LABELS)
    apply_asg(model, m=4, k=16, iters=2)
    with pytest.raises(TypeError, match=r"asg\.export\.save_compressed\(model, out_dir, tokenizer, family=\.\.\.\)"):
        model.save_pretrained(tmp_path / "plain")
    assert not (tmp_path / "plain").exists()
    save_compressed(model, tmp_path / "export", family="token_classification")
    with pytest.raises(TypeError, match="loads a random embedding"):  # a reloaded export is guarded too
        load_compressed(tmp_path / "export").save_pretrained(tmp_path / "again")


@pytest.mark.parametrize("storage", ["float32", "float16"])
@pytest.mark.parametrize("method", ["pq", "sg", "lowrank", "rq", "opq", "tiered", "tiered:frequency"])
def test_every_registered_method_round_trips(tmp_path, tiny_dirs, method, storage, no_unpickling):
    method, _, order = method.partition(":")
    overrides = (f"asg={method}", "asg.k=16", "asg.m=4", "asg.iters=2", f"asg.storage_dtype={storage}")
    if order:  # tiers by the rows' weights: the tier map is stored and counted too
        overrides += (f"asg.tier_order={order}", "asg.row_weights=train")
    asg_cfg = OmegaConf.to_container(make_cfg(tmp_path, *overrides).asg)
    model = load_model(str(tiny_dirs["mbert"]), "token_classification", labels=NER_LABELS)
    original = sum(p.numel() for p in model.parameters()) * 4
    vocab = model.config.vocab_size
    weights = torch.rand(vocab, generator=torch.Generator().manual_seed(0)) if order else None
    compress_model(model, asg_cfg | {"progress": False}, row_weights=weights)
    embedding = model.get_input_embeddings()
    floats = {name: t.clone() for name, t in embedding.state_dict().items() if t.is_floating_point()}
    embedding.round_to_storage()  # as train() does before the test: the export stores these values
    rounded = {name: t for name, t in embedding.state_dict().items() if t.is_floating_point()}
    assert all(torch.equal(rounded[n], t.to(getattr(torch, storage)).float()) for n, t in floats.items())
    assert storage == "float32" or not all(torch.equal(rounded[n], t) for n, t in floats.items())
    ids = ids_for(model.config.vocab_size)
    before = model.eval()(input_ids=ids).logits
    sizes = save_compressed(model, tmp_path / "export")

    loaded = load_compressed(tmp_path / "export")
    assert type(loaded.get_input_embeddings()) is type(embedding)
    assert loaded.get_input_embeddings().method == method
    assert loaded.get_input_embeddings().storage_dtype == getattr(torch, storage)
    assert torch.equal(loaded(input_ids=ids).logits, before)
    auto = AutoModelForTokenClassification.from_pretrained(tmp_path / "export")
    assert torch.equal(auto(input_ids=ids).logits, before)
    saved = saved_tensors(tmp_path / "export")
    assert not dense_tables(saved, model.config.vocab_size, 32)
    if order:  # 3 tiers: 2 bits a row
        assert saved["bert.embeddings.word_embeddings.tier_of"] == ((math.ceil(vocab * 2 / 8),), torch.uint8)
    stored = {saved[f"bert.embeddings.word_embeddings.{name}"][1] for name in floats}
    assert stored == {getattr(torch, storage)}  # codebooks, factors, rotation: in the storage precision on disk
    assert sizes["dense_bytes"] == original
    # the exported tensors weigh what the method's accounting (metrics.json, tables, byte budgets) counts
    stats = embedding.stats()
    assert 100 * sizes["compressed_bytes"] / stats["bytes_before"] == pytest.approx(exported_bytes_pct(stats))


def test_embedding_classes_cover_the_method_registry():
    assert set(embedding_classes()) == set(method_names()) - {"none"}


@pytest.mark.parametrize("head", ["tied", "compressed", "dense"])
def test_mt5_round_trip_keeps_one_shared_embedding(tmp_path, tiny_dirs, no_unpickling, head):
    model = MT5ForConditionalGeneration.from_pretrained(tiny_dirs["mt5"])  # transformers 5 ties mT5's head
    if head != "tied":  # the real mT5 layout: lm_head has weights of its own
        model.lm_head.weight = torch.nn.Parameter(model.lm_head.weight.detach() + 0.5)
    stats = apply_asg(model, m=4, k=16, iters=2, compress_head=head == "compressed")
    assert stats["head"] == head
    vocab, dim = model.config.vocab_size, model.config.d_model
    ids, labels = ids_for(vocab), ids_for(vocab, length=5, seed=1)
    model.eval()
    before = model(input_ids=ids, labels=labels).logits
    options = {"max_new_tokens": 6, "do_sample": False, "num_beams": 1}
    generated = model.generate(input_ids=ids, **options)
    save_compressed(model, tmp_path)

    loaded = load_compressed(tmp_path)
    shared = loaded.get_input_embeddings()
    assert loaded.encoder.embed_tokens is shared and loaded.decoder.embed_tokens is shared
    assert isinstance(loaded.lm_head, ASGOutputHead) == (head != "dense")
    if head == "tied":
        assert loaded.lm_head.embedding is shared
    assert torch.equal(loaded(input_ids=ids, labels=labels).logits, before)
    assert torch.equal(loaded.generate(input_ids=ids, **options), generated)
    if head == "dense":  # the forced tie_word_embeddings=True of the saved config must not tie it later
        assert not loaded.config.tie_word_embeddings
        head_weight = loaded.lm_head.weight
        loaded.tie_weights()
        assert loaded.lm_head.weight is head_weight
        assert torch.equal(loaded(input_ids=ids, labels=labels).logits, before)
    auto = AutoModelForSeq2SeqLM.from_pretrained(tmp_path)
    assert isinstance(auto.lm_head, ASGOutputHead) == (head != "dense")
    assert torch.equal(auto(input_ids=ids, labels=labels).logits, before)
    assert torch.equal(auto.generate(input_ids=ids, **options), generated)
    tensors = saved_tensors(tmp_path)
    assert dense_tables(tensors, vocab, dim) == (["lm_head.weight"] if head == "dense" else [])
    codes = [name for name in tensors if name.endswith("codes")]
    assert len(codes) == (2 if head == "compressed" else 1)  # the shared embedding is stored once
    assert all(tensors[name] == ((vocab * 4 * 4 // 8,), torch.uint8) for name in codes)  # 4-bit codes, packed


@pytest.fixture(scope="module")
def minilm_asg(minilm_dir):
    model = load_model(minilm_dir, "token_classification", labels=NER_LABELS)
    apply_asg(model, m=8, k=128, iters=2, sample_rows=4096)
    return model.eval()


def test_minilm_round_trip_and_size_accounting(tmp_path, minilm_asg, minilm_dir, no_unpickling):
    ids = ids_for(minilm_asg.config.vocab_size, batch=3, length=20)
    before = minilm_asg(input_ids=ids).logits
    sizes = save_compressed(minilm_asg, tmp_path, AutoTokenizer.from_pretrained(minilm_dir))
    assert torch.equal(load_compressed(tmp_path)(input_ids=ids).logits, before)

    tensors = saved_tensors(tmp_path)
    assert not dense_tables(tensors, 30522, 384)
    packed = math.ceil(30522 * 8 * 7 / 8)  # V x m codes of ceil(log2 128) = 7 bits
    assert tensors["bert.embeddings.word_embeddings.codes"] == ((packed,), torch.uint8)
    # other parameters x 4 bytes + the packed code table + k*d float32 codebooks, and the file within 2% of it
    other = sum(p.numel() for name, p in minilm_asg.named_parameters() if "word_embeddings" not in name) * 4
    assert sizes["arithmetic_bytes"] == other + packed + 128 * 384 * 4
    stats = minilm_asg.get_input_embeddings().stats()
    assert sizes["compressed_bytes"] == stats["codebook_bytes"] + stats["code_bytes_packed"]  # what metrics.json counts
    assert abs(sizes["arithmetic_diff_pct"]) < 2
    assert sizes["dense_bytes"] == other + 30522 * 384 * 4


@pytest.mark.parametrize(
    "overrides",
    [  # the per-byte winners at <= 1% (README "Per byte"): e5 float16 tiers by id, MiniLM weighted tiers by frequency
        ("asg.storage_dtype=float16",),
        ("asg.tier_order=frequency", "asg.row_weights=train"),
    ],
)
def test_minilm_tiered_winner_at_one_percent_ships_within_two_percent(tmp_path, minilm_dir, overrides, no_unpickling):
    cfg = make_cfg(tmp_path, "asg=tiered", "asg.budget_bytes_pct=1", "asg.iters=2", *overrides)
    model = load_model(minilm_dir, "token_classification", labels=NER_LABELS)
    weights = torch.rand(30522, generator=torch.Generator().manual_seed(0)) if cfg.asg.row_weights == "train" else None
    compress_model(model, OmegaConf.to_container(cfg.asg) | {"progress": False}, row_weights=weights)
    embedding = model.get_input_embeddings()
    embedding.round_to_storage()
    assert exported_bytes_pct(embedding.stats()) == pytest.approx(1.0, rel=0.05)
    ids = ids_for(30522, batch=3, length=20)
    before = model.eval()(input_ids=ids).logits
    sizes = save_compressed(model, tmp_path / "export")
    assert torch.equal(load_compressed(tmp_path / "export")(input_ids=ids).logits, before)
    assert abs(sizes["arithmetic_diff_pct"]) < 2  # the directory on disk against the stored tensors' bytes


def test_minilm_float16_codebooks_weigh_half_on_disk(tmp_path, minilm_asg, no_unpickling):
    model = copy.deepcopy(minilm_asg)
    embedding = model.get_input_embeddings()
    embedding.storage_dtype = torch.float16
    embedding.round_to_storage()
    ids = ids_for(model.config.vocab_size, batch=3, length=20)
    before = model(input_ids=ids).logits
    sizes = save_compressed(model, tmp_path)
    loaded = load_compressed(tmp_path)
    assert loaded.get_input_embeddings().codebooks.dtype == torch.float32  # read back in the training precision
    assert torch.equal(loaded(input_ids=ids).logits, before)
    other = sum(p.numel() for name, p in model.named_parameters() if "word_embeddings" not in name) * 4
    assert sizes["arithmetic_bytes"] == other + math.ceil(30522 * 8 * 7 / 8) + 128 * 384 * 2
    assert sizes["compressed_bytes"] == embedding.stats()["codebook_bytes"] + embedding.stats()["code_bytes_packed"]
    assert abs(sizes["arithmetic_diff_pct"]) < 2


def test_loading_rejects_a_state_dict_of_other_shapes(tmp_path, minilm_asg):
    save_compressed(minilm_asg, tmp_path)
    saved = exported_config(tmp_path)
    saved["specs"]["input"]["k"] = 64
    (tmp_path / "config.json").write_text(json.dumps(saved))
    with pytest.raises(RuntimeError, match="codebooks"):
        load_compressed(tmp_path)


@pytest.fixture(scope="module")
def exports(tmp_path_factory, tiny_dirs) -> dict[str, Path]:
    """A BERT token-classification export and an mT5 one, compressed as the pipeline compresses them."""
    root = tmp_path_factory.mktemp("exports")
    bert = load_model(str(tiny_dirs["mbert"]), "token_classification", labels=NER_LABELS)
    apply_asg(bert, m=4, k=16, iters=2)
    save_compressed(bert.eval(), root / "bert", family="token_classification")
    mt5 = MT5ForConditionalGeneration.from_pretrained(tiny_dirs["mt5"])
    apply_asg(mt5, m=4, k=16, iters=2)
    save_compressed(mt5.eval(), root / "mt5", family="text_to_text")
    return {"bert": root / "bert", "mt5": root / "mt5"}


# transformers without asg: (loader, export, what its error says)
UNREGISTERED = [
    ("AutoConfig", "bert", "model type `asg`"),
    ("AutoModel", "bert", "model type `asg`"),
    ("AutoModelForTokenClassification", "bert", "model type `asg`"),
    ("BertForTokenClassification", "bert", "asg.export.load_compressed"),
    ("BertModel", "bert", "asg.export.load_compressed"),
    ("MT5ForConditionalGeneration", "bert", "no file named model.safetensors"),
    ("AutoModelForSeq2SeqLM", "mt5", "model type `asg`"),
    ("MT5ForConditionalGeneration", "mt5", "asg.export.load_compressed"),
    ("T5ForConditionalGeneration", "mt5", "no file named model.safetensors"),
]
TRY_LOADERS = """
import json, sys
import transformers
errors = []
for loader, path in json.loads(sys.argv[1]):
    try:
        getattr(transformers, loader).from_pretrained(path)
        errors.append(None)
    except Exception as err:
        errors.append(f"{type(err).__name__}: {err}")
print(json.dumps({"asg imported": "asg" in sys.modules, "errors": errors}))
"""


def test_transformers_alone_refuses_an_export(exports):
    """Format 1 loaded with a random embedding and no error; now each loader raises, in an interpreter without asg."""
    jobs = json.dumps([(loader, str(exports[name])) for loader, name, _ in UNREGISTERED])
    done = subprocess.run([sys.executable, "-c", TRY_LOADERS, jobs], capture_output=True, text=True, check=True)
    result = json.loads(done.stdout.splitlines()[-1])
    assert not result["asg imported"]
    for (loader, name, expected), error in zip(UNREGISTERED, result["errors"], strict=True):
        assert error is not None and expected in error, (loader, name, error)


def test_registered_loaders_load_from_the_hub_cache(tmp_path, exports):
    repo = tmp_path / "models--someone--tiny-asg"  # a Hub repo as huggingface_hub caches it
    (repo / "refs").mkdir(parents=True)
    (repo / "refs" / "main").write_text("0" * 40)
    shutil.copytree(exports["mt5"], repo / "snapshots" / ("0" * 40))
    auto = AutoModelForSeq2SeqLM.from_pretrained("someone/tiny-asg", cache_dir=tmp_path, local_files_only=True)
    assert isinstance(auto.get_input_embeddings(), ASGEmbedding)
    ids = ids_for(auto.config.vocab_size)
    expected = load_compressed(exports["mt5"])(input_ids=ids, labels=ids).logits
    assert torch.equal(auto(input_ids=ids, labels=ids).logits, expected)


def test_registered_loaders_load_as_saved_or_refuse(exports):
    # arguments that would be silently ignored are refused
    with pytest.raises(TypeError, match="dtype"):
        AutoModelForTokenClassification.from_pretrained(exports["bert"], dtype=torch.float16)
    with pytest.raises(TypeError, match="config overrides"):
        AutoModelForTokenClassification.from_pretrained(exports["bert"], num_labels=3)
    with pytest.raises(ValueError, match="AutoModelForTokenClassification"):
        AutoModelForSequenceClassification.from_pretrained(exports["bert"])
    with pytest.raises(ValueError, match="asg.export.load_compressed"):  # a model class itself still refuses
        BertForTokenClassification.from_pretrained(exports["bert"])


def test_a_format_1_export_is_refused(tmp_path, exports):
    """Format 1: the base model's own config.json beside asg.json (and model.safetensors)."""
    (tmp_path / "config.json").write_text(json.dumps(exported_config(exports["bert"])["base_config"]))
    (tmp_path / "asg.json").write_text("{}")
    with pytest.raises(ValueError, match="format 1: re-export it"):
        load_compressed(tmp_path)


@pytest.mark.parametrize(("k", "shape"), [(1, (5, 3)), (2, (9, 1)), (3, (7, 5)), (128, (301, 8)), (1024, (97, 2, 4))])
def test_packed_codes_unpack_to_the_same_codes(monkeypatch, k, shape):
    monkeypatch.setattr(export, "_PACK_CHUNK", 16)  # several chunks, and a last one cut short
    codes = torch.randint(0, k, shape, generator=torch.Generator().manual_seed(k)).to(smallest_code_dtype(k))
    bits = (k - 1).bit_length()
    packed = export.pack_codes(codes, bits)
    assert packed.dtype == torch.uint8 and packed.numel() == math.ceil(codes.numel() * bits / 8)
    assert torch.equal(export.unpack_codes(packed, shape, codes.dtype, bits), codes)


def test_a_format_2_export_with_integer_codes_still_loads(tmp_path, exports):
    """Format 2 stored the code tables in their integer dtype, without the packing metadata."""
    shutil.copytree(exports["bert"], tmp_path / "v2")
    path = tmp_path / "v2" / WEIGHTS
    state = export.read_weights(path)
    save_file(state, str(path), metadata={"format": "pt"})
    saved = exported_config(tmp_path / "v2") | {"format_version": 2}
    (tmp_path / "v2" / "config.json").write_text(json.dumps(saved))
    ids = ids_for(load_compressed(exports["bert"]).config.vocab_size)
    assert torch.equal(
        load_compressed(tmp_path / "v2")(input_ids=ids).logits, load_compressed(exports["bert"])(input_ids=ids).logits
    )


def hydra_config(run_dir, overrides):
    """The run's config as Hydra writes `.hydra/config.yaml`: composed, interpolations left unresolved."""
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        cfg = compose("config", overrides=overrides)
    (run_dir / ".hydra").mkdir(parents=True)
    OmegaConf.save(cfg, run_dir / ".hydra" / "config.yaml")


def test_cli_exports_a_run_from_its_checkpoint(tmp_path, tiny_dirs, shared_data, capsys, monkeypatch):
    run_dir, out = tmp_path / "run", tmp_path / "export"
    overrides = [
        "model=mbert",
        f"model.name_or_path={tiny_dirs['mbert']}",
        "task=wikiann",
        "transfer.eval_langs=[de]",
        f"data.dir={shared_data}",
        "data.max_train_samples=8",
        "data.max_eval_samples=4",
        "data.batch_size=4",
        "logger=csv",
        "trainer.accelerator=cpu",
        "trainer.max_steps=1",
        "trainer.enable_checkpointing=true",
        "trainer.enable_progress_bar=false",
        "trainer.limit_val_batches=1",
        "asg.iters=2",
        "asg.k=32",
        "asg.m=4",
    ]
    train(make_cfg(run_dir, *overrides))
    hydra_config(run_dir, overrides)
    ckpt = next(run_dir.rglob("*.ckpt"))  # wherever Lightning's default ModelCheckpoint put it

    main([str(run_dir), str(out), "--ckpt", str(ckpt)])
    printed = capsys.readouterr().out
    assert "x smaller" in printed and "off" in printed

    state = torch.load(ckpt, map_location="cpu", weights_only=True)["state_dict"]
    for name, tensor in export.read_weights(out / WEIGHTS).items():  # code tables unpacked
        assert torch.equal(tensor, state[f"model.{name}"]), name
    refuse_unpickling(monkeypatch)
    loaded = load_compressed(out)
    assert loaded.get_input_embeddings().k == 32 and loaded.config.id2label[1] == "B-PER"
    codebooks = state["model.bert.embeddings.word_embeddings.codebooks"]
    assert torch.equal(loaded.get_input_embeddings().codebooks, codebooks)
    assert exported_config(out)["family"] == "token_classification"


def test_the_cli_runs_as_a_module_without_warnings():
    """`import asg` registers the Auto classes without importing asg.export, which `-m` then runs as a script."""
    command = [sys.executable, "-W", "error::RuntimeWarning", "-m", "asg.export", "--help"]
    assert "usage:" in subprocess.run(command, capture_output=True, text=True, check=True).stdout


@pytest.mark.slow
def test_e5_small_export_is_over_4x_smaller(tmp_path, e5_dir, no_unpickling):
    model = load_model(e5_dir, "token_classification", labels=NER_LABELS)
    vocab, dim = model.config.vocab_size, model.config.hidden_size
    assert (vocab, dim) == (250037, 384)
    original = sum(p.numel() for p in model.parameters()) * 4
    apply_asg(model, m=8, k=1024, iters=1, sample_rows=4096)  # size does not depend on fit quality
    ids = ids_for(vocab, batch=2, length=16)
    before = model.eval()(input_ids=ids).logits
    sizes = save_compressed(model, tmp_path)

    assert sizes["dense_bytes"] == original
    assert original / sizes["model_bytes"] >= 4
    assert abs(sizes["arithmetic_diff_pct"]) < 2
    tensors = saved_tensors(tmp_path)
    assert not dense_tables(tensors, vocab, dim)
    assert tensors["bert.embeddings.word_embeddings.codes"] == ((vocab * 8 * 10 // 8,), torch.uint8)  # 10-bit codes
    assert torch.equal(load_compressed(tmp_path)(input_ids=ids).logits, before)
