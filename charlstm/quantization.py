"""int8 weights for fast CPU inference.

Batch-1 generation is memory-bound: every character reads all the LSTM weights once. Dynamic int8
quantization stores them in a quarter of the bytes and runs the matrix products on int8 instructions (VNNI),
with activations quantized on the fly, so nothing needs calibrating. Only the LSTM layers are quantized: the
output projection onto a vocabulary of ~100 characters is small, and at batch 1 its int8 version is slower than
fp32 (quantizing the activations costs more than the bytes it saves).

We use PyTorch's own dynamic quantization (`torch.ao.quantization.quantize_dynamic`) rather than torchao: torchao
quantizes `nn.Linear` only and has no CPU kernel for an LSTM, while `torch.ao` ships fused int8 LSTM and linear
kernels (fbgemm / x86) in the pinned torch. It is marked deprecated upstream, so when it is missing or the
platform has no int8 engine the model stays in fp32 with a warning instead of failing.
"""

import copy
import warnings

import torch
from torch import nn

INT8_ENGINES = ("x86", "fbgemm", "qnnpack")


def int8_engine() -> str | None:
    """The quantized engine this platform offers, or None where there is none."""
    supported = torch.backends.quantized.supported_engines
    return next((engine for engine in INT8_ENGINES if engine in supported), None)


def is_quantized(model: nn.Module) -> bool:
    return any(type(module).__module__.startswith("torch.ao.nn.quantized") for module in model.modules())


def quantize(model: nn.Module, inplace: bool = False) -> nn.Module:
    """
    Returns the model with int8 LSTM weights, for CPU inference. Generation, streaming and padding work as with
    fp32 weights; as activations are quantized with one scale per batch (and per sequence), a row of a batch
    matches the same row alone closely rather than bit for bit. Falls back to the unchanged fp32 model, with a
    warning, where int8 cannot run (no int8 engine, no `torch.ao.quantization`, a model not on the CPU).
    """
    if is_quantized(model):
        return model
    reason = _why_not_quantizable(model)
    if reason:
        warnings.warn(f"Keeping fp32 weights: {reason}", RuntimeWarning, stacklevel=2)
        return model
    torch.backends.quantized.engine = int8_engine()
    target = model if inplace else copy.deepcopy(model)
    target.eval()
    with warnings.catch_warnings():
        # The deprecation notice of torch.ao is ours to handle (see the module docstring), not the user's.
        warnings.simplefilter("ignore", DeprecationWarning)
        warnings.simplefilter("ignore", UserWarning)
        torch.ao.quantization.quantize_dynamic(target, {nn.LSTM}, dtype=torch.qint8, inplace=True)
    for module in target.modules():
        if isinstance(module, torch.ao.nn.quantized.dynamic.LSTM):
            module.int8_linears = _packed_linears(module)
    for module in target.modules():
        if hasattr(module, "prepare_int8_decoding"):  # the causal LM, also when loaded as remote code
            module.prepare_int8_decoding()
    return target


def _packed_linears(lstm: nn.Module) -> tuple:
    """
    A one-layer int8 LSTM's two packed matrix products (input and recurrent, biases included), repacked from the
    same int8 weights, for the model's decoding step: it runs them and the gate arithmetic as one compiled
    function (`modeling_charlstm.int8_decoding_step`) instead of the layer's kernel, which treats one character as
    a sequence. The copy costs a quarter of the fp32 weights' memory.
    """
    weights = lstm._weight_bias()
    return tuple(
        torch.ops.quantized.linear_prepack(weights["weight"][f"weight_{part}_l0"], weights["bias"][f"bias_{part}_l0"])
        for part in ("ih", "hh")
    )


def _why_not_quantizable(model: nn.Module) -> str | None:
    if int8_engine() is None:
        return "this platform has no int8 engine (torch.backends.quantized.supported_engines is empty)"
    if not hasattr(torch, "ao") or not hasattr(torch.ao.quantization, "quantize_dynamic"):
        return f"torch {torch.__version__} has no torch.ao.quantization.quantize_dynamic"
    device = next(model.parameters()).device
    if device.type != "cpu":
        return f"int8 dynamic quantization runs on the CPU only and the model is on {device}"
    return None
