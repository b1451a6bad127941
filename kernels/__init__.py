"""Fused Triton kernels for LURE's unlearn step, with their exact PyTorch references.

Stand-alone: imports only torch, triton and the standard library. Every op takes the Triton path
for CUDA tensors (and for CPU tensors while ``TRITON_INTERPRET=1``, see ``use_triton``) and its
``*_reference`` twin otherwise; both give bit-identical results.

- ``flatten_parameters(module, bounds=None)`` -> ``FlatParameters``: all weights in one buffer, all
  grads in another, and a segment table of ``Segment(offset, length, bound)``.
- ``accumulate_(acc, grad, mode)``: ``acc += |g|``, ``g`` or ``g**2`` (float32).
- ``saliency(kind, params, acc=None, seed=0, out=None)``: SNIP, Fisher, magnitude or random scores.
- ``kth_smallest(x, k)``: ``torch.kthvalue`` of a tensor or of a list of tensors, by radix select.
- ``unlearn_(params, saliency, fraction, bounds, seed)``: reset the least salient entries (``bounds``
  may be left out for a ``FlatParameters`` that records them).
- ``shrink_perturb_(params, lam, sigma, bounds, seed)``: the S&P baseline.
- ``uniform_(x, seed, offset=0)``, ``counter_uniform(n, seed, offset=0, device=None)``: the
  counter-based generator all of them draw from (defined in ``reference.py``).
"""

from ._dispatch import use_triton
from .accumulate import accumulate_
from .criteria import saliency
from .flat import FlatParameters, Segment, flatten_parameters
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
    "FlatParameters",
    "Segment",
    "accumulate_",
    "accumulate_reference_",
    "counter_uniform",
    "counter_uniform_reference",
    "flatten_parameters",
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
