"""One contiguous buffer for all parameters (and one for their gradients), so that the unlearn
ops run as single launches over the whole model and the addresses never change afterwards."""

from __future__ import annotations

from typing import Iterable, Optional, Union

import torch
from torch import nn


class FlatParameters:
    """Parameters laid out back to back in one 1-D buffer, gradients likewise.

    Attributes:
        data: 1-D tensor, every parameter's ``.data`` is a view of it (in ``params`` order).
        grad: 1-D tensor of the same size, every parameter's ``.grad`` is a view of it.
        params: the parameters, in buffer order.
        names: their names (``module.named_parameters()``), or None when built from a plain list.
        segments: ``(offset, length)`` of each parameter in ``data``; they tile the buffer in order,
            so a buffer offset is also the global flat index used by the counter-based generator.
        numel: total number of entries.

    Keep the gradients in the buffer: ``optimizer.zero_grad(set_to_none=True)`` (the default of
    ``torch.optim`` and ``nn.Module.zero_grad``) sets ``p.grad = None``, and the next backward
    would then allocate a fresh gradient outside the buffer. Use ``zero_grad(set_to_none=False)``
    or ``flat.zero_grad()`` (which also re-attaches any detached gradient). Autograd accumulates
    into an existing ``.grad`` in place, so backward writes straight into ``grad``.
    Do not re-create the parameters' storage afterwards (``module.to(...)``, ``.half()``,
    ``load_state_dict(assign=True)``); in-place updates (optimizers, ``load_state_dict``) are fine.
    """

    def __init__(self, params, names, data, grad, segments):
        self.params: list[nn.Parameter] = params
        self.names: Optional[list[str]] = names
        self.data: torch.Tensor = data
        self.grad: torch.Tensor = grad
        self.segments: list[tuple[int, int]] = segments
        self._grad_views = [grad[o : o + n].view(p.shape) for p, (o, n) in zip(params, segments)]

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

    def grads_attached(self) -> bool:
        """True when every ``p.grad`` is still the view of ``grad`` (and ``p.data`` of ``data``)."""
        for p, g, (o, _) in zip(self.params, self._grad_views, self.segments):
            if p.grad is None or p.grad.data_ptr() != g.data_ptr() or p.grad.shape != g.shape:
                return False
            if p.data_ptr() != self.data[o:].data_ptr():
                return False
        return True

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
) -> FlatParameters:
    """Move parameters into one contiguous buffer and their gradients into another.

    ``module_or_params``: a module (its trainable parameters, ``requires_grad=True``, in
    ``named_parameters()`` order; buffers such as BatchNorm statistics are left alone), or an
    iterable of parameters or of ``(name, parameter)`` pairs. All must share one dtype and device
    (ValueError otherwise).

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

    segments, offset = [], 0
    for p in params:
        segments.append((offset, p.numel()))
        offset += p.numel()
    data = torch.empty(offset, dtype=dtype, device=device)
    grad = torch.zeros(offset, dtype=dtype, device=device)
    for p, (o, n) in zip(params, segments):
        view = data[o : o + n].view(p.shape)
        view.copy_(p.data)
        grad_view = grad[o : o + n].view(p.shape)
        if p.grad is not None:
            grad_view.copy_(p.grad)
        p.data = view
        p.grad = grad_view
    return FlatParameters(params, names, data, grad, segments)
