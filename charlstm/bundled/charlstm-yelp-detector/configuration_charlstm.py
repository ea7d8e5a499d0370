"""Configuration of the character-level LSTM (`model_type = "charlstm"`).

This file travels to the Hub next to the weights, so it imports nothing from the `charlstm` package.
"""

from transformers import PreTrainedConfig

# Where the Auto classes find each class when the code files travel with the weights (trust_remote_code). The
# library only writes entries for the classes actually saved, so the full map is set here for every config.
AUTO_MAP = {
    "AutoConfig": "configuration_charlstm.CharLSTMConfig",
    "AutoModel": "modeling_charlstm.CharLSTMModel",
    "AutoModelForCausalLM": "modeling_charlstm.CharLSTMForCausalLM",
    "AutoModelForSequenceClassification": "modeling_charlstm.CharLSTMForSequenceClassification",
}

# Number of special tokens the tokenizer always puts first: pad, bos, eos, unk and one token per star rating.
NUM_SPECIAL_TOKENS = 9
# The tokenizer's <1star>..<5star> are ids 4..8: the model reads ratings from them without a tokenizer.
FIRST_STAR_TOKEN_ID = 4
# Index 0 of the rating input means "no rating"; 1-5 are the star ratings.
NUM_RATINGS = 6
CLASSIFIER_POOLINGS = ("last", "mean")


class CharLSTMConfig(PreTrainedConfig):
    r"""
    A stack of LSTM layers over character embeddings.

    Args:
        vocab_size: number of tokens (special tokens plus characters); `len(tokenizer)`.
        embedding_dim: size of the character embedding fed to the first layer.
        hidden_sizes: one hidden size per LSTM layer; sizes may differ between layers. `[1024, 512]` is the
            two-layer model of the IBM "generate fake reviews" code pattern.
        dropout: dropout applied to the output of every LSTM layer during training.
        tie_word_embeddings: share the output projection with the input embedding; needs
            `hidden_sizes[-1] == embedding_dim`.
        conditioned_on_stars: whether the model was trained with a star-rating token at the start of each review.
        star_embedding_dim: size of a rating embedding concatenated to every character's embedding before the
            first layer (0: none). The rating in force is the last star token seen, so a review's rating reaches
            every character rather than only those within reach of its star token (Lipton et al. 2015's
            Generative Concatenative Network). 0 keeps models saved before the field loading unchanged.
        star_shares: the share of each rating 1-5 among the training reviews (None: unknown, taken as uniform):
            the prior from which a review asked for no rating draws one, and of `charlstm rate --prior training`.
        classifier_dropout: dropout before the classification head of `CharLSTMForSequenceClassification`.
        classifier_pooling: what that head reads: `"last"`, the top-layer state at the last real character, or
            `"mean"`, the mean of the top-layer states over all real characters, which gathers evidence from the
            whole text instead of relying on the state to carry it to the end.
        ngram_buckets: the classification head also reads the text's n-grams (character n-grams of 1 to
            `ngram_max_n` characters and word n-grams of 1 to `ngram_word_max_n` words), hashed into this many
            buckets, weighted as TF-IDF (sublinear counts, l2-normalised) and scored by a linear layer whose logits
            add to the pooled state's (0: none). A frozen generator's states and the n-grams err on different
            texts: together they transfer to unseen generators better than either.
        ngram_max_n: the longest character n-gram counted (0: none).
        ngram_word_max_n: the longest word n-gram counted (0: none). A word is a run of letters, digits and
            underscores; every other character but a space is a word of its own. Word pairs carry phrasing that large
            language models share across families, beyond the reach of short character n-grams.
        likelihood_features: the classification head also reads how the generator's own language-model head finds
            the text (per-character log-probabilities, entropy, ranks, Fast-DetectGPT's curvature): what catches the
            generator's own samples best.
        own_sample_score: the two-way classification head also has a head for the generator's own samples alone:
            its likelihood view fitted against human texts of its domain only, read where a gate on the text's
            n-grams (so it needs `ngram_buckets`) says a text is of that domain, and there taking over the machine
            margin where it is the larger.
        detection: a detector's decision (threshold, uncertain band, calibration, what it was tested on), as
            `charlstm.detection.decision.DetectorDecision` reads and writes it; None for a generator. Kept in the
            config so that every way of loading the detector gives the same verdict.
    """

    model_type = "charlstm"

    def __init__(
        self,
        vocab_size: int = 128,
        embedding_dim: int = 64,
        hidden_sizes: list[int] | None = None,
        dropout: float = 0.0,
        tie_word_embeddings: bool = False,
        conditioned_on_stars: bool = False,
        star_embedding_dim: int = 0,
        star_shares: list[float] | None = None,
        classifier_dropout: float = 0.1,
        classifier_pooling: str = "last",
        ngram_buckets: int = 0,
        ngram_max_n: int = 4,
        ngram_word_max_n: int = 0,
        likelihood_features: bool = False,
        own_sample_score: bool = False,
        detection: dict | None = None,
        pad_token_id: int | None = 0,
        bos_token_id: int | None = 1,
        eos_token_id: int | None = 2,
        use_cache: bool = True,
        **kwargs,
    ):
        self.vocab_size = vocab_size
        self.embedding_dim = embedding_dim
        self.hidden_sizes = list(hidden_sizes) if hidden_sizes is not None else [256, 256]
        self.dropout = dropout
        self.tie_word_embeddings = tie_word_embeddings
        self.conditioned_on_stars = conditioned_on_stars
        self.star_embedding_dim = star_embedding_dim
        self.star_shares = list(star_shares) if star_shares is not None else None
        self.classifier_dropout = classifier_dropout
        self.classifier_pooling = classifier_pooling
        self.ngram_buckets = ngram_buckets
        self.ngram_max_n = ngram_max_n
        self.ngram_word_max_n = ngram_word_max_n
        self.likelihood_features = likelihood_features
        self.own_sample_score = own_sample_score
        self.detection = detection
        self.pad_token_id = pad_token_id
        self.bos_token_id = bos_token_id
        self.eos_token_id = eos_token_id
        self.use_cache = use_cache
        self._check()
        # The lexicon head is retired: configs saved before without one still load; a detector that had one cannot.
        if kwargs.pop("lexicon_size", 0):
            raise ValueError("this detector has a lexicon head, which this version of charlstm no longer has: "
                             "calibrate the detector it was made from again without a lexicon")
        kwargs["auto_map"] = {**AUTO_MAP, **(kwargs.get("auto_map") or {})}
        super().__init__(**kwargs)

    def _check(self):
        """Refuse combinations that would only fail later, deep inside torch, with a message naming the field."""
        if not isinstance(self.vocab_size, int) or self.vocab_size < NUM_SPECIAL_TOKENS:
            raise ValueError(
                f"vocab_size must be an integer >= {NUM_SPECIAL_TOKENS} (the special tokens), got {self.vocab_size!r}"
            )
        if not isinstance(self.embedding_dim, int) or self.embedding_dim < 1:
            raise ValueError(f"embedding_dim must be a positive integer, got {self.embedding_dim!r}")
        if not self.hidden_sizes:
            raise ValueError("hidden_sizes must name at least one LSTM layer, got an empty list")
        if not all(isinstance(size, int) and size >= 1 for size in self.hidden_sizes):
            raise ValueError(f"hidden_sizes must be positive integers, got {self.hidden_sizes!r}")
        if not 0.0 <= self.dropout < 1.0:
            raise ValueError(f"dropout must be in [0, 1), got {self.dropout!r}")
        if not 0.0 <= self.classifier_dropout < 1.0:
            raise ValueError(f"classifier_dropout must be in [0, 1), got {self.classifier_dropout!r}")
        if self.classifier_pooling not in CLASSIFIER_POOLINGS:
            raise ValueError(
                f"classifier_pooling must be one of {', '.join(CLASSIFIER_POOLINGS)}, got {self.classifier_pooling!r}"
            )
        if not isinstance(self.ngram_buckets, int) or self.ngram_buckets < 0:
            raise ValueError(f"ngram_buckets must be a non-negative integer, got {self.ngram_buckets!r}")
        if not isinstance(self.ngram_max_n, int) or not 0 <= self.ngram_max_n <= 6:  # keys fit in 64 bits
            raise ValueError(f"ngram_max_n must be an integer from 0 to 6, got {self.ngram_max_n!r}")
        if not isinstance(self.ngram_word_max_n, int) or not 0 <= self.ngram_word_max_n <= 3:
            raise ValueError(f"ngram_word_max_n must be an integer from 0 to 3, got {self.ngram_word_max_n!r}")
        if self.ngram_buckets and not self.ngram_max_n and not self.ngram_word_max_n:
            raise ValueError("ngram_buckets: set ngram_max_n or ngram_word_max_n, or there are no n-grams to count")
        if self.own_sample_score and not self.ngram_buckets:
            raise ValueError("own_sample_score's gate reads the text's n-grams: set ngram_buckets too")
        if not isinstance(self.star_embedding_dim, int) or self.star_embedding_dim < 0:
            raise ValueError(f"star_embedding_dim must be a non-negative integer, got {self.star_embedding_dim!r}")
        if self.star_shares is not None and (
            len(self.star_shares) != NUM_RATINGS - 1 or min(self.star_shares) < 0 or sum(self.star_shares) <= 0
        ):
            raise ValueError(
                f"star_shares must be 5 non-negative numbers with a positive sum, got {self.star_shares!r}"
            )
        if self.tie_word_embeddings and self.hidden_sizes[-1] != self.embedding_dim:
            raise ValueError(
                "tie_word_embeddings needs hidden_sizes[-1] == embedding_dim, "
                f"got hidden_sizes[-1]={self.hidden_sizes[-1]} and embedding_dim={self.embedding_dim}"
            )
        for name in ("pad_token_id", "bos_token_id", "eos_token_id"):
            value = getattr(self, name)
            if value is not None and not (isinstance(value, int) and 0 <= value < self.vocab_size):
                raise ValueError(f"{name} must be None or an id below vocab_size={self.vocab_size}, got {value!r}")

    @property
    def first_layer_input_size(self) -> int:
        """The character embedding and the rating embedding side by side."""
        return self.embedding_dim + self.star_embedding_dim

    @property
    def num_layers(self) -> int:
        return len(self.hidden_sizes)
