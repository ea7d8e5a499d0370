"""A character-level LSTM as `transformers` models: the bare stack, a causal LM head and a classification head.

Reads top to bottom like the library's own model files: cache, layer step, pre-trained base, outputs, bare model,
heads. This file travels to the Hub next to the weights, so its only local import is the (single-dot)
configuration; faster steps for quantized weights live with `charlstm.quantize`, which plugs them in.
"""

from dataclasses import dataclass

import torch
from safetensors import SafetensorError
from torch import nn
from torch.nn.utils.rnn import PackedSequence, pack_padded_sequence, pad_packed_sequence
from transformers import GenerationMixin, PreTrainedModel
from transformers import initialization as init
from transformers.utils import ModelOutput

from .configuration_charlstm import FIRST_STAR_TOKEN_ID, NUM_RATINGS, NUM_SPECIAL_TOKENS, CharLSTMConfig

# An n-gram's key: its character ids as base-NGRAM_BASE digits, its length as the top digit (ids stay below the base).
NGRAM_BASE = 1024
# What a character is to the word n-grams (`CharLSTMNgramScore.word_kinds`, one per id): a break between words (a
# space, a special token), part of a word, or a word by itself (punctuation and other symbols).
WORD_BREAK, WORD_CHARACTER, WORD_BY_ITSELF = 0, 1, 2
# A word's key folds its character ids, a word n-gram's its length and its words' keys, as digits of base
# WORD_KEY_BASE modulo WORD_KEY_MODULUS (both prime, so no bucket count, a power of two included, drops a digit).
WORD_KEY_BASE, WORD_KEY_MODULUS = 1_000_003, 2**61 - 1


class CharLSTMCache:
    """
    The recurrent state `(h, c)` of every layer after the last character seen, and the rating in force there
    (`stars`, 0 for none): the whole "cache" of an LSTM.

    `generate` hands it back to `forward` each step, which then reads only the newest character and updates the
    state in place. It is not a `transformers.Cache`: there is nothing to crop or slice, so it says it is linear
    (`generate` then never re-slices the prompt against a past length).
    """

    is_compileable = False
    is_croppable = False

    def __init__(
        self,
        hidden: list[torch.Tensor],
        cell: list[torch.Tensor],
        seen_tokens: int = 0,
        stars: torch.Tensor | None = None,
    ):
        self.hidden = hidden  # per layer: [batch, hidden_size]
        self.cell = cell  # per layer: [batch, hidden_size]
        self.seen_tokens = seen_tokens
        # [batch] long: the last star token's rating (1-5) in each row, 0 for none yet; None means all 0.
        self.stars = stars

    @classmethod
    def zeros(cls, config: CharLSTMConfig, batch_size: int, dtype: torch.dtype, device: torch.device):
        def state():
            return [torch.zeros(batch_size, size, dtype=dtype, device=device) for size in config.hidden_sizes]

        return cls(state(), state())

    @property
    def is_linear(self) -> list[bool]:
        return [True] * len(self.hidden)

    def __len__(self) -> int:
        return len(self.hidden)

    def get_seq_length(self, layer_idx: int = 0) -> int:
        return self.seen_tokens

    def reorder_cache(self, beam_idx: torch.LongTensor) -> None:
        """Beam search keeps the states of the surviving beams."""
        self.hidden = [h.index_select(0, beam_idx.to(h.device)) for h in self.hidden]
        self.cell = [c.index_select(0, beam_idx.to(c.device)) for c in self.cell]
        if self.stars is not None:
            self.stars = self.stars.index_select(0, beam_idx.to(self.stars.device))

    def incoming_stars(self, batch_size: int, device: torch.device) -> torch.Tensor:
        """The rating each row carries in, [batch] long."""
        if self.stars is None:
            return torch.zeros(batch_size, dtype=torch.long, device=device)
        return self.stars


def star_ratings(input_ids: torch.LongTensor) -> torch.LongTensor:
    """The rating each token names: 1-5 for the star tokens `<1star>`...`<5star>`, 0 for any other token."""
    is_star = (input_ids >= FIRST_STAR_TOKEN_ID) & (input_ids < FIRST_STAR_TOKEN_ID + NUM_RATINGS - 1)
    return torch.where(is_star, input_ids - (FIRST_STAR_TOKEN_ID - 1), 0)


def star_token_ids(ratings):
    """The id of the star token of each rating 1-5 (an int or a tensor): the inverse of `star_ratings`."""
    return ratings + FIRST_STAR_TOKEN_ID - 1


def ratings_in_force(input_ids: torch.LongTensor, incoming: torch.Tensor, bos_token_id: int | None) -> torch.Tensor:
    """
    The rating at every position [batch, length]: that of the last star token at or before it in the row, 0 from a
    `<bos>` on (a new review, no rating yet), else the rating the row carried in (`incoming`, [batch]). This is how
    a prompt such as `"<1star>The"` sets the rating of every character that follows it, without a separate input.
    """
    rating_here = star_ratings(input_ids)
    is_star = rating_here > 0
    is_reset = is_star if bos_token_id is None else is_star | (input_ids == bos_token_id)
    positions = torch.arange(input_ids.shape[1], device=input_ids.device).expand_as(input_ids)
    last_reset = torch.where(is_reset, positions, -1).cummax(dim=1).values
    from_row = rating_here.gather(1, last_reset.clamp(min=0))
    return torch.where(last_reset >= 0, from_row, incoming.unsqueeze(1))


def lstm_step(lstm: nn.Module, x: torch.Tensor, h: torch.Tensor, c: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """
    One character through one layer: x [batch, input_size], h and c [batch, hidden_size] -> the new (h, c).
    `torch.lstm_cell` on the layer's own weights skips the sequence machinery of `nn.LSTM`, which costs about half
    the time of a batch-1 step on CPU. A layer without such weights (`charlstm.quantize`) may carry its own
    `character_step(x, h, c)`; any other runs through its module.
    """
    if hasattr(lstm, "weight_ih_l0"):
        return torch.lstm_cell(x, (h, c), lstm.weight_ih_l0, lstm.weight_hh_l0, lstm.bias_ih_l0, lstm.bias_hh_l0)
    character_step = getattr(lstm, "character_step", None)
    if character_step is not None:
        return character_step(x, h, c)
    _, (h, c) = lstm(x.unsqueeze(1), (h.unsqueeze(0), c.unsqueeze(0)))
    return h[0], c[0]


class PaddedBatch:
    """
    Runs rows with padding anywhere (left, right or both) so that padding never touches the state.

    Each row's real characters are moved to the front and run as a packed sequence, which keeps the fused LSTM
    kernel and starts every row from its own incoming state. Outputs are then put back at the original positions;
    a padding position repeats the output of the last real character before it.
    """

    def __init__(self, mask: torch.Tensor):
        real = mask.bool()
        self.lengths = real.sum(dim=1)
        self.has_tokens = self.lengths > 0
        # Stable sort: real positions first, in their original order.
        self.order = torch.argsort((~real).to(torch.uint8), dim=1, stable=True)
        # 0 = no real character yet at this position (use the incoming state), k = the k-th real character.
        self.source = real.long().cumsum(dim=1)

    def pack(self, x: torch.Tensor) -> PackedSequence:
        compact = x.gather(1, self.order.unsqueeze(-1).expand(-1, -1, x.shape[-1]))
        # A row with no real character is packed with length 1 and its state restored afterwards.
        return pack_padded_sequence(compact, self.lengths.clamp(min=1).cpu(), batch_first=True, enforce_sorted=False)

    def unpack(self, packed: PackedSequence, incoming: torch.Tensor) -> torch.Tensor:
        compact, _ = pad_packed_sequence(packed, batch_first=True, total_length=self.source.shape[1])
        with_incoming = torch.cat([incoming.unsqueeze(1), compact], dim=1)
        return with_incoming.gather(1, self.source.unsqueeze(-1).expand(-1, -1, compact.shape[-1]))

    def keep_state(self, new: torch.Tensor, old: torch.Tensor) -> torch.Tensor:
        return torch.where(self.has_tokens.unsqueeze(-1), new, old)


def _identity(tensor: torch.Tensor) -> torch.Tensor:
    return tensor


class CharLSTMPreTrainedModel(PreTrainedModel):
    config_class = CharLSTMConfig
    config: CharLSTMConfig
    base_model_prefix = "model"
    main_input_name = "input_ids"
    _is_stateful = True
    _no_split_modules = []
    _supports_cache_class = False

    @classmethod
    def _supports_default_dynamic_cache(cls) -> bool:
        # The LSTM state is the cache: generate must not hand forward a DynamicCache of keys and values.
        return False

    @classmethod
    def from_pretrained(cls, pretrained_model_name_or_path, *args, **kwargs):
        """As the library's, but a corrupt or truncated weights file says so instead of a bare safetensors error."""
        try:
            return super().from_pretrained(pretrained_model_name_or_path, *args, **kwargs)
        except SafetensorError as error:
            raise OSError(
                f"The weights of {str(pretrained_model_name_or_path)!r} cannot be read: model.safetensors is corrupt "
                f"or truncated ({error}). Download or save the model again."
            ) from error

    def save_pretrained(self, save_directory, *args, **kwargs):
        """Refuses int8 models: their packed weights are no safetensors, and int8 is quick to redo after loading."""
        if any(type(module).__module__.startswith("torch.ao.nn.quantized") for module in self.modules()):
            raise ValueError(
                "This model has int8 weights for CPU inference, which cannot be saved. Save the fp32 model "
                "instead and quantize after loading (charlstm.quantize(model))."
            )
        return super().save_pretrained(save_directory, *args, **kwargs)

    @torch.no_grad()
    def _init_weights(self, module):
        if isinstance(module, nn.Embedding):
            # Unit-variance embeddings: the library default N(0, 0.02) made a char-LSTM stall near loss 3.0.
            init.normal_(module.weight, mean=0.0, std=1.0)
        elif isinstance(module, nn.LSTM):
            # PyTorch's own LSTM initialisation, expressed with the helpers that leave loaded weights alone.
            bound = module.hidden_size**-0.5
            for parameter in module.parameters():
                init.uniform_(parameter, -bound, bound)
        elif isinstance(module, nn.Linear):
            init.normal_(module.weight, mean=0.0, std=module.in_features**-0.5)
            if module.bias is not None:
                init.zeros_(module.bias)
        elif isinstance(module, CharLSTMNgramScore):
            init.zeros_(module.weight)  # no opinion until fitted
            init.ones_(module.idf)
            if module.word_kinds is not None:
                init.zeros_(module.word_kinds)  # no words until fitted
        elif isinstance(module, CharLSTMLikelihoodScore):
            init.zeros_(module.weight)
            init.zeros_(module.human_center)
            init.ones_(module.human_spread)
        elif isinstance(module, CharLSTMOwnSampleScore):
            init.zeros_(module.bias)
            init.constant_(module.gate_bias, -1.0)  # closed until fitted (its n-gram weights start at zero)


@dataclass
class CharLSTMOutput(ModelOutput):
    """
    last_hidden_state: top-layer output at every position; a padding position repeats the output of the last real
        character before it (or the incoming state if none came before).
    cache: the state after the last real character of each row, when `use_cache`.
    hidden_states: the embeddings and each layer's output, when `output_hidden_states`.
    """

    last_hidden_state: torch.FloatTensor | None = None
    cache: CharLSTMCache | None = None
    hidden_states: tuple[torch.FloatTensor, ...] | None = None


@dataclass
class CharLSTMCausalLMOutput(ModelOutput):
    loss: torch.FloatTensor | None = None
    logits: torch.FloatTensor | None = None
    cache: CharLSTMCache | None = None
    hidden_states: tuple[torch.FloatTensor, ...] | None = None


@dataclass
class CharLSTMSequenceClassifierOutput(ModelOutput):
    loss: torch.FloatTensor | None = None
    logits: torch.FloatTensor | None = None
    hidden_states: tuple[torch.FloatTensor, ...] | None = None


class CharLSTMModel(CharLSTMPreTrainedModel):
    """Character embeddings followed by one `nn.LSTM` per entry of `config.hidden_sizes`."""

    def __init__(self, config: CharLSTMConfig):
        super().__init__(config)
        self.embeddings = nn.Embedding(config.vocab_size, config.embedding_dim)
        # The rating (0 = none, 1-5) as an input of its own at every step, beside the character.
        self.star_embeddings = (
            nn.Embedding(NUM_RATINGS, config.star_embedding_dim) if config.star_embedding_dim else None
        )
        input_sizes = [config.first_layer_input_size, *config.hidden_sizes[:-1]]
        self.layers = nn.ModuleList(
            nn.LSTM(inputs, hidden, batch_first=True) for inputs, hidden in zip(input_sizes, config.hidden_sizes)
        )
        self.dropout = nn.Dropout(config.dropout)
        self.post_init()

    def get_input_embeddings(self) -> nn.Embedding:
        return self.embeddings

    def set_input_embeddings(self, value: nn.Embedding):
        self.embeddings = value

    def forward(
        self,
        input_ids: torch.LongTensor | None = None,
        attention_mask: torch.Tensor | None = None,
        cache: CharLSTMCache | None = None,
        use_cache: bool | None = None,
        inputs_embeds: torch.FloatTensor | None = None,
        output_hidden_states: bool | None = None,
        return_dict: bool | None = None,
        star_ids: torch.LongTensor | None = None,
        **kwargs,
    ) -> CharLSTMOutput | tuple:
        """
        `attention_mask` may be longer than the input (during `generate` it covers the whole text so far): its last
        `input_ids.shape[1]` columns belong to this input. `cache` is updated in place and returned. `star_ids`
        [batch, length] (0-5), when given, is the rating at each position instead of the one read from the star
        tokens (`ratings_in_force`): training blocks cut from inside a review hold no star token.
        """
        hidden, cache, hidden_states = self.run_layers(
            input_ids, attention_mask, cache, use_cache, inputs_embeds, output_hidden_states, star_ids
        )
        return_dict = return_dict if return_dict is not None else self.config.return_dict
        if not return_dict:
            return tuple(value for value in (hidden, cache, hidden_states) if value is not None)
        return CharLSTMOutput(last_hidden_state=hidden, cache=cache, hidden_states=hidden_states)

    def run_layers(
        self,
        input_ids: torch.LongTensor | None = None,
        attention_mask: torch.Tensor | None = None,
        cache: CharLSTMCache | None = None,
        use_cache: bool | None = None,
        inputs_embeds: torch.FloatTensor | None = None,
        output_hidden_states: bool | None = None,
        star_ids: torch.LongTensor | None = None,
    ) -> tuple[torch.Tensor, CharLSTMCache | None, tuple[torch.Tensor, ...] | None]:
        """
        `forward` without the output object: `(last_hidden_state, cache, hidden_states)`. The heads call this,
        since building a `ModelOutput` costs about as much as a whole LSTM step of a small model on CPU.
        """
        if (input_ids is None) == (inputs_embeds is None):
            raise ValueError("Pass exactly one of input_ids or inputs_embeds")
        if inputs_embeds is None:
            if input_ids.shape[-1] == 0:
                raise ValueError("input_ids is empty: give at least one token (the tokenizer adds <bos>)")
            inputs_embeds = self.embeddings(input_ids)
        use_cache = use_cache if use_cache is not None else (cache is not None or self.config.use_cache)
        if output_hidden_states is None:
            output_hidden_states = self.config.output_hidden_states
        batch_size, length = inputs_embeds.shape[:2]  # inputs_embeds: [batch, length, embedding_dim]

        padded = None
        if attention_mask is not None:
            mask = attention_mask[:, -length:]
            if not bool(mask.all()):
                padded = PaddedBatch(mask)
        # Only a plain multi-character run without a cache can let nn.LSTM start from its own zero state.
        if cache is None and (use_cache or length == 1 or padded is not None):
            cache = CharLSTMCache.zeros(self.config, batch_size, inputs_embeds.dtype, inputs_embeds.device)
        if self.star_embeddings is not None:
            stars = self.ratings(input_ids, star_ids, cache, batch_size, length, inputs_embeds.device)
            if cache is not None:
                cache.stars = stars[:, -1]
            inputs_embeds = torch.cat([inputs_embeds, self.star_embeddings(stars)], dim=-1)
        # Dropout is skipped outright outside training: even a no-op call costs time on the one-character path.
        dropout = self.dropout if self.training else _identity

        hidden = inputs_embeds
        all_hidden = [hidden] if output_hidden_states else None
        if length == 1 and padded is None:
            # One new character per row: the decoding step of generate.
            hidden = hidden[:, 0]  # [batch, embedding_dim]
            for index, lstm in enumerate(self.layers):
                h, c = lstm_step(lstm, hidden, cache.hidden[index], cache.cell[index])
                cache.hidden[index], cache.cell[index] = h, c
                hidden = dropout(h)
                if output_hidden_states:
                    all_hidden.append(hidden.unsqueeze(1))
            hidden = hidden.unsqueeze(1)  # [batch, 1, hidden_sizes[-1]]
        elif padded is None:
            for index, lstm in enumerate(self.layers):
                state = None if cache is None else (cache.hidden[index].unsqueeze(0), cache.cell[index].unsqueeze(0))
                # hidden: [batch, length, hidden_size]; h and c: [1, batch, hidden_size]
                hidden, (h, c) = lstm(hidden, state)
                hidden = dropout(hidden)
                if cache is not None:
                    cache.hidden[index], cache.cell[index] = h[0], c[0]
                if output_hidden_states:
                    all_hidden.append(hidden)
        else:
            packed = padded.pack(hidden)
            for index, lstm in enumerate(self.layers):
                incoming = cache.hidden[index]
                packed, (h, c) = lstm(packed, (incoming.unsqueeze(0), cache.cell[index].unsqueeze(0)))
                packed = packed._replace(data=dropout(packed.data))
                cache.hidden[index] = padded.keep_state(h[0], incoming)
                cache.cell[index] = padded.keep_state(c[0], cache.cell[index])
                if output_hidden_states:
                    all_hidden.append(padded.unpack(packed, incoming))
            hidden = all_hidden[-1] if output_hidden_states else padded.unpack(packed, incoming)

        if use_cache:
            cache.seen_tokens += length
        else:
            cache = None
        return hidden, cache, (tuple(all_hidden) if output_hidden_states else None)

    def ratings(self, input_ids, star_ids, cache, batch_size: int, length: int, device) -> torch.Tensor:
        """The rating at each position [batch, length]: `star_ids` when given, else read from the tokens."""
        if star_ids is not None:
            return star_ids[:, -length:].to(device=device, dtype=torch.long)
        incoming = (
            torch.zeros(batch_size, dtype=torch.long, device=device)
            if cache is None else cache.incoming_stars(batch_size, device)
        )
        if input_ids is None:
            return incoming.unsqueeze(1).expand(batch_size, length)
        return ratings_in_force(input_ids, incoming, self.config.bos_token_id)


class CharLSTMForCausalLM(CharLSTMPreTrainedModel, GenerationMixin):
    """Predicts the next character. `labels` are the input ids themselves; the shift happens inside."""

    _tied_weights_keys = {"lm_head.weight": "model.embeddings.weight"}

    def __init__(self, config: CharLSTMConfig):
        super().__init__(config)
        self.model = CharLSTMModel(config)
        self.lm_head = nn.Linear(config.hidden_sizes[-1], config.vocab_size)
        # None, or a faster whole step (input_ids [batch, 1], cache) -> logits [batch, 1, vocab] that updates the
        # cache's h and c, as `charlstm.quantize` sets for int8 weights. It must give the general path's numbers.
        self.decoding_step = None
        self.post_init()

    def get_output_embeddings(self) -> nn.Linear:
        return self.lm_head

    def prepare_inputs_for_generation(
        self,
        input_ids: torch.LongTensor,
        next_sequence_length: int | None = None,
        cache: CharLSTMCache | None = None,
        attention_mask: torch.Tensor | None = None,
        inputs_embeds: torch.FloatTensor | None = None,
        is_first_iteration: bool | None = False,
        **kwargs,
    ) -> dict:
        """
        An LSTM step needs the new characters, the state and the mask, nothing else. The library's version also
        builds position ids and attention-cache masks and inspects signatures on every step, which costs more
        than the LSTM step itself for a small model at batch 1.
        """
        if inputs_embeds is not None and is_first_iteration:
            return super().prepare_inputs_for_generation(
                input_ids, next_sequence_length, cache, attention_mask, inputs_embeds, is_first_iteration, **kwargs
            )
        if next_sequence_length is not None:
            input_ids = input_ids[:, -next_sequence_length:]
        if not is_first_iteration and cache is not None and input_ids.shape[1] == 1:
            # A character generate chose is never padding: without the mask, the step skips checking it.
            attention_mask = None
        kwargs.pop("labels", None)
        return {"input_ids": input_ids, "cache": cache, "attention_mask": attention_mask, **kwargs}

    def set_output_embeddings(self, value: nn.Linear):
        self.lm_head = value

    def _is_plain_decoding_step(self, input_ids, attention_mask, cache, use_cache, labels, output_hidden_states):
        """
        Whether this call is a plain decoding step, the only kind `decoding_step` runs: one character per row, a
        cache to carry on, no mask (generate passes none after the prompt), nothing extra to return.
        """
        if output_hidden_states is None:
            output_hidden_states = self.config.output_hidden_states
        return not (
            input_ids is None or input_ids.shape[1] != 1 or attention_mask is not None or cache is None
            or use_cache is False or labels is not None or output_hidden_states or self.training
        )

    def forward(
        self,
        input_ids: torch.LongTensor | None = None,
        attention_mask: torch.Tensor | None = None,
        cache: CharLSTMCache | None = None,
        use_cache: bool | None = None,
        inputs_embeds: torch.FloatTensor | None = None,
        labels: torch.LongTensor | None = None,
        output_hidden_states: bool | None = None,
        return_dict: bool | None = None,
        logits_to_keep: int = 0,
        star_ids: torch.LongTensor | None = None,
        **kwargs,
    ) -> CharLSTMCausalLMOutput | tuple:
        """
        `logits_to_keep=k` computes logits for the last k positions only (0 = all): `generate` asks for 1, which
        spares the projection of a long prompt. `labels` equal to -100 are ignored, as are padding positions.
        `star_ids` as for `CharLSTMModel.forward`.
        """
        return_dict = return_dict if return_dict is not None else self.config.return_dict
        if self.decoding_step is not None and self._is_plain_decoding_step(
            input_ids, attention_mask, cache, use_cache, labels, output_hidden_states
        ) and star_ids is None:
            logits = self.decoding_step(input_ids, cache)
            cache.seen_tokens += 1
            hidden_states = None
        else:
            hidden, cache, hidden_states = self.model.run_layers(
                input_ids, attention_mask, cache, use_cache, inputs_embeds, output_hidden_states, star_ids
            )
            if logits_to_keep:
                hidden = hidden[:, -logits_to_keep:]
            logits = self.lm_head(hidden)  # [batch, length, vocab]

        loss = None
        if labels is not None:
            if attention_mask is not None:
                labels = labels.masked_fill(attention_mask[:, -labels.shape[1] :] == 0, -100)
            loss = self.loss_function(logits, labels, vocab_size=self.config.vocab_size, **kwargs)
        if not return_dict:
            return tuple(value for value in (loss, logits, cache, hidden_states) if value is not None)
        return CharLSTMCausalLMOutput(loss=loss, logits=logits, cache=cache, hidden_states=hidden_states)


def ngram_buckets(
    input_ids: torch.LongTensor, attention_mask: torch.Tensor | None, buckets: int, max_n: int, word_max_n: int = 0,
    word_kinds: torch.Tensor | None = None
) -> list[torch.LongTensor]:
    """Per text, the buckets of the n-grams `CharLSTMNgramScore` counts (`character_ngram_buckets` with `max_n`,
    then `word_ngram_buckets` with `word_max_n`); a detector's head is fitted on the same."""
    parts = []
    if max_n:
        parts.append(character_ngram_buckets(input_ids, attention_mask, max_n, buckets))
    if word_max_n:
        parts.append(word_ngram_buckets(input_ids, attention_mask, word_kinds, word_max_n, buckets))
    return [torch.cat(keys) for keys in zip(*parts)]


def character_ngram_buckets(
    input_ids: torch.LongTensor, attention_mask: torch.Tensor | None, max_n: int, buckets: int
) -> list[torch.LongTensor]:
    """
    Per text, the hashed bucket of each of its character n-grams of 1 to `max_n` characters (none across a special
    token or padding).
    """
    ids = input_ids.long()
    real = real_characters(input_ids, attention_mask)
    gram, whole = ids, real
    per_length = []
    for n in range(1, max_n + 1):
        if n > 1:  # the n-gram ending here: the (n-1)-gram ending one character earlier, then this character
            gram = nn.functional.pad(gram[:, :-1], (1, 0)) * NGRAM_BASE + ids
            whole = nn.functional.pad(whole[:, :-1], (1, 0), value=False) & real
        per_length.append(((gram + n * NGRAM_BASE**n) % buckets, whole))
    return [torch.cat([keys[row][kept[row]] for keys, kept in per_length]) for row in range(ids.shape[0])]


def word_ngram_buckets(
    input_ids: torch.LongTensor, attention_mask: torch.Tensor | None, word_kinds: torch.Tensor, max_n: int,
    buckets: int
) -> list[torch.LongTensor]:
    """
    Per text, the hashed bucket of each of its word n-grams of 1 to `max_n` words, `word_kinds` saying what each
    character id is (`WORD_BREAK`, `WORD_CHARACTER`, `WORD_BY_ITSELF`; special tokens and padding break words).
    """
    kinds = word_kinds[input_ids.long()].masked_fill(~real_characters(input_ids, attention_mask), WORD_BREAK)
    per_text = []
    for ids, row_kinds in zip(input_ids.tolist(), kinds.tolist()):
        words, word = [], 0
        for character, kind in zip(ids, row_kinds):
            if kind == WORD_CHARACTER:
                word = (word * WORD_KEY_BASE + character) % WORD_KEY_MODULUS
                continue
            if word:
                words.append(word)
                word = 0
            if kind == WORD_BY_ITSELF:
                words.append(character)
        words += [word] if word else []
        keys = []
        for n in range(1, max_n + 1):
            for start in range(len(words) - n + 1):
                key = n
                for word in words[start : start + n]:
                    key = (key * WORD_KEY_BASE + word) % WORD_KEY_MODULUS
                keys.append(key % buckets)
        per_text.append(torch.tensor(keys, dtype=torch.long, device=input_ids.device))
    return per_text


def real_characters(input_ids: torch.LongTensor, attention_mask: torch.Tensor | None) -> torch.Tensor:
    """[batch, length]: True where a text's own character is (not a special token, not padding)."""
    real = input_ids >= NUM_SPECIAL_TOKENS
    if attention_mask is not None:
        real &= attention_mask[:, -input_ids.shape[1] :].bool()
    return real


class CharLSTMNgramScore(nn.Module):
    """
    Logits (`outputs` of them, by default one per label) from a text's character and word n-grams: counts per hashed
    bucket, weighted as TF-IDF (1 + log count, times the bucket's inverse document frequency `idf`, the vector scaled
    to unit length) and read by a linear map `weight`.
    """

    def __init__(self, config: CharLSTMConfig, outputs: int | None = None):
        super().__init__()
        self.max_n = config.ngram_max_n
        self.word_max_n = config.ngram_word_max_n
        self.weight = nn.Parameter(torch.zeros(outputs or config.num_labels, config.ngram_buckets))
        self.register_buffer("idf", torch.ones(config.ngram_buckets))
        # What each character id is to a word (WORD_BREAK...), set from the tokenizer's vocabulary when fitted.
        kinds = torch.zeros(config.vocab_size, dtype=torch.long) if self.word_max_n else None
        self.register_buffer("word_kinds", kinds)

    def count(self, input_ids: torch.LongTensor, attention_mask: torch.Tensor | None) -> list[torch.LongTensor]:
        """Per text, the bucket of each n-gram this head reads (what another head of the same config reads too)."""
        return ngram_buckets(input_ids, attention_mask, self.idf.numel(), self.max_n, self.word_max_n, self.word_kinds)

    def forward(self, input_ids: torch.LongTensor, attention_mask: torch.Tensor | None,
                counted: list[torch.LongTensor] | None = None) -> torch.Tensor:
        """`counted`: the texts' n-grams as `count` gives them, where another head has counted them already."""
        logits = []
        for keys in counted if counted is not None else self.count(input_ids, attention_mask):
            buckets, counts = torch.unique(keys, return_counts=True)
            values = (1 + counts.to(self.weight.dtype).log()) * self.idf[buckets]
            values = values / values.norm().clamp(min=1e-12)
            logits.append(self.weight[:, buckets] @ values)
        return torch.stack(logits)


def predicted_characters(input_ids: torch.LongTensor, attention_mask: torch.Tensor | None) -> torch.Tensor:
    """[batch, length - 1]: 1 where a real token is predicted from a real position (the statistics' characters)."""
    real = torch.ones_like(input_ids) if attention_mask is None else attention_mask[:, -input_ids.shape[1] :]
    return real[:, :-1] * real[:, 1:]


LIKELIHOOD_STATISTICS = ("log_prob_mean", "log_prob_std", "entropy_mean", "entropy_std", "top1_share",
                         "top3_share", "top10_share", "curvature")


def likelihood_statistics(
    logits: torch.Tensor, input_ids: torch.LongTensor, attention_mask: torch.Tensor | None
) -> torch.Tensor:
    """
    How a language model found each text [batch, LIKELIHOOD_STATISTICS], from its `logits` at every position: the
    mean and spread of its characters' log-probabilities and of the entropy before each, the share of characters
    among the model's 1, 3 and 10 likeliest, and Fast-DetectGPT's analytic curvature (the text's log-likelihood
    against what the model's own samples would score there, in their standard deviations).
    """
    predicting, targets = logits[:, :-1].double(), input_ids[:, 1:].unsqueeze(-1)
    log_probs = predicting.log_softmax(dim=-1)
    log_prob = log_probs.gather(-1, targets).squeeze(-1)
    probs = log_probs.exp()
    entropy = -(probs * log_probs).sum(-1)
    variance = (probs * log_probs.square()).sum(-1) - entropy.square()
    rank = (predicting > predicting.gather(-1, targets)).sum(-1) + 1
    kept = predicted_characters(input_ids, attention_mask).double()
    count = kept.sum(1).clamp(min=1)

    def mean(values):
        return (values * kept).sum(1) / count

    def spread(values):
        return (((values - mean(values).unsqueeze(1)) ** 2 * kept).sum(1) / (count - 1).clamp(min=1)).sqrt()

    curvature = ((log_prob + entropy) * kept).sum(1) / (variance * kept).sum(1).clamp(min=1e-12).sqrt()
    shares = [mean((rank <= top).double()) for top in (1, 3, 10)]
    return torch.stack([mean(log_prob), spread(log_prob), mean(entropy), spread(entropy), *shares, curvature], dim=1)


# The ratings `rating_gain` takes the best of: the best of 1, 3 and 5 stars tells the generator's samples from
# reviews as well as the best of all five (`scripts/probe_rating_gain.py --ratings`), in three passes instead of five.
GAIN_RATINGS = (1, 3, 5)


def log_probs_by_rating(
    model: "CharLSTMModel", lm_head: nn.Linear, input_ids: torch.LongTensor, attention_mask: torch.Tensor | None,
    ratings: tuple[int, ...] = GAIN_RATINGS,
) -> torch.Tensor:
    """
    The log-probability of each character of left-padded texts that start with `<bos>` (as the tokenizer writes
    them) once the generator is told each of `ratings`: read as `<bos><kstar>` and the text, as `generate` reads a
    rated prompt. [len(ratings), batch, length - 1], aligned with `likelihood_statistics`'s predictions (position j:
    the token at j + 1).
    """
    batch, length = input_ids.shape
    real = torch.ones_like(input_ids) if attention_mask is None else attention_mask[:, -length:]
    pad = torch.full((batch, 1), model.config.pad_token_id or 0, dtype=input_ids.dtype, device=input_ids.device)
    rated = torch.cat([pad, input_ids], dim=1)  # one more column: <bos> moves left, the star token takes its place
    mask = torch.cat([torch.zeros_like(pad), real], dim=1)
    rows = torch.arange(batch, device=input_ids.device)
    star_at = (rated == model.config.bos_token_id).int().argmax(dim=1).clamp(min=1)
    rated[rows, star_at - 1], mask[rows, star_at - 1] = model.config.bos_token_id, 1
    copies = len(ratings)
    rated = rated.repeat(copies, 1)  # every rating's copy in one batch: one pass of larger products is faster
    stars = star_token_ids(torch.tensor(ratings, dtype=rated.dtype, device=input_ids.device))
    copy_rows = torch.arange(copies * batch, device=input_ids.device)
    rated[copy_rows, star_at.repeat(copies)] = stars.repeat_interleave(batch)
    hidden = model.run_layers(rated, mask.repeat(copies, 1), None, False, None, False)[0]
    log_probs = lm_head(hidden[:, 1:-1]).log_softmax(dim=-1)  # predicting the original positions 1..length-1
    targets = input_ids[:, 1:].repeat(copies, 1).unsqueeze(-1)
    return log_probs.gather(-1, targets).squeeze(-1).view(copies, batch, length - 1)


def rating_gain(per_rating: torch.Tensor, logits: torch.Tensor, input_ids: torch.LongTensor,
                kept: torch.Tensor) -> torch.Tensor:
    """
    Per text [batch, 1]: how much better the generator explains its characters (those `kept`, [batch, length - 1])
    under the best of the ratings it was read with (`log_probs_by_rating`) than without one (`logits`, its unrated
    pass). A sample written for a rating is explained much better under it; a person's review less so.
    """
    unrated = logits[:, :-1].log_softmax(dim=-1).gather(-1, input_ids[:, 1:].unsqueeze(-1)).squeeze(-1)
    kept = kept.to(unrated.dtype)
    count = kept.sum(1).clamp(min=1)
    best = ((per_rating * kept).sum(-1) / count).max(dim=0).values
    return (best - (unrated * kept).sum(1) / count).unsqueeze(1)


class CharLSTMLikelihoodScore(nn.Module):
    """
    Logits from the generator's own view of a text: its language-model head on the top-layer states, the text's
    `likelihood_statistics` and their squared distances from human texts' (`human_center`, in units of
    `human_spread`: sampling moves a text's likelihood both ways from real text's), read by a linear map `weight`.
    `extra_statistics` more columns (e.g. the `rating_gain`) may be passed to `forward` beside them.
    """

    def __init__(self, config: CharLSTMConfig, extra_statistics: int = 0):
        super().__init__()
        self.lm_head = nn.Linear(config.hidden_sizes[-1], config.vocab_size)
        size = len(LIKELIHOOD_STATISTICS) + extra_statistics
        self.weight = nn.Parameter(torch.zeros(config.num_labels, 2 * size))
        self.register_buffer("human_center", torch.zeros(size))
        self.register_buffer("human_spread", torch.ones(size))

    def forward(self, hidden: torch.Tensor, input_ids: torch.LongTensor, attention_mask: torch.Tensor | None,
                extra: torch.Tensor | None = None):
        return self.read(self.lm_head(hidden), input_ids, attention_mask, extra)

    def read(self, lm_logits: torch.Tensor, input_ids: torch.LongTensor, attention_mask: torch.Tensor | None,
             extra: torch.Tensor | None = None):
        """`forward` from the LM head's logits, for a caller that needs them too."""
        statistics = likelihood_statistics(lm_logits, input_ids, attention_mask)
        if extra is not None:
            statistics = torch.cat([statistics, extra.double()], dim=1)
        distances = ((statistics - self.human_center) / self.human_spread) ** 2
        return (torch.cat([statistics, distances], dim=1) @ self.weight.T.double()).to(lm_logits.dtype)


class CharLSTMOwnSampleScore(nn.Module):
    """
    A two-way classifier's view for the generator's own samples: a `CharLSTMLikelihoodScore` (plus `bias`) fitted on
    them against human texts of the generator's domain only, so it is trusted only where `gate`, reading the text's
    n-grams (plus `gate_bias`), is above 0 (the text is of that domain: its words say so even where a hot
    sample's states do not); there its logits replace the others' where its machine margin (second logit minus first)
    is the larger. Of a generator conditioned on ratings it also reads the `rating_gain`, which costs a pass of the
    LSTM per rating in GAIN_RATINGS over the gated texts.
    """

    def __init__(self, config: CharLSTMConfig):
        super().__init__()
        if config.num_labels != 2:
            raise ValueError(f"own_sample_score needs a two-way classifier (human, machine), got {config.num_labels} "
                             "labels")
        self.reads_rating_gain = bool(config.conditioned_on_stars)
        self.likelihood = CharLSTMLikelihoodScore(config, extra_statistics=int(self.reads_rating_gain))
        self.bias = nn.Parameter(torch.zeros(config.num_labels))
        self.gate = CharLSTMNgramScore(config, outputs=1)
        self.gate_bias = nn.Parameter(torch.zeros(1))

    def forward(self, logits: torch.Tensor, hidden: torch.Tensor, input_ids: torch.LongTensor,
                attention_mask: torch.Tensor | None, model: "CharLSTMModel",
                counted: list[torch.LongTensor] | None = None) -> torch.Tensor:
        gate = self.gate(input_ids, attention_mask, counted).squeeze(-1)
        rows = (gate + self.gate_bias > 0).nonzero().squeeze(1)
        if len(rows) == 0:
            return logits
        ids, lm_logits = input_ids[rows], self.likelihood.lm_head(hidden[rows])
        mask = None if attention_mask is None else attention_mask[rows]
        gain = None
        if self.reads_rating_gain:
            gain = rating_gain(log_probs_by_rating(model, self.likelihood.lm_head, ids, mask), lm_logits, ids,
                               predicted_characters(ids, mask))
        own = self.likelihood.read(lm_logits, ids, mask, gain) + self.bias
        stronger = own[:, 1] - own[:, 0] > logits[rows, 1] - logits[rows, 0]
        logits = logits.clone()
        logits[rows] = torch.where(stronger.unsqueeze(-1), own, logits[rows])
        return logits


class CharLSTMForSequenceClassification(CharLSTMPreTrainedModel):
    """
    Classifies a whole text from the top-layer states (`config.classifier_pooling`): the state at its last real
    character, which is simply the last position for left and right padding alike (padding positions repeat the
    last real output), or the mean over its real characters.
    """

    # The classification loss is a plain mean that ignores `num_items_in_batch`: this tells Trainer so, or
    # gradient accumulation would scale the gradients wrongly.
    accepts_loss_kwargs = False

    def __init__(self, config: CharLSTMConfig):
        super().__init__(config)
        self.num_labels = config.num_labels
        self.model = CharLSTMModel(config)
        self.dropout = nn.Dropout(config.classifier_dropout)
        self.score = nn.Linear(config.hidden_sizes[-1], config.num_labels)
        self.ngrams = CharLSTMNgramScore(config) if config.ngram_buckets else None
        self.likelihood = CharLSTMLikelihoodScore(config) if config.likelihood_features else None
        self.own_samples = CharLSTMOwnSampleScore(config) if config.own_sample_score else None
        self.post_init()

    def forward(
        self,
        input_ids: torch.LongTensor | None = None,
        attention_mask: torch.Tensor | None = None,
        inputs_embeds: torch.FloatTensor | None = None,
        labels: torch.LongTensor | None = None,
        output_hidden_states: bool | None = None,
        return_dict: bool | None = None,
        **kwargs,
    ) -> CharLSTMSequenceClassifierOutput | tuple:
        return_dict = return_dict if return_dict is not None else self.config.return_dict
        reads_characters = self.ngrams is not None or self.likelihood is not None or self.own_samples is not None
        if reads_characters and input_ids is None:
            raise ValueError("this classifier also reads the text's characters themselves: pass input_ids, "
                             "not embeddings")
        hidden, _, hidden_states = self.model.run_layers(
            input_ids, attention_mask, None, False, inputs_embeds, output_hidden_states
        )
        if self.config.classifier_pooling == "mean":
            real = torch.ones(hidden.shape[:2], device=hidden.device) if attention_mask is None else attention_mask
            real = real[:, -hidden.shape[1] :].unsqueeze(-1).to(hidden.dtype)
            pooled = (hidden * real).sum(dim=1) / real.sum(dim=1).clamp(min=1)
        else:
            pooled = hidden[:, -1]
        logits = self.score(self.dropout(pooled))
        counted = None  # the text's n-grams, counted once for the n-gram head and the own-sample gate (same config)
        if self.ngrams is not None:
            counted = self.ngrams.count(input_ids, attention_mask)
            logits = logits + self.ngrams(input_ids, attention_mask, counted)
        if self.likelihood is not None:
            logits = logits + self.likelihood(hidden, input_ids, attention_mask)
        if self.own_samples is not None:
            logits = self.own_samples(logits, hidden, input_ids, attention_mask, self.model, counted)
        loss = None
        if labels is not None:
            loss = self.loss_function(labels=labels, pooled_logits=logits, config=self.config)
        if not return_dict:
            return tuple(value for value in (loss, logits, hidden_states) if value is not None)
        return CharLSTMSequenceClassifierOutput(loss=loss, logits=logits, hidden_states=hidden_states)


__all__ = [
    "CharLSTMCache",
    "CharLSTMModel",
    "CharLSTMPreTrainedModel",
    "CharLSTMForCausalLM",
    "CharLSTMForSequenceClassification",
]
