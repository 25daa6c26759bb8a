"""MemAug against independent formulations: RoPE as complex rotations, blocks as explicit per-head einsums in the
reference's packed-weight layout (rows [Q | K | V] and [K | V], head-major; query head h reads kv head h // groups)."""

from __future__ import annotations

import math

import pytest
import torch

from modeling_hour_llava import HourLlavaConfig
from modeling_hour_llava.memaug_hour_llava import (
    HourLlavaMemAug,
    apply_partial_rotary,
    memaug_parameter_count,
    rotary_cos_sin,
)

from conftest import tiny_config


def complex_rope(x: torch.Tensor, positions: torch.Tensor, rotary_dim: int, theta: float) -> torch.Tensor:
    """Rotate pairs (i, i + d/2) of the first `rotary_dim` dims as complex numbers z_i * exp(1j * angle_i).

    The angles follow the reference's kernel: frequencies 1 / theta^(2i/d) and angles pos * freq in fp32, cos and sin
    taken in fp32 (at 234k positions, fp64 angles would differ by up to 1e-2 rad). The rotation runs in fp64.
    """
    half = rotary_dim // 2
    freqs = 1.0 / (theta ** (torch.arange(0, rotary_dim, 2, dtype=torch.float32) / rotary_dim))
    angle = positions.float()[:, None] * freqs[None]
    turn = torch.complex(angle.cos().double(), angle.sin().double())
    pairs = torch.complex(x[..., :half].double(), x[..., half:rotary_dim].double()) * turn
    return torch.cat([pairs.real, pairs.imag, x[..., rotary_dim:].double()], dim=-1)


def test_partial_rope_equals_complex_rotation_of_the_first_half():
    x = torch.randn(1, 3, 40, 128, dtype=torch.float64)
    positions = torch.randint(0, 250_000, (40,))
    cos, sin = rotary_cos_sin(positions, 64, 1e6, torch.float64)
    expected = complex_rope(x, positions, 64, 1e6)
    torch.testing.assert_close(apply_partial_rotary(x, cos, sin), expected, rtol=1e-5, atol=1e-5)
    assert torch.equal(apply_partial_rotary(x, cos, sin)[..., 64:], x[..., 64:])  # the second half passes
    # At small positions the fp32 angles are the exact ones: theta^(-2i/d) in fp64 agrees.
    small = torch.arange(40)
    cos, sin = rotary_cos_sin(small, 64, 1e6, torch.float64)
    exact = (small.double()[:, None] * 1e6 ** (-torch.arange(32, dtype=torch.float64) * 2 / 64)).cos()
    torch.testing.assert_close(cos[:, :32], exact, rtol=0, atol=1e-5)


def test_rope_angles_are_fp32_then_cast_like_the_flash_kernel():
    positions = torch.arange(234_000)[-50:]
    cos, sin = rotary_cos_sin(positions, 64, 1e6, torch.bfloat16)
    freqs = 1.0 / (1e6 ** (torch.arange(0, 64, 2, dtype=torch.float32) / 64))
    angles = torch.outer(positions.float(), freqs)
    assert cos.dtype == torch.bfloat16
    assert torch.equal(cos, torch.cat([angles, angles], -1).cos().to(torch.bfloat16))
    x = torch.randn(1, 2, 50, 128).to(torch.bfloat16)
    rotated = apply_partial_rotary(x, cos, sin)
    # The rotation itself runs in fp32 from bf16 inputs and is rounded once.
    half = x[..., :64].float()
    manual = half * cos.float() + torch.cat([-half[..., 32:], half[..., :32]], -1) * sin.float()
    assert torch.equal(rotated[..., :64], manual.to(torch.bfloat16))


def reference_attention(q, k, v, heads, kv_heads):
    """Per-head softmax attention with explicit GQA: q (L, H, d), k/v (M, Hkv, d)."""
    group = heads // kv_heads
    out = torch.empty_like(q)
    for h in range(heads):
        scores = q[:, h] @ k[:, h // group].T / math.sqrt(q.shape[-1])
        out[:, h] = scores.softmax(-1) @ v[:, h // group]
    return out


def reference_memaug(model: HourLlavaMemAug, config, queries, q_pos, memory, k_pos):
    """MemAug written from the reference's description, reading the packed weights by row ranges."""
    width = config.text_config.hidden_size
    heads, kv_heads, head_dim = (
        config.text_config.num_attention_heads,
        config.memaug_num_key_value_heads,
        config.memaug_head_dim,
    )
    rot, theta = config.memaug_rotary_dim, config.memaug_theta
    rope = lambda t, pos: complex_rope(t.transpose(0, 1), pos, rot, theta).transpose(0, 1).to(t.dtype)  # noqa: E731
    x = queries.double()
    mem = memory.double()
    for layer in model.layers:
        p = {n: w.double() for n, w in layer.state_dict().items()}
        qkv = x @ p["self_attn.qkv_proj.weight"].T + p["self_attn.qkv_proj.bias"]
        q = qkv[:, : heads * head_dim].view(-1, heads, head_dim)
        k = qkv[:, heads * head_dim : (heads + kv_heads) * head_dim].view(-1, kv_heads, head_dim)
        v = qkv[:, (heads + kv_heads) * head_dim :].view(-1, kv_heads, head_dim)
        attn = reference_attention(rope(q, q_pos), rope(k, q_pos), v, heads, kv_heads).reshape(-1, width)
        attn = attn @ p["self_attn.o_proj.weight"].T + p["self_attn.o_proj.bias"]
        x = torch.nn.functional.layer_norm(
            x + attn, (width,), p["self_attn_norm.weight"], p["self_attn_norm.bias"], 1e-5
        )

        q = (x @ p["cross_attn.q_proj.weight"].T + p["cross_attn.q_proj.bias"]).view(-1, heads, head_dim)
        kv = mem @ p["cross_attn.kv_proj.weight"].T + p["cross_attn.kv_proj.bias"]
        k = kv[:, : kv_heads * head_dim].view(-1, kv_heads, head_dim)
        v = kv[:, kv_heads * head_dim :].view(-1, kv_heads, head_dim)
        attn = reference_attention(rope(q, q_pos), rope(k, k_pos), v, heads, kv_heads).reshape(-1, width)
        attn = attn @ p["cross_attn.o_proj.weight"].T + p["cross_attn.o_proj.bias"]
        x = torch.nn.functional.layer_norm(
            x + attn, (width,), p["cross_attn_norm.weight"], p["cross_attn_norm.bias"], 1e-5
        )

        hidden = torch.nn.functional.gelu(x @ p["mlp.fc1.weight"].T + p["mlp.fc1.bias"])
        x = torch.nn.functional.layer_norm(
            x + hidden @ p["mlp.fc2.weight"].T + p["mlp.fc2.bias"],
            (width,),
            p["mlp_norm.weight"],
            p["mlp_norm.bias"],
            1e-5,
        )
    return x


def randomised_memaug(config) -> HourLlavaMemAug:
    torch.manual_seed(0)
    model = HourLlavaMemAug(config)
    with torch.no_grad():
        for parameter in model.parameters():  # biases and norms away from their init, so every term counts
            parameter.normal_(0, 0.1 if parameter.dim() > 1 else 0.5)
    return model


@pytest.mark.parametrize("implementation", ["sdpa", "eager"])
def test_memaug_equals_the_reference_formulation(implementation):
    config = tiny_config(memaug_eager_max_scores=500)  # eager: chunks of a few queries at a time
    config._attn_implementation = implementation
    model = randomised_memaug(config).double()
    queries, memory = torch.randn(37, 64, dtype=torch.float64), torch.randn(130, 64, dtype=torch.float64)
    q_pos, k_pos = torch.randint(0, 900, (37,)), torch.arange(130)
    ours = model(queries[None], q_pos, memory[None], k_pos)[0]
    torch.testing.assert_close(
        ours, reference_memaug(model, config, queries, q_pos, memory, k_pos), rtol=1e-9, atol=1e-9
    )


def test_sdpa_and_chunked_eager_agree_in_float32():
    config = tiny_config(memaug_eager_max_scores=4 * 1000)  # one query per chunk over 1000 memory tokens x 4 heads
    model = randomised_memaug(config)
    queries, memory = torch.randn(1, 50, 64), torch.randn(1, 1000, 64)
    q_pos, k_pos = torch.arange(50) * 3, torch.arange(1000)
    config._attn_implementation = "sdpa"
    sdpa = model(queries, q_pos, memory, k_pos)
    config._attn_implementation = "eager"
    eager = model(queries, q_pos, memory, k_pos)
    torch.testing.assert_close(sdpa, eager, rtol=1e-4, atol=1e-4)


def test_memaug_block_parameter_count_matches_the_released_models():
    # Reference Sec. 3.2: 161,536,512 per block for Qwen2-7B, 52,460,544 for Qwen2.5-3B.
    seven = HourLlavaConfig(
        text_config=dict(model_type="qwen2", hidden_size=3584, num_attention_heads=28, num_key_value_heads=4)
    )
    three = HourLlavaConfig(
        text_config=dict(model_type="qwen2", hidden_size=2048, num_attention_heads=16, num_key_value_heads=2)
    )
    assert memaug_parameter_count(seven) == 161_536_512
    assert memaug_parameter_count(three) == 52_460_544
    assert seven.memaug_head_dim == 128 and seven.memaug_rotary_dim == 64
    tiny = tiny_config()
    layer_params = sum(p.numel() for p in HourLlavaMemAug(tiny).layers[0].parameters())
    assert layer_params == memaug_parameter_count(tiny)
