"""The built-in demo model: a small Qwen2-architecture checkpoint with seeded random weights and
the real Qwen2.5 tokenizer and chat template.

It exists so the machinery (engine, workflows, server, UI) runs offline on any machine. Its
weights are random: it produces fluent-looking token salad, not answers. It is written once, in
ordinary Hugging Face format, into the user cache directory and loaded by the same loader as any
real checkpoint.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

DEMO_NAME = "demo"
DEMO_VERSION = "qwen2-demo-v1"
ASSETS = Path(__file__).parent / "assets" / "qwen2.5"
TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "chat_template.jinja", "LICENSE", "SOURCES.md")

# Qwen2.5 shapes scaled down: GQA (4 query heads share 2 KV heads), tied embeddings, qkv bias,
# the model's real logit width (151,936 rows for a 151,665-token tokenizer).
DEMO_CONFIG: dict[str, Any] = {
    "architectures": ["Qwen2ForCausalLM"],
    "model_type": "qwen2",
    "vocab_size": 151936,
    "hidden_size": 256,
    "intermediate_size": 704,
    "num_hidden_layers": 4,
    "num_attention_heads": 4,
    "num_key_value_heads": 2,
    "hidden_act": "silu",
    "max_position_embeddings": 32768,
    "rms_norm_eps": 1e-6,
    "tie_word_embeddings": True,
    "use_sliding_window": False,
    "sliding_window": None,
    "max_window_layers": 4,
    "attention_dropout": 0.0,
    "initializer_range": 0.02,
    "bos_token_id": 151643,
    "eos_token_id": 151645,
    # Keys of both transformers generations, as real checkpoints on disk carry them.
    "rope_theta": 1000000.0,
    "rope_scaling": None,
    "rope_parameters": {"rope_type": "default", "rope_theta": 1000000.0},
    "torch_dtype": "bfloat16",
    "dtype": "bfloat16",
}
GENERATION_CONFIG = {"bos_token_id": 151643, "eos_token_id": [151645, 151643], "pad_token_id": 151643}
SEED = 20251124

log = logging.getLogger(__name__)


def cache_root() -> Path:
    """``$AGENTFLOW_CACHE_DIR``, else the platform's user cache dir for agentflow."""
    env = os.environ.get("AGENTFLOW_CACHE_DIR")
    if env:
        return Path(env).expanduser()
    from platformdirs import user_cache_dir

    return Path(user_cache_dir("agentflow"))


def demo_path() -> Path:
    """The demo checkpoint directory, built on first use."""
    path = cache_root() / "models" / DEMO_VERSION
    if (path / "config.json").is_file():
        return path
    log.info("building the demo model (random weights) in %s", path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=".demo-", dir=path.parent))
    try:
        write_demo_checkpoint(tmp)
        try:
            os.replace(tmp, path)  # atomic: a concurrent builder's copy is as good as ours
        except OSError:
            if not (path / "config.json").is_file():
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return path


def write_demo_checkpoint(path: Path) -> None:
    import torch
    from safetensors.torch import save_file

    cfg = DEMO_CONFIG
    hidden, inter = int(cfg["hidden_size"]), int(cfg["intermediate_size"])
    head_dim = hidden // int(cfg["num_attention_heads"])
    kv = int(cfg["num_key_value_heads"]) * head_dim
    std = float(cfg["initializer_range"])
    g = torch.Generator().manual_seed(SEED)

    def normal(*shape: int) -> torch.Tensor:
        return (torch.randn(*shape, generator=g) * std).to(torch.bfloat16)

    tensors = {"model.embed_tokens.weight": normal(int(cfg["vocab_size"]), hidden),
               "model.norm.weight": torch.ones(hidden, dtype=torch.bfloat16)}
    for i in range(int(cfg["num_hidden_layers"])):
        p = f"model.layers.{i}."
        tensors.update({
            p + "input_layernorm.weight": torch.ones(hidden, dtype=torch.bfloat16),
            p + "post_attention_layernorm.weight": torch.ones(hidden, dtype=torch.bfloat16),
            p + "self_attn.q_proj.weight": normal(hidden, hidden),
            p + "self_attn.q_proj.bias": normal(hidden),
            p + "self_attn.k_proj.weight": normal(kv, hidden),
            p + "self_attn.k_proj.bias": normal(kv),
            p + "self_attn.v_proj.weight": normal(kv, hidden),
            p + "self_attn.v_proj.bias": normal(kv),
            p + "self_attn.o_proj.weight": normal(hidden, hidden),
            p + "mlp.gate_proj.weight": normal(inter, hidden),
            p + "mlp.up_proj.weight": normal(inter, hidden),
            p + "mlp.down_proj.weight": normal(hidden, inter),
        })
    save_file(tensors, str(path / "model.safetensors"), metadata={"format": "pt"})
    (path / "config.json").write_text(json.dumps(cfg, indent=2) + "\n")
    (path / "generation_config.json").write_text(json.dumps(GENERATION_CONFIG, indent=2) + "\n")
    for name in TOKENIZER_FILES:
        shutil.copyfile(ASSETS / name, path / name)
    (path / "README.md").write_text(
        "# agentflow demo model\n\nQwen2 architecture, seeded RANDOM weights, real Qwen2.5 tokenizer.\n"
        "Built by `engine/demo.py` to try the machinery offline; it does not produce meaningful text.\n")


def resolve_model_path(model: str) -> Path:
    return demo_path() if model == DEMO_NAME else Path(model).expanduser()
