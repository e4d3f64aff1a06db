"""Ship a compressed model: save it with no dense V x d table, load it back without unpickling anything.

    python -m asg.export RUN_DIR OUT_DIR [--ckpt PATH] [--name-or-path DIR]

An export directory (format `asg.export_config.FORMAT_VERSION`, 4) holds
  - `asg.safetensors`: the model's state dict, every tensor as it is but the compressed modules' code tables, which
    are bit-packed at ceil(log2 k) bits per code (a uint8 stream; the file's metadata `asg_packed_codes` gives each
    table's shape, dtype and bits), and their float tensors, stored in `asg.storage_dtype` (metadata
    `asg_stored_dtypes` names those narrowed, read back in their own dtype), so the file weighs what
    `bytes_kept_pct_packed` counts; a tensor shared by several modules (mT5's one embedding for encoder, decoder
    and tied head) is stored once;
  - `config.json`: an `asg.export_config.ASGConfig`, model_type "asg": the format version, the model class, its task
    family and the compressed modules' specs, with the base model's own config as `base_config`;
  - the tokenizer files, when a tokenizer is given.

Load it with `asg.export.load_compressed(dir)`, or, once `asg` is imported, through transformers:
`AutoModelForTokenClassification.from_pretrained(dir)`, or the Auto class of the export's task family
(`asg.models.AUTO_CLASSES`), and so a `pipeline`, hands the directory (local, or a Hub repo) to `load_compressed`; it
refuses another family's export and what it cannot honour (a dtype but "auto", device_map, config overrides).
`AutoConfig` gives the ASGConfig.

No other standard loader returns a model. Format 1 (the base config.json and an asg.json beside a `model.safetensors`
of codes and codebooks) went through `from_pretrained` with a freshly random embedding and no error. Now, without
`import asg`, AutoConfig and the Auto model classes stop at the unknown model_type "asg"; a model class of the base's
type (`BertForTokenClassification.from_pretrained(dir)`) takes its config from `base_config`, whose
`transformers_weights` (the weights file transformers is to read) is a sentence naming `load_compressed`, which
transformers rejects as a file name; any other class finds no `model.safetensors`.
"""

from __future__ import annotations

import argparse
import json
import math
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
import transformers
from safetensors import safe_open
from safetensors.torch import load_file, save_file, save_model
from torch import Tensor, nn
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from asg.embedding import CompressedEmbedding
from asg.export_config import REFUSAL, WEIGHTS, ASGConfig, read_config
from asg.models import AUTO_CLASSES
from asg.quantize import code_bits, packed_code_bytes
from asg.surgery import ASGOutputHead, compressed_modules, compressed_specs, heads_tied, install


def embedding_classes() -> dict[str, type[CompressedEmbedding]]:
    """Every CompressedEmbedding subclass keyed by its `method`: a new method plugs in by subclassing."""
    import asg.baselines  # noqa: F401  (defines the baselines' classes)
    import asg.opq  # noqa: F401
    import asg.tiered  # noqa: F401

    found: dict[str, type[CompressedEmbedding]] = {}
    pending = [CompressedEmbedding]
    while pending:
        for cls in pending.pop().__subclasses__():
            pending.append(cls)
            method = cls.__dict__.get("method")  # a subclass that does not name its own method is not another method
            if not method:
                continue
            if found.get(method, cls) is not cls:  # two classes for one method: a spec could load either
                raise TypeError(f"method={method!r} is claimed by {found[method].__name__} and {cls.__name__}")
            found[method] = cls
    return found


def build_embedding(spec: Mapping[str, Any]) -> CompressedEmbedding:
    """An empty compressed embedding of the spec's shapes, of the class registered for `spec['method']`."""
    classes = embedding_classes()
    if spec["method"] not in classes:
        raise ValueError(f"no CompressedEmbedding class has method={spec['method']!r}; known: {sorted(classes)}")
    # `tied` and `bias` describe the head around the embedding, not the embedding; exports before storage_dtype
    # stored float32
    embedding = classes[spec["method"]].from_spec(
        {k: v for k, v in spec.items() if k not in ("tied", "bias", "storage_dtype")}
    )
    embedding.storage_dtype = getattr(torch, spec.get("storage_dtype", "float32"))
    return embedding


def install_specs(model: PreTrainedModel, specs: Mapping[str, Mapping[str, Any]]) -> None:
    """Put empty compressed modules shaped by `compressed_specs` output into a dense model, before loading weights."""
    if not specs:
        return
    embedding = build_embedding(specs["input"])
    head_spec = specs.get("head")
    head_embedding = None
    if head_spec is not None:
        # a tied head is rebuilt from the input embedding itself, whatever the fresh model's own tying
        head_embedding = embedding if head_spec["tied"] else build_embedding(head_spec)
    install(model, embedding, head_embedding)


PACKED = "asg_packed_codes"  # safetensors metadata: {tensor name: {"shape", "dtype", "bits"}} of packed code tables
NARROWED = "asg_stored_dtypes"  # and {tensor name: dtype} of float tensors stored in a narrower asg.storage_dtype
_PACK_CHUNK = 1 << 20  # codes per step (a multiple of 8, so every chunk ends on a byte)


def pack_codes(codes: Tensor, bits: int) -> Tensor:
    """Integer codes below 2**bits as one little-endian bit stream of `bits` bits each (row-major), in uint8."""
    flat, shifts, weights = (
        codes.reshape(-1).to(torch.int32),
        torch.arange(bits, dtype=torch.int32),
        1 << torch.arange(8),
    )
    chunks = []
    for start in range(0, flat.numel(), _PACK_CHUNK):
        planes = ((flat[start : start + _PACK_CHUNK, None] >> shifts) & 1).reshape(-1)
        planes = torch.cat([planes, planes.new_zeros(-planes.numel() % 8)])
        chunks.append((planes.view(-1, 8) * weights).sum(1).to(torch.uint8))
    return torch.cat(chunks) if chunks else torch.zeros(0, dtype=torch.uint8)


def unpack_codes(packed: Tensor, shape: tuple[int, ...], dtype: torch.dtype, bits: int) -> Tensor:
    """The inverse of `pack_codes`."""
    count = math.prod(shape)
    if bits == 0:  # k = 1: every code is 0 and the stream is empty
        return torch.zeros(shape, dtype=dtype)
    step, shifts, weights = _PACK_CHUNK * bits // 8, torch.arange(8), 1 << torch.arange(bits, dtype=torch.int32)
    chunks = []
    for start in range(0, packed.numel(), step):  # one packed chunk of codes at a time
        planes = ((packed[start : start + step, None].to(torch.int32) >> shifts) & 1).reshape(-1)
        chunks.append((planes[: planes.numel() // bits * bits].view(-1, bits) * weights).sum(1))
    return torch.cat(chunks)[:count].to(dtype).view(shape)


def _stored_bytes(module: CompressedEmbedding, name: str, tensor: Tensor) -> int:
    if name in module.code_tables():
        return packed_code_bytes(tensor.numel(), module.code_tables()[name])
    if tensor.is_floating_point():
        return module.stored_bytes(tensor)
    return tensor.numel() * tensor.element_size()


def _tensor_bytes(tensors: Any) -> int:
    unique = {t.data_ptr(): t for t in tensors}  # shared tensors count once
    return sum(t.numel() * t.element_size() for t in unique.values())


def _tied_head(model: PreTrainedModel) -> bool:
    head = model.get_output_embeddings()
    if isinstance(head, ASGOutputHead):
        return head.embedding is model.get_input_embeddings()
    # a dense head cannot share weights with a compressed input embedding
    return not isinstance(model.get_input_embeddings(), CompressedEmbedding) and heads_tied(model)


def size_accounting(model: PreTrainedModel) -> dict[str, int]:
    """Bytes of the model's tensors: compressed modules' (codes + codebooks), the rest, and their dense equivalent.

    `arithmetic_bytes` is what an export should weigh: every other parameter as stored plus the compressed tensors;
    `dense_bytes` is the same model with each compressed module back as its dense (V, d) matrix.
    """
    compressed = list({id(m): m for m in compressed_modules(model).values()}.values())  # each once
    inside = {id(p) for m in compressed for p in m.parameters()}
    other = _tensor_bytes(p for p in model.parameters() if id(p) not in inside)
    stored = {t.data_ptr(): _stored_bytes(m, n, t) for m in compressed for n, t in m.state_dict().items()}
    compressed_bytes = sum(stored.values())  # code tables bit-packed, as the export stores them
    dense = sum(m.stats()["bytes_before"] for m in compressed)
    return {
        "other_param_bytes": other,
        "compressed_bytes": compressed_bytes,
        "arithmetic_bytes": other + compressed_bytes,
        "dense_bytes": other + dense,
    }


def save_compressed(
    model: PreTrainedModel,
    out_dir: str | Path,
    tokenizer: PreTrainedTokenizerBase | None = None,
    *,
    family: str | None = None,  # the pipeline's task family (asg.models.AUTO_CLASSES), recorded in config.json
) -> dict[str, Any]:
    """Write the export directory (see the module docstring); return its file sizes and the size accounting."""
    if family is not None and family not in AUTO_CLASSES:
        raise ValueError(f"unknown task family {family!r}; expected one of {sorted(AUTO_CLASSES)}")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    # save_model stores a tensor shared under several names once and names the aliases in the metadata
    save_model(model, str(out / WEIGHTS), metadata={"format": "pt"})
    _store_compressed(model, out / WEIGHTS)
    architecture = type(model).__name__
    # the base config as model.save_pretrained would write it, and the refusal for transformers' own loaders
    base_config = model.config.to_diff_dict() | {"architectures": [architecture], "transformers_weights": REFUSAL}
    ASGConfig(
        architecture=architecture,
        family=family,
        tied_head=_tied_head(model),
        specs=compressed_specs(model),
        base_config=base_config,
    ).save_pretrained(out)
    if tokenizer is not None:
        tokenizer.save_pretrained(out)
    sizes: dict[str, Any] = dict(size_accounting(model))
    sizes["files"] = {p.name: p.stat().st_size for p in sorted(out.iterdir()) if p.is_file()}
    sizes["model_bytes"] = sizes["files"][WEIGHTS]
    sizes["arithmetic_diff_pct"] = 100 * (sizes["model_bytes"] - sizes["arithmetic_bytes"]) / sizes["arithmetic_bytes"]
    sizes["ratio"] = sizes["dense_bytes"] / sizes["model_bytes"]
    return sizes


def _store_compressed(model: nn.Module, path: Path) -> None:
    """Rewrite the saved file as an export stores compressed modules: code tables bit-packed (`pack_codes`), float
    tensors in the module's storage dtype (the original dtype recorded, to which `read_weights` casts back)."""
    owners = {  # saved name -> (module, its state-dict name)
        f"{name}.{tensor}": (module, tensor)
        for name, module in compressed_modules(model).items()
        for tensor in module.state_dict()
    }
    with safe_open(str(path), "pt") as f:
        metadata = f.metadata() or {}
        tensors = {name: f.get_tensor(name) for name in f.keys()}
    packed, narrowed = {}, {}
    for name, tensor in tensors.items():
        if name not in owners:
            continue
        module, own_name = owners[name]
        if own_name in module.code_tables():
            bits = code_bits(module.code_tables()[own_name])
            packed[name] = {
                "shape": list(tensor.shape),
                "dtype": str(tensor.dtype).removeprefix("torch."),
                "bits": bits,
            }
            tensors[name] = pack_codes(tensor, bits)
        elif module.narrows(tensor):
            narrowed[name] = str(tensor.dtype).removeprefix("torch.")
            tensors[name] = tensor.to(module.storage_dtype)
    save_file(tensors, str(path), metadata=metadata | {PACKED: json.dumps(packed), NARROWED: json.dumps(narrowed)})


def read_weights(path: str | Path) -> dict[str, Tensor]:
    """An export's state dict, code tables unpacked to their integer dtype, narrowed floats back in their own."""
    with safe_open(str(path), "pt") as f:
        metadata = f.metadata() or {}
    state = load_file(str(path))
    for name, info in json.loads(metadata.get(PACKED, "{}")).items():
        state[name] = unpack_codes(state[name], tuple(info["shape"]), getattr(torch, info["dtype"]), info["bits"])
    for name, dtype in json.loads(metadata.get(NARROWED, "{}")).items():
        state[name] = state[name].to(getattr(torch, dtype))
    return state


def _model_class(name: str) -> type[PreTrainedModel]:
    cls = getattr(transformers, name, None)
    if not (isinstance(cls, type) and issubclass(cls, PreTrainedModel)):
        raise ValueError(f"config.json names architecture {name!r}, which is not a transformers model class")
    return cls


def _load_state(model: nn.Module, state: dict[str, torch.Tensor]) -> None:
    """Strict load of a safetensors state dict, in which each shared tensor appears under one of its names."""
    current = model.state_dict(keep_vars=True)  # the live tensors, so a dtype change reaches the module
    for name, value in state.items():  # keep the file's dtypes (integer codes, a bf16 model) rather than casting
        if name in current and current[name].dtype != value.dtype:
            current[name].data = current[name].data.to(value.dtype)
    missing, unexpected = model.load_state_dict(state, strict=False)
    loaded = {current[name].data_ptr() for name in state if name in current}
    missing = [name for name in missing if current[name].data_ptr() not in loaded]  # aliases of a loaded tensor
    if missing or unexpected:
        raise RuntimeError(f"export does not match the model: missing {missing}, unexpected {unexpected}")


def load_compressed(path: str | Path) -> PreTrainedModel:
    """Rebuild an exported model (eval mode), giving outputs identical to the model that was saved.

    The architecture comes from config.json (no download, no pretrained weights), the compressed modules from its
    specs, the weights from asg.safetensors; nothing is unpickled.
    """
    path = Path(path)
    config = read_config(path)
    model_config = config.model_config()
    model_config.name_or_path = str(path)  # as from_pretrained records it: a pipeline finds the tokenizer there
    model = _model_class(config.architecture)(model_config)
    head = model.get_output_embeddings()
    if head is not None and not config.tied_head and heads_tied(model):
        # the config may force tying (transformers 5 ties mT5 always) while the saved head had weights of its own
        head.weight = nn.Parameter(head.weight.detach().clone())
        model.config.tie_word_embeddings = False  # so that no later tie_weights() ties it again
    install_specs(model, config.specs)
    _load_state(model, read_weights(path / WEIGHTS))
    return model.eval()


def _base_weights_bytes(name_or_path: str) -> int | None:
    files = list(Path(name_or_path).glob("*.safetensors")) if Path(name_or_path).is_dir() else []
    return sum(f.stat().st_size for f in files) or None


def export_run(
    run_dir: str | Path, out_dir: str | Path, *, ckpt: str | Path | None = None, name_or_path: str | None = None
) -> dict[str, Any]:
    """Export the model of a `run.py` run directory from its Lightning checkpoint; return the size report."""
    from omegaconf import OmegaConf

    from asg.models import load_model, load_tokenizer, loader_settings, resolve_name_or_path
    from asg.train import task_recipe

    run_dir = Path(run_dir)
    cfg = OmegaConf.load(run_dir / ".hydra" / "config.yaml")  # read lazily: `${hydra:...}` entries stay unresolved
    ckpt = Path(ckpt) if ckpt else run_dir / "checkpoints" / "last.ckpt"
    # weights_only: tensors, containers and plain values only; never an arbitrary pickle
    checkpoint = torch.load(ckpt, map_location="cpu", weights_only=True)
    if "asg_compression" not in checkpoint:
        raise KeyError(f"{ckpt} has no 'asg_compression' entry: it was not saved by an asg TaskModule")
    family, _, _ = task_recipe(cfg)
    name_or_path = name_or_path or resolve_name_or_path(cfg.model)
    labels = list(cfg.task.labels) if family in ("token_classification", "sequence_classification") else None
    # the same skeleton train() built, tying included (mT5's real head is untied although its config says tie)
    config_kwargs, tokenizer_kwargs = loader_settings(cfg.model)
    model = load_model(name_or_path, family, labels=labels, **config_kwargs)
    original = _tensor_bytes(model.parameters())
    install_specs(model, checkpoint["asg_compression"]["specs"])
    state = {k.removeprefix("model."): v for k, v in checkpoint["state_dict"].items() if k.startswith("model.")}
    model.load_state_dict(state, strict=True)
    tokenizer = load_tokenizer(name_or_path, config=model.config, **tokenizer_kwargs)
    sizes = save_compressed(model.eval(), out_dir, tokenizer, family=family)
    return sizes | {
        "checkpoint": str(ckpt),
        "original_param_bytes": original,
        "original_ratio": original / sizes["model_bytes"],
        "base_weights_bytes": _base_weights_bytes(name_or_path),
    }


def report(sizes: Mapping[str, Any]) -> str:
    """The CLI's size report."""
    diff = sizes["arithmetic_diff_pct"]
    lines = [
        f"{WEIGHTS}: {sizes['model_bytes']:,} bytes (all files: {sum(sizes['files'].values()):,})",
        f"original, the dense model's parameters: {sizes['original_param_bytes']:,} bytes"
        f" -> {sizes['original_ratio']:.2f}x smaller",
        f"arithmetic: other parameters {sizes['other_param_bytes']:,} + codes and codebooks"
        f" {sizes['compressed_bytes']:,} = {sizes['arithmetic_bytes']:,} bytes; the file is {diff:+.3f}% off",
    ]
    if sizes["base_weights_bytes"]:
        lines.append(f"base checkpoint's *.safetensors on disk: {sizes['base_weights_bytes']:,} bytes")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="Export a run's compressed model (safetensors, no dense V x d).")
    parser.add_argument("run_dir", help="Hydra run dir of run.py, with .hydra/config.yaml")
    parser.add_argument("out_dir", help="export directory to write")
    parser.add_argument("--ckpt", help="Lightning checkpoint (default RUN_DIR/checkpoints/last.ckpt)")
    parser.add_argument("--name-or-path", help="the backbone's directory, if the run's config does not resolve here")
    args = parser.parse_args(argv)
    sizes = export_run(args.run_dir, args.out_dir, ckpt=args.ckpt, name_or_path=args.name_or_path)
    print(f"exported {sizes['checkpoint']} to {args.out_dir}")
    print(report(sizes))


if __name__ == "__main__":
    main()
