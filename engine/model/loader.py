"""Load a Hugging Face checkpoint directory: ``config.json`` + ``*.safetensors`` (one file, or
shards listed in ``model.safetensors.index.json``).

The model is built on the meta device, materialised once on the target device in the target
dtype, and filled tensor by tensor straight from the memory-mapped files, so peak host memory
stays near one tensor beyond the weights themselves.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator
from pathlib import Path

import torch
from safetensors import safe_open
from tqdm.auto import tqdm

from engine.errors import ModelLoadError
from engine.model.config import ModelConfig
from engine.model.llama import LlamaForCausalLM, ignorable

log = logging.getLogger(__name__)

DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16,
          "fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16, "half": torch.float16}
PROGRESS_MIN_BYTES = 256 << 20
"""Show a progress bar when the checkpoint is at least this large."""


def read_config(path: Path) -> ModelConfig:
    config_file = path / "config.json"
    if not path.is_dir():
        raise ModelLoadError(f"model path {str(path)!r} is not a directory (expected a Hugging Face "
                             "checkpoint folder with config.json and *.safetensors, or 'demo')",
                             field="model")
    if not config_file.is_file():
        raise ModelLoadError(f"no config.json in {path}", field="model")
    try:
        raw = json.loads(config_file.read_text())
    except (OSError, json.JSONDecodeError) as e:
        raise ModelLoadError(f"{config_file}: cannot read JSON: {e}", field="model") from None
    return ModelConfig.from_hf(raw, source=str(config_file))


def resolve_dtype(dtype: str | torch.dtype | None, cfg: ModelConfig, device: torch.device) -> torch.dtype:
    """``None`` picks float32 on CPU and the checkpoint's half type (else bfloat16) on CUDA."""
    if isinstance(dtype, torch.dtype):
        if dtype not in DTYPES.values():
            raise ValueError(f"dtype must be float32, bfloat16 or float16, got {dtype}")
        return dtype
    if dtype is None:
        if device.type == "cpu":
            return torch.float32
        return torch.float16 if cfg.dtype == "float16" else torch.bfloat16
    if dtype not in DTYPES:
        raise ValueError(f"dtype must be one of float32, bfloat16, float16, got {dtype!r}")
    return DTYPES[dtype]


def safetensors_files(path: Path) -> list[Path]:
    index = path / "model.safetensors.index.json"
    if index.is_file():
        try:
            weight_map = json.loads(index.read_text())["weight_map"]
        except (OSError, json.JSONDecodeError, KeyError) as e:
            raise ModelLoadError(f"{index}: malformed shard index: {e}") from None
        files = sorted({path / name for name in weight_map.values()})
        missing = [f.name for f in files if not f.is_file()]
        if missing:
            raise ModelLoadError(f"{index} lists shards that are missing: {', '.join(missing)}")
        return files
    files = sorted(path.glob("*.safetensors"))
    if not files:
        raise ModelLoadError(f"no *.safetensors weights in {path} (only safetensors checkpoints "
                             "are supported)", field="model")
    return files


def _iter_tensors(files: list[Path]) -> Iterator[tuple[str, torch.Tensor]]:
    total = sum(f.stat().st_size for f in files)
    with tqdm(total=total, unit="B", unit_scale=True, desc="loading weights",
              disable=total < PROGRESS_MIN_BYTES, leave=False) as bar:
        for file in files:
            with safe_open(str(file), framework="pt", device="cpu") as f:
                for name in f.keys():  # noqa: SIM118 (safe_open has no __iter__)
                    tensor = f.get_tensor(name)
                    yield name, tensor
                    bar.update(tensor.numel() * tensor.element_size())


LOAD_FORMATS = ("auto", "dummy")


def load_model(path: str | Path, *, device: torch.device, dtype: str | torch.dtype | None = None,
               load_format: str = "auto") -> LlamaForCausalLM:
    """``load_format="dummy"`` needs only ``config.json``: the weights are random (benchmarks)."""
    path = Path(path).expanduser()
    cfg = read_config(path)
    torch_dtype = resolve_dtype(dtype, cfg, device)
    if load_format not in LOAD_FORMATS:
        raise ValueError(f"load_format must be one of {', '.join(LOAD_FORMATS)}, got {load_format!r}")
    with torch.device("meta"):
        model = LlamaForCausalLM(cfg)
    _materialize(model, torch_dtype, device)
    if load_format == "dummy":
        return _random_weights(model, path, torch_dtype, device)
    files = safetensors_files(path)
    expected = model.expected_weights()
    try:
        filled, ignored = model.load_weights(_iter_tensors(files))
    except ValueError as e:
        raise ModelLoadError(f"{path}: {e}") from None
    missing = sorted(expected - filled)
    if missing:
        raise ModelLoadError(f"{path}: checkpoint lacks {len(missing)} weights the "
                             f"{cfg.architecture} config calls for, e.g. {', '.join(missing[:5])}")
    unexpected = [n for n in ignored if not ignorable(n) and n != "lm_head.weight"]
    if unexpected:
        log.warning("%s: ignored %d unexpected tensors, e.g. %s", path, len(unexpected),
                    ", ".join(unexpected[:5]))
    if cfg.tie_word_embeddings:
        model.tie_weights()
    model.eval().requires_grad_(False)
    log.info("loaded %s (%s, %d layers) from %s as %s on %s", cfg.architecture, cfg.family.name,
             cfg.num_layers, path, torch_dtype, device)
    return model


def _materialize(model: torch.nn.Module, dtype: torch.dtype, device: torch.device) -> None:
    """Real, uninitialized storage for every (meta) parameter: what ``.to(dtype).to_empty(device)`` does,
    without ``to_empty``'s first call importing sympy (half a second of every engine's start)."""
    for module in model.modules():
        for name, param in list(module.named_parameters(recurse=False)):
            module.register_parameter(name, torch.nn.Parameter(torch.empty(param.shape, dtype=dtype, device=device),
                                                               requires_grad=param.requires_grad))


def _random_weights(model: LlamaForCausalLM, path: Path, dtype: torch.dtype, device: torch.device) -> LlamaForCausalLM:
    """Fill every parameter with seeded noise of a checkpoint's scale (norm weights 1): outputs are
    token salad, but every kernel sees realistic magnitudes, never zeros."""
    gen = torch.Generator(device=device).manual_seed(0)
    for name, param in model.named_parameters():
        if name.endswith("norm.weight"):
            param.data.fill_(1.0)
        else:
            param.data.normal_(0.0, 0.02, generator=gen)
    if model.config.tie_word_embeddings:
        model.tie_weights()
    model.eval().requires_grad_(False)
    log.info("built %s with random weights (load_format=dummy) from %s as %s on %s",
             model.config.architecture, path / "config.json", dtype, device)
    return model
