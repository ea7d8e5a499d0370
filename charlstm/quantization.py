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

The model file stays free of all this (it is what a `trust_remote_code` user downloads): `quantize` gives each
int8 layer its own one-character step (`character_step`) and the causal LM a whole decoding step
(`decoding_step`), both defined here, and the model calls them through those two attributes.
"""

import copy
import functools
import warnings
from typing import Optional

import torch
from torch import nn

from .modeling_charlstm import star_ratings
from .weights import check_finite_weights

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
    warning, where int8 cannot run (no int8 engine, no `torch.ao.quantization`, a model not on the CPU). Weights
    that are not all finite are a UsageError: int8 scales cannot be chosen for them.
    """
    if is_quantized(model):
        return model
    reason = _why_not_quantizable(model)
    if reason:
        warnings.warn(f"Keeping fp32 weights: {reason}", RuntimeWarning, stacklevel=2)
        return model
    check_finite_weights(model, getattr(model, "name_or_path", None) or "the model")
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
            module.character_step = Int8LayerStep.of(module)
    for module in target.modules():
        if hasattr(module, "decoding_step"):  # the causal LM, also when loaded as remote code (duck typing)
            prepare_int8_decoding(module)
    return target


def _why_not_quantizable(model: nn.Module) -> str | None:
    if int8_engine() is None:
        return "this platform has no int8 engine (torch.backends.quantized.supported_engines is empty)"
    if not hasattr(torch, "ao") or not hasattr(torch.ao.quantization, "quantize_dynamic"):
        return f"torch {torch.__version__} has no torch.ao.quantization.quantize_dynamic"
    device = next(model.parameters()).device
    if device.type != "cpu":
        return f"int8 dynamic quantization runs on the CPU only and the model is on {device}"
    return None


def prepare_int8_decoding(model: nn.Module) -> None:
    """
    Sets the causal LM's `decoding_step` to the whole int8 step, or to None unless every layer is an int8 layer
    from `quantize`. A model quantized any other way, or changed after quantizing, decodes layer by layer until
    this is called again.
    """
    packed = packed_layer_weights(model.model.layers)
    model.decoding_step = None if packed is None else Int8DecodingStep(
        packed, model.model.embeddings, model.lm_head, getattr(model.model, "star_embeddings", None),
        model.config.bos_token_id,
    )


class Int8LayerStep:
    """
    One character through one int8 layer (`lstm_step` calls it as the layer's `character_step`), from the layer's
    two packed matrix products (input and recurrent, biases included), repacked from the same int8 weights: the
    layer's own kernel treats one character as a sequence, at a cost. The copy costs a quarter of the fp32
    weights' memory.
    """

    def __init__(self, packed_ih, packed_hh):
        self.packed_ih = packed_ih
        self.packed_hh = packed_hh

    @classmethod
    def of(cls, lstm: nn.Module) -> "Int8LayerStep":
        unpacked = lstm._weight_bias()
        weights, biases = unpacked["weight"], unpacked["bias"]
        return cls(*(
            torch.ops.quantized.linear_prepack(weights[f"weight_{part}_l0"], biases[f"bias_{part}_l0"])
            for part in ("ih", "hh")
        ))

    def __call__(self, x: torch.Tensor, h: torch.Tensor, c: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return scripted(int8_lstm_cell)(x, h, c, self.packed_ih, self.packed_hh)


def packed_layer_weights(layers: nn.ModuleList) -> list | None:
    """Every layer's packed int8 products, in the order `int8_model_step` takes them; None unless all are int8."""
    steps = [getattr(layer, "character_step", None) for layer in layers]
    if not all(isinstance(step, Int8LayerStep) for step in steps):
        return None
    return [packed for step in steps for packed in (step.packed_ih, step.packed_hh)]


class Int8DecodingStep:
    """
    The causal LM's `decoding_step` for int8 weights: a whole one-character step, ids to logits, as one compiled
    function (`int8_model_step`), which updates the cache's h and c. With one torch thread it starts the next
    step's recurrent products early and keeps them here, with the hidden states they were started from: they are
    used only while the cache still holds those very tensors (beam search reorders it, another generation has its
    own), so the numbers are always those of the layer-by-layer path. A model with a rating input
    (`star_embeddings`) also carries the rating in force in the cache, as its own forward does.
    """

    def __init__(
        self,
        packed: list,
        embeddings: nn.Embedding,
        head: nn.Linear,
        star_embeddings: nn.Embedding | None = None,
        bos_token_id: int | None = None,
    ):
        self.packed = packed
        self.embeddings = embeddings.weight
        self.star_embeddings = None if star_embeddings is None else star_embeddings.weight
        self.bos_token_id = -1 if bos_token_id is None else bos_token_id
        with torch.no_grad():
            self.first_layer_inputs = int8_first_layer_inputs(
                first_layer_input_rows(self.embeddings, self.star_embeddings), packed[0]
            )
        self.head_weight = head.weight
        self.head_bias = head.bias
        # (future of the recurrent products, the hidden states they were started from), set in one assignment
        # so that generations running at once on other threads never pair one's products with another's state.
        self.early = None

    def recurrent_products_ready(self, hidden: list[torch.Tensor]):
        """The early recurrent products of every layer, if they were started from exactly these hidden states."""
        early = self.early
        if early is None:
            return None
        products, started_from = early
        if any(now is not then for now, then in zip(hidden, started_from)):
            return None
        return products

    def __call__(self, input_ids: torch.Tensor, cache) -> torch.Tensor:
        if self.star_embeddings is None:  # no rating input: the rows of the character table are all there is
            stars = torch.zeros(input_ids.shape[0], dtype=torch.long)
        else:
            stars = ratings_after(input_ids, incoming_stars(cache, input_ids.shape[0]), self.bos_token_id)
        logits, cache.hidden, cache.cell, products = scripted(int8_model_step)(
            input_ids, self.embeddings, self.first_layer_inputs, cache.hidden, cache.cell, self.packed,
            self.head_weight, self.head_bias, self.recurrent_products_ready(cache.hidden), starts_recurrent_early(),
            stars, self.star_embeddings,
        )
        if self.star_embeddings is not None:
            cache.stars = stars
        self.early = None if products is None else (products, tuple(cache.hidden))
        return logits

    def __getstate__(self):
        # Early products belong to a running generation, not to the model: a copy of the model starts without.
        return {**self.__dict__, "early": None}


def incoming_stars(cache, batch_size: int) -> torch.Tensor:
    """The rating each row of `cache` carries in (0 where it carries none), [batch] long."""
    stars = getattr(cache, "stars", None)
    return torch.zeros(batch_size, dtype=torch.long) if stars is None else stars


def ratings_after(input_ids: torch.Tensor, incoming: torch.Tensor, bos_token_id: int) -> torch.Tensor:
    """
    The rating in force after one character per row (input_ids [batch, 1]): a star token's own rating, 0 after
    `<bos>`, else the incoming one; the one-character case of the model's `ratings_in_force`.
    """
    ids = input_ids[:, 0]
    named = star_ratings(ids)
    kept = torch.where(ids == bos_token_id, torch.zeros_like(incoming), incoming)
    return torch.where(named > 0, named, kept)


def first_layer_input_rows(embeddings: torch.Tensor, star_embeddings: torch.Tensor | None) -> torch.Tensor:
    """
    Every input the first layer can receive, one row each: the characters alone, or with a rating input every
    (rating, character) pair, row `rating * vocab + character` [NUM_RATINGS * vocab, embedding + star_embedding].
    """
    if star_embeddings is None:
        return embeddings
    vocab, ratings = embeddings.shape[0], star_embeddings.shape[0]
    return torch.cat(
        [embeddings.repeat(ratings, 1), star_embeddings.repeat_interleave(vocab, dim=0)], dim=1
    )


def starts_recurrent_early() -> bool:
    """
    Whether `int8_model_step` should start the next step's recurrent products on another thread. Only with one
    torch thread: with more, the two tasks' thread teams fight over the cores.
    """
    return torch.get_num_threads() == 1


def int8_recurrent_products(
    hidden: list[torch.Tensor], packed: "list[torch.classes.quantized.LinearPackedParamsBase]"
) -> list[torch.Tensor]:
    """Every layer's recurrent product, as `int8_lstm_cell` computes it (`packed` as for `int8_model_step`)."""
    return [torch.ops.quantized.linear_dynamic(h, packed[2 * index + 1], True) for index, h in enumerate(hidden)]


def lstm_gates_to_state(gates: torch.Tensor, c: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The new `(h, c)` from a layer's summed gate pre-activations [batch, 4 * hidden], in place where it can be."""
    input_gate, forget_gate, cell_gate, output_gate = gates.unsafe_chunk(4, 1)
    c = (forget_gate.sigmoid_() * c).add_(input_gate.sigmoid_() * cell_gate.tanh_())
    return output_gate.sigmoid_() * c.tanh(), c


def int8_lstm_cell(
    x: torch.Tensor,
    h: torch.Tensor,
    c: torch.Tensor,
    packed_ih: "torch.classes.quantized.LinearPackedParamsBase",
    packed_hh: "torch.classes.quantized.LinearPackedParamsBase",
) -> tuple[torch.Tensor, torch.Tensor]:
    """
    One step of an int8 layer from its two packed products (biases included), in the order of the layer's own
    kernel (`torch.quantized_lstm`), so the state is the same to the bit. reduce_range=True: activations are
    quantized to 7 bits, as that kernel does.
    """
    recurrent = torch.ops.quantized.linear_dynamic(h, packed_hh, True)
    return lstm_gates_to_state(recurrent.add_(torch.ops.quantized.linear_dynamic(x, packed_ih, True)), c)


def int8_first_layer_inputs(
    embeddings: torch.Tensor, packed_ih: "torch.classes.quantized.LinearPackedParamsBase"
) -> torch.Tensor:
    """
    The first layer's input product of every input row (`first_layer_input_rows`) [rows, 4 * hidden_size], one
    row each, as `int8_lstm_cell` computes it for a character alone. It is the same at every step, so
    `int8_model_step` looks it up at batch 1 instead of computing it.
    """
    return torch.cat([torch.ops.quantized.linear_dynamic(row[None], packed_ih, True) for row in embeddings])


def int8_model_step(
    input_ids: torch.Tensor,
    embeddings: torch.Tensor,
    first_layer_inputs: torch.Tensor,
    hidden: list[torch.Tensor],
    cell: list[torch.Tensor],
    packed: "list[torch.classes.quantized.LinearPackedParamsBase]",
    head_weight: torch.Tensor,
    head_bias: torch.Tensor,
    early_recurrent: "Optional[torch.jit.Future[list[torch.Tensor]]]",
    start_next: bool,
    stars: torch.Tensor,
    star_embeddings: Optional[torch.Tensor],
) -> "tuple[torch.Tensor, list[torch.Tensor], list[torch.Tensor], Optional[torch.jit.Future[list[torch.Tensor]]]]":
    """
    A whole decoding step of an int8 model, one character per row (input_ids [batch, 1]), from character to
    logits. `packed` holds each layer's input and recurrent products in turn, `first_layer_inputs` the first
    layer's input product of every character, or of every (rating, character) pair with a rating input
    (`int8_first_layer_inputs`), `stars` [batch] the rating in force at this step. Returns the logits [batch, 1, vocab],
    the new hidden and cell states and, with `start_next`, the recurrent products for the next step, already
    running on another thread (`torch.jit.fork`). The numbers are those of `int8_lstm_cell` run layer by layer,
    to the bit.

    Why start them early: the recurrent products are most of the weights and depend only on the new state, not on
    the character sampled next. So they run while the sampling and generate's own work go on, and the next step
    finds them done (`early_recurrent`). Compiled as one function, the step also crosses from Python into torch
    once instead of a few dozen times.
    """
    if early_recurrent is None:
        recurrent = int8_recurrent_products(hidden, packed)
    else:
        recurrent = torch.jit.wait(early_recurrent)
    if input_ids.shape[0] == 1:
        x = first_layer_inputs.index_select(0, input_ids[:, 0] + stars * embeddings.shape[0])
    else:
        # Rows of a batch share one activation scale per product, which a table made row by row cannot know.
        characters = torch.nn.functional.embedding(input_ids[:, 0], embeddings)
        if star_embeddings is not None:
            characters = torch.cat([characters, torch.nn.functional.embedding(stars, star_embeddings)], dim=1)
        x = torch.ops.quantized.linear_dynamic(characters, packed[0], True)
    new_hidden: list[torch.Tensor] = []
    new_cell: list[torch.Tensor] = []
    for index in range(len(hidden)):
        if index > 0:
            x = torch.ops.quantized.linear_dynamic(x, packed[2 * index], True)
        x, c = lstm_gates_to_state(recurrent[index].add_(x), cell[index])
        new_hidden.append(x)
        new_cell.append(c)
    next_recurrent = torch.jit.fork(int8_recurrent_products, new_hidden, packed) if start_next else None
    return torch.nn.functional.linear(x, head_weight, head_bias).unsqueeze(1), new_hidden, new_cell, next_recurrent


@functools.cache
def scripted(function):
    """
    `function` compiled by TorchScript, which runs its small tensor ops without going back to Python between them.
    TorchScript is deprecated upstream in favour of `torch.compile`, which needs a C++ compiler and tens of seconds
    to compile; where TorchScript is gone or fails, the plain function gives the same numbers, only slower.
    """
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)
            return torch.jit.script(function)
    except Exception:  # any failure to compile leaves the plain function, which is correct
        return function
