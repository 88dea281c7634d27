"""The Llama-family decoder in plain torch: Llama 2/3/3.x, Mistral, Qwen2/2.5, Qwen3.

Tokens of a step arrive flattened, ``[T]`` ids with their ``[T]`` positions (several sequences,
prefill chunks and decodes mixed); attention finds each sequence's context through the step's
``AttentionMetadata`` and the KV pool. q/k/v and gate/up projections are fused (one matmul
each); the loader splits checkpoint tensors into them. Operation order follows transformers so
float32 logits agree to rounding.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from engine.attention import AttentionMetadata, paged_attention, write_kv
from engine.kv_cache import KVPool
from engine.model.config import ModelConfig
from engine.model.rope import Rotary, apply_rotary


@dataclass
class ForwardContext:
    """What every layer of one forward pass shares; made by the runner, once per step."""

    meta: AttentionMetadata
    kv: KVPool
    cos: torch.Tensor
    sin: torch.Tensor


class RMSNorm(nn.Module):
    def __init__(self, dim: int, eps: float) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.ones(dim))
        self.eps = eps

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # x / sqrt(mean(x^2) + eps) in float32, then scaled by the weight in x's dtype.
        dtype = x.dtype
        x = x.float()
        x = x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + self.eps)
        return self.weight * x.to(dtype)


class Attention(nn.Module):
    def __init__(self, cfg: ModelConfig, layer: int) -> None:
        super().__init__()
        self.layer = layer
        self.num_heads, self.num_kv_heads, self.head_dim = cfg.num_heads, cfg.num_kv_heads, cfg.head_dim
        self.q_size = cfg.num_heads * cfg.head_dim
        self.kv_size = cfg.num_kv_heads * cfg.head_dim
        self.scale = cfg.head_dim ** -0.5
        self.window = cfg.sliding_windows[layer]
        self.qkv_proj = nn.Linear(cfg.hidden_size, self.q_size + 2 * self.kv_size, bias=cfg.qkv_bias)
        self.o_proj = nn.Linear(self.q_size, cfg.hidden_size, bias=cfg.o_bias)
        self.q_norm = RMSNorm(cfg.head_dim, cfg.rms_norm_eps) if cfg.qk_norm else None
        self.k_norm = RMSNorm(cfg.head_dim, cfg.rms_norm_eps) if cfg.qk_norm else None

    def forward(self, x: torch.Tensor, ctx: ForwardContext) -> torch.Tensor:
        tokens = x.shape[0]
        q, k, v = self.qkv_proj(x).split([self.q_size, self.kv_size, self.kv_size], dim=-1)
        q = q.view(tokens, self.num_heads, self.head_dim)
        k = k.view(tokens, self.num_kv_heads, self.head_dim)
        v = v.view(tokens, self.num_kv_heads, self.head_dim)
        if self.q_norm is not None and self.k_norm is not None:
            q, k = self.q_norm(q), self.k_norm(k)
        q, k = apply_rotary(q, ctx.cos, ctx.sin), apply_rotary(k, ctx.cos, ctx.sin)
        k_cache, v_cache = ctx.kv.k[self.layer], ctx.kv.v[self.layer]
        write_kv(k_cache, v_cache, k, v, ctx.meta.slot_mapping)
        o = paged_attention(q, k_cache, v_cache, ctx.meta, scale=self.scale, window=self.window)
        return self.o_proj(o.reshape(tokens, self.q_size))


class MLP(nn.Module):
    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        self.gate_up_proj = nn.Linear(cfg.hidden_size, 2 * cfg.intermediate_size, bias=cfg.mlp_bias)
        self.down_proj = nn.Linear(cfg.intermediate_size, cfg.hidden_size, bias=cfg.mlp_bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        gate, up = self.gate_up_proj(x).chunk(2, dim=-1)
        return self.down_proj(F.silu(gate) * up)


class DecoderLayer(nn.Module):
    def __init__(self, cfg: ModelConfig, layer: int) -> None:
        super().__init__()
        self.input_layernorm = RMSNorm(cfg.hidden_size, cfg.rms_norm_eps)
        self.self_attn = Attention(cfg, layer)
        self.post_attention_layernorm = RMSNorm(cfg.hidden_size, cfg.rms_norm_eps)
        self.mlp = MLP(cfg)

    def forward(self, x: torch.Tensor, ctx: ForwardContext) -> torch.Tensor:
        x = x + self.self_attn(self.input_layernorm(x), ctx)
        return x + self.mlp(self.post_attention_layernorm(x))


class Backbone(nn.Module):
    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        self.embed_tokens = nn.Embedding(cfg.vocab_size, cfg.hidden_size)
        self.layers = nn.ModuleList(DecoderLayer(cfg, i) for i in range(cfg.num_layers))
        self.norm = RMSNorm(cfg.hidden_size, cfg.rms_norm_eps)


# checkpoint name fragment → (our fused parameter fragment, shard index)
_FUSED = {
    ".q_proj.": (".qkv_proj.", 0), ".k_proj.": (".qkv_proj.", 1), ".v_proj.": (".qkv_proj.", 2),
    ".gate_proj.": (".gate_up_proj.", 0), ".up_proj.": (".gate_up_proj.", 1),
}
# Tensors some checkpoints carry that the model does not need.
_IGNORED_SUFFIXES = ("rotary_emb.inv_freq",)


class LlamaForCausalLM(nn.Module):
    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        self.config = cfg
        self.model = Backbone(cfg)
        self.lm_head = nn.Linear(cfg.hidden_size, cfg.vocab_size, bias=False)
        self.rotary = Rotary(cfg.rope, cfg.head_dim)

    def tie_weights(self) -> None:
        self.lm_head.weight = self.model.embed_tokens.weight

    def forward(self, input_ids: torch.Tensor, positions: torch.Tensor, meta: AttentionMetadata,
                kv: KVPool) -> torch.Tensor:
        """input_ids, positions long [T] → hidden states [T, hidden]."""
        x = self.model.embed_tokens(input_ids)
        cos, sin = self.rotary.cos_sin(positions, x.dtype)
        ctx = ForwardContext(meta, kv, cos, sin)
        for layer in self.model.layers:
            x = layer(x, ctx)
        return self.model.norm(x)

    def compute_logits(self, hidden: torch.Tensor) -> torch.Tensor:
        """hidden [N, hidden] → float32 logits [N, vocab]."""
        return self.lm_head(hidden).float()

    # ---- weights --------------------------------------------------------------------------

    def shard_sizes(self, fused: str) -> list[int]:
        cfg = self.config
        if fused == ".qkv_proj.":
            q, kv = cfg.num_heads * cfg.head_dim, cfg.num_kv_heads * cfg.head_dim
            return [q, kv, kv]
        return [cfg.intermediate_size, cfg.intermediate_size]

    def load_weights(self, weights: Iterable[tuple[str, torch.Tensor]]) -> tuple[set[str], list[str]]:
        """Copy checkpoint tensors into the parameters. Returns (parameters filled, names ignored)."""
        params = dict(self.named_parameters())
        filled: set[str] = set()
        ignored: list[str] = []
        for name, tensor in weights:
            target, shard = name, None
            for fragment, (fused, index) in _FUSED.items():
                if fragment in name:
                    target, shard = name.replace(fragment, fused), (fused, index)
                    break
            param = params.get(target)
            if param is None or (target == "lm_head.weight" and self.config.tie_word_embeddings):
                ignored.append(name)
                continue
            dest = param.data
            if shard is not None:
                sizes = self.shard_sizes(shard[0])
                offset = sum(sizes[: shard[1]])
                dest = dest.narrow(0, offset, sizes[shard[1]])
                filled.add(f"{target}#{shard[1]}")
            else:
                filled.add(target)
            if dest.shape != tensor.shape:
                raise ValueError(f"weight {name}: checkpoint shape {tuple(tensor.shape)}, "
                                 f"model expects {tuple(dest.shape)}")
            dest.copy_(tensor)
        return filled, ignored

    def expected_weights(self) -> set[str]:
        expected = set()
        for name, _ in self.named_parameters():
            if name == "lm_head.weight" and self.config.tie_word_embeddings:
                continue
            fused = next((f for f in (".qkv_proj.", ".gate_up_proj.") if f in name), None)
            if fused is None:
                expected.add(name)
            else:
                expected.update(f"{name}#{i}" for i in range(len(self.shard_sizes(fused))))
        return expected


def ignorable(name: str) -> bool:
    return name.endswith(_IGNORED_SUFFIXES)
