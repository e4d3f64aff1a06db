"""Tiny random-weight copies of the paper's four Hub checkpoints, each in its real repository's file layout.

Only the sizes are shrunk. Every file, key and quirk that changes how transformers loads the model is kept:

- mBERT `google-bert/bert-base-multilingual-cased`: cased WordPiece (vocab.txt + tokenizer.json),
  tokenizer_config.json `{"do_lower_case": false, "model_max_length": 512}`, weights in model.safetensors.
- XLM-R `FacebookAI/xlm-roberta-base`: SentencePiece unigram model `sentencepiece.bpe.model` plus the tokenizer.json
  converted from it, tokenizer_config.json `{"model_max_length": 512}`, model.safetensors.
- mT5 `google/mt5-base`: `spiece.model` with no tokenizer.json, `pytorch_model.bin` only, config.json with
  `tie_word_embeddings: false`, and an `lm_head` whose weights differ from `shared`; the config's vocabulary is
  12 rows larger than the SentencePiece model, as in the real one (250,112 vs 250,100).
- BioBERT `dmis-lab/biobert-base-cased-v1.1`: only config.json (the original Google format: no `model_type`, no
  `architectures`), a cased vocab.txt and pytorch_model.bin; no tokenizer_config.json, so BertTokenizer's default
  `do_lower_case=True` would lower-case this cased vocabulary.

The BERT checkpoints hold BertForPreTraining weights (`bert.*`, `cls.predictions.*`, `cls.seq_relationship.*`), as the
original TF conversions do; task heads are new at load time.
"""

from __future__ import annotations

import io
import json
from pathlib import Path
from typing import Any

import sentencepiece as spm
import torch
from safetensors.torch import save_model
from tokenizers import BertWordPieceTokenizer
from transformers import (
    BertConfig,
    BertForPreTraining,
    BertTokenizer,
    MT5Config,
    MT5ForConditionalGeneration,
    XLMRobertaConfig,
    XLMRobertaForMaskedLM,
    XLMRobertaTokenizer,
)

from tests.tiny_models import corpus

VOCAB_SIZE = 3000
# the shrunk sizes; every other config value is the real checkpoint's
BERT_SIZES = {"hidden_size": 32, "intermediate_size": 64, "num_attention_heads": 2, "num_hidden_layers": 2}
MT5_SIZES = {"d_ff": 64, "d_kv": 8, "d_model": 32, "num_decoder_layers": 2, "num_heads": 4, "num_layers": 2}
MT5_VOCAB_PADDING = 12  # google/mt5-base: config vocab_size 250,112, spiece.model 250,100 pieces


def write_json(path: Path, content: dict[str, Any]) -> None:
    path.write_text(json.dumps(content, indent=2) + "\n")


def bert_config_json(vocab_size: int) -> dict[str, Any]:
    """BERT-base config.json keys as Google's original release has them (BioBERT ships exactly these)."""
    return {
        "attention_probs_dropout_prob": 0.1,
        "hidden_act": "gelu",
        "hidden_dropout_prob": 0.1,
        "hidden_size": BERT_SIZES["hidden_size"],
        "initializer_range": 0.02,
        "intermediate_size": BERT_SIZES["intermediate_size"],
        "max_position_embeddings": 512,
        "num_attention_heads": BERT_SIZES["num_attention_heads"],
        "num_hidden_layers": BERT_SIZES["num_hidden_layers"],
        "type_vocab_size": 2,
        "vocab_size": vocab_size,
    }


def cased_wordpiece_vocab(out: Path, lines: list[str]) -> Path:
    """A cased WordPiece vocab.txt trained on the shared data ([PAD] first, so pad_token_id 0 as in BERT)."""
    trainer = BertWordPieceTokenizer(lowercase=False, strip_accents=False)
    trainer.train_from_iterator(
        lines, vocab_size=VOCAB_SIZE, special_tokens=["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
    )
    out.mkdir(parents=True, exist_ok=True)
    return Path(trainer.save_model(str(out))[0])


def sentencepiece_model(lines: list[str], **special_ids: int) -> bytes:
    """A real SentencePiece unigram model file (the format of spiece.model / sentencepiece.bpe.model)."""
    model = io.BytesIO()
    spm.SentencePieceTrainer.train(
        sentence_iterator=iter(lines),
        model_writer=model,
        vocab_size=VOCAB_SIZE,
        model_type="unigram",
        character_coverage=0.995,  # the Chinese sentences alone have more characters than the vocabulary holds
        minloglevel=2,
        **special_ids,
    )
    return model.getvalue()


def save_bert_weights(config: BertConfig, path: Path) -> None:
    torch.manual_seed(0)
    model = BertForPreTraining(config)
    if path.suffix == ".safetensors":
        save_model(model, str(path), metadata={"format": "pt"})  # stores the tied decoder weight once
    else:
        torch.save(model.state_dict(), path)


def save_mbert(out: Path, lines: list[str]) -> Path:
    vocab = cased_wordpiece_vocab(out, lines)
    # tokenizer.json as transformers converts it from vocab.txt: BertNormalizer with lowercase false
    BertTokenizer(vocab=str(vocab), do_lower_case=False).backend_tokenizer.save(str(out / "tokenizer.json"))
    write_json(out / "tokenizer_config.json", {"do_lower_case": False, "model_max_length": 512})
    size = len(vocab.read_text().splitlines())
    config = {
        "architectures": ["BertForMaskedLM"],
        **bert_config_json(size),
        "directionality": "bidi",
        "layer_norm_eps": 1e-12,
        "model_type": "bert",
        "pad_token_id": 0,
        "pooler_fc_size": BERT_SIZES["hidden_size"],
        "pooler_num_attention_heads": BERT_SIZES["num_attention_heads"],
        "pooler_num_fc_layers": 3,
        "pooler_size_per_head": 128,
        "pooler_type": "first_token_transform",
    }
    write_json(out / "config.json", dict(sorted(config.items())))
    save_bert_weights(BertConfig(**config), out / "model.safetensors")
    return out


def save_biobert(out: Path, lines: list[str]) -> Path:
    vocab = cased_wordpiece_vocab(out, lines)
    config = bert_config_json(len(vocab.read_text().splitlines()))
    write_json(out / "config.json", config)
    save_bert_weights(BertConfig(**config), out / "pytorch_model.bin")
    return out


def save_xlmr(out: Path, lines: list[str]) -> Path:
    out.mkdir(parents=True, exist_ok=True)
    # SentencePiece's own ids (<unk> 0, <s> 1, </s> 2); the tokenizer maps them to fairseq's order
    (out / "sentencepiece.bpe.model").write_bytes(sentencepiece_model(lines, unk_id=0, bos_id=1, eos_id=2))
    tokenizer = XLMRobertaTokenizer.from_pretrained(out)
    tokenizer.backend_tokenizer.save(str(out / "tokenizer.json"))
    write_json(out / "tokenizer_config.json", {"model_max_length": 512})
    config = {
        "architectures": ["XLMRobertaForMaskedLM"],
        "attention_probs_dropout_prob": 0.1,
        "bos_token_id": 0,
        "eos_token_id": 2,
        "hidden_act": "gelu",
        "hidden_dropout_prob": 0.1,
        "hidden_size": BERT_SIZES["hidden_size"],
        "initializer_range": 0.02,
        "intermediate_size": BERT_SIZES["intermediate_size"],
        "layer_norm_eps": 1e-05,
        "max_position_embeddings": 514,
        "model_type": "xlm-roberta",
        "num_attention_heads": BERT_SIZES["num_attention_heads"],
        "num_hidden_layers": BERT_SIZES["num_hidden_layers"],
        "output_past": True,
        "pad_token_id": 1,
        "position_embedding_type": "absolute",
        "transformers_version": "4.17.0.dev0",
        "type_vocab_size": 1,
        "use_cache": True,
        "vocab_size": len(tokenizer),
    }
    write_json(out / "config.json", config)
    torch.manual_seed(0)
    model = XLMRobertaForMaskedLM(XLMRobertaConfig(**config))
    save_model(model, str(out / "model.safetensors"), metadata={"format": "pt"})
    return out


def save_mt5(out: Path, lines: list[str]) -> Path:
    out.mkdir(parents=True, exist_ok=True)
    (out / "spiece.model").write_bytes(sentencepiece_model(lines, pad_id=0, eos_id=1, unk_id=2, bos_id=-1))
    write_json(out / "special_tokens_map.json", {"eos_token": "</s>", "unk_token": "<unk>", "pad_token": "<pad>"})
    write_json(
        out / "tokenizer_config.json",
        {
            "eos_token": "</s>",
            "unk_token": "<unk>",
            "pad_token": "<pad>",
            "extra_ids": 0,
            "additional_special_tokens": None,
            "tokenizer_file": None,
            "name_or_path": "google/mt5-base",
        },
    )
    config = {
        "architectures": ["MT5ForConditionalGeneration"],
        **MT5_SIZES,
        "decoder_start_token_id": 0,
        "dropout_rate": 0.1,
        "eos_token_id": 1,
        "feed_forward_proj": "gated-gelu",
        "initializer_factor": 1.0,
        "is_encoder_decoder": True,
        "layer_norm_epsilon": 1e-06,
        "model_type": "mt5",
        "output_past": True,
        "pad_token_id": 0,
        "relative_attention_num_buckets": 32,
        "tie_word_embeddings": False,
        "tokenizer_class": "T5Tokenizer",
        "transformers_version": "4.10.0.dev0",
        "use_cache": True,
        "vocab_size": VOCAB_SIZE + MT5_VOCAB_PADDING,
    }
    write_json(out / "config.json", dict(sorted(config.items())))
    write_json(
        out / "generation_config.json",
        {"_from_model_config": True, "decoder_start_token_id": 0, "eos_token_id": 1, "pad_token_id": 0},
    )
    torch.manual_seed(0)
    model = MT5ForConditionalGeneration(MT5Config(**config))  # transformers 5 ties lm_head to shared here
    # the real head is trained separately from the input embedding: give it weights of its own
    model.lm_head.weight = torch.nn.Parameter(torch.randn_like(model.shared.weight) * config["d_model"] ** -0.5)
    torch.save(model.state_dict(), out / "pytorch_model.bin")
    return out


def save_paper_models(root: Path) -> dict[str, Path]:
    """model config name -> a tiny checkpoint in that model's Hub layout."""
    lines = corpus()
    return {
        "mbert": save_mbert(root / "bert-base-multilingual-cased", lines),
        "xlmr": save_xlmr(root / "xlm-roberta-base", lines),
        "mt5": save_mt5(root / "mt5-base", lines),
        "biobert": save_biobert(root / "biobert-base-cased-v1.1", lines),
    }
