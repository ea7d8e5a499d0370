"""What the frozen generator gives of a text in one pass, and the heads a frozen detector fits on it.

The generator's LSTM is frozen; each text goes through it once, and what it gives is kept: the mean of the top
layer's states (what `CharLSTMForSequenceClassification` with `classifier_pooling="mean"` reads), the mean of every
layer's states, and the generator's view of the text (how likely it found each character, its entropy and ranks,
Fast-DetectGPT's analytic curvature). A logistic regression on such features trains in seconds, so many variants
can be measured (`scripts/ablate_detectors.py`). The heads here are what a frozen detector is made of
(`charlstm.detection.frozen`): a regression on the top layer's mean (the model's `score` layer), one on the text's
hashed character and word n-grams (`NgramHead`, the model's `CharLSTMNgramScore`) and one on the likelihood statistics
(`LikelihoodHead`, the model's `CharLSTMLikelihoodScore`), averaged (`StackedHead`), and one for the generator's own
samples alone (`OwnSampleHead`, the model's `CharLSTMOwnSampleScore`).
"""

from collections.abc import Collection
from dataclasses import dataclass, field, replace

import numpy as np
import torch

from ..errors import UsageError
from ..modeling_charlstm import (
    GAIN_RATINGS,
    LIKELIHOOD_STATISTICS,
    NUM_SPECIAL_TOKENS,
    WORD_BREAK,
    WORD_BY_ITSELF,
    WORD_CHARACTER,
    likelihood_statistics,
    log_probs_by_rating,
    ngram_buckets,
    predicted_characters,
    rating_gain,
)
from ..tokenization_charlstm import normalize_text
from .calibration import fit_logistic


@dataclass
class FrozenFeatures:
    """Per crop length, one row per text (NaN where the text is shorter than the length): `top` the mean top-layer
    state [texts, hidden], `layers` the mean state of the embedding and every layer side by side, `likelihood` the
    LIKELIHOOD_STATISTICS of the text's first `length` characters, `gain` their `rating_gain` [texts, 1] (NaN too
    where not asked for; None when asked for no text's)."""

    top: dict[int, np.ndarray]
    layers: dict[int, np.ndarray]
    likelihood: dict[int, np.ndarray]
    gain: dict[int, np.ndarray] | None = None


@torch.no_grad()
def frozen_features(model, tokenizer, texts: list[str], lengths: tuple[int, ...] = (100, 200, 400),
                    batch_size: int = 32, rated: Collection[int] = (),
                    gain_ratings: tuple[int, ...] = GAIN_RATINGS) -> FrozenFeatures:
    """
    One pass of the causal LM `model` over each text's first max(`lengths`) characters, as given (normalise them
    first); a left-to-right model's states over a text's first k characters are those of its k-character crop, so
    every length comes from the same pass. The means run over `<bos>` and the characters, as the detector's do. The
    texts whose indices are in `rated` are also read after the star token of each of `gain_ratings` of a rated
    `model` (`rating_gain`, what the own-sample head of a detector reads: a pass per rating).
    """
    model.eval()
    longest = max(lengths)
    crops = [text[:longest] for text in texts]
    count, hidden_size = len(crops), model.config.hidden_sizes[-1]
    layers_size = model.config.first_layer_input_size + sum(model.config.hidden_sizes)  # with a rating input
    top = {k: np.full((count, hidden_size), np.nan, dtype=np.float32) for k in lengths}
    layers = {k: np.full((count, layers_size), np.nan, dtype=np.float32) for k in lengths}
    likelihood = {k: np.full((count, len(LIKELIHOOD_STATISTICS)), np.nan) for k in lengths}
    rated = frozenset(rated)
    gain = {k: np.full((count, 1), np.nan) for k in lengths} if rated else None
    order = sorted(range(count), key=lambda index: len(crops[index]))
    for start in range(0, count, batch_size):
        chunk = order[start : start + batch_size]
        rows = [[tokenizer.bos_token_id] + tokenizer.convert_tokens_to_ids(list(crops[i])) for i in chunk]
        batch = tokenizer.pad({"input_ids": rows}, padding_side="left", return_tensors="pt")
        last, _, states = model.model.run_layers(batch["input_ids"], batch["attention_mask"], None, False, None, True)
        every = torch.cat(states, dim=-1)  # [batch, positions, embedding_dim + sum(hidden_sizes)]
        logits = model.lm_head(last)
        width = batch["input_ids"].shape[1]
        begins = torch.tensor([width - len(row) for row in rows])  # the <bos> positions
        rated_rows = [row for row, index in enumerate(chunk) if index in rated]
        if rated_rows:
            ids, mask = batch["input_ids"][rated_rows], batch["attention_mask"][rated_rows]
            per_rating = log_probs_by_rating(model.model, model.lm_head, ids, mask, gain_ratings)
        for k in lengths:
            up_to_k = batch["attention_mask"] * (torch.arange(width) <= (begins + k).unsqueeze(1))
            statistics = likelihood_statistics(logits, batch["input_ids"], up_to_k).numpy()
            gains = {} if not rated_rows else dict(zip(rated_rows, rating_gain(
                per_rating, logits[rated_rows], ids, predicted_characters(ids, up_to_k[rated_rows])).numpy()))
            for row, index in enumerate(chunk):
                if len(crops[index]) < k:
                    continue
                begin = int(begins[row])
                top[k][index] = last[row, begin : begin + k + 1].mean(0).numpy()
                layers[k][index] = every[row, begin : begin + k + 1].mean(0).numpy()
                likelihood[k][index] = statistics[row]
                if row in gains:
                    gain[k][index] = gains[row]
    return FrozenFeatures(top, layers, likelihood, gain)


@dataclass
class LinearHead:
    """P(machine) = sigmoid(features @ weights + bias), fitted on standardised features and folded back."""

    weights: np.ndarray
    bias: float

    @classmethod
    def fit(cls, features: np.ndarray, labels: list[int], l2: float = 1e-2) -> "LinearHead":
        """A logistic regression on `features` (standardised for the fit, so `l2` weighs every column alike)."""
        mean, scale = features.mean(0), features.std(0) + 1e-6
        design = torch.from_numpy((features - mean) / scale).double()
        fitted = fit_logistic(design, torch.tensor(labels, dtype=torch.float64), l2=l2).numpy()
        weights = fitted[:-1] / scale
        return cls(weights, float(fitted[-1] - weights @ mean))

    def margins(self, features: np.ndarray) -> np.ndarray:
        return features @ self.weights + self.bias


@dataclass
class NgramHead:
    """P(machine) = sigmoid(TF-IDF of the hashed n-gram counts @ weights + bias), as
    `CharLSTMNgramScore` computes it in the model."""

    idf: np.ndarray
    weights: np.ndarray
    bias: float

    @classmethod
    def fit(cls, counts, labels: list[int], balanced: bool = False) -> "NgramHead":
        """scikit-learn's TF-IDF (sublinear counts, smoothed idf, unit rows) and logistic regression on `counts`,
        with `balanced` both labels weighed alike however many texts each has."""
        try:
            from sklearn.feature_extraction.text import TfidfTransformer
            from sklearn.linear_model import LogisticRegression
        except ImportError:
            raise UsageError("fitting an n-gram head needs scikit-learn: pip install scikit-learn") from None
        tfidf = TfidfTransformer(sublinear_tf=True).fit(counts)
        regression = LogisticRegression(C=10.0, max_iter=1000, class_weight="balanced" if balanced else None)
        regression.fit(tfidf.transform(counts), labels)
        return cls(tfidf.idf_, regression.coef_[0], float(regression.intercept_[0]))

    def margins(self, counts) -> np.ndarray:
        weighted = counts.astype(np.float64).tocsr(copy=True)
        weighted.data = 1 + np.log(weighted.data)
        weighted = weighted.multiply(self.idf).tocsr()
        norms = np.sqrt(np.asarray(weighted.multiply(weighted).sum(axis=1)).ravel()).clip(min=1e-12)
        return (weighted @ self.weights) / norms + self.bias


def ngram_counts(tokenizer, texts: list[str], length: int, max_n: int, buckets: int, word_max_n: int = 0):
    """The hashed n-gram counts [texts, buckets] of each text's first `length` characters (character n-grams of 1 to
    `max_n` characters, word n-grams of 1 to `word_max_n` words), read as the detector reads them (its tokenizer, then
    `ngram_buckets`)."""
    from scipy.sparse import csr_matrix

    kinds = word_kinds(tokenizer) if word_max_n else None
    rows, columns = [], []
    for row, text in enumerate(texts):
        ids = torch.tensor([[tokenizer.bos_token_id] + tokenizer.convert_tokens_to_ids(list(text[:length]))])
        [keys] = ngram_buckets(ids, None, buckets, max_n, word_max_n, kinds)
        rows += [row] * len(keys)
        columns += keys.tolist()
    return csr_matrix((np.ones(len(rows)), (rows, columns)), shape=(len(texts), buckets))


def word_kinds(tokenizer) -> torch.Tensor:
    """What each of the tokenizer's ids is to a word n-gram (`CharLSTMNgramScore.word_kinds`): letters, digits and
    the underscore make words (as a regular expression's `\\w`), spaces and special tokens break them, any other
    character is a word by itself."""
    kinds = torch.full((len(tokenizer),), WORD_BREAK, dtype=torch.long)
    for token, index in tokenizer.get_vocab().items():
        if index >= NUM_SPECIAL_TOKENS and not token.isspace():
            kinds[index] = WORD_CHARACTER if token.isalnum() or token == "_" else WORD_BY_ITSELF
    return kinds


def human_distance(statistics: np.ndarray, human_rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Where human texts' statistics sit: their medians and spreads (`CharLSTMLikelihoodScore`'s human_center and
    human_spread)."""
    # The floor keeps a statistic that barely varies among human texts from blowing its distances up.
    return np.median(statistics[human_rows], axis=0), statistics[human_rows].std(0) + 1e-3


def with_distances(statistics: np.ndarray, center: np.ndarray, spread: np.ndarray) -> np.ndarray:
    """The statistics and their squared distances from `center` in units of `spread`: sampling moves a text's
    likelihood both ways from real text's, which a linear head reads only so."""
    return np.concatenate([statistics, ((statistics - center) / spread) ** 2], axis=1)


def quadratic(statistics: np.ndarray, human_rows: np.ndarray) -> np.ndarray:
    """`with_distances` from the medians of the human texts' statistics."""
    return with_distances(statistics, *human_distance(statistics, human_rows))


@dataclass
class LikelihoodHead:
    """A `LinearHead` on the likelihood statistics and their squared distances from the human texts' (`quadratic`)."""

    center: np.ndarray
    spread: np.ndarray
    head: LinearHead

    @classmethod
    def fit(cls, statistics: np.ndarray, labels: list[int], l2: float = 1e-2) -> "LikelihoodHead":
        center, spread = human_distance(statistics, np.array(labels) == 0)
        return cls(center, spread, LinearHead.fit(with_distances(statistics, center, spread), labels, l2=l2))

    def margins(self, statistics: np.ndarray) -> np.ndarray:
        return self.head.margins(with_distances(statistics, self.center, self.spread))


# How far the own-sample head's gate opens beyond its fitted boundary (in margin units). Our hottest samples sit just
# outside it: fitted on half of the bundled detector's training texts, the gate shut out 1-8 of the other half's
# ~90 samples of ours at margin 0 and none at -1 (three random halves). Opened by 1 it also let the head raise human
# texts of other sets, which lifted the threshold and cost nearly a fifth of the machine texts caught; by 0.5 it did not
# (the README has both builds' figures).
GATE_SLACK = 0.5


@dataclass
class OwnSampleHead:
    """
    The generator's own samples, which heads fitted on every generator's text miss once sampled hot: a
    `LikelihoodHead` fitted on its samples against human texts of its own domain only (out of that domain, human text
    looks as unlikely to the generator as a hot sample does), read only where `gate`, a regression on the n-grams,
    says a text is of that domain (margin > 0, its bias opened by GATE_SLACK), and there only where it says machine
    more strongly than the other heads. `scale` and `shift` put its margins in the other heads' units.
    """

    likelihood: LikelihoodHead
    gate: NgramHead
    scale: float = 1.0
    shift: float = 0.0

    @classmethod
    def fit(cls, counts, statistics: np.ndarray, labels: np.ndarray, in_domain: np.ndarray, own: np.ndarray,
            l2: float = 1e-2) -> "OwnSampleHead":
        """`in_domain`: the texts of the generator's domain; `own`: its own texts (its samples and its human ones)."""
        # The gate reads words, not the generator's states: a hot sample's states stray from a review's, its words
        # much less (a gate on the mean top-layer state shut out twice as many hot samples and let in more texts of
        # other domains, measured on the bundled detector's tested texts). Balanced: fitted on far fewer texts of the
        # domain than of others, it would otherwise rarely be sure of one.
        if in_domain.all():  # nothing to tell the domain from (e.g. every other set left out): always open
            gate = NgramHead(np.ones(counts.shape[1]), np.zeros(counts.shape[1]), 1.0)
        else:
            gate = NgramHead.fit(counts, in_domain.astype(int).tolist(), balanced=True)
            gate = replace(gate, bias=gate.bias + GATE_SLACK)
        rows = in_domain & ((labels == 0) | own)
        return cls(LikelihoodHead.fit(statistics[rows], labels[rows].tolist(), l2=l2), gate)

    def gated(self, views: "Views") -> np.ndarray:
        return self.gate.margins(views.counts) > 0

    def margins(self, views: "Views") -> np.ndarray:
        return self.likelihood.margins(views.own_statistics) * self.scale + self.shift

    def in_units_of(self, views: "Views", margins: np.ndarray) -> "OwnSampleHead":
        """The head with its margins on the gated texts of `views` (those it has every statistic of) as centred and
        spread as `margins` are there."""
        gated = self.gated(views) & np.isfinite(views.own_statistics).all(axis=1)
        if gated.sum() < 2:
            return self
        own = self.likelihood.margins(views.own_statistics[gated])
        scale = margins[gated].std() / (own.std() + 1e-12)
        return replace(self, scale=float(scale), shift=float(margins[gated].mean() - own.mean() * scale))


@dataclass
class Views:
    """What the heads read of the same texts: the mean top-layer state, the n-gram counts, the likelihood
    statistics, the rating gain (None where no head reads them)."""

    top: np.ndarray
    counts: object = None
    statistics: np.ndarray | None = None
    gain: np.ndarray | None = None

    @property
    def own_statistics(self) -> np.ndarray:
        """What the own-sample head reads: the likelihood statistics and, of a rated generator, the rating gain."""
        return self.statistics if self.gain is None else np.concatenate([self.statistics, self.gain], axis=1)

    def __getitem__(self, rows) -> "Views":
        return Views(self.top[rows], None if self.counts is None else self.counts[rows],
                     None if self.statistics is None else self.statistics[rows],
                     None if self.gain is None else self.gain[rows])


@dataclass
class StackedHead:
    """
    Heads on different views of a text, their margins each standardised over a set of scored texts (no labels) and
    averaged: `scripts/ablate_detectors.py`'s combinations. The top-layer head alone is used as fitted. The own-sample
    head, where its gate opens, overrules the average when it says machine more strongly.
    """

    top: LinearHead
    ngrams: NgramHead | None = None
    likelihood: LikelihoodHead | None = None
    own: OwnSampleHead | None = None
    standardise: dict = field(default_factory=dict)  # part -> (center, scale)

    def parts(self, views: Views) -> dict[str, np.ndarray]:
        margins = {"top": self.top.margins(views.top)}
        if self.ngrams is not None:
            margins["ngrams"] = self.ngrams.margins(views.counts)
        if self.likelihood is not None:
            margins["likelihood"] = self.likelihood.margins(views.statistics)
        return margins

    def standardised_on(self, views: Views) -> "StackedHead":
        parts = self.parts(views)
        head = self
        if len(parts) > 1:
            scales = {name: (margins.mean(), len(parts) * margins.std() + 1e-12) for name, margins in parts.items()}
            head = replace(self, standardise=scales)
        if self.own is not None:
            head = replace(head, own=self.own.in_units_of(views, head.averaged(views)))
        return head

    def averaged(self, views: Views) -> np.ndarray:
        total = 0.0
        for name, margins in self.parts(views).items():
            center, scale = self.standardise.get(name, (0.0, 1.0))
            total = total + (margins - center) / scale
        return total

    def margins(self, views: Views) -> np.ndarray:
        averaged = self.averaged(views)
        if self.own is None:
            return averaged
        # A build computes the rating gain of the generator's domain only (a pass per rating read): where the gate
        # opens on a text without it, the own-sample head stays out of these margins (the saved model reads it).
        own = self.own.margins(views)
        return np.where(self.own.gated(views) & np.isfinite(own), np.maximum(averaged, own), averaged)


def normalised(texts: list[str]) -> list[str]:
    """What a detector's tokenizer reads of each text (`normalize_text`)."""
    return [normalize_text(text) for text in texts]
