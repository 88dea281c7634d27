"""The Llama-family decoder in plain torch: Llama 2/3/3.x, Mistral, Qwen2/2.5, Qwen3.

Tokens of a step arrive flattened, ``[T]`` ids with their ``[T]`` positions (several sequences,
prefill chunks and decodes mixed); attention finds each sequence's context through the step's
``AttentionMetadata`` and the KV pool. q/k/v and gate/up projections are fused (one matmul
each); the loader splits checkpoint tensors into them. Operation order follows transformers so
float32 logits agree to rounding.

On CUDA the small operations run as fused Triton kernels (``engine/kernels/``): residual add +
RMSNorm, SiLU·mul, and rotary embedding with the K/V write into the pool; the CPU path is plain
torch. Both compute the same roundings in the same order.
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
    """What every layer of one forward pass shares; made by the model, once per step."""

    meta: AttentionMetadata
    kv: KVPool
    positions: torch.Tensor
    inv_freq: torch.Tensor
    cos: torch.Tensor | None
    """[T, 1, head_dim] (CPU path; the CUDA kernel computes its own)."""
    sin: torch.Tensor | None
    gemv: bool = False
    """Projections through ``engine.kernels.gemv`` with the norms and SiLU·mul fused in (small steps)."""


class RMSNorm(nn.Module):
    def __init__(self, dim: int, eps: float) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.ones(dim))
        self.eps = eps

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # x / sqrt(mean(x^2) + eps) in float32, then scaled by the weight in x's dtype.
        if x.is_cuda and x.dim() == 2:
            from engine.kernels.norm import rms_norm

            return rms_norm(x, self.weight, self.eps)
        dtype = x.dtype
        x = x.float()
        x = x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + self.eps)
        return self.weight * x.to(dtype)

    def add_forward(self, x: torch.Tensor, residual: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``(norm(x + residual), x + residual)``: the residual stream's add, then this norm."""
        if x.is_cuda:
            from engine.kernels.norm import fused_add_rms_norm

            return fused_add_rms_norm(x, residual, self.weight, self.eps)
        residual = residual + x
        return self(residual), residual


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
        return self.o_proj(self.attend(self.qkv_proj(x), ctx))

    def attend(self, qkv: torch.Tensor, ctx: ForwardContext) -> torch.Tensor:
        """The fused q/k/v projection's output [T, q + 2 kv] → attention output [T, q] (before o_proj)."""
        tokens = qkv.shape[0]
        q, k, v = qkv.split([self.q_size, self.kv_size, self.kv_size], dim=-1)
        q = q.view(tokens, self.num_heads, self.head_dim)
        k = k.view(tokens, self.num_kv_heads, self.head_dim)
        v = v.view(tokens, self.num_kv_heads, self.head_dim)
        if self.q_norm is not None and self.k_norm is not None:
            q, k = self.q_norm(q), self.k_norm(k)
        k_cache, v_cache = ctx.kv.k[self.layer], ctx.kv.v[self.layer]
        if ctx.cos is None or ctx.sin is None:  # CUDA: one kernel rotates q in place and writes K/V
            from engine.kernels.rotary import rotary_store_kv

            rotary_store_kv(q, k, v, ctx.positions, ctx.inv_freq, k_cache, v_cache, ctx.meta.slot_mapping)
        else:
            q, k = apply_rotary(q, ctx.cos, ctx.sin), apply_rotary(k, ctx.cos, ctx.sin)
            write_kv(k_cache, v_cache, k, v, ctx.meta.slot_mapping)
        o = paged_attention(q, k_cache, v_cache, ctx.meta, scale=self.scale, window=self.window)
        return o.reshape(tokens, self.q_size)


class MLP(nn.Module):
    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        self.gate_up_proj = nn.Linear(cfg.hidden_size, 2 * cfg.intermediate_size, bias=cfg.mlp_bias)
        self.down_proj = nn.Linear(cfg.intermediate_size, cfg.hidden_size, bias=cfg.mlp_bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        gate_up = self.gate_up_proj(x)
        if gate_up.is_cuda:
            from engine.kernels.activation import silu_and_mul

            return self.down_proj(silu_and_mul(gate_up))
        gate, up = gate_up.chunk(2, dim=-1)
        return self.down_proj(F.silu(gate) * up)


class DecoderLayer(nn.Module):
    def __init__(self, cfg: ModelConfig, layer: int) -> None:
        super().__init__()
        self.input_layernorm = RMSNorm(cfg.hidden_size, cfg.rms_norm_eps)
        self.self_attn = Attention(cfg, layer)
        self.post_attention_layernorm = RMSNorm(cfg.hidden_size, cfg.rms_norm_eps)
        self.mlp = MLP(cfg)

    def forward(self, x: torch.Tensor, residual: torch.Tensor | None,
                ctx: ForwardContext) -> tuple[torch.Tensor, torch.Tensor]:
        """x: the previous layer's MLP output (the embeddings for the first layer), not yet added
        to ``residual``. Returns this layer's MLP output and the residual stream before it."""
        if ctx.gemv:
            return self._forward_gemv(x, residual, ctx)
        if residual is None:
            residual, h = x, self.input_layernorm(x)
        else:
            h, residual = self.input_layernorm.add_forward(x, residual)
        h = self.self_attn(h, ctx)
        h, residual = self.post_attention_layernorm.add_forward(h, residual)
        return self.mlp(h), residual

    def _forward_gemv(self, x: torch.Tensor, residual: torch.Tensor | None,
                      ctx: ForwardContext) -> tuple[torch.Tensor, torch.Tensor]:
        """The same layer in four kernels besides attention: each norm (with its residual add) runs in
        the prologue of the projection that reads it, SiLU·mul in the down projection's."""
        from engine.kernels.gemv import gemv

        attn, mlp, pre, post = self.self_attn, self.mlp, self.input_layernorm, self.post_attention_layernorm
        if residual is None:
            qkv, _ = gemv(x, attn.qkv_proj.weight, attn.qkv_proj.bias, prologue="rms_norm", norm_weight=pre.weight,
                          eps=pre.eps)
            residual = x
        else:
            qkv, added = gemv(x, attn.qkv_proj.weight, attn.qkv_proj.bias, prologue="add_rms_norm",
                              residual=residual, norm_weight=pre.weight, eps=pre.eps)
            assert added is not None
            residual = added
        h, _ = gemv(attn.attend(qkv, ctx), attn.o_proj.weight, attn.o_proj.bias)
        gate_up, added = gemv(h, mlp.gate_up_proj.weight, mlp.gate_up_proj.bias, prologue="add_rms_norm",
                              residual=residual, norm_weight=post.weight, eps=post.eps)
        assert added is not None
        out, _ = gemv(gate_up, mlp.down_proj.weight, mlp.down_proj.bias, prologue="silu_mul")
        return out, added


class Embedding(nn.Embedding):
    """``nn.Embedding`` without its random init: the weights come from the checkpoint (or ``load_format="dummy"``),
    and on the meta device the init's ``normal_`` imports ``torch._dynamo``, seconds of every engine's start."""

    def reset_parameters(self) -> None:
        pass


class Backbone(nn.Module):
    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        self.embed_tokens = Embedding(cfg.vocab_size, cfg.hidden_size)
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
        self.fused_gemv = False
        """Steps of at most ``engine.kernels.gemv.MAX_ROWS`` tokens run ``DecoderLayer._forward_gemv``
        (``EngineConfig.fused_gemv``)."""

    def tie_weights(self) -> None:
        self.lm_head.weight = self.model.embed_tokens.weight

    def forward(self, input_ids: torch.Tensor, positions: torch.Tensor, meta: AttentionMetadata,
                kv: KVPool) -> torch.Tensor:
        """input_ids, positions long [T] → hidden states [T, hidden]."""
        x = self.model.embed_tokens(input_ids)
        inv_freq = self.rotary.inv_freq(positions.device)
        cos, sin = (None, None) if x.is_cuda else self.rotary.cos_sin(positions, x.dtype)
        small = False
        if self.fused_gemv:
            from engine.kernels.gemv import MAX_ROWS

            small = input_ids.shape[0] <= MAX_ROWS
        ctx = ForwardContext(meta, kv, positions, inv_freq, cos, sin, small)
        residual = None
        for layer in self.model.layers:
            x, residual = layer(x, residual, ctx)
        assert residual is not None
        return self.model.norm.add_forward(x, residual)[0]

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
