"""Convert OpenAI-format CLIP / UniQA checkpoints (e.g. the released `UniQA_weight.pt`) into a model folder."""

from __future__ import annotations

import gzip
import hashlib
import re
from collections.abc import Mapping
from pathlib import Path

import torch
from transformers import CLIPTextConfig, CLIPTokenizerFast, CLIPVisionConfig

from ..adapter import MultiCueAdapter
from ..configuration_uniqa import BOS_TOKEN_ID, EOS_TOKEN_ID, PAD_TOKEN_ID, UniQAConfig
from ..image_processing_uniqa import UniQAImageProcessor
from ..modeling_uniqa import UniQAModel
from .model_card import converted_model_card

PACKAGE_DIR = Path(__file__).resolve().parent
VOCAB_FILE = PACKAGE_DIR / "clip_vocab.json"
MERGES_FILE = PACKAGE_DIR / "clip_merges.txt"
N_MERGES = 48894  # 49408 tokens = 256 bytes x 2 (+ "</w>") + merges + 2 special tokens

ADAPTER_KEYS = {"adapter.fc.0.weight": "fc.0.weight", "adapter.fc.2.weight": "fc.2.weight", "score_level": "levels"}


class CheckpointError(ValueError):
    """The checkpoint does not have the expected keys or shapes."""


# -------------------------------------------------------------------------------------------------------------
# Tokenizer files (OpenAI CLIP's byte-pair encoding, MIT licence, Copyright (c) 2021 OpenAI).


def byte_symbols() -> list[str]:
    """The 256 printable unicode symbols standing for bytes 0..255 in byte-level BPE, in vocabulary order."""
    printable = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1))
    printable += list(range(ord("®"), ord("ÿ") + 1))
    codes = printable[:]
    extra = 0
    for byte in range(256):
        if byte not in printable:
            printable.append(byte)
            codes.append(256 + extra)
            extra += 1
    return [chr(code) for code in codes]


def build_clip_vocab(bpe_path: str | Path) -> tuple[dict[str, int], list[str]]:
    """Derive CLIP's `vocab.json` mapping and merge lines from OpenAI's `bpe_simple_vocab_16e6.txt.gz`."""
    with gzip.open(bpe_path, "rt", encoding="utf-8") as handle:
        merges = handle.read().split("\n")[1 : N_MERGES + 1]
    symbols = byte_symbols()
    tokens = symbols + [s + "</w>" for s in symbols] + ["".join(m.split()) for m in merges]
    tokens += ["<|startoftext|>", "<|endoftext|>"]
    return {token: i for i, token in enumerate(tokens)}, merges


def write_tokenizer(out_dir: str | Path, context_length: int = 77):
    """Write a CLIP tokenizer (vocab/merges shipped with this package) into `out_dir` and return it."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "vocab.json").write_bytes(VOCAB_FILE.read_bytes())
    (out_dir / "merges.txt").write_bytes(MERGES_FILE.read_bytes())
    # OpenAI's tokenizer pads with token 0 ("!"); padding never reaches the pooled end-of-text token.
    tokenizer = CLIPTokenizerFast.from_pretrained(out_dir, pad_token="!", model_max_length=context_length)
    tokenizer.save_pretrained(out_dir)
    return tokenizer


# -------------------------------------------------------------------------------------------------------------
# State dict conversion.


def load_checkpoint(path: str | Path) -> dict[str, torch.Tensor]:
    """Load a `.pt`/`.pth` state dict safely (`weights_only=True`), unwrapping `state_dict`/`model`/`params`
    wrappers and `module.` prefixes."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such checkpoint file")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # torch raises UnpicklingError, RuntimeError, ... for bad or unsafe files
        raise CheckpointError(f"{path}: not a loadable weights-only checkpoint ({error})") from error
    for wrapper in ("state_dict", "model", "params"):
        if isinstance(state, Mapping) and wrapper in state and isinstance(state[wrapper], Mapping):
            state = state[wrapper]
    if not isinstance(state, Mapping) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise CheckpointError(f"{path}: expected a mapping of names to tensors")
    return {re.sub(r"^(module\.)+", "", key): value for key, value in state.items()}


def _layer_count(state: Mapping[str, torch.Tensor], prefix: str) -> int:
    pattern = re.compile(re.escape(prefix) + r"(\d+)\.")
    return len({int(m.group(1)) for key in state if (m := pattern.match(key))})


def infer_config(state: Mapping[str, torch.Tensor]) -> UniQAConfig:
    """Read tower sizes from an OpenAI-format state dict's shapes (heads = width // 64)."""
    required = [
        "visual.conv1.weight",
        "visual.positional_embedding",
        "visual.proj",
        "token_embedding.weight",
        "positional_embedding",
        "ln_final.weight",
        "text_projection",
        "logit_scale",
    ]
    missing = [key for key in required if key not in state]
    if missing:
        raise CheckpointError(f"not an OpenAI-format CLIP state dict: missing {', '.join(missing)}")
    vision_width, _, patch, _ = state["visual.conv1.weight"].shape
    grid = round((state["visual.positional_embedding"].shape[0] - 1) ** 0.5)
    text_width = state["ln_final.weight"].shape[0]
    vision = CLIPVisionConfig(
        hidden_size=vision_width,
        intermediate_size=state["visual.transformer.resblocks.0.mlp.c_fc.weight"].shape[0],
        num_hidden_layers=_layer_count(state, "visual.transformer.resblocks."),
        num_attention_heads=max(1, vision_width // 64),
        patch_size=patch,
        image_size=patch * grid,
        hidden_act="quick_gelu",
        layer_norm_eps=1e-5,
        projection_dim=state["visual.proj"].shape[1],
    )
    text = CLIPTextConfig(
        vocab_size=state["token_embedding.weight"].shape[0],
        hidden_size=text_width,
        intermediate_size=state["transformer.resblocks.0.mlp.c_fc.weight"].shape[0],
        num_hidden_layers=_layer_count(state, "transformer.resblocks."),
        num_attention_heads=max(1, text_width // 64),
        max_position_embeddings=state["positional_embedding"].shape[0],
        hidden_act="quick_gelu",
        layer_norm_eps=1e-5,
        projection_dim=state["text_projection"].shape[1],
        bos_token_id=BOS_TOKEN_ID,
        eos_token_id=EOS_TOKEN_ID,
        pad_token_id=PAD_TOKEN_ID,
    )
    return UniQAConfig(
        text_config=text,
        vision_config=vision,
        projection_dim=state["text_projection"].shape[1],
        logit_scale_init_value=float(state["logit_scale"]),
    )


def _tower_keys(src: str, dst: str) -> dict[str, str]:
    """OpenAI residual-block names -> transformers CLIP encoder-layer names (without q/k/v, split separately)."""
    return {
        f"{src}.attn.out_proj.weight": f"{dst}.self_attn.out_proj.weight",
        f"{src}.attn.out_proj.bias": f"{dst}.self_attn.out_proj.bias",
        f"{src}.ln_1.weight": f"{dst}.layer_norm1.weight",
        f"{src}.ln_1.bias": f"{dst}.layer_norm1.bias",
        f"{src}.ln_2.weight": f"{dst}.layer_norm2.weight",
        f"{src}.ln_2.bias": f"{dst}.layer_norm2.bias",
        f"{src}.mlp.c_fc.weight": f"{dst}.mlp.fc1.weight",
        f"{src}.mlp.c_fc.bias": f"{dst}.mlp.fc1.bias",
        f"{src}.mlp.c_proj.weight": f"{dst}.mlp.fc2.weight",
        f"{src}.mlp.c_proj.bias": f"{dst}.mlp.fc2.bias",
    }


def convert_state_dict(state: Mapping[str, torch.Tensor], config: UniQAConfig) -> dict[str, torch.Tensor]:
    """OpenAI-format CLIP state dict -> `UniQAModel` state dict (float32). Every source key must be used."""
    renames = {
        "visual.conv1.weight": "vision_model.embeddings.patch_embedding.weight",
        "visual.class_embedding": "vision_model.embeddings.class_embedding",
        "visual.positional_embedding": "vision_model.embeddings.position_embedding.weight",
        "visual.ln_pre.weight": "vision_model.pre_layrnorm.weight",
        "visual.ln_pre.bias": "vision_model.pre_layrnorm.bias",
        "visual.ln_post.weight": "vision_model.post_layernorm.weight",
        "visual.ln_post.bias": "vision_model.post_layernorm.bias",
        "token_embedding.weight": "text_model.embeddings.token_embedding.weight",
        "positional_embedding": "text_model.embeddings.position_embedding.weight",
        "ln_final.weight": "text_model.final_layer_norm.weight",
        "ln_final.bias": "text_model.final_layer_norm.bias",
        "logit_scale": "logit_scale",
    }
    transposed = {"visual.proj": "visual_projection.weight", "text_projection": "text_projection.weight"}
    towers = [
        ("visual.transformer.resblocks", "vision_model.encoder.layers", config.vision_config),
        ("transformer.resblocks", "text_model.encoder.layers", config.text_config),
    ]
    split = {}
    for src_prefix, dst_prefix, tower in towers:
        for i in range(tower.num_hidden_layers):
            src, dst = f"{src_prefix}.{i}", f"{dst_prefix}.{i}"
            renames.update(_tower_keys(src, dst))
            for kind in ("weight", "bias"):
                split[f"{src}.attn.in_proj_{kind}"] = [f"{dst}.self_attn.{p}_proj.{kind}" for p in ("q", "k", "v")]

    unexpected = sorted(set(state) - set(renames) - set(transposed) - set(split))
    missing = sorted((set(renames) | set(transposed) | set(split)) - set(state))
    if unexpected or missing:
        raise CheckpointError(
            "checkpoint does not match an OpenAI CLIP layout:"
            + (f"\n  unexpected keys: {', '.join(unexpected)}" if unexpected else "")
            + (f"\n  missing keys: {', '.join(missing)}" if missing else "")
        )
    converted = {}
    for src, dst in renames.items():
        converted[dst] = state[src]
    for src, dst in transposed.items():
        converted[dst] = state[src].t()
    for src, dsts in split.items():
        for dst, chunk in zip(dsts, state[src].chunk(3, dim=0), strict=True):
            converted[dst] = chunk
    return {f"clip.{key}": value.float().contiguous() for key, value in converted.items()}


def load_adapter_checkpoint(path: str | Path) -> dict[str, torch.Tensor]:
    """Original-framework adapter checkpoint (`{"params": {"adapter.fc.0.weight", "adapter.fc.2.weight",
    "score_level"}}`) -> `MultiCueAdapter` state dict."""
    state = load_checkpoint(path)
    missing = sorted(set(ADAPTER_KEYS) - set(state))
    unexpected = sorted(set(state) - set(ADAPTER_KEYS))
    if missing or unexpected:
        raise CheckpointError(
            f"{path}: not a UniQA adapter checkpoint"
            + (f"; missing keys: {', '.join(missing)}" if missing else "")
            + (f"; unexpected keys: {', '.join(unexpected)}" if unexpected else "")
        )
    return {ADAPTER_KEYS[key]: value.float() for key, value in state.items()}


def _check_shapes(module: torch.nn.Module, state: Mapping[str, torch.Tensor], what: str) -> None:
    expected = module.state_dict()
    wrong = [
        f"{key}: checkpoint {tuple(state[key].shape)} vs model {tuple(value.shape)}"
        for key, value in expected.items()
        if key in state and state[key].shape != value.shape
    ]
    if wrong:
        raise CheckpointError(f"{what}: shape mismatch\n  " + "\n  ".join(wrong))


def sha256(path: str | Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def convert_checkpoint(
    src: str | Path,
    out: str | Path,
    adapter: str | Path | None = None,
    adapter_name: str = "default",
    adapter_task: str = "quality",
    adapter_dataset: str | None = None,
    license: str = "other",
) -> UniQAModel:
    """Convert an OpenAI-format CLIP/UniQA checkpoint (and optionally an original adapter checkpoint) into a
    model folder `out` (config, safetensors, tokenizer, image processor, code, model card). Returns the model."""
    state = load_checkpoint(src)
    config = infer_config(state)
    weights = convert_state_dict(state, config)
    model = UniQAModel(config)
    _check_shapes(model, weights, str(src))
    model.load_state_dict(weights, strict=False)
    if adapter is not None:
        adapter_state = load_adapter_checkpoint(adapter)
        bottleneck = adapter_state["fc.0.weight"].shape[0]
        module: MultiCueAdapter = model.add_multicue_adapter(
            adapter_name,
            task=adapter_task,
            bottleneck_dim=bottleneck,
            dataset=adapter_dataset,
            source=Path(adapter).name,
        )
        _check_shapes(module, adapter_state, str(adapter))
        module.load_state_dict(adapter_state)
    out = Path(out)
    model.tokenizer = write_tokenizer(out, config.text_config.max_position_embeddings)
    model.image_processor = UniQAImageProcessor(crop_size=config.vision_config.image_size)
    model.eval()
    model.save_pretrained(out)
    provenance = {"source": Path(src).name, "sha256": sha256(src)}
    if adapter is not None:
        provenance.update(adapter=Path(adapter).name, adapter_sha256=sha256(adapter))
    (out / "README.md").write_text(converted_model_card(model, provenance, license), encoding="utf-8")
    return model
