"""The configuration carries the paper's constants as named fields, validates them, and round-trips."""

from __future__ import annotations

import ast
import pathlib

import pytest

from modeling_hour_llava import HourLlavaConfig
from modeling_hour_llava.memory_hour_llava import num_image_tokens

PACKAGE = pathlib.Path(__file__).resolve().parents[1] / "modeling_hour_llava"


@pytest.mark.parametrize(
    "field, paper_value",
    [
        ("memory_pool_size", 8),  # 8 x 8 tokens per frame
        ("memory_pool_mode", "bilinear"),
        ("memory_min_frames", 128),
        ("spatial_keep_ratio", 0.25),
        ("spatial_forgetting_mode", "random"),
        ("temporal_keep_ratio", 0.25),
        ("temporal_min_frames", 32),
        ("temporal_max_frames", 512),
        ("temporal_forgetting_mode", "uniform"),
        ("memaug_num_layers", 4),
        ("memaug_mlp_ratio", 4),
        ("memaug_rotary_fraction", 0.5),
        ("memaug_layer_norm_eps", 1e-5),
        ("vision_feature_layer", -1),
        ("use_memaug", True),
    ],
)
def test_defaults_are_the_papers(field, paper_value):
    assert getattr(HourLlavaConfig(), field) == paper_value


def test_vision_tower_is_siglip_so400m_with_26_layers_and_no_head():
    vision = HourLlavaConfig().vision_config
    assert (vision.model_type, vision.hidden_size, vision.num_hidden_layers) == ("siglip_vision_model", 1152, 26)
    assert (vision.image_size, vision.patch_size, vision.vision_use_head) == (384, 14, False)
    assert HourLlavaConfig().vision_grid_size == 27
    assert num_image_tokens(HourLlavaConfig()) == 184  # 183 random patches + newline (reference Sec. 1.10)
    assert num_image_tokens(HourLlavaConfig(spatial_forgetting_mode="uniform")) == 197


def test_memaug_geometry_follows_the_decoder():
    qwen2_7b = dict(
        model_type="qwen2",
        hidden_size=3584,
        num_attention_heads=28,
        num_key_value_heads=4,
        rope_parameters={"rope_type": "default", "rope_theta": 1_000_000.0},
    )
    config = HourLlavaConfig(text_config=qwen2_7b)
    assert (config.memaug_head_dim, config.memaug_rotary_dim, config.memaug_num_key_value_heads) == (128, 64, 4)
    assert config.memaug_theta == 1e6
    assert HourLlavaConfig(text_config=qwen2_7b, memaug_rope_theta=5e5).memaug_theta == 5e5


@pytest.mark.parametrize(
    "overrides, message",
    [
        ({"spatial_forgetting_mode": "gaussian"}, "spatial_forgetting_mode"),
        ({"temporal_forgetting_mode": "fancy"}, "temporal_forgetting_mode"),
        ({"spatial_keep_ratio": 0.0}, "spatial_keep_ratio"),
        ({"temporal_keep_ratio": 1.5}, "temporal_keep_ratio"),
        ({"temporal_min_frames": 600}, "temporal_min_frames"),
        ({"memory_pool_size": 0}, "memory_pool_size"),
        ({"memory_pool_mode": "median"}, "memory_pool_mode"),
    ],
)
def test_bad_settings_name_the_field(overrides, message):
    with pytest.raises(Exception, match=message):
        HourLlavaConfig(**overrides)


def test_config_round_trips_through_save_pretrained(tmp_path):
    config = HourLlavaConfig(temporal_forgetting_mode="keyframe", memory_min_frames=64, forgetting_seed=3)
    config.save_pretrained(tmp_path)
    loaded = HourLlavaConfig.from_pretrained(tmp_path)
    assert loaded.to_dict() == config.to_dict()
    assert loaded.text_config.model_type == "qwen2" and loaded.vision_config.num_hidden_layers == 26


def test_no_magic_numbers_in_the_model_code():
    """Every constant lives in the config: the model files use no number beyond 0, 1, 2 and -1."""
    allowed = {0, 1, 2, -1, 0.5}
    offenders = []
    for name in ("memory_hour_llava.py", "memaug_hour_llava.py", "modeling_hour_llava.py"):
        tree = ast.parse((PACKAGE / name).read_text())
        for node in ast.walk(tree):
            if isinstance(node, ast.Constant) and type(node.value) in (int, float) and node.value not in allowed:
                offenders.append(f"{name}:{node.lineno}: {node.value}")
    assert not offenders, offenders
