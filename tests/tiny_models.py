"""Tiny random-init models of the real architecture classes, saved like Hub checkpoints, built offline."""

from __future__ import annotations

from pathlib import Path

from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, processors, trainers
from transformers import (
    AutoTokenizer,
    BertConfig,
    BertForMaskedLM,
    MT5Config,
    MT5ForConditionalGeneration,
    PreTrainedTokenizerFast,
    XLMRobertaConfig,
    XLMRobertaForMaskedLM,
)

from asg.data.conll import read_conll

SHARED_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"


def corpus(limit: int = 3000) -> list[str]:
    """A few thousand real sentences in several scripts, to train tiny SentencePiece-style vocabularies."""
    lines = []
    for lang in ("en", "de", "ru", "zh", "ar"):
        name = "train-en.tsv" if lang == "en" else f"dev-{lang}.tsv"
        lines += [" ".join(s["tokens"]) for s in read_conll(SHARED_DATA / "wikiann" / name)[: limit // 5]]
    lines += [" ".join(s["tokens"]) for s in read_conll(SHARED_DATA / "bc5cdr" / "BC5CDR-IOB" / "train.tsv")[:500]]
    return lines


def unigram_tokenizer(specials: list[str], *, template: str, vocab_size: int = 6000) -> Tokenizer:
    """A Unigram (SentencePiece-style, metaspace) tokenizer trained in a second on the shared data."""
    tok = Tokenizer(models.Unigram())
    tok.normalizer = normalizers.NFKC()
    tok.pre_tokenizer = pre_tokenizers.Metaspace()
    tok.decoder = decoders.Metaspace()
    trainer = trainers.UnigramTrainer(vocab_size=vocab_size, special_tokens=specials, unk_token="<unk>")
    tok.train_from_iterator(corpus(), trainer=trainer)
    ids = {s: tok.token_to_id(s) for s in specials}
    tok.post_processor = processors.TemplateProcessing(
        single=template, pair=template.replace("$A", "$A $B"), special_tokens=list(ids.items())
    )
    return tok


def save_tiny_bert(out: Path, minilm_dir: str) -> Path:
    """BERT (the mBERT/BioBERT/MiniLM class) with MiniLM's real WordPiece tokenizer.

    Saved with a tied masked-LM head, as the Hub checkpoints are; task heads are new at load time."""
    tokenizer = AutoTokenizer.from_pretrained(minilm_dir)
    config = BertConfig(
        vocab_size=tokenizer.vocab_size,
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=64,
        max_position_embeddings=512,
    )
    BertForMaskedLM(config).save_pretrained(out)
    tokenizer.save_pretrained(out)
    return out


def save_tiny_xlmr(out: Path) -> Path:
    tok = unigram_tokenizer(["<s>", "<pad>", "</s>", "<unk>", "<mask>"], template="<s> $A </s>")
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=tok,
        bos_token="<s>",
        eos_token="</s>",
        pad_token="<pad>",
        unk_token="<unk>",
        mask_token="<mask>",
        cls_token="<s>",
        sep_token="</s>",
    )
    config = XLMRobertaConfig(
        vocab_size=len(tokenizer),
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=64,
        max_position_embeddings=514,
        pad_token_id=1,
        bos_token_id=0,
        eos_token_id=2,
    )
    XLMRobertaForMaskedLM(config).save_pretrained(out)
    tokenizer.save_pretrained(out)
    return out


def save_tiny_mt5(out: Path) -> Path:
    """mT5 with its real layout: untied lm_head, one shared embedding for encoder and decoder."""
    tok = unigram_tokenizer(["<pad>", "</s>", "<unk>"], template="$A </s>")
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=tok, eos_token="</s>", pad_token="<pad>", unk_token="<unk>")
    config = MT5Config(
        vocab_size=len(tokenizer),
        d_model=32,
        d_kv=8,
        d_ff=64,
        num_layers=2,
        num_decoder_layers=2,
        num_heads=4,
        tie_word_embeddings=False,
        pad_token_id=0,
        eos_token_id=1,
        decoder_start_token_id=0,
    )
    MT5ForConditionalGeneration(config).save_pretrained(out)
    tokenizer.save_pretrained(out)
    return out
