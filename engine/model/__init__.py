"""Model code: the Llama-family decoder, its config and the checkpoint loader."""

from engine.model.config import ModelConfig, RopeConfig
from engine.model.llama import LlamaForCausalLM
from engine.model.loader import load_model, read_config
from engine.model.registry import ARCHITECTURES

__all__ = ["ARCHITECTURES", "LlamaForCausalLM", "ModelConfig", "RopeConfig", "load_model", "read_config"]
