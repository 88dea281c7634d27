"""Architectures the engine implements, and the flags that set them apart.

All are one Llama-family decoder (``engine/model/llama.py``); a ``Family`` says which optional
parts a checkpoint of that architecture has. ``None`` for a bias flag means "read
``attention_bias`` from config.json".
"""

from __future__ import annotations

from dataclasses import dataclass

from engine.errors import UnsupportedArchitectureError


@dataclass(frozen=True)
class Family:
    name: str
    qkv_bias: bool | None = None
    o_bias: bool | None = None
    qk_norm: bool = False
    sliding_flag: bool = False
    """Sliding window is opt-in via ``use_sliding_window`` (Qwen) rather than on when set (Mistral)."""


LLAMA = Family("llama")
MISTRAL = Family("mistral", qkv_bias=False, o_bias=False)
QWEN2 = Family("qwen2", qkv_bias=True, o_bias=False, sliding_flag=True)
QWEN3 = Family("qwen3", qk_norm=True, sliding_flag=True)

ARCHITECTURES: dict[str, Family] = {
    "LlamaForCausalLM": LLAMA,
    "MistralForCausalLM": MISTRAL,
    "Qwen2ForCausalLM": QWEN2,
    "Qwen3ForCausalLM": QWEN3,
}
MODEL_TYPES: dict[str, Family] = {"llama": LLAMA, "mistral": MISTRAL, "qwen2": QWEN2, "qwen3": QWEN3}


def family_for(architecture: str, model_type: object, source: str) -> Family:
    family = ARCHITECTURES.get(architecture)
    if family is None and isinstance(model_type, str) and architecture == model_type:
        family = MODEL_TYPES.get(model_type)  # config.json without "architectures"
    if family is None:
        raise UnsupportedArchitectureError(
            f"{source}: architecture {architecture!r} is not supported; the engine implements "
            f"{', '.join(sorted(ARCHITECTURES))}", field="architectures")
    return family
