"""Convert released checkpoints into Hub-ready Hour-LLaVA folders.

    python -m modeling_hour_llava.convert [--from official|llava-onevision] SRC DST

SRC is a local folder or a Hub repo id (fetched with `snapshot_download`, weights, configs and tokenizer only).
Two kinds of source are understood:

* `official`: an Hour-LLaVA checkpoint of the reference code (LLaVA-NeXT format, `HourLlavaQwenForCausalLM`), any
  stage. Every tensor is mapped, MemAug included (`Wqkv`, `Wo`, `Wq`, `Wkv`, `mlp.0/2`, `norm1/2/3`; the packed row
  layouts [Q | K | V] and [K | V] are ours too, so this is a rename).
* `llava-onevision`: a LLaVA-OneVision checkpoint to start stage 1 from, in the lmms-lab layout (`LlavaQwenForCausalLM`,
  `model.mm_projector.0/2`, `model.vision_tower.vision_tower.vision_model.*`, `model.layers.*`) or the llava-hf one
  (`LlavaOnevisionForConditionalGeneration`, `vision_tower.*`, `multi_modal_projector.*`, `language_model.*` on
  disk or `model.*` in the v5 layout). MemAug is new: it is initialised (Linear ~ N(0, initializer_range), zero
  bias, LayerNorm (1, 0), seeded) and the report says so.

The kind is told by `architectures` and by the tensors present, never by `model_type` (the released configs carry
"llava" or "qwen2"). Every source tensor is either mapped, or dropped for a stated reason (SigLIP's pooling head,
vision layers after the feature layer, a tied `lm_head`); an unknown tensor, a missing one, a shape that disagrees
with the config built from the source, or a non-float tensor stops the conversion before anything is written. So
do a source without a tokenizer (unless `--tokenizer` names one), a tokenizer with more tokens than the decoder has
embedding rows, and a SigLIP head count that neither `--vision-config`, the source's `vision_config` nor the
published config of the tower `mm_vision_tower` names gives (no tensor shape shows it). The output is written to a
temporary folder beside DST and renamed into place when complete.

Only safetensors are read, unless `--allow-pickle` is given for `.bin` / `.pt` files (then loaded with
`torch.load(weights_only=True)`).
"""

from __future__ import annotations

import argparse
import json
import re
import shutil
import sys
import tempfile
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import torch
from safetensors import safe_open

from .configuration_hour_llava import SPATIAL_FORGETTING_MODES, SUB_CONFIG_DEFAULTS, HourLlavaConfig
from .memaug_hour_llava import HourLlavaMemAug
from .modeling_hour_llava import HourLlavaForConditionalGeneration
from .processing_hour_llava import HourLlavaProcessor
from .video_processing_hour_llava import HourLlavaVideoProcessor

SOURCE_KINDS = ("official", "llava-onevision")
OFFICIAL_ARCHITECTURES = ("HourLlavaQwenForCausalLM",)
ONEVISION_ARCHITECTURES = ("LlavaQwenForCausalLM", "LlavaOnevisionForConditionalGeneration")
PICKLE_SUFFIXES = (".bin", ".pt", ".pth", ".ckpt")
# What `snapshot_download` fetches: weights, configs, tokenizer and chat template, nothing else.
SNAPSHOT_PATTERNS = ["*.safetensors", "*.json", "*.jinja", "*.txt", "*.model", "*.tiktoken", "README.md"]
MEMAUG_SOURCE = "model.vision_resampler.layers."
# The reference's MemAug block names -> ours (same tensors, same row layouts).
MEMAUG_RENAMES = {
    "self_attn.Wqkv": "self_attn.qkv_proj",
    "self_attn.Wo": "self_attn.o_proj",
    "cross_attn.Wq": "cross_attn.q_proj",
    "cross_attn.Wkv": "cross_attn.kv_proj",
    "cross_attn.Wo": "cross_attn.o_proj",
    "mlp.0": "mlp.fc1",
    "mlp.2": "mlp.fc2",
    "norm1": "self_attn_norm",
    "norm2": "cross_attn_norm",
    "norm3": "mlp_norm",
}
SIGLIP_DEFAULTS = {k: v for k, v in SUB_CONFIG_DEFAULTS["vision_config"].items() if k != "model_type"}
SIGLIP_FIELDS = (
    "hidden_size",
    "intermediate_size",
    "num_hidden_layers",
    "num_attention_heads",
    "num_channels",
    "image_size",
    "patch_size",
    "hidden_act",
    "layer_norm_eps",
    "attention_dropout",
)
QWEN2_FIELDS = (
    "vocab_size",
    "hidden_size",
    "intermediate_size",
    "num_hidden_layers",
    "num_attention_heads",
    "num_key_value_heads",
    "hidden_act",
    "max_position_embeddings",
    "initializer_range",
    "rms_norm_eps",
    "use_cache",
    "rope_theta",
    "rope_parameters",
    "use_sliding_window",
    "sliding_window",
    "max_window_layers",
    "layer_types",
    "attention_dropout",
    "bos_token_id",
    "eos_token_id",
    "pad_token_id",
    "tie_word_embeddings",
)
DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}
MEDIA_TOKENS = ("<image>", "<video>")
OPTIONAL_TARGETS = (r"^model\.vision_tower\.post_layernorm\.",)  # in our module tree, never used by the forward
# Files that hold a tokenizer's vocabulary (`tokenizer_config.json` alone does not: transformers then builds an
# empty tokenizer from the model type).
TOKENIZER_VOCABULARY_FILES = ("tokenizer.json", "vocab.json", "tokenizer.model", "spiece.model", "vocab.txt")
TOKENIZER_PROBE_TEXT = "What colour is the car?"
# Vision towers a source may name in `mm_vision_tower` without a `vision_config` (the reference's configs): the
# published configuration of each. The head count is taken from here only when the stored tensors have the
# tower's shapes; anything else must come with `--vision-config`.
KNOWN_VISION_TOWERS = {
    "siglip-so400m-patch14-384": {
        "hidden_size": 1152,
        "intermediate_size": 4304,
        "patch_size": 14,
        "image_size": 384,
        "num_attention_heads": 16,
    },
}
REPO_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")


class ConversionError(RuntimeError):
    """The source cannot be converted as asked; the message names the file or tensor and what to do."""


@dataclass(frozen=True)
class Rule:
    """Rename keys matching `pattern` (a regex on the source key) with `replacement`, or drop them (`None`)."""

    pattern: str
    replacement: str | None
    reason: str = ""


def lmms_rules() -> list[Rule]:
    """LLaVA-NeXT code layout: the official Hour-LLaVA checkpoints and lmms-lab's LLaVA-OneVision ones."""
    tower = r"^model\.vision_tower\.vision_tower\.vision_model\."
    rules = [
        Rule(tower + r"head\.", None, "SigLIP's pooling head: the tower is read before it"),
        Rule(tower, "model.vision_tower."),
        Rule(r"^model\.mm_projector\.0\.", "model.multi_modal_projector.linear_1."),
        Rule(r"^model\.mm_projector\.2\.", "model.multi_modal_projector.linear_2."),
        Rule(r"^model\.image_newline$", "model.image_newline"),
        Rule(r"^model\.faster_token$", None, "the add_faster_video token, unused by Hour-LLaVA"),
        Rule(r"^model\.(embed_tokens|layers|norm)\.", r"model.language_model.\1."),
        Rule(r"^lm_head\.weight$", "lm_head.weight"),
    ]
    for source, target in MEMAUG_RENAMES.items():
        rules.append(
            Rule(rf"^{re.escape(MEMAUG_SOURCE)}(\d+)\.{re.escape(source)}\.", rf"model.memaug.layers.\1.{target}.")
        )
    return rules


def hf_rules() -> list[Rule]:
    """llava-hf layout: on disk (`language_model.model.*`, `vision_tower.vision_model.*`) or v5 (`model.*`)."""
    return [
        Rule(
            r"^(model\.)?vision_tower\.(vision_model\.)?head\.",
            None,
            "SigLIP's pooling head: the tower is read before it",
        ),
        Rule(r"^(model\.)?vision_tower\.(vision_model\.)?", "model.vision_tower."),
        Rule(r"^(model\.)?multi_modal_projector\.", "model.multi_modal_projector."),
        Rule(r"^(model\.)?image_newline$", "model.image_newline"),
        Rule(r"^(language_model\.model|model\.language_model)\.", "model.language_model."),
        Rule(r"^(language_model\.)?lm_head\.weight$", "lm_head.weight"),
    ]


def source_name(target: str, layout: str) -> str:
    """Our key -> the name it has in a source of `layout` (for error messages)."""
    if layout == "hf":
        return target
    for source, ours in MEMAUG_RENAMES.items():
        match = re.match(rf"^model\.memaug\.layers\.(\d+)\.{re.escape(ours)}\.(.+)$", target)
        if match:
            return f"{MEMAUG_SOURCE}{match.group(1)}.{source}.{match.group(2)}"
    for ours, source in (
        ("model.vision_tower.", "model.vision_tower.vision_tower.vision_model."),
        ("model.multi_modal_projector.linear_1.", "model.mm_projector.0."),
        ("model.multi_modal_projector.linear_2.", "model.mm_projector.2."),
        ("model.language_model.", "model."),
    ):
        if target.startswith(ours):
            return source + target[len(ours) :]
    return target


@dataclass
class ConversionReport:
    """What happened to every tensor: mapped, dropped (and why), initialised (and why), cast."""

    source: str
    kind: str
    layout: str
    dtype: str = ""
    mapped: int = 0
    dropped: dict[str, str] = field(default_factory=dict)
    initialised: dict[str, str] = field(default_factory=dict)
    cast: dict[str, str] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    files: list[str] = field(default_factory=list)

    @property
    def memaug_initialised(self) -> bool:
        return any(name.startswith("model.memaug.") for name in self.initialised)

    def render(self) -> str:
        lines = [
            f"source: {self.source} ({self.kind}, {self.layout} layout)",
            f"mapped tensors: {self.mapped}; dtype {self.dtype}",
        ]
        if self.memaug_initialised:
            count = sum(name.startswith("model.memaug.") for name in self.initialised)
            lines.append(f"MemAug: freshly initialised ({count} tensors): train it (stage 1) before use")
        for name, reason in sorted(self.initialised.items()):
            if not name.startswith("model.memaug."):
                lines.append(f"initialised {name}: {reason}")
        lines += [f"unused {name}: {reason}" for name, reason in sorted(self.dropped.items())]
        lines += [f"cast {name}: {change}" for name, change in sorted(self.cast.items())]
        lines += [f"note: {note}" for note in self.notes]
        lines += [f"wrote {name}" for name in self.files]
        return "\n".join(lines)

    def to_dict(self) -> dict:
        return {**self.__dict__, "memaug_initialised": self.memaug_initialised}


# ---------------------------------------------------------------------------------------------------------------------
# Reading the source
# ---------------------------------------------------------------------------------------------------------------------
def fetch_source(source: str, allow_pickle: bool, revision: str | None = None, what: str = "SRC") -> Path:
    """A local folder as is; a Hub repo id downloaded (weights, configs, tokenizer) with `snapshot_download`."""
    path = Path(source)
    if path.is_dir():
        return path
    if not REPO_ID.match(source):
        raise ConversionError(f"{what} {source!r} is neither a folder nor a Hub repo id (owner/name)")
    from huggingface_hub import snapshot_download

    patterns = SNAPSHOT_PATTERNS + ([f"*{suffix}" for suffix in PICKLE_SUFFIXES] if allow_pickle else [])
    return Path(snapshot_download(source, revision=revision, allow_patterns=patterns))


def read_json(path: Path) -> dict:
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError as error:
        raise ConversionError(f"{path} is missing: a checkpoint folder needs its config.json") from error
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise ConversionError(f"{path} is not valid JSON: {error}") from error
    if not isinstance(data, dict):
        raise ConversionError(f"{path} holds a JSON {type(data).__name__}; a config is a JSON object")
    return data


def weight_files(folder: Path, allow_pickle: bool) -> list[Path]:
    """The safetensors files of `folder` (or, with `allow_pickle`, its pickle files when there are no safetensors)."""
    safetensors = sorted(folder.glob("*.safetensors"))
    if safetensors:
        return safetensors
    pickles = sorted(p for p in folder.iterdir() if p.suffix in PICKLE_SUFFIXES)
    if not pickles:
        raise ConversionError(f"{folder} holds no weights (*.safetensors)")
    if not allow_pickle:
        names = ", ".join(p.name for p in pickles)
        raise ConversionError(
            f"{folder} holds only pickle weights ({names}); unpickling can run arbitrary code, so they are not "
            "loaded. Convert from a safetensors release, or pass --allow-pickle if you trust the file "
            "(it is then read with torch.load(weights_only=True))."
        )
    return pickles


def load_tensors(files: list[Path]) -> dict[str, torch.Tensor]:
    """All tensors of `files`; a name in two files is an error."""
    tensors: dict[str, torch.Tensor] = {}
    for path in files:
        if path.suffix == ".safetensors":
            with safe_open(str(path), framework="pt") as handle:
                part = {name: handle.get_tensor(name) for name in handle.keys()}
        else:
            part = torch.load(path, map_location="cpu", weights_only=True)
            part = part.get("state_dict", part) if isinstance(part, dict) else part
        for name, tensor in part.items():
            if name in tensors:
                raise ConversionError(f"tensor {name} appears in two files (the second is {path.name})")
            tensors[name] = tensor
    return tensors


def detect_layout(names: list[str]) -> str:
    """ "lmms" (LLaVA-NeXT code) or "hf" (llava-hf), from the projector and tower names."""
    if any(n.startswith(("model.mm_projector.", "model.vision_tower.vision_tower.")) for n in names):
        return "lmms"
    if any("multi_modal_projector." in n for n in names):
        return "hf"
    raise ConversionError(
        "found no vision projector (model.mm_projector.* or multi_modal_projector.*): this is not an Hour-LLaVA or "
        "LLaVA-OneVision checkpoint"
    )


def detect_kind(config: dict, names: list[str], requested: str | None) -> str:
    """`official` or `llava-onevision`, from `architectures` and whether MemAug tensors are present."""
    architectures = config.get("architectures") or []
    has_memaug = any(n.startswith(MEMAUG_SOURCE) for n in names)
    says_official = (
        any(a in OFFICIAL_ARCHITECTURES for a in architectures) or config.get("mm_resampler_type") == "memaug"
    )
    if requested == "official" or (requested is None and (has_memaug or says_official)):
        if not has_memaug:
            raise ConversionError(
                f"no MemAug tensors ({MEMAUG_SOURCE}*) in the source (architectures={architectures}): it is not an "
                "Hour-LLaVA checkpoint; to start stage 1 from a LLaVA-OneVision checkpoint use --from llava-onevision"
            )
        return "official"
    if requested not in (None, "llava-onevision"):
        raise ConversionError(f"--from {requested!r}; expected one of {SOURCE_KINDS}")
    if has_memaug:
        raise ConversionError(
            f"the source holds MemAug tensors ({MEMAUG_SOURCE}*): it is an Hour-LLaVA checkpoint, use --from official"
        )
    if requested is None and architectures and not any(a in ONEVISION_ARCHITECTURES for a in architectures):
        raise ConversionError(
            f"architectures={architectures} is neither Hour-LLaVA {OFFICIAL_ARCHITECTURES} nor LLaVA-OneVision "
            f"{ONEVISION_ARCHITECTURES}; pass --from if you know what it is"
        )
    return "llava-onevision"


def rename(tensors: dict[str, torch.Tensor], rules: list[Rule], report: ConversionReport) -> dict[str, torch.Tensor]:
    """Apply the first matching rule to every key; unknown keys are an error (listed)."""
    renamed: dict[str, torch.Tensor] = {}
    origin: dict[str, str] = {}
    unknown = []
    for name, tensor in tensors.items():
        rule = next((r for r in rules if re.search(r.pattern, name)), None)
        if rule is None:
            unknown.append(name)
        elif rule.replacement is None:
            report.dropped[name] = rule.reason
        else:
            target = re.sub(rule.pattern, rule.replacement, name, count=1)
            if target in renamed:
                raise ConversionError(f"{name} and {origin[target]} both map to {target}")
            renamed[target], origin[target] = tensor, name
    if unknown:
        shown = ", ".join(sorted(unknown)[:20])
        raise ConversionError(f"{len(unknown)} tensors have no place in Hour-LLaVA: {shown}")
    return renamed


# ---------------------------------------------------------------------------------------------------------------------
# Building our config from the source's
# ---------------------------------------------------------------------------------------------------------------------
def layer_count(names, prefix: str) -> int:
    """1 + the largest N in `<prefix>N.` among `names` (0 when there is none)."""
    indices = [int(m.group(1)) for n in names if (m := re.match(re.escape(prefix) + r"(\d+)\.", n))]
    return max(indices) + 1 if indices else 0


def text_config_from(source: dict) -> dict:
    """The decoder's config: a nested `text_config` (llava-hf) or the top-level Qwen2 fields (LLaVA-NeXT code)."""
    nested = source.get("text_config")
    fields = nested if isinstance(nested, dict) else source
    text = {k: fields[k] for k in QWEN2_FIELDS if fields.get(k) is not None}
    text["model_type"] = (nested or {}).get("model_type", "qwen2")
    if "tie_word_embeddings" not in text and "tie_word_embeddings" in source:
        text["tie_word_embeddings"] = bool(source["tie_word_embeddings"])
    return text


def check_equal(what: str, from_config, from_tensors) -> None:
    if from_config is not None and from_config != from_tensors:
        raise ConversionError(f"{what}: the source config says {from_config}, its tensors say {from_tensors}")


def vision_config_from(
    source: dict, tensors: dict[str, torch.Tensor], overrides: dict, report: ConversionReport
) -> dict:
    """SigLIP config: defaults <- source `vision_config` <- tensor shapes <- overrides, with `num_hidden_layers` =
    the stored layers up to the feature layer (those after it feed nothing and are dropped)."""
    nested = source.get("vision_config") if isinstance(source.get("vision_config"), dict) else {}
    vision = {**SIGLIP_DEFAULTS, **{k: nested[k] for k in SIGLIP_FIELDS if k in nested}}
    patch = tensors["model.vision_tower.embeddings.patch_embedding.weight"]  # (C_v, 3, p, p)
    positions = tensors["model.vision_tower.embeddings.position_embedding.weight"].shape[0]  # (P, C_v)
    grid = round(positions**0.5)
    stored_layers = layer_count(tensors, "model.vision_tower.encoder.layers.")
    measured = {
        "hidden_size": patch.shape[0],
        "num_channels": patch.shape[1],
        "patch_size": patch.shape[-1],
        "intermediate_size": tensors["model.vision_tower.encoder.layers.0.mlp.fc1.weight"].shape[0],
    }
    for name, value in measured.items():
        check_equal(f"vision_config.{name}", nested.get(name), value)
    check_equal("mm_hidden_size", source.get("mm_hidden_size"), measured["hidden_size"])
    published, why = published_tower(source, measured, grid)
    vision.update(measured)
    # The grid shows image_size // patch_size only (so400m: 384 px, 27 x 27 patches of 14 px, 6 px unused).
    vision["image_size"] = nested.get("image_size") or published.get("image_size") or grid * measured["patch_size"]
    vision["num_attention_heads"] = vision_heads(nested, published, why, overrides, report)
    vision.update(overrides)
    vision.update(model_type="siglip_vision_model", vision_use_head=False)
    if vision["image_size"] // vision["patch_size"] != grid:
        raise ConversionError(
            f"vision image_size={vision['image_size']} with patch_size={vision['patch_size']} gives a "
            f"{vision['image_size'] // vision['patch_size']}-patch side, but the position embeddings hold {grid} x "
            f"{grid}; fix it with --vision-config '{{\"image_size\": N}}'"
        )
    if vision["hidden_size"] % vision["num_attention_heads"]:
        raise ConversionError(
            f"vision num_attention_heads={vision['num_attention_heads']} does not divide the tower's width "
            f"{vision['hidden_size']}; pass the right count with --vision-config '{{\"num_attention_heads\": N}}'"
        )
    layer = source.get("vision_feature_layer", -1)
    if not isinstance(layer, int):
        raise ConversionError(f"vision_feature_layer={layer!r}: only one feature layer is supported")
    strategy = source.get("vision_feature_select_strategy", "full")
    if strategy != "full":
        raise ConversionError(f"vision_feature_select_strategy={strategy!r}: SigLIP has no CLS token; expected 'full'")
    if "mm_vision_select_layer" in source:
        report.notes.append(
            f"mm_vision_select_layer={source['mm_vision_select_layer']} is ignored, as the reference's SigLIP tower "
            f"does: features are the output of the last of the {stored_layers} stored layers, before post_layernorm"
        )
    depth = layer % (stored_layers + 1)
    if depth < 1:
        raise ConversionError(f"vision_feature_layer={layer} selects no layer of the {stored_layers} stored")
    vision["num_hidden_layers"] = depth
    return vision


def published_tower(source: dict, measured: dict, grid: int) -> tuple[dict, str]:
    """(the published config of the tower `mm_vision_tower` names, "") when the stored tensors have its shapes;
    otherwise ({}, why not)."""
    named = str(source.get("mm_vision_tower") or "")
    if not named:
        return {}, "no vision_config"
    known = KNOWN_VISION_TOWERS.get(named.rstrip("/").split("/")[-1])
    if known is None:
        return {}, f"mm_vision_tower={named!r} is not a tower whose config is known"
    stored = {**measured, "patch grid": grid}
    published = {**known, "patch grid": known["image_size"] // known["patch_size"]}
    differ = {k: (stored[k], v) for k, v in published.items() if k in stored and stored[k] != v}
    if differ:
        return {}, f"mm_vision_tower={named!r}, but the tensors differ from it ({differ}: stored, published)"
    return {**known, "name": named}, ""


def vision_heads(nested: dict, published: dict, why: str, overrides: dict, report: ConversionReport) -> int:
    """SigLIP's head count, which no tensor shape shows: `--vision-config`, else the source's `vision_config`, else
    the published config of the tower the source names (`published_tower`); otherwise refused (a wrong count
    converts silently and gives another model)."""
    if "num_attention_heads" in overrides:
        return int(overrides["num_attention_heads"])
    if "num_attention_heads" in nested:
        return int(nested["num_attention_heads"])
    if published:
        heads = published["num_attention_heads"]
        report.notes.append(f"vision heads: {heads} (the published config of {published['name']})")
        return heads
    raise ConversionError(
        f"the source config does not give the vision tower's num_attention_heads ({why}), and tensor shapes do not "
        "show it; pass it with --vision-config '{\"num_attention_heads\": N}' (SigLIP-so400m: 16)"
    )


def grid_pinpoints(value, tile: int):
    """The official string form "(1x1),...,(6x6)" -> every (i*tile, j*tile); a list passes as is."""
    if not isinstance(value, str):
        return value
    sizes = [tuple(map(int, m)) for m in re.findall(r"\((\d+)x(\d+)\)", value)]
    if not sizes:
        raise ConversionError(f"image_grid_pinpoints={value!r}: expected a list or '(1x1),...,(6x6)'")
    (low_i, low_j), (high_i, high_j) = sizes[0], sizes[-1]
    return [[i * tile, j * tile] for i in range(low_i, high_i + 1) for j in range(low_j, high_j + 1)]


def hour_llava_fields(source: dict, tensors: dict[str, torch.Tensor], kind: str, memaug_layers: int | None) -> dict:
    """Our top-level fields from the official / LLaVA-OneVision ones."""
    fields: dict = {}
    projector_type = source.get("mm_projector_type")
    if projector_type not in (None, "mlp2x_gelu"):
        raise ConversionError(f"mm_projector_type={projector_type!r}: only 'mlp2x_gelu' is an Hour-LLaVA projector")
    if "projector_hidden_act" in source:
        fields["projector_hidden_act"] = source["projector_hidden_act"]
    fields["multimodal_projector_bias"] = "model.multi_modal_projector.linear_1.bias" in tensors
    aspect = source.get("image_aspect_ratio") or source.get("vision_aspect_ratio")
    if isinstance(aspect, str) and aspect.startswith("anyres_max_"):
        fields["image_aspect_ratio"] = aspect
    mode = source.get("spatial_sampling_type")
    if mode is not None:
        if mode not in SPATIAL_FORGETTING_MODES:
            raise ConversionError(f"spatial_sampling_type={mode!r}; Hour-LLaVA knows {SPATIAL_FORGETTING_MODES}")
        fields["spatial_forgetting_mode"] = mode
    if source.get("mm_spatial_pool_mode"):
        fields["memory_pool_mode"] = source["mm_spatial_pool_mode"]
    stored = layer_count(tensors, "model.memaug.layers.")
    if kind == "official":
        check_equal("memaug_depth", source.get("memaug_depth"), stored)
        fields["memaug_num_layers"] = stored
        width = tensors["model.memaug.layers.0.mlp.fc1.weight"].shape  # (r * D, D)
        fields["memaug_mlp_ratio"] = width[0] // width[1]
    elif memaug_layers is not None:
        fields["memaug_num_layers"] = memaug_layers
    return fields


# ---------------------------------------------------------------------------------------------------------------------
# Tokenizer and processor
# ---------------------------------------------------------------------------------------------------------------------
def has_tokenizer(folder: Path) -> bool:
    """Whether `folder` holds a tokenizer's vocabulary (not just a tokenizer_config.json)."""
    return any((folder / name).is_file() for name in TOKENIZER_VOCABULARY_FILES) or any(folder.glob("*.tiktoken"))


def load_tokenizer(folder: Path, source: dict, vocab_size: int, report: ConversionReport):
    """The source's tokenizer, with `<image>` / `<video>` added as special tokens when it lacks them. Refused: a
    folder without a vocabulary, a tokenizer that encodes text to nothing, and one with more tokens than the
    decoder has embedding rows (their ids would index past the embeddings)."""
    from transformers import AutoTokenizer

    where = "pass --tokenizer with the folder or repo id of the tokenizer the checkpoint was trained with"
    if not has_tokenizer(folder):
        raise ConversionError(
            f"{folder} holds no tokenizer (none of {', '.join(TOKENIZER_VOCABULARY_FILES)} or *.tiktoken); {where}"
        )
    try:
        tokenizer = AutoTokenizer.from_pretrained(str(folder))
    except (OSError, ValueError, TypeError) as error:
        raise ConversionError(f"no usable tokenizer in {folder} ({error}); {where}") from error
    if not tokenizer(TOKENIZER_PROBE_TEXT, add_special_tokens=False)["input_ids"]:
        raise ConversionError(
            f"the tokenizer in {folder} ({len(tokenizer)} tokens) encodes {TOKENIZER_PROBE_TEXT!r} to nothing; {where}"
        )
    vocab = tokenizer.get_vocab()
    missing = [token for token in MEDIA_TOKENS if token not in vocab]
    if missing:
        tokenizer.add_special_tokens({"additional_special_tokens": missing}, replace_extra_special_tokens=False)
        report.notes.append(f"added {missing} to the tokenizer as special tokens")
    ids = {token: tokenizer.convert_tokens_to_ids(token) for token in MEDIA_TOKENS}
    for token, token_id in ids.items():
        if token_id >= vocab_size:
            raise ConversionError(
                f"{token} has id {token_id}, outside the decoder's {vocab_size} embedding rows: the embeddings would "
                "need resizing, which a conversion does not do"
            )
    if len(tokenizer) > vocab_size:
        raise ConversionError(
            f"the tokenizer has {len(tokenizer)} tokens but the decoder has {vocab_size} embedding rows: token ids "
            f"{vocab_size}..{len(tokenizer) - 1} would index past the embeddings; use the checkpoint's own tokenizer "
            "(--tokenizer), or resize the embeddings before converting"
        )
    if source.get("tokenizer_model_max_length"):
        tokenizer.model_max_length = int(source["tokenizer_model_max_length"])
    return tokenizer, ids


def build_processor(tokenizer, config: HourLlavaConfig, source: dict) -> HourLlavaProcessor:
    """HourLlavaProcessor with SigLIP preprocessing at the tower's size and the model's token geometry."""
    from transformers import SiglipImageProcessor

    side = config.vision_config.image_size
    size = {"height": side, "width": side}
    return HourLlavaProcessor(
        image_processor=SiglipImageProcessor(
            size=size, image_mean=config.vision_image_mean, image_std=config.vision_image_std
        ),
        tokenizer=tokenizer,
        video_processor=HourLlavaVideoProcessor(size=size),
        token_geometry=HourLlavaProcessor.geometry_from_config(config),
        add_time_instruction=bool(source.get("add_time_instruction", True)),
    )


def generation_config(folder: Path, tokenizer, text: dict):
    """The source's generation_config.json, or one that stops at `<|im_end|>` / the tokenizer's eos."""
    from transformers import GenerationConfig

    if (folder / "generation_config.json").exists():
        return GenerationConfig.from_pretrained(str(folder))
    stops = [tokenizer.convert_tokens_to_ids(t) for t in ("<|im_end|>", "<|endoftext|>") if t in tokenizer.get_vocab()]
    stops = stops or [tokenizer.eos_token_id]
    return GenerationConfig(
        bos_token_id=text.get("bos_token_id"),
        eos_token_id=stops if len(stops) > 1 else stops[0],
        pad_token_id=tokenizer.pad_token_id,
    )


# ---------------------------------------------------------------------------------------------------------------------
# Checking and completing the state dict
# ---------------------------------------------------------------------------------------------------------------------
def expected_shapes(config: HourLlavaConfig) -> dict[str, torch.Size]:
    """Every tensor our model holds for `config` (built on the meta device, so nothing is allocated)."""
    with torch.device("meta"):
        model = HourLlavaForConditionalGeneration(config)
    return {name: tensor.shape for name, tensor in model.state_dict().items()}


def fresh_tensors(config: HourLlavaConfig, names: list[str], seed: int) -> dict[str, torch.Tensor]:
    """Initialise the missing MemAug / post-layernorm tensors as `from_pretrained` would (`_init_weights`), seeded.

    MemAug: Linear ~ N(0, initializer_range), zero bias; LayerNorm (1, 0). Post-layernorm: (1, 0).
    """
    generator_state = torch.random.get_rng_state()
    torch.manual_seed(seed)
    try:
        with torch.device("meta"):
            host = HourLlavaForConditionalGeneration(config)
        memaug = HourLlavaMemAug(config)
        for module in memaug.modules():
            host._init_weights(module)
        values = {f"model.memaug.{k}": v for k, v in memaug.state_dict().items()}
        norm = torch.nn.LayerNorm(config.vision_config.hidden_size, eps=config.vision_config.layer_norm_eps)
        values.update({f"model.vision_tower.post_layernorm.{k}": v for k, v in norm.state_dict().items()})
    finally:
        torch.random.set_rng_state(generator_state)
    return {name: values[name].detach().clone() for name in names}


def complete_state_dict(
    tensors: dict[str, torch.Tensor],
    config: HourLlavaConfig,
    kind: str,
    layout: str,
    seed: int,
    report: ConversionReport,
) -> dict[str, torch.Tensor]:
    """Check names and shapes against our model for `config`; add the tensors a stage-1 start lacks."""
    expected = expected_shapes(config)
    tied = config.tie_word_embeddings
    if tied:
        expected.pop("lm_head.weight", None)
        if "lm_head.weight" in tensors:
            head = tensors.pop("lm_head.weight")
            same = torch.equal(head, tensors.get("model.language_model.embed_tokens.weight", head))
            report.dropped[source_name("lm_head.weight", layout)] = (
                "tie_word_embeddings=true: the head is the embedding matrix"
                + ("" if same else " (the stored copy differs)")
            )
    for name in [n for n in tensors if n.startswith("model.vision_tower.encoder.layers.")]:
        index = int(name.split(".")[4])
        if index >= config.vision_config.num_hidden_layers:
            tensors.pop(name)
            report.dropped[source_name(name, layout)] = "vision layer after the feature layer"
    unexpected = sorted(set(tensors) - set(expected))
    if unexpected:
        raise ConversionError(
            f"tensors our model has no place for: {', '.join(source_name(n, layout) for n in unexpected)}"
        )
    missing = sorted(set(expected) - set(tensors))
    may_init = [n for n in missing if any(re.search(p, n) for p in OPTIONAL_TARGETS)]
    if kind == "llava-onevision":
        may_init += [n for n in missing if n.startswith("model.memaug.")]
    refused = [n for n in missing if n not in may_init]
    if refused:
        listed = "; ".join(f"{source_name(n, layout)} (ours: {n}, shape {tuple(expected[n])})" for n in refused[:20])
        if not tied and "lm_head.weight" in refused:
            listed += "; the config says tie_word_embeddings=false, so lm_head.weight must be stored"
        raise ConversionError(
            f"{len(refused)} tensors are missing from the source, refusing a partial checkpoint: {listed}"
        )
    wrong = [
        f"{source_name(n, layout)}: {tuple(t.shape)}, expected {tuple(expected[n])}"
        for n, t in tensors.items()
        if t.shape != expected[n]
    ]
    if wrong:
        raise ConversionError("shapes disagree with the config built from the source: " + "; ".join(wrong[:20]))
    for name in may_init:
        report.initialised[name] = (
            "new in Hour-LLaVA (MemAug): N(0, initializer_range) linears, unit LayerNorms, seed " + str(seed)
            if name.startswith("model.memaug.")
            else "absent from the source and unused by the forward (features are read before it): unit LayerNorm"
        )
    tensors.update(fresh_tensors(config, may_init, seed))
    report.mapped = len(tensors) - len(may_init)
    return tensors


def cast_tensors(tensors: dict[str, torch.Tensor], dtype: torch.dtype, layout: str, report: ConversionReport) -> None:
    """Every tensor must be floating point; those not in `dtype` are cast (and listed)."""
    for name, tensor in tensors.items():
        if not tensor.is_floating_point():
            raise ConversionError(f"{source_name(name, layout)} has dtype {tensor.dtype}; every weight must be float")
        if tensor.dtype != dtype:
            if name not in report.initialised:
                report.cast[source_name(name, layout)] = f"{tensor.dtype} -> {dtype}"
            tensors[name] = tensor.to(dtype)


def target_dtype(requested: str | None, source: dict, tensors: dict[str, torch.Tensor]) -> torch.dtype:
    """--dtype, else the source config's dtype, else the most common dtype of its tensors."""
    name = requested or source.get("dtype") or source.get("torch_dtype")
    if name is None:
        return Counter(t.dtype for t in tensors.values() if t.is_floating_point()).most_common(1)[0][0]
    if name not in DTYPES:
        raise ConversionError(f"dtype {name!r}; expected one of {sorted(DTYPES)}")
    return DTYPES[name]


# ---------------------------------------------------------------------------------------------------------------------
# Model card
# ---------------------------------------------------------------------------------------------------------------------
def model_card(
    report: ConversionReport, repo_id: str, base_model: str | None, license_name: str, datasets: list[str]
) -> str:
    """README.md: YAML metadata, what the checkpoint is, a usage snippet that runs, and the conversion report."""
    meta = {
        "license": license_name,
        "library_name": "transformers",
        "pipeline_tag": "video-text-to-text",
        "tags": ["hour-llava", "long-video", "video-llm", "memaug", "custom_code"],
    }
    if base_model:
        meta["base_model"] = base_model
    if datasets:
        meta["datasets"] = datasets
    import yaml  # transformers' own dependency

    stage = (
        "a stage-1 starting point: vision tower, projector and decoder from LLaVA-OneVision, **MemAug freshly "
        "initialised** (train it before use)"
        if report.memaug_initialised
        else "converted from the released Hour-LLaVA weights; every tensor is the original one"
    )
    usage = USAGE.replace("{repo_id}", repo_id)
    return (
        f"---\n{yaml.safe_dump(meta, sort_keys=False)}---\n\n"
        f"# {repo_id.split('/')[-1]}\n\n"
        "Hour-LLaVA (hour-long video understanding: a 1-fps memory repository of the whole video, a forgetting "
        "mechanism, and MemAug, which lets the kept tokens read the full memory) on a Qwen2 decoder, packaged as "
        f"`transformers` remote code. This checkpoint is {stage}. Source: `{report.source}`.\n\n"
        f"## Usage\n\n```python\n{usage}```\n\n"
        f"## Conversion report\n\n```\n{report.render()}\n```\n"
    )


USAGE = """import torch
from transformers import AutoModelForImageTextToText, AutoProcessor

model_id = "{repo_id}"
video = "video.mp4"
model = AutoModelForImageTextToText.from_pretrained(model_id, trust_remote_code=True, dtype="auto").eval()
processor = AutoProcessor.from_pretrained(model_id, trust_remote_code=True)
messages = [
    {"role": "user", "content": [{"type": "video", "path": video}, {"type": "text", "text": "What happens?"}]},
]
inputs = processor.apply_chat_template(
    messages, add_generation_prompt=True, tokenize=True, return_dict=True, return_tensors="pt"
).to(model.device)
with torch.no_grad():
    output = model.generate(**inputs, max_new_tokens=64, do_sample=False)
print(processor.decode(output[0, inputs["input_ids"].shape[1] :], skip_special_tokens=True))
"""


# ---------------------------------------------------------------------------------------------------------------------
# The conversion
# ---------------------------------------------------------------------------------------------------------------------
def convert(
    source: str,
    destination: str | Path,
    kind: str | None = None,
    *,
    allow_pickle: bool = False,
    max_shard_size: str | int = "5GB",
    dtype: str | None = None,
    vision_config: dict | None = None,
    memaug_layers: int | None = None,
    tokenizer: str | None = None,
    repo_id: str | None = None,
    base_model: str | None = None,
    license_name: str | None = None,
    datasets: list[str] | None = None,
    seed: int = 0,
    overwrite: bool = False,
    revision: str | None = None,
) -> ConversionReport:
    """Convert `source` into an Hour-LLaVA folder at `destination`; see the module docstring. Returns the report."""
    destination = Path(destination)
    if vision_config is not None and not isinstance(vision_config, dict):
        raise ConversionError(f"--vision-config must be a JSON object of SigLIP fields, got {vision_config!r}")
    if destination.exists() and any(destination.iterdir()) and not overwrite:
        raise ConversionError(f"{destination} exists and is not empty; pass --overwrite to replace it")
    folder = fetch_source(source, allow_pickle, revision)
    source_config = read_json(folder / "config.json")
    tensors = load_tensors(weight_files(folder, allow_pickle))
    names = list(tensors)
    layout = detect_layout(names)
    kind = detect_kind(source_config, names, kind)
    report = ConversionReport(source=source, kind=kind, layout=layout)
    tensors = rename(tensors, lmms_rules() if layout == "lmms" else hf_rules(), report)
    text = text_config_from(source_config)
    check_equal("vocab_size", text.get("vocab_size"), tensors["model.language_model.embed_tokens.weight"].shape[0])
    vision = vision_config_from(source_config, tensors, vision_config or {}, report)
    tok_folder = Path(tokenizer) if tokenizer and Path(tokenizer).is_dir() else None
    if tokenizer and tok_folder is None:
        tok_folder = fetch_source(tokenizer, allow_pickle=False, what="--tokenizer")
    vocab_size = tensors["model.language_model.embed_tokens.weight"].shape[0]  # (V, D)
    text["vocab_size"] = vocab_size
    hf_tokenizer, token_ids = load_tokenizer(tok_folder or folder, source_config, vocab_size, report)
    config = HourLlavaConfig(
        vision_config=vision,
        text_config=text,
        tie_word_embeddings=bool(text.get("tie_word_embeddings", False)),
        image_token_index=token_ids["<image>"],
        video_token_index=token_ids["<video>"],
        image_grid_pinpoints=grid_pinpoints(source_config.get("image_grid_pinpoints"), vision["image_size"]),
        **hour_llava_fields(source_config, tensors, kind, memaug_layers),
    )
    tensors = complete_state_dict(tensors, config, kind, layout, seed, report)
    torch_dtype = target_dtype(dtype, source_config, tensors)
    cast_tensors(tensors, torch_dtype, layout, report)
    report.dtype = str(torch_dtype).removeprefix("torch.")
    config.dtype = torch_dtype
    write_folder(
        destination,
        tensors,
        config,
        build_processor(hf_tokenizer, config, source_config),
        generation_config(folder, hf_tokenizer, text),
        report,
        max_shard_size=max_shard_size,
        card=dict(
            repo_id=repo_id or f"your-name/{destination.name}",
            base_model=base_model or (source if REPO_ID.match(source) and not Path(source).exists() else None),
            license_name=license_name or source_license(folder),
            datasets=datasets if datasets is not None else default_datasets(kind),
        ),
    )
    return report


def source_license(folder: Path) -> str:
    """The `license:` of the source's model card, or "unknown"."""
    readme = folder / "README.md"
    if readme.exists():
        match = re.search(r"^license:\s*(\S+)\s*$", readme.read_text(errors="replace").split("\n---", 1)[0], re.M)
        if match:
            return match.group(1)
    return "unknown"


def default_datasets(kind: str) -> list[str]:
    """The training data of the reference's stages (LLaVA-OneVision data for stage 1; VideoMarathon after)."""
    onevision = ["lmms-lab/LLaVA-OneVision-Data", "lmms-lab/LLaVA-Video-178K"]
    return onevision if kind == "llava-onevision" else ["jylins/videomarathon", *onevision]


def write_folder(
    destination: Path,
    tensors: dict[str, torch.Tensor],
    config: HourLlavaConfig,
    processor: HourLlavaProcessor,
    generation,
    report: ConversionReport,
    max_shard_size: str | int,
    card: dict,
) -> None:
    """Save model (sharded safetensors, config, remote code), processor, generation config and card to a temporary
    folder beside `destination`, check it, then move it into place."""
    destination.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{destination.name}.partial-", dir=destination.parent))
    try:
        with torch.device("meta"):
            model = HourLlavaForConditionalGeneration(config)
        if config.tie_word_embeddings:
            tensors["lm_head.weight"] = tensors["model.language_model.embed_tokens.weight"]
        model.load_state_dict(tensors, strict=True, assign=True)
        model.tie_weights()
        model.generation_config = generation
        model.save_pretrained(staging, max_shard_size=max_shard_size, save_original_format=False)
        processor.save_pretrained(staging)
        (staging / "README.md").write_text(model_card(report, **card))
        report.files = sorted(p.name for p in staging.iterdir())
        check_written(staging, set(tensors) - ({"lm_head.weight"} if config.tie_word_embeddings else set()))
        if destination.exists():
            shutil.rmtree(destination)
        staging.rename(destination)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise


def check_written(folder: Path, names: set[str]) -> None:
    """The saved shards hold exactly `names`, and the remote-code and processor files are there."""
    stored: set[str] = set()
    for path in folder.glob("*.safetensors"):
        with safe_open(str(path), framework="pt") as handle:
            stored.update(handle.keys())
    if stored != names:
        raise ConversionError(f"saved tensors differ from the converted ones: {sorted(stored ^ names)[:10]}")
    needed = ["config.json", "generation_config.json", "processor_config.json", "configuration_hour_llava.py"]
    needed += ["modeling_hour_llava.py", "memaug_hour_llava.py", "processing_hour_llava.py"]
    absent = [name for name in needed if not (folder / name).exists()]
    if absent:
        raise ConversionError(f"the converted folder lacks {absent}")


# ---------------------------------------------------------------------------------------------------------------------
# CLI
# ---------------------------------------------------------------------------------------------------------------------
def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m modeling_hour_llava.convert", description=__doc__.split("\n\n")[0])
    parser.add_argument("source", metavar="SRC", help="checkpoint folder or Hub repo id")
    parser.add_argument("destination", metavar="DST", help="output folder (written atomically)")
    parser.add_argument("--from", dest="kind", choices=SOURCE_KINDS, help="source kind (default: detected)")
    parser.add_argument("--revision", help="Hub revision of SRC")
    parser.add_argument("--max-shard-size", default="5GB", help="safetensors shard size (default 5GB)")
    parser.add_argument("--dtype", choices=sorted(DTYPES), help="output dtype (default: the source's)")
    parser.add_argument(
        "--vision-config", type=json.loads, default={}, help="SigLIP fields, e.g. '{\"num_attention_heads\": 16}'"
    )
    parser.add_argument("--memaug-layers", type=int, help="MemAug depth for a LLaVA-OneVision start (default 4)")
    parser.add_argument("--tokenizer", help="folder or repo id of the tokenizer, when SRC has none")
    parser.add_argument("--repo-id", help="repo id used in the model card's usage snippet")
    parser.add_argument("--base-model", help="model card base_model (default: SRC when it is a repo id)")
    parser.add_argument("--license", dest="license_name", help="model card license (default: the source card's)")
    parser.add_argument("--datasets", nargs="*", help="model card datasets")
    parser.add_argument("--seed", type=int, default=0, help="seed of the tensors a stage-1 start initialises")
    parser.add_argument("--allow-pickle", action="store_true", help="read .bin/.pt weights (torch.load, weights_only)")
    parser.add_argument("--overwrite", action="store_true", help="replace a non-empty DST")
    parser.add_argument("--report", help="also write the report as JSON to this path")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = vars(parse_args(argv))
    report_path = args.pop("report")
    source, destination = args.pop("source"), args.pop("destination")
    try:
        report = convert(source, destination, **args)
    except ConversionError as error:
        print(f"conversion refused: {error}", file=sys.stderr)
        return 1
    print(report.render())
    if report_path:
        Path(report_path).write_text(json.dumps(report.to_dict(), indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
