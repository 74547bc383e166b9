"""The frozen prefix of a forward pass: the modules whose outputs cannot depend on the parameters in scope.

When only some parameters are in scope (the text demo: the last of six layers + head), the modules before
them compute the same outputs whatever the in-scope parameters are. Which modules qualify is found by
autograd, not by name: with the in-scope parameters requiring grad, a module qualifies when it holds no
in-scope parameter and neither its tensor inputs nor its outputs require grad; the outermost such modules
form the prefix. Their outputs are computed once and handed back, in call order, by stand-ins: per-example
Fishers run the prefix once per batch without grad and differentiate only the rest (analysis.fisher),
perturbations record it once at θ₀ (analysis.perturb.prefix).
"""
from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable

import torch
from torch import nn
from torch.func import functional_call

from analysis.parameters import private_view

CHECK_RTOL, CHECK_ATOL = 1e-4, 1e-5  # logits with the prefix replayed vs run in full must agree this closely


def map_tensors(obj, fn: Callable[[torch.Tensor], object]):
    """obj with fn applied to every tensor of a nested output (tensor, tuple, list, dict, transformers
    ModelOutput), in a fixed order; other values as they are."""
    if isinstance(obj, torch.Tensor):
        return fn(obj)
    if isinstance(obj, tuple):
        items = [map_tensors(item, fn) for item in obj]
        return tuple(items) if type(obj) is tuple else type(obj)(*items)
    if isinstance(obj, list):
        return [map_tensors(item, fn) for item in obj]
    if isinstance(obj, dict):
        items = {key: map_tensors(value, fn) for key, value in obj.items()}
        return items if type(obj) is dict else type(obj)(**items)
    return obj


def tensor_leaves(obj) -> list[torch.Tensor]:
    """The tensors of a nested output, in map_tensors order."""
    found: list[torch.Tensor] = []
    map_tensors(obj, found.append)
    return found


def frozen_modules(module: nn.Module, tensors: dict[str, torch.Tensor], in_scope: list[str] | tuple[str, ...],
                   batch) -> list[str]:
    """Dotted names of the outermost submodules whose outputs cannot depend on the in-scope parameters.

    `tensors` holds the module's parameters and buffers by name (functional_call), `batch` is one forward
    pass's input: a small one does (its outputs are not kept).
    """
    scope = set(in_scope)
    theta = {name: tensors[name].detach().requires_grad_(True) for name in scope}
    view = private_view(module)
    depends: dict[str, bool] = {}

    def hook(name: str):
        def record(_module, args, kwargs, output) -> None:
            found = tensor_leaves(output)
            moved = not found or any(t.requires_grad for t in tensor_leaves((args, kwargs)) + found)
            depends[name] = depends.get(name, False) or moved
        return record

    handles = [sub.register_forward_hook(hook(name), with_kwargs=True) for name, sub in view.named_modules() if name]
    try:
        with torch.enable_grad():
            functional_call(view, tensors | theta, (batch,))
    finally:
        for handle in handles:
            handle.remove()
    frozen = [name for name, moved in depends.items()
              if not moved and not any(p.startswith(name + ".") for p in scope)]
    return [name for name in frozen if not any(name.startswith(other + ".") for other in frozen)]


def holds_parameters(module: nn.Module, frozen: list[str]) -> bool:
    """Whether some frozen module holds parameters, i.e. replaying the prefix skips real work."""
    return any(next(module.get_submodule(name).parameters(), None) is not None for name in frozen)


class _StandIn(nn.Module):
    """Stands in for a frozen module: returns the output its source hands out for this call. Other attributes
    are the replaced module's (a forward may read e.g. its weight's dtype), which is not a child: its tensors
    are not the view's."""

    def __init__(self, name: str, source, replaced: nn.Module):
        super().__init__()
        self.name, self.source = name, source
        object.__setattr__(self, "_replaced", replaced)

    def __getattr__(self, attr: str):
        try:
            return super().__getattr__(attr)
        except AttributeError:
            return getattr(object.__getattribute__(self, "_replaced"), attr)

    def forward(self, *args, **kwargs):
        return self.source.next_output(self.name)


def suffix_view(module: nn.Module, frozen: list[str], source) -> nn.Module:
    """A private view of `module` whose frozen modules are stand-ins returning `source.next_output(name)`."""
    view = private_view(module)
    for name in frozen:
        parent, _, child = name.rpartition(".")
        view.get_submodule(parent)._modules[child] = _StandIn(name, source, view.get_submodule(name))
    return view


class Outputs:
    """Outputs of the frozen modules in one forward pass, handed out to the stand-ins in call order."""

    def __init__(self) -> None:
        self.outputs: dict[str, list] | None = None  # module -> its outputs in call order
        self._calls: dict[str, int] = defaultdict(int)

    def serve(self, outputs: dict[str, list] | None) -> None:
        """Hand out `outputs` from their first call on (None: stop serving)."""
        self.outputs, self._calls = outputs, defaultdict(int)

    def next_output(self, name: str):
        if self.outputs is None:
            raise RuntimeError(f"frozen module '{name}' was called outside a replayed forward pass")
        call = self._calls[name]
        self._calls[name] += 1
        return self.outputs[name][call]


class _Recorded(Exception):
    """Ends a recording forward pass once the last frozen module has returned."""


def record_outputs(module: nn.Module, tensors: dict[str, torch.Tensor], frozen: list[str], batch,
                   stop_after: int | None = None) -> tuple[object, dict[str, list]]:
    """One forward pass without grad: its output and each frozen module's outputs, in call order.

    With stop_after, the pass ends after that many frozen-module calls (the rest is not run; output None).
    """
    view = private_view(module)
    outputs: dict[str, list] = defaultdict(list)

    def keep(name: str, output) -> None:
        outputs[name].append(output)
        if stop_after is not None and sum(len(v) for v in outputs.values()) == stop_after:
            raise _Recorded

    handles = [view.get_submodule(name).register_forward_hook(
        lambda _module, _args, output, name=name: keep(name, output)) for name in frozen]
    try:
        with torch.no_grad():
            result = functional_call(view, tensors, (batch,))
    except _Recorded:
        result = None
    finally:
        for handle in handles:
            handle.remove()
    return result, dict(outputs)


def suffix_tensors(view: nn.Module, tensors: dict[str, torch.Tensor], model: nn.Module) -> dict[str, torch.Tensor]:
    """`tensors` (named as in `model`) under the names a suffix view gives them, those the view still holds:
    found by identity, so a weight tied to a replayed module's (a GPT-2 head's) comes under its own name."""
    by_id = {id(t): tensors[name] for name, t in [*model.named_parameters(), *model.named_buffers()] if name in tensors}
    return {name: by_id[id(t)] for name, t in [*view.named_parameters(), *view.named_buffers()] if id(t) in by_id}
