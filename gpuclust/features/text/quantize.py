"""int8 on the CPU: dynamic quantisation of an encoder's linear layers.

`torch.ao.quantization.quantize_dynamic` stores a `nn.Linear` weight as int8 (one scale per output
channel) and quantises its input on the fly per batch; softmax, LayerNorm and the embeddings stay fp32.
Which layers: on all-MiniLM-L6-v2 quantising every linear layer kept a mean cosine of only 0.947 to
fp32 (per-tensor scales) or 0.975 (per-channel); the feed-forward layers, whose GELU outputs carry
large outliers, are what costs agreement, so only the attention projections (query, key, value,
output) are quantised: mean cosine 0.996, min 0.994 on 300 synthetic item titles. Models whose layer
names have no "attention" get every linear layer quantised. `benchmarks/int8_bench.py` measures
items/s, size, cosine agreement and the ARI of the clusters against fp32. torch marks `torch.ao.quantization` deprecated in
favour of torchao; it works in the torch this project pins (2.13), and this module is the one place to
change when it goes.
"""

from __future__ import annotations

import copy
import io
import warnings
from typing import Any

QUANTIZED = ("attention",)  # linear layers whose qualified name holds one of these are made int8


def quantize_int8(module: Any) -> Any:
    """An int8 copy of `module` (see above for which linear layers), in eval mode; the original stays."""
    import torch

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # torch.ao.quantization's notice of its move
        warnings.simplefilter("ignore", UserWarning)
        from torch.ao.quantization import per_channel_dynamic_qconfig, quantize_dynamic

        linear = [name for name, m in module.named_modules() if isinstance(m, torch.nn.Linear)]
        chosen = [name for name in linear if any(part in name for part in QUANTIZED)] or linear
        quantized = quantize_dynamic(copy.deepcopy(module).cpu().eval(),
                                     dict.fromkeys(chosen, per_channel_dynamic_qconfig), dtype=torch.qint8)
    return quantized.eval()


def quantized_layers(module: Any) -> int:
    """How many linear layers of `module` are int8."""
    return sum(1 for m in module.modules()
               if type(m).__module__.startswith("torch.ao.nn.quantized") and type(m).__name__ == "Linear")


def serialized_bytes(module: Any) -> int:
    """Size of the module's state dict as torch.save writes it: what a saved model file would weigh."""
    import torch

    buffer = io.BytesIO()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.save(module.state_dict(), buffer)
    return buffer.getbuffer().nbytes
