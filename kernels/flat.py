"""One contiguous buffer for all parameters (and one for their gradients), so that the unlearn
ops run as single launches over the whole model and the addresses never change afterwards."""

from __future__ import annotations

from typing import Iterable, NamedTuple, Optional, Sequence, Union

import torch
from torch import nn

from ._layout import check_bounds


class Segment(NamedTuple):
    """One parameter's row of a flat buffer's segment table."""

    offset: int  # first entry in the buffer, also its global flat index (keys the generator)
    length: int  # numel
    bound: Optional[float] = None  # reinit bound of unlearn_ / noise bound of shrink_perturb_; None: never reset


class FlatParameters:
    """Parameters laid out back to back in one 1-D buffer, gradients likewise.

    Attributes:
        data: 1-D tensor, every parameter's ``.data`` is a view of it (in ``params`` order).
        grad: 1-D tensor of the same size, every parameter's ``.grad`` is a view of it.
        params: the parameters, in buffer order.
        names: their names (``module.named_parameters()``), or None when built from a plain list.
        segments: the segment table, one ``Segment(offset, length, bound)`` per parameter; they
            tile the buffer in order, so a buffer offset is also the global flat index used by the
            counter-based generator. ``bound``: the reinit bound (float >= 0) that ``unlearn_`` and
            ``shrink_perturb_`` use when called without ``bounds``, or None ("never reset", also
            the value when no bounds were recorded).
        bounds: the ``bound`` column as a list; assign a list (one float or None per parameter) to
            record bounds after flattening, e.g. from ``names``.
        numel: total number of entries.

    Keep the gradients in the buffer: ``optimizer.zero_grad(set_to_none=True)`` (the default of
    ``torch.optim`` and ``nn.Module.zero_grad``) sets ``p.grad = None``, and the next backward
    would then allocate a fresh gradient outside the buffer. Use ``zero_grad(set_to_none=False)``
    or ``flat.zero_grad()`` (which also re-attaches any detached gradient). Autograd accumulates
    into an existing ``.grad`` in place, so backward writes straight into ``grad``.
    Do not re-create the parameters' storage afterwards (``module.to(...)``, ``.half()``,
    ``load_state_dict(assign=True)``); in-place updates (optimizers, ``load_state_dict``) are fine.
    The ops check the storage (``check_attached``) and raise ValueError rather than write a stale
    buffer; replaced parameter objects (``assign=True``) they cannot detect.
    """

    def __init__(self, params, names, data, grad, segments):
        self.params: list[nn.Parameter] = params
        self.names: Optional[list[str]] = names
        self.data: torch.Tensor = data
        self.grad: torch.Tensor = grad
        self.segments: list[Segment] = [Segment(*s) for s in segments]
        self._grad_views = [grad[s.offset : s.offset + s.length].view(p.shape) for p, s in zip(params, self.segments)]
        # where each parameter's data must start: one integer compare per parameter per op
        self._data_ptrs = [data.data_ptr() + s.offset * data.element_size() for s in self.segments]

    @property
    def bounds(self) -> list[Optional[float]]:
        return [s.bound for s in self.segments]

    @bounds.setter
    def bounds(self, bounds: Sequence[Optional[float]]) -> None:
        bounds = check_bounds(bounds, len(self.params))
        self.segments = [s._replace(bound=b) for s, b in zip(self.segments, bounds)]

    @property
    def numel(self) -> int:
        return self.data.numel()

    def __len__(self) -> int:
        return len(self.params)

    def __repr__(self) -> str:
        return (
            f"FlatParameters({len(self.params)} tensors, {self.numel} entries, "
            f"dtype={self.data.dtype}, device={self.data.device})"
        )

    def _detached_param(self) -> Optional[int]:
        for i, (p, ptr) in enumerate(zip(self.params, self._data_ptrs)):
            if p.data_ptr() != ptr:
                return i
        return None

    def params_attached(self) -> bool:
        """True when every ``p.data`` is still its view of ``data``."""
        return self._detached_param() is None

    def check_attached(self) -> None:
        """Raise ValueError if a parameter's storage was re-created after flattening (``module.to(...)``,
        ``.half()``, ``p.data = ...``): an op on ``data`` would then change nothing the model uses.
        Called by every op given a ``FlatParameters``; one compare per parameter. It cannot see
        parameters *replaced* in the module (``load_state_dict(assign=True)``): those held here
        are still attached, only no longer the module's."""
        i = self._detached_param()
        if i is not None:
            name = self.names[i] if self.names is not None else f"#{i}"
            raise ValueError(
                f"FlatParameters: parameter {name} no longer lives in the flat buffer (its storage was "
                "re-created, e.g. by module.to(...) or .half()); call flatten_parameters(...) again after such a change"
            )

    def grads_attached(self) -> bool:
        """True when every ``p.grad`` is still the view of ``grad`` (and ``p.data`` of ``data``)."""
        for p, g in zip(self.params, self._grad_views):
            if p.grad is None or p.grad.data_ptr() != g.data_ptr() or p.grad.shape != g.shape:
                return False
        return self.params_attached()

    @torch.no_grad()
    def attach_grads(self) -> None:
        """Point every ``p.grad`` back at its view of ``grad`` (after ``set_to_none=True``)."""
        for p, g in zip(self.params, self._grad_views):
            if p.grad is None or p.grad.data_ptr() != g.data_ptr() or p.grad.shape != g.shape:
                if p.grad is not None:
                    g.copy_(p.grad)  # keep a gradient that was accumulated outside the buffer
                else:
                    g.zero_()  # set_to_none meant "no gradient": the view must not bring the old one back
                p.grad = g

    @torch.no_grad()
    def zero_grad(self) -> None:
        """Zero the gradient buffer in place (one memset) and re-attach detached gradients."""
        for p, g in zip(self.params, self._grad_views):
            if p.grad is None or p.grad.data_ptr() != g.data_ptr():
                p.grad = g
        self.grad.zero_()


@torch.no_grad()
def flatten_parameters(
    module_or_params: Union[nn.Module, Iterable[nn.Parameter], Iterable[tuple[str, nn.Parameter]]],
    bounds: Optional[Sequence[Optional[float]]] = None,
) -> FlatParameters:
    """Move parameters into one contiguous buffer and their gradients into another.

    ``module_or_params``: a module (its trainable parameters, ``requires_grad=True``, in
    ``named_parameters()`` order; buffers such as BatchNorm statistics are left alone), or an
    iterable of parameters or of ``(name, parameter)`` pairs. All must share one dtype and device
    (ValueError otherwise). ``bounds``: optional, one reinit bound (float >= 0, or None: never
    reset) per parameter in that order, recorded in the segment table (``FlatParameters.segments``)
    so that ``unlearn_(flat, saliency, fraction, seed=...)`` needs no ``bounds``.

    In place: each parameter's ``.data`` becomes a contiguous (row-major) view of
    ``FlatParameters.data`` holding the same values (a channels-last layout is not kept), and
    each ``.grad`` a view of ``FlatParameters.grad`` (existing gradients are copied, missing ones
    are zeros). Parameter objects keep their identity, so optimizers built before or after keep
    working (SGD incl. ``foreach``/``fused``), as do ``state_dict``/``load_state_dict`` (which
    copies in place) and ``torch.compile``. See ``FlatParameters`` for the ``zero_grad`` caveat.
    """
    if isinstance(module_or_params, nn.Module):
        named = [(n, p) for n, p in module_or_params.named_parameters() if p.requires_grad]
        names: Optional[list[str]] = [n for n, _ in named]
        params = [p for _, p in named]
    else:
        items = list(module_or_params)
        if items and all(isinstance(i, tuple) and len(i) == 2 for i in items):
            names = [n for n, _ in items]
            params = [p for _, p in items]
        else:
            names, params = None, items
    if not params:
        raise ValueError("flatten_parameters: no trainable parameters")
    if len({id(p) for p in params}) != len(params):
        raise ValueError("flatten_parameters: a parameter appears twice")
    for p in params:
        if not isinstance(p, torch.Tensor) or not p.is_leaf:
            raise ValueError("flatten_parameters: expected leaf tensors (nn.Parameter)")
    dtypes = {p.dtype for p in params}
    if len(dtypes) != 1:
        raise ValueError(
            f"flatten_parameters: parameters have several dtypes {sorted(map(str, dtypes))}; "
            "one flat buffer holds one dtype"
        )
    devices = {p.device for p in params}
    if len(devices) != 1:
        raise ValueError(f"flatten_parameters: parameters are on several devices {sorted(map(str, devices))}")
    dtype, device = dtypes.pop(), devices.pop()

    bounds = check_bounds([None] * len(params) if bounds is None else bounds, len(params))

    segments, offset = [], 0
    for p, b in zip(params, bounds):
        segments.append(Segment(offset, p.numel(), b))
        offset += p.numel()
    data = torch.empty(offset, dtype=dtype, device=device)
    grad = torch.zeros(offset, dtype=dtype, device=device)
    for p, (o, n, _) in zip(params, segments):
        view = data[o : o + n].view(p.shape)
        view.copy_(p.data)
        grad_view = grad[o : o + n].view(p.shape)
        if p.grad is not None:
            grad_view.copy_(p.grad)
        p.data = view
        p.grad = grad_view
    return FlatParameters(params, names, data, grad, segments)
