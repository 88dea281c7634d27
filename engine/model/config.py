"""``ModelConfig``: what the model code needs, read from a Hugging Face ``config.json``.

Checkpoints on disk carry keys from two generations of transformers:

| meaning              | transformers 4.x                       | transformers 5.x                      |
| -------------------- | -------------------------------------- | ------------------------------------- |
| rotary base          | ``rope_theta``                         | ``rope_parameters.rope_theta``        |
| rotary scaling       | ``rope_scaling`` (``type``/``rope_type``) | ``rope_parameters`` (``rope_type``) |
| weights dtype        | ``torch_dtype``                        | ``dtype``                             |
| sliding layers       | ``use_sliding_window``, ``max_window_layers`` | ``layer_types``                 |

Both are accepted; where both appear the 5.x key wins.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from engine.errors import ModelLoadError
from engine.model.registry import Family, family_for

SUPPORTED_ROPE_TYPES = ("default", "linear", "llama3")


@dataclass(frozen=True)
class RopeConfig:
    theta: float = 10000.0
    type: str = "default"
    factor: float = 1.0
    low_freq_factor: float = 1.0
    high_freq_factor: float = 4.0
    original_max_position: int = 8192


@dataclass(frozen=True)
class ModelConfig:
    architecture: str
    family: Family
    vocab_size: int
    hidden_size: int
    intermediate_size: int
    num_layers: int
    num_heads: int
    num_kv_heads: int
    head_dim: int
    rms_norm_eps: float
    max_position: int
    rope: RopeConfig
    qkv_bias: bool
    o_bias: bool
    mlp_bias: bool
    qk_norm: bool
    tie_word_embeddings: bool
    sliding_windows: tuple[int | None, ...]
    """Per layer: the attention window in tokens, or None for full attention."""
    dtype: str | None
    eos_token_ids: tuple[int, ...]
    bos_token_id: int | None

    @classmethod
    def from_hf(cls, raw: dict[str, Any], source: str = "config.json") -> ModelConfig:
        architectures = raw.get("architectures") or []
        architecture = architectures[0] if architectures else str(raw.get("model_type", "?"))
        family = family_for(architecture, raw.get("model_type"), source)
        try:
            hidden = int(raw["hidden_size"])
            heads = int(raw["num_attention_heads"])
            layers = int(raw["num_hidden_layers"])
            cfg = cls(
                architecture=architecture,
                family=family,
                vocab_size=int(raw["vocab_size"]),
                hidden_size=hidden,
                intermediate_size=int(raw["intermediate_size"]),
                num_layers=layers,
                num_heads=heads,
                num_kv_heads=int(raw.get("num_key_value_heads") or heads),
                head_dim=int(raw.get("head_dim") or hidden // heads),
                rms_norm_eps=float(raw.get("rms_norm_eps", 1e-6)),
                max_position=int(raw.get("max_position_embeddings", 2048)),
                rope=_rope(raw, source),
                qkv_bias=family.qkv_bias if family.qkv_bias is not None else bool(raw.get("attention_bias", False)),
                o_bias=family.o_bias if family.o_bias is not None else bool(raw.get("attention_bias", False)),
                mlp_bias=bool(raw.get("mlp_bias", False)),
                qk_norm=family.qk_norm,
                tie_word_embeddings=bool(raw.get("tie_word_embeddings", False)),
                sliding_windows=_sliding_windows(raw, family, layers),
                dtype=raw.get("dtype") or raw.get("torch_dtype"),
                eos_token_ids=_ids(raw.get("eos_token_id")),
                bos_token_id=raw.get("bos_token_id"),
            )
        except KeyError as e:
            raise ModelLoadError(f"{source}: missing required key {e.args[0]!r}") from None
        except (TypeError, ValueError) as e:
            raise ModelLoadError(f"{source}: malformed value: {e}") from None
        if cfg.num_heads % cfg.num_kv_heads:
            raise ModelLoadError(f"{source}: num_attention_heads ({cfg.num_heads}) is not a multiple "
                                 f"of num_key_value_heads ({cfg.num_kv_heads})")
        act = raw.get("hidden_act", "silu")
        if act != "silu":
            raise ModelLoadError(f"{source}: hidden_act {act!r} is not supported (only 'silu')")
        return cfg


def _rope(raw: dict[str, Any], source: str) -> RopeConfig:
    params: dict[str, Any] = {}
    if isinstance(raw.get("rope_scaling"), dict):
        params.update(raw["rope_scaling"])
    if isinstance(raw.get("rope_parameters"), dict):
        params.update(raw["rope_parameters"])
    theta = params.get("rope_theta", raw.get("rope_theta", 10000.0))
    rope_type = params.get("rope_type") or params.get("type") or "default"
    if rope_type not in SUPPORTED_ROPE_TYPES:
        raise ModelLoadError(f"{source}: rope type {rope_type!r} is not supported "
                             f"(supported: {', '.join(SUPPORTED_ROPE_TYPES)})")
    defaults = RopeConfig()
    return RopeConfig(
        theta=float(theta),
        type=rope_type,
        factor=float(params.get("factor", 1.0)),
        low_freq_factor=float(params.get("low_freq_factor", defaults.low_freq_factor)),
        high_freq_factor=float(params.get("high_freq_factor", defaults.high_freq_factor)),
        original_max_position=int(params.get("original_max_position_embeddings",
                                             defaults.original_max_position)),
    )


def _sliding_windows(raw: dict[str, Any], family: Family, layers: int) -> tuple[int | None, ...]:
    window = raw.get("sliding_window")
    layer_types = raw.get("layer_types")
    if isinstance(layer_types, list) and len(layer_types) == layers:
        return tuple(window if t == "sliding_attention" and window else None for t in layer_types)
    if family.sliding_flag:  # Qwen2/3 in 4.x: opt-in, from layer max_window_layers upwards
        if not raw.get("use_sliding_window") or not window:
            return (None,) * layers
        first = int(raw.get("max_window_layers", layers))
        return tuple(window if i >= first else None for i in range(layers))
    return (int(window) if window else None,) * layers


def _ids(value: Any) -> tuple[int, ...]:
    if value is None:
        return ()
    if isinstance(value, int):
        return (value,)
    return tuple(int(v) for v in value)

