"""Rotary position embedding (the rotate-half convention of Llama checkpoints in HF format).

For a head vector x split in halves (x1, x2) and position p with frequencies f:
    rope(x) = x * cos(p f') + rotate_half(x) * sin(p f'),   f' = concat(f, f),
    rotate_half(x) = concat(-x2, x1).
Frequencies ``f_i = theta ** (-2i / d)``; ``linear`` divides them by ``factor``, ``llama3`` rescales
them by wavelength band (Llama 3.1). Computed in float32 as transformers does, then cast.
"""

from __future__ import annotations

import math

import torch

from engine.model.config import RopeConfig


def inv_frequencies(rope: RopeConfig, head_dim: int) -> torch.Tensor:
    """float32 [head_dim // 2]."""
    exponents = torch.arange(0, head_dim, 2, dtype=torch.int64, device="cpu").float() / head_dim
    inv_freq = 1.0 / (rope.theta ** exponents)
    if rope.type == "linear":
        inv_freq = inv_freq / rope.factor
    elif rope.type == "llama3":
        inv_freq = _llama3(inv_freq, rope)
    return inv_freq


def _llama3(inv_freq: torch.Tensor, rope: RopeConfig) -> torch.Tensor:
    # Wavelengths shorter than old_len / high_freq_factor are kept, those longer than
    # old_len / low_freq_factor are stretched by `factor`, the band between is interpolated
    # linearly in old_len / wavelength.
    old_len = rope.original_max_position
    low_wavelen = old_len / rope.low_freq_factor
    high_wavelen = old_len / rope.high_freq_factor
    wavelen = 2 * math.pi / inv_freq
    scaled = torch.where(wavelen > low_wavelen, inv_freq / rope.factor, inv_freq)
    smooth = (old_len / wavelen - rope.low_freq_factor) / (rope.high_freq_factor - rope.low_freq_factor)
    smoothed = (1 - smooth) * scaled / rope.factor + smooth * scaled
    medium = (wavelen >= high_wavelen) & (wavelen <= low_wavelen)
    return torch.where(medium, smoothed, scaled)


class Rotary:
    """Computes cos/sin for a step's positions once; every layer reuses them."""

    def __init__(self, rope: RopeConfig, head_dim: int) -> None:
        self._inv_freq_cpu = inv_frequencies(rope, head_dim)
        self._inv_freq: dict[torch.device, torch.Tensor] = {}

    def inv_freq(self, device: torch.device) -> torch.Tensor:
        """float32 [head_dim / 2] on ``device``."""
        inv_freq = self._inv_freq.get(device)
        if inv_freq is None:
            inv_freq = self._inv_freq[device] = self._inv_freq_cpu.to(device)
        return inv_freq

    def cos_sin(self, positions: torch.Tensor, dtype: torch.dtype) -> tuple[torch.Tensor, torch.Tensor]:
        """positions long [T] → cos, sin [T, 1, head_dim] in ``dtype`` (broadcast over heads)."""
        inv_freq = self.inv_freq(positions.device)
        freqs = positions.float().unsqueeze(-1) * inv_freq  # [T, head_dim / 2]
        emb = torch.cat((freqs, freqs), dim=-1)  # [T, head_dim]
        return emb.cos().to(dtype).unsqueeze(1), emb.sin().to(dtype).unsqueeze(1)


def apply_rotary(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """x [T, heads, head_dim]."""
    half = x.shape[-1] // 2
    rotated = torch.cat((-x[..., half:], x[..., :half]), dim=-1)
    return x * cos + rotated * sin
