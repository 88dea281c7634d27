"""Attention over the paged KV pool.

``torch_ref`` is the plain-torch implementation (CPU, and the reference for tests); Triton
kernels for the GPU join it here, behind the same ``paged_attention`` signature.
"""

from engine.attention.metadata import AttentionMetadata, build_metadata
from engine.attention.torch_ref import paged_attention, write_kv

__all__ = ["AttentionMetadata", "build_metadata", "paged_attention", "write_kv"]
