"""MemAug: the memory-augmentation module of Hour-LLaVA (paper Sec. 4.2).

`memaug_num_layers` post-norm blocks. Each block lets the query sequence (question tokens + decayed visual tokens)
attend to itself, then cross-attend into the full memory repository, then applies an MLP:

    x = norm1(x + SelfAttention(x))            queries and keys rotated with the query positions
    x = norm2(x + CrossAttention(x, memory))   queries rotated with query positions, memory keys with memory positions
    x = norm3(x + MLP(x))                      Linear(D, r*D) -> GELU -> Linear(r*D, D)

Attention is bidirectional, grouped-query (the decoder's head counts), and goes through transformers' attention
interface, so `attn_implementation` selects SDPA / FlashAttention / eager. RoPE is partial: the first
`memaug_rotary_fraction` of each head's dims, GPT-NeoX halves, angles in fp32, cos/sin cast to the activation dtype
and the rotation done in fp32, as the reference's flash-attn kernel does. The memory is never normalised and is
re-projected by every block.

Where MemAug looked: `output_memory_attentions=True` (on the model's `forward` and `generate`) returns, per block, the
cross-attention's mass on every memory token averaged over the queries (`memory_attention_mass`: key chunks and a
log-sum-exp per query, never the queries x memory score matrix), which the model sums per video frame.
"""

from __future__ import annotations

import torch
from torch import nn
from transformers.activations import ACT2FN
from transformers.modeling_layers import GradientCheckpointingLayer
from transformers.modeling_utils import ALL_ATTENTION_FUNCTIONS

from .configuration_hour_llava import HourLlavaConfig


def rotary_inverse_frequencies(rotary_dim: int, theta: float, device: torch.device | None = None) -> torch.Tensor:
    """`theta ** (-2i / rotary_dim)` for i < rotary_dim / 2, in fp32: (rotary_dim // 2,)."""
    return 1.0 / (theta ** (torch.arange(0, rotary_dim, 2, dtype=torch.float32, device=device) / rotary_dim))


def rotary_cos_sin(
    positions: torch.Tensor, rotary_dim: int, theta: float, dtype: torch.dtype
) -> tuple[torch.Tensor, torch.Tensor]:
    """cos and sin for explicit position ids: (N,) -> two (N, rotary_dim) tensors in `dtype`.

    Angles are computed in fp32 (never from a down-cast buffer) and then cast, frequency i on dims i and i + d/2.
    """
    inv_freq = rotary_inverse_frequencies(rotary_dim, theta, positions.device)
    angles = torch.outer(positions.to(torch.float32), inv_freq)
    angles = torch.cat([angles, angles], dim=-1)
    return angles.cos().to(dtype), angles.sin().to(dtype)


def rotate_half(x: torch.Tensor) -> torch.Tensor:
    first, second = x.chunk(2, dim=-1)
    return torch.cat([-second, first], dim=-1)


def apply_partial_rotary(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """Rotate the first `cos.shape[-1]` dims of every head: x (B, heads, N, head_dim), cos/sin (N, rotary_dim)."""
    rotary_dim = cos.shape[-1]
    compute = torch.promote_types(x.dtype, torch.float32)  # bf16/fp16 rotate in fp32, like the flash kernel
    rotated, passed = x[..., :rotary_dim].to(compute), x[..., rotary_dim:]
    rotated = rotated * cos.to(compute) + rotate_half(rotated) * sin.to(compute)
    return torch.cat([rotated.to(x.dtype), passed], dim=-1)


def repeat_kv(states: torch.Tensor, groups: int) -> torch.Tensor:
    """(B, kv_heads, N, d) -> (B, kv_heads * groups, N, d); query head h reads kv head h // groups."""
    return states if groups == 1 else states.repeat_interleave(groups, dim=1)


def chunked_eager_attention(
    module: nn.Module,
    query: torch.Tensor,
    key: torch.Tensor,
    value: torch.Tensor,
    attention_mask: torch.Tensor | None,
    scaling: float,
    dropout: float = 0.0,
    **kwargs,
) -> tuple[torch.Tensor, None]:
    """Plain softmax attention over query chunks: at most `memaug_eager_max_scores` scores exist at once.

    query (B, H, L, d), key/value (B, H_kv, M, d) -> (B, L, H, d). Used for `attn_implementation="eager"`, where a
    whole (L x M) score matrix of an hour of video would need tens of GB.
    """
    key = repeat_kv(key, module.num_key_value_groups)
    value = repeat_kv(value, module.num_key_value_groups)
    batch, heads, length, _ = query.shape
    chunk = max(1, module.config.memaug_eager_max_scores // max(1, batch * heads * key.shape[2]))
    outputs = []
    for start in range(0, length, chunk):
        scores = torch.matmul(query[:, :, start : start + chunk], key.transpose(-2, -1)) * scaling
        if attention_mask is not None:
            scores = scores + attention_mask[:, :, start : start + chunk]
        probs = nn.functional.softmax(scores, dim=-1, dtype=torch.promote_types(scores.dtype, torch.float32))
        probs = probs.to(query.dtype)
        probs = nn.functional.dropout(probs, p=dropout, training=module.training)
        outputs.append(torch.matmul(probs, value))
    return torch.cat(outputs, dim=2).transpose(1, 2).contiguous(), None


@torch.no_grad()
def memory_attention_mass(
    query: torch.Tensor, key: torch.Tensor, scaling: float, num_key_value_groups: int, max_scores: int
) -> torch.Tensor:
    """The attention each key receives, averaged over the queries: mean_l softmax_m(q_l . k_m * scaling), (B, H, M).

    query (B, H, L, d), key (B, H_kv, M, d); unmasked, bidirectional attention (MemAug's cross-attention). Computed
    without the (L x M) score matrix, in fp32, over key chunks of at most `max_scores` scores (B * H * L * chunk):
    a first pass keeps each query's log-sum-exp of its scores, a second sums exp(score - log-sum-exp) over the
    queries of each chunk. Extra memory: O(B * H * (L + M)) plus one chunk, linear in the video's length; compute:
    two more query-key products. Detached (a diagnostic, not a training signal).
    """
    batch, heads, length, _ = query.shape
    memory = key.shape[2]
    chunk = max(1, max_scores // max(1, batch * heads * length))
    query = query.float()

    def scores(start: int) -> torch.Tensor:  # (B, H, L, chunk)
        keys = repeat_kv(key[:, :, start : start + chunk].float(), num_key_value_groups)
        return torch.matmul(query, keys.transpose(-2, -1)) * scaling

    log_normaliser = torch.full((batch, heads, length), float("-inf"), device=query.device)
    for start in range(0, memory, chunk):
        log_normaliser = torch.logaddexp(log_normaliser, torch.logsumexp(scores(start), dim=-1))
    mass = [
        torch.exp(scores(start) - log_normaliser.unsqueeze(-1)).sum(dim=2) / length for start in range(0, memory, chunk)
    ]
    return torch.cat(mass, dim=-1)


class HourLlavaMemAugAttention(nn.Module):
    """Grouped-query attention of a MemAug block, self (`qkv_proj`) or cross (`q_proj` + `kv_proj`).

    Packed projections keep the reference's layout (rows [Q | K | V] and [K | V], head-major), so its `Wqkv`, `Wq`,
    `Wkv` and `Wo` tensors load by renaming alone.
    """

    def __init__(self, config: HourLlavaConfig, is_cross_attention: bool):
        super().__init__()
        self.config = config
        width = config.text_config.hidden_size
        self.num_heads = config.text_config.num_attention_heads
        self.num_key_value_heads = config.memaug_num_key_value_heads
        self.num_key_value_groups = self.num_heads // self.num_key_value_heads
        self.head_dim = config.memaug_head_dim
        self.scaling = self.head_dim**-0.5
        self.is_causal = False
        self.is_cross_attention = is_cross_attention
        query_width = self.num_heads * self.head_dim
        kv_width = self.num_key_value_heads * self.head_dim
        if is_cross_attention:
            self.q_proj = nn.Linear(width, query_width, bias=True)
            self.kv_proj = nn.Linear(width, 2 * kv_width, bias=True)
        else:
            self.qkv_proj = nn.Linear(width, query_width + 2 * kv_width, bias=True)
        self.o_proj = nn.Linear(query_width, width, bias=True)

    def _heads(self, states: torch.Tensor, heads: int) -> torch.Tensor:
        batch, length, _ = states.shape
        return states.view(batch, length, heads, self.head_dim).transpose(1, 2)

    def forward(
        self,
        hidden_states: torch.Tensor,
        query_rotary: tuple[torch.Tensor, torch.Tensor],
        memory: torch.Tensor | None = None,
        memory_rotary: tuple[torch.Tensor, torch.Tensor] | None = None,
        output_attention_mass: bool = False,
    ) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
        """hidden_states (B, L, D); memory (B, M, D) for cross-attention. Returns (B, L, D); with
        `output_attention_mass`, also the attention each key (memory token) receives averaged over the queries,
        (B, H, M) (`memory_attention_mass`)."""
        query_width = self.num_heads * self.head_dim
        if self.is_cross_attention:
            query = self.q_proj(hidden_states)
            key, value = self.kv_proj(memory).chunk(2, dim=-1)
            key_rotary = memory_rotary
        else:
            kv_width = self.num_key_value_heads * self.head_dim
            query, key, value = self.qkv_proj(hidden_states).split([query_width, kv_width, kv_width], dim=-1)
            key_rotary = query_rotary
        query = apply_partial_rotary(self._heads(query, self.num_heads), *query_rotary)
        key = apply_partial_rotary(self._heads(key, self.num_key_value_heads), *key_rotary)
        value = self._heads(value, self.num_key_value_heads)

        attention = ALL_ATTENTION_FUNCTIONS.get_interface(self.config._attn_implementation, chunked_eager_attention)
        output, _ = attention(self, query, key, value, None, scaling=self.scaling, dropout=0.0, is_causal=False)
        output = self.o_proj(output.reshape(*hidden_states.shape[:-1], query_width))
        if not output_attention_mass:
            return output
        max_scores = self.config.memaug_eager_max_scores
        return output, memory_attention_mass(query, key, self.scaling, self.num_key_value_groups, max_scores)


class HourLlavaMemAugMLP(nn.Module):
    def __init__(self, config: HourLlavaConfig):
        super().__init__()
        width = config.text_config.hidden_size
        self.fc1 = nn.Linear(width, config.memaug_mlp_ratio * width, bias=True)
        self.act = ACT2FN[config.memaug_hidden_act]
        self.fc2 = nn.Linear(config.memaug_mlp_ratio * width, width, bias=True)

    def forward(self, hidden_states: torch.Tensor) -> torch.Tensor:
        return self.fc2(self.act(self.fc1(hidden_states)))


class HourLlavaMemAugLayer(GradientCheckpointingLayer):
    """One post-norm MemAug block: self-attention, cross-attention into the memory, MLP."""

    def __init__(self, config: HourLlavaConfig):
        super().__init__()
        width, eps = config.text_config.hidden_size, config.memaug_layer_norm_eps
        self.self_attn = HourLlavaMemAugAttention(config, is_cross_attention=False)
        self.self_attn_norm = nn.LayerNorm(width, eps=eps)
        self.cross_attn = HourLlavaMemAugAttention(config, is_cross_attention=True)
        self.cross_attn_norm = nn.LayerNorm(width, eps=eps)
        self.mlp = HourLlavaMemAugMLP(config)
        self.mlp_norm = nn.LayerNorm(width, eps=eps)

    def forward(
        self,
        hidden_states: torch.Tensor,
        memory: torch.Tensor,
        query_rotary: tuple[torch.Tensor, torch.Tensor],
        memory_rotary: tuple[torch.Tensor, torch.Tensor],
        output_memory_attentions: bool = False,
    ) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
        """Returns the block's output (B, L, D); with `output_memory_attentions`, also the cross-attention's mass per
        memory token, averaged over the queries: (B, H, M)."""
        hidden_states = self.self_attn_norm(hidden_states + self.self_attn(hidden_states, query_rotary))
        cross = self.cross_attn(hidden_states, query_rotary, memory, memory_rotary, output_memory_attentions)
        cross, mass = cross if output_memory_attentions else (cross, None)
        hidden_states = self.cross_attn_norm(hidden_states + cross)
        hidden_states = self.mlp_norm(hidden_states + self.mlp(hidden_states))
        return (hidden_states, mass) if output_memory_attentions else hidden_states


class HourLlavaMemAug(nn.Module):
    """The stack of MemAug blocks (`.layers`), an `nn.Module` so PEFT's `modules_to_save` can wrap it whole."""

    def __init__(self, config: HourLlavaConfig):
        super().__init__()
        self.config = config
        self.layers = nn.ModuleList([HourLlavaMemAugLayer(config) for _ in range(config.memaug_num_layers)])

    def forward(
        self,
        queries: torch.Tensor,
        query_positions: torch.Tensor,
        memory: torch.Tensor,
        memory_positions: torch.Tensor,
        output_memory_attentions: bool = False,
    ) -> torch.Tensor | tuple[torch.Tensor, tuple[torch.Tensor, ...]]:
        """queries (B, L, D) at positions (L,); memory (B, M, D) at positions (M,). Returns (B, L, D); with
        `output_memory_attentions`, also one (B, H, M) tensor per block: the attention mass its cross-attention puts
        on each memory token, averaged over the L queries (each row sums to 1 over M)."""
        rotary_dim, theta = self.config.memaug_rotary_dim, self.config.memaug_theta
        query_rotary = rotary_cos_sin(query_positions, rotary_dim, theta, queries.dtype)
        memory_rotary = rotary_cos_sin(memory_positions, rotary_dim, theta, memory.dtype)
        hidden_states, masses = queries, []
        for layer in self.layers:
            hidden_states = layer(hidden_states, memory, query_rotary, memory_rotary, output_memory_attentions)
            if output_memory_attentions:
                hidden_states, mass = hidden_states
                masses.append(mass)
        return (hidden_states, tuple(masses)) if output_memory_attentions else hidden_states


def memaug_parameter_count(config: HourLlavaConfig) -> int:
    """Parameters of one MemAug block (161,536,512 for Qwen2-7B; 52,460,544 for Qwen2.5-3B)."""
    width, head_dim = config.text_config.hidden_size, config.memaug_head_dim
    heads, kv_heads = config.text_config.num_attention_heads, config.memaug_num_key_value_heads
    linear = lambda n_in, n_out: n_in * n_out + n_out  # noqa: E731
    return (
        linear(width, (heads + 2 * kv_heads) * head_dim)
        + linear(width, heads * head_dim)
        + linear(width, 2 * kv_heads * head_dim)
        + 2 * linear(heads * head_dim, width)
        + linear(width, config.memaug_mlp_ratio * width)
        + linear(config.memaug_mlp_ratio * width, width)
        + 2 * width  # self_attn_norm weight and bias
        + 2 * width  # cross_attn_norm
        + 2 * width  # mlp_norm
    )


__all__ = [
    "HourLlavaMemAug",
    "HourLlavaMemAugAttention",
    "HourLlavaMemAugLayer",
    "apply_partial_rotary",
    "memaug_parameter_count",
    "memory_attention_mass",
    "rotary_cos_sin",
]
