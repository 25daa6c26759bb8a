"""Configuration of Hour-LLaVA.

Every constant of the paper ("Unleashing Hour-Scale Video Training for Long Video-Language
Understanding", NeurIPS 2025) and of the public reference code is a named field here, with the
paper's value as the default. The model, the processor and the benchmarks read these fields;
none of them repeats a number.
"""

from __future__ import annotations

from typing import Literal

from huggingface_hub.dataclasses import strict
from transformers import AutoConfig
from transformers.configuration_utils import PreTrainedConfig

try:
    from transformers.configuration_utils import SubConfigSpec
except ImportError:  # transformers before SubConfigSpec (5.17 has none): the `sub_configs` form, filled below
    SubConfigSpec = None

SPATIAL_FORGETTING_MODES = ("random", "uniform")
TEMPORAL_FORGETTING_MODES = ("uniform", "random", "keyframe", "question")
TEMPORAL_SELECTION_FEATURES = ("memory", "vision")
MEMORY_POOL_MODES = ("bilinear", "bicubic", "area", "nearest")
# The sub-configurations a dict without `model_type`, or None, becomes: SigLIP-so400m with 26 layers and no pooling
# head, and a default Qwen2.
SUB_CONFIG_DEFAULTS = {
    "vision_config": {
        "model_type": "siglip_vision_model",
        "hidden_size": 1152,
        "intermediate_size": 4304,
        "patch_size": 14,
        "image_size": 384,
        "num_hidden_layers": 26,
        "num_attention_heads": 16,
        "vision_use_head": False,
    },
    "text_config": {"model_type": "qwen2"},
}


def default_image_grid_pinpoints(tile_size: int = 384, max_tiles_per_side: int = 6) -> list[list[int]]:
    """The anyres grids of the reference: every (i x j) tiling with 1 <= i, j <= 6 tiles of 384 px."""
    sides = [tile_size * k for k in range(1, max_tiles_per_side + 1)]
    return [[h, w] for h in sides for w in sides]


@strict
class HourLlavaConfig(PreTrainedConfig):
    r"""Configuration of [`HourLlavaForConditionalGeneration`].

    Sub-configurations:
        vision_config: SigLIP-so400m with 26 layers and no pooling head (the reference deletes the last of the 27
            layers and reads the 26th layer before `post_layernorm`).
        text_config: any decoder `AutoConfig`; Qwen2 by default.

    Memory repository (paper Sec. 4.1):
        memory_pool_size (`int`, 8): every frame's patch grid is resized to `memory_pool_size x memory_pool_size`
            tokens before the projector; one `image_newline` token follows each frame (8 x 8 + 1 = 65 tokens).
        memory_pool_mode (`str`, "bilinear"): `F.interpolate` mode of that resize (`align_corners=False`).
        memory_min_frames (`int`, 128): videos with fewer frames are resampled up to this many (frames repeat).

    Forgetting mechanism (paper Sec. 4.1 and Table 5):
        spatial_keep_ratio (`float`, 1/4), spatial_forgetting_mode (`"random"` | `"uniform"`): tokens kept per frame.
        temporal_keep_ratio (`float`, 1/4), temporal_min_frames (32), temporal_max_frames (512),
        temporal_forgetting_mode (`"uniform"` | `"random"` | `"keyframe"` | `"question"`): frames kept.
        temporal_selection_features (`"memory"` | `"vision"`, "memory"): what `keyframe` compares between frames:
            the projected memory tokens (the projector trains, so training shapes which frames change most), or the
            frozen vision tower's pooled features before the projector (a fixed criterion). `question` needs
            `"memory"`: the question's embeddings live in the decoder's space.
        forgetting_seed (`int`, 0): mixed into the per-input generator that makes random spatial forgetting
            deterministic at inference. Training draws from torch's global generator, as the reference does.

    MemAug (paper Sec. 4.2):
        use_memaug (`bool`, True): False sends the decayed tokens straight to the decoder (the hand-made compression
            baselines of Table 5).
        memaug_num_layers (4), memaug_mlp_ratio (4), memaug_rotary_fraction (1/2), memaug_layer_norm_eps (1e-5),
        memaug_hidden_act ("gelu"); heads, key-value heads and width follow `text_config`, and the rotary base is
        `memaug_rope_theta`, or the decoder's `rope_theta` when None.
        memaug_eager_max_scores (`int`, 2**26): with `attn_implementation="eager"`, MemAug attends in query chunks
            that hold at most this many scores (256 MB in fp32), so the query-by-memory matrix is never built whole.

    Vision:
        vision_feature_layer (`int`, -1): hidden state of the tower fed to the projector (-1 = last layer, before
            `post_layernorm`).
        vision_chunk_size (`int`, 128): frames per vision-tower call, so an hour of frames never sits in one batch.
        vision_rescale_factor (1/255), vision_image_mean / vision_image_std ([0.5] * 3): how the model normalises
            uint8 frames (the processor's compact output); float pixels are taken as already normalised.
        image_aspect_ratio, image_grid_pinpoints: image preprocessing of the reference (`anyres_max_9`).
    """

    model_type = "hour_llava"
    attribute_map = {
        "image_token_id": "image_token_index",
        "video_token_id": "video_token_index",
    }
    if SubConfigSpec is not None:
        sub_configs_defaults = {
            key: SubConfigSpec(
                config_class=AutoConfig,
                model_type=defaults["model_type"],
                init_kwargs={name: value for name, value in defaults.items() if name != "model_type"} or None,
            )
            for key, defaults in SUB_CONFIG_DEFAULTS.items()
        }
    else:
        sub_configs = dict.fromkeys(SUB_CONFIG_DEFAULTS, AutoConfig)

    vision_config: dict | PreTrainedConfig | None = None
    text_config: dict | PreTrainedConfig | None = None
    image_token_index: int = 151646
    video_token_index: int = 151647
    projector_hidden_act: str = "gelu"
    multimodal_projector_bias: bool = True
    vision_feature_layer: int = -1
    vision_chunk_size: int = 128
    vision_rescale_factor: float = 1 / 255
    vision_image_mean: list | None = None
    vision_image_std: list | None = None
    tie_word_embeddings: bool = False

    memory_pool_size: int = 8
    memory_pool_mode: str = "bilinear"
    memory_min_frames: int = 128

    spatial_keep_ratio: float = 0.25
    spatial_forgetting_mode: Literal["random", "uniform"] = "random"
    temporal_keep_ratio: float = 0.25
    temporal_min_frames: int = 32
    temporal_max_frames: int = 512
    temporal_forgetting_mode: Literal["uniform", "random", "keyframe", "question"] = "uniform"
    temporal_selection_features: Literal["memory", "vision"] = "memory"
    forgetting_seed: int = 0

    use_memaug: bool = True
    memaug_num_layers: int = 4
    memaug_mlp_ratio: int = 4
    memaug_rotary_fraction: float = 0.5
    memaug_rope_theta: float | None = None
    memaug_layer_norm_eps: float = 1e-5
    memaug_hidden_act: str = "gelu"
    memaug_eager_max_scores: int = 2**26

    image_aspect_ratio: str = "anyres_max_9"
    image_grid_pinpoints: list | None = None

    def __post_init__(self, **kwargs):
        if SubConfigSpec is None:
            self.build_sub_configs()
        super().__post_init__(**kwargs)
        if self.vision_image_mean is None:
            self.vision_image_mean = [0.5, 0.5, 0.5]  # SigLIP's normalisation
        if self.vision_image_std is None:
            self.vision_image_std = [0.5, 0.5, 0.5]
        if self.image_grid_pinpoints is None:
            self.image_grid_pinpoints = default_image_grid_pinpoints(self.vision_config.image_size)
        # As in LLaVA-OneVision: tying is a property of the decoder, carried up so `lm_head` follows it.
        if not self.tie_word_embeddings and getattr(self.text_config, "tie_word_embeddings", False):
            self.tie_word_embeddings = True
        self.validate_hour_llava()

    def build_sub_configs(self) -> None:
        """What `SubConfigSpec` does on transformers that lack it: a dict becomes the config class of its
        `model_type` (the default's when absent), None the default sub-configuration."""
        from transformers.models.auto.configuration_auto import CONFIG_MAPPING

        for key, defaults in SUB_CONFIG_DEFAULTS.items():
            value = getattr(self, key)
            if isinstance(value, PreTrainedConfig):
                continue
            if value is None:
                value = {name: item for name, item in defaults.items() if name != "model_type"}
            elif not isinstance(value, dict):
                raise TypeError(f"`{key}` must be a dict, a PreTrainedConfig or None, got {type(value)}")
            model_type = value.get("model_type", defaults["model_type"])
            setattr(self, key, CONFIG_MAPPING[model_type](**value))

    def validate_hour_llava(self) -> None:
        """Reject settings that cannot work, naming the field and the accepted values."""
        if self.spatial_forgetting_mode not in SPATIAL_FORGETTING_MODES:
            raise ValueError(
                f"spatial_forgetting_mode={self.spatial_forgetting_mode!r}; expected one of {SPATIAL_FORGETTING_MODES}"
            )
        if self.temporal_forgetting_mode not in TEMPORAL_FORGETTING_MODES:
            raise ValueError(
                f"temporal_forgetting_mode={self.temporal_forgetting_mode!r}; expected one of "
                f"{TEMPORAL_FORGETTING_MODES}"
            )
        if self.temporal_selection_features not in TEMPORAL_SELECTION_FEATURES:
            raise ValueError(
                f"temporal_selection_features={self.temporal_selection_features!r}; expected one of "
                f"{TEMPORAL_SELECTION_FEATURES}"
            )
        if self.temporal_forgetting_mode == "question" and self.temporal_selection_features != "memory":
            raise ValueError(
                "temporal_forgetting_mode='question' compares the question's embeddings with frames in the decoder's "
                "space; set temporal_selection_features='memory'"
            )
        if self.memory_pool_mode not in MEMORY_POOL_MODES:
            raise ValueError(f"memory_pool_mode={self.memory_pool_mode!r}; expected one of {MEMORY_POOL_MODES}")
        for name in ("spatial_keep_ratio", "temporal_keep_ratio", "memaug_rotary_fraction"):
            value = getattr(self, name)
            if not 0.0 < value <= 1.0:
                raise ValueError(f"{name}={value}; expected a fraction in (0, 1]")
        if not 1 <= self.temporal_min_frames <= self.temporal_max_frames:
            raise ValueError(
                f"temporal_min_frames={self.temporal_min_frames} and temporal_max_frames={self.temporal_max_frames}; "
                "expected 1 <= min <= max"
            )
        for name in ("memory_pool_size", "memory_min_frames", "vision_chunk_size", "memaug_eager_max_scores"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name}={getattr(self, name)}; expected a positive integer")
        text = self.text_config
        if text.hidden_size % text.num_attention_heads:
            raise ValueError(
                f"text_config.hidden_size={text.hidden_size} is not divisible by "
                f"text_config.num_attention_heads={text.num_attention_heads}; MemAug splits the width into heads"
            )

    # Derived quantities, named after the paper. Everything that counts tokens goes through these.
    @property
    def memaug_head_dim(self) -> int:
        return self.text_config.hidden_size // self.text_config.num_attention_heads

    @property
    def memaug_num_key_value_heads(self) -> int:
        return self.text_config.num_key_value_heads or self.text_config.num_attention_heads

    @property
    def memaug_rotary_dim(self) -> int:
        return int(self.memaug_head_dim * self.memaug_rotary_fraction)

    @property
    def memaug_theta(self) -> float:
        if self.memaug_rope_theta is not None:
            return float(self.memaug_rope_theta)
        rope = getattr(self.text_config, "rope_parameters", None) or {}
        theta = rope.get("rope_theta", getattr(self.text_config, "rope_theta", None))
        if theta is None:
            raise ValueError("text_config has no rope_theta; set HourLlavaConfig.memaug_rope_theta explicitly")
        return float(theta)

    @property
    def anyres_max_tiles(self) -> int:
        """9 for `anyres_max_9`: unpadded grids above this many tiles' worth of patches are shrunk."""
        prefix = "anyres_max_"
        if not self.image_aspect_ratio.startswith(prefix):
            raise ValueError(f"image_aspect_ratio={self.image_aspect_ratio!r}; expected 'anyres_max_<tiles>'")
        return int(self.image_aspect_ratio[len(prefix) :])

    @property
    def vision_grid_size(self) -> int:
        """Patches per side of one tile or frame (27 for SigLIP-so400m at 384 px)."""
        return self.vision_config.image_size // self.vision_config.patch_size


__all__ = ["HourLlavaConfig"]
