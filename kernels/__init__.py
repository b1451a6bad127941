"""Fused Triton kernels for LURE's unlearn step, with their exact PyTorch references.

Stand-alone: imports only torch, triton and the standard library, and changes nothing in Triton for
other code. Every op takes the Triton path for CUDA tensors (and for CPU tensors while
``TRITON_INTERPRET=1``, see ``use_triton``) and its ``*_reference`` twin otherwise; both give
bit-identical results.

One input form, as in ``torch.nn.utils.prune.global_unstructured``: the parameters are a list (any
iterable) of tensors, and every companion argument (gradients, accumulators, saliency, outputs,
bounds) is a list with one entry per parameter. A single tensor counts as a list of one. Entries are
numbered by their position in the row-major concatenation of the list (the *global index*, which
keys the counter-based generator), so no result depends on layouts or on how the entries are split
into tensors. Tensors may be contiguous, channels-last (run in place) or any other strided view
(run on a copy written back). Ops ending in ``_`` work in place.

- ``accumulate_(acc, grad, mode)``: ``acc += |g|``, ``g`` or ``g**2`` (float32); returns ``acc``.
- ``saliency(kind, params, acc=None, *, seed=0, out=None)``: SNIP, Fisher, magnitude or random
  scores, a list of float32 tensors (``out`` when given).
- ``kth_smallest(x, k)``: ``torch.kthvalue`` over a list of tensors, by radix select.
- ``unlearn_(params, saliency, fraction, bounds, seed)``: reset the ``int(fraction * total)`` least
  salient entries to ``U(-bound, bound)``; returns how many were reset.
- ``shrink_perturb_(params, lam, sigma, bounds, seed)``: the S&P baseline.
- ``uniform_(x, seed, offset=0)``, ``counter_uniform(n, seed, offset=0, device=None)``: the
  counter-based generator all of them draw from (defined in ``reference.py``).

Example::

    >>> from lure_fast.kernels import accumulate_, saliency, unlearn_
    >>> params = [m.weight for m in model.modules() if isinstance(m, (nn.Conv2d, nn.Linear))]
    >>> acc = [torch.zeros_like(p) for p in params]
    >>> loss.backward()
    >>> accumulate_(acc, [p.grad for p in params], "sum")
    >>> sal = saliency("snip", params, acc=acc, out=acc)      # |acc * w|, in place over acc
    >>> bounds = [1 / p[0].numel() ** 0.5 for p in params]     # kaiming_uniform_(a=sqrt(5))
    >>> n = unlearn_(params, sal, 0.2, bounds, seed=0)         # the 20 % least salient entries
"""

from ._dispatch import use_triton
from .accumulate import accumulate_
from .criteria import saliency
from .radix_select import kth_smallest
from .reference import (
    accumulate_reference_,
    counter_uniform_reference,
    kth_smallest_reference,
    saliency_reference,
    shrink_perturb_reference_,
    uniform_reference_,
    unlearn_reference_,
)
from .rng import counter_uniform, uniform_
from .shrink_perturb import shrink_perturb_
from .unlearn import unlearn_

__all__ = [
    "accumulate_",
    "accumulate_reference_",
    "counter_uniform",
    "counter_uniform_reference",
    "kth_smallest",
    "kth_smallest_reference",
    "saliency",
    "saliency_reference",
    "shrink_perturb_",
    "shrink_perturb_reference_",
    "uniform_",
    "uniform_reference_",
    "unlearn_",
    "unlearn_reference_",
    "use_triton",
]
