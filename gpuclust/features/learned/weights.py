"""torch module weights <-> the arrays a saved model keeps (safetensors; no pickle)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from gpuclust.backend import to_torch

if TYPE_CHECKING:  # torch is imported where it is used: a CPU-only install starts fast
    import torch

PREFIX = "weights."


def module_arrays(module: torch.nn.Module) -> dict[str, Any]:
    """The module's state as float32/int tensors named `weights.<parameter>` (write_model takes them
    to the host)."""
    return {f"{PREFIX}{name}": value.detach().float().contiguous() if value.is_floating_point() else value.detach()
            for name, value in module.state_dict().items()}


def load_module_arrays(module: torch.nn.Module, arrays: dict[str, Any], device: str) -> torch.nn.Module:
    """Load `weights.*` arrays (NumPy or CuPy, as read from the model) into `module`, strictly:
    a missing or extra tensor, or a shape that does not fit, is an error."""
    state = {name[len(PREFIX):]: to_torch(array) for name, array in arrays.items() if name.startswith(PREFIX)}
    expected = module.state_dict()
    missing, extra = sorted(set(expected) - set(state)), sorted(set(state) - set(expected))
    if missing or extra:
        raise ValueError(f"saved weights do not fit the model: missing {missing[:3]}, unexpected {extra[:3]}")
    for name, value in state.items():
        if tuple(value.shape) != tuple(expected[name].shape):
            raise ValueError(f"saved weight {name} has shape {tuple(value.shape)}, the model {tuple(expected[name].shape)}")
    module.load_state_dict({k: v.to(device=device, dtype=expected[k].dtype) for k, v in state.items()})
    module.to(device)
    return module.eval()
