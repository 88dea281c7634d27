"""Fused Triton kernels for the decoder's small ops, used on CUDA in place of several torch launches.

Modules, one op family each (a private ``@triton.jit`` kernel, its launcher, a thin public function):
``norm`` (``rms_norm``, ``fused_add_rms_norm``), ``activation`` (``silu_and_mul``) and ``rotary``
(``rotary_store_kv``: rotate q in place and write the rotated k and v into the KV cache).

Each module imports Triton at import time, and this package imports none of them: callers import a
module lazily, on CUDA only, so CPU-only installs never need Triton. Under ``TRITON_INTERPRET=1``
(set before the import) the same kernels run on CPU tensors; ``tests/test_fused_kernels.py`` checks
them that way against torch references that round exactly as the model's torch code does.
"""
