"""The step both Triton attention kernels (``triton_decode``, ``triton_extend``) take per block of keys:
scores, mask, and the online-softmax update of the running maximum, sum and output (flash
attention's recurrence). A ``@triton.jit`` helper, inlined into each kernel.

Imports Triton at import time: imported only by the kernel modules, which are imported lazily.
"""

from __future__ import annotations

import triton
import triton.language as tl


@triton.jit
def attend_block(q, k, v, keep, scale, m, l_sum, acc, IEEE: tl.constexpr):
    """Fold one block of keys into a row-wise online softmax.

    q [R, D], k and v [N, D], keep [R, N] (or broadcastable): which scores count; m, l_sum [R] and
    acc [R, D] (float32) are the running maximum, sum of exponentials and weighted values; returns
    their updates. A row with no key kept so far keeps m = -inf and adds nothing (not NaN).
    ``IEEE``: exact float32 dots (float32 caches, or the interpreter, whose bfloat16 dot is wrong).
    """
    if IEEE:
        s = tl.dot(q.to(tl.float32), tl.trans(k.to(tl.float32)), input_precision="ieee")
    else:
        s = tl.dot(q, tl.trans(k))
    s = tl.where(keep, s * scale, float("-inf"))
    m_new = tl.maximum(m, tl.max(s, 1))
    m_safe = tl.where(m_new == float("-inf"), 0.0, m_new)
    p = tl.exp(s - m_safe[:, None])
    alpha = tl.exp(m - m_safe)
    if IEEE:
        pv = tl.dot(p, v.to(tl.float32), input_precision="ieee")
    else:
        pv = tl.dot(p.to(v.dtype), v)
    return m_new, l_sum * alpha + tl.sum(p, 1), acc * alpha[:, None] + pv
