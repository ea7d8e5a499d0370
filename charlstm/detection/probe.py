"""A detector that leaves the generator as it is: its states, read once per text, and a linear head on their mean.

The generator's LSTM is frozen; each text goes through it once, and what it gives is kept: the mean of the top
layer's states (what `CharLSTMForSequenceClassification` with `classifier_pooling="mean"` reads), the mean of every
layer's states, and the generator's view of the text (how likely it found each character, its entropy and ranks,
Fast-DetectGPT's analytic curvature). A logistic regression on such features trains in seconds, so many variants
can be measured (`scripts/ablate_detectors.py`); the one on the top layer's mean is exactly a detector whose LSTM is
the generator's and whose `score` layer is the regression, so it is saved as an ordinary detector
(`build_frozen_detector`). With `ngram_buckets`, a second regression on the text's hashed character n-grams
(`NgramHead`, the model's own `CharLSTMNgramScore`) is averaged in: the two err on different texts.
"""

from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np
import torch

from ..errors import UsageError
from ..modeling_charlstm import LIKELIHOOD_STATISTICS, character_ngram_buckets, likelihood_statistics
from ..tokenization_charlstm import normalize_text
from .calibration import fit_logistic
from .settings import LABELS, MACHINE


@dataclass
class FrozenFeatures:
    """Per crop length, one row per text (NaN where the text is shorter than the length): `top` the mean top-layer
    state [texts, hidden], `layers` the mean state of the embedding and every layer side by side, `likelihood` the
    LIKELIHOOD_STATISTICS of the text's first `length` characters."""

    top: dict[int, np.ndarray]
    layers: dict[int, np.ndarray]
    likelihood: dict[int, np.ndarray]


@torch.no_grad()
def frozen_features(model, tokenizer, texts: list[str], lengths: tuple[int, ...] = (100, 200, 400),
                    batch_size: int = 32) -> FrozenFeatures:
    """
    One pass of the causal LM `model` over each text's first max(`lengths`) characters, as given (normalise them
    first); a left-to-right model's states over a text's first k characters are those of its k-character crop, so
    every length comes from the same pass. The means run over `<bos>` and the characters, as the detector's do.
    """
    model.eval()
    longest = max(lengths)
    crops = [text[:longest] for text in texts]
    count, hidden_size = len(crops), model.config.hidden_sizes[-1]
    layers_size = model.config.first_layer_input_size + sum(model.config.hidden_sizes)  # with a rating input
    top = {k: np.full((count, hidden_size), np.nan, dtype=np.float32) for k in lengths}
    layers = {k: np.full((count, layers_size), np.nan, dtype=np.float32) for k in lengths}
    likelihood = {k: np.full((count, len(LIKELIHOOD_STATISTICS)), np.nan) for k in lengths}
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
        for k in lengths:
            up_to_k = batch["attention_mask"] * (torch.arange(width) <= (begins + k).unsqueeze(1))
            statistics = likelihood_statistics(logits, batch["input_ids"], up_to_k).numpy()
            for row, index in enumerate(chunk):
                if len(crops[index]) < k:
                    continue
                begin = int(begins[row])
                top[k][index] = last[row, begin : begin + k + 1].mean(0).numpy()
                layers[k][index] = every[row, begin : begin + k + 1].mean(0).numpy()
                likelihood[k][index] = statistics[row]
    return FrozenFeatures(top, layers, likelihood)


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
    """P(machine) = sigmoid(TF-IDF of the hashed character n-gram counts @ weights + bias), as
    `CharLSTMNgramScore` computes it in the model."""

    idf: np.ndarray
    weights: np.ndarray
    bias: float

    @classmethod
    def fit(cls, counts, labels: list[int]) -> "NgramHead":
        """scikit-learn's TF-IDF (sublinear counts, smoothed idf, unit rows) and logistic regression on `counts`."""
        try:
            from sklearn.feature_extraction.text import TfidfTransformer
            from sklearn.linear_model import LogisticRegression
        except ImportError:
            raise UsageError("fitting an n-gram head needs scikit-learn: pip install scikit-learn") from None
        tfidf = TfidfTransformer(sublinear_tf=True).fit(counts)
        regression = LogisticRegression(C=10.0, max_iter=1000).fit(tfidf.transform(counts), labels)
        return cls(tfidf.idf_, regression.coef_[0], float(regression.intercept_[0]))

    def margins(self, counts) -> np.ndarray:
        weighted = counts.astype(np.float64).tocsr(copy=True)
        weighted.data = 1 + np.log(weighted.data)
        weighted = weighted.multiply(self.idf).tocsr()
        norms = np.sqrt(np.asarray(weighted.multiply(weighted).sum(axis=1)).ravel()).clip(min=1e-12)
        return (weighted @ self.weights) / norms + self.bias


def ngram_counts(tokenizer, texts: list[str], length: int, max_n: int, buckets: int):
    """The hashed character n-gram counts [texts, buckets] of each text's first `length` characters, read as the
    detector reads them (its tokenizer, then `character_ngram_buckets`)."""
    from scipy.sparse import csr_matrix

    rows, columns = [], []
    for row, text in enumerate(texts):
        ids = torch.tensor([[tokenizer.bos_token_id] + tokenizer.convert_tokens_to_ids(list(text[:length]))])
        [keys] = character_ngram_buckets(ids, None, max_n, buckets)
        rows += [row] * len(keys)
        columns += keys.tolist()
    return csr_matrix((np.ones(len(rows)), (rows, columns)), shape=(len(texts), buckets))


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


@dataclass
class Views:
    """What the heads read of the same texts: the mean top-layer state, the n-gram counts, the likelihood
    statistics (None where no head reads them)."""

    top: np.ndarray
    counts: object = None
    statistics: np.ndarray | None = None

    def __getitem__(self, rows) -> "Views":
        return Views(self.top[rows], None if self.counts is None else self.counts[rows],
                     None if self.statistics is None else self.statistics[rows])


@dataclass
class StackedHead:
    """
    Heads on different views of a text, their margins each standardised over a set of scored texts (no labels) and
    averaged: `scripts/ablate_detectors.py`'s combinations. The top-layer head alone is used as fitted.
    """

    top: LinearHead
    ngrams: NgramHead | None = None
    likelihood: LikelihoodHead | None = None
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
        if len(parts) == 1:
            return self
        scales = {name: (margins.mean(), len(parts) * margins.std() + 1e-12) for name, margins in parts.items()}
        return replace(self, standardise=scales)

    def margins(self, views: Views) -> np.ndarray:
        total = 0.0
        for name, margins in self.parts(views).items():
            center, scale = self.standardise.get(name, (0.0, 1.0))
            total = total + (margins - center) / scale
        return total


def frozen_detector_model(generator_dir: str, head: StackedHead, ngram_max_n: int = 4):
    """The generator's embedding and LSTM layers under a mean-pooling two-way head that is `head`: its n-gram part
    in the model's `CharLSTMNgramScore`, its likelihood part in `CharLSTMLikelihoodScore` (the generator's LM head)."""
    from transformers import AutoModelForCausalLM, AutoModelForSequenceClassification

    model = AutoModelForSequenceClassification.from_pretrained(
        generator_dir, num_labels=len(LABELS), id2label=dict(enumerate(LABELS)),
        label2id={label: index for index, label in enumerate(LABELS)}, classifier_pooling="mean",
        ngram_buckets=0 if head.ngrams is None else len(head.ngrams.weights), ngram_max_n=ngram_max_n,
        likelihood_features=head.likelihood is not None, dtype=torch.float32,
    )

    def folded(name: str, linear) -> tuple[torch.Tensor, float]:
        center, scale = head.standardise.get(name, (0.0, 1.0))
        return torch.from_numpy(linear.weights / scale).float(), (linear.bias - center) / scale

    with torch.no_grad():
        for parameter in (model.score.weight, model.score.bias):
            parameter.zero_()
        # Only the difference of the two logits counts: the machine row carries the whole margin.
        model.score.weight[MACHINE], bias = folded("top", head.top)
        if head.ngrams is not None:
            model.ngrams.idf.copy_(torch.from_numpy(head.ngrams.idf))
            model.ngrams.weight[MACHINE], part_bias = folded("ngrams", head.ngrams)
            bias += part_bias
        if head.likelihood is not None:
            generator = AutoModelForCausalLM.from_pretrained(generator_dir, dtype=torch.float32)
            model.likelihood.lm_head.load_state_dict(generator.lm_head.state_dict())
            model.likelihood.human_center.copy_(torch.from_numpy(head.likelihood.center))
            model.likelihood.human_spread.copy_(torch.from_numpy(head.likelihood.spread))
            model.likelihood.weight[MACHINE], part_bias = folded("likelihood", head.likelihood.head)
            bias += part_bias
        model.score.bias[MACHINE] = bias
    return model.eval()


def normalised(texts: list[str]) -> list[str]:
    """What a detector's tokenizer reads of each text (`normalize_text`)."""
    return [normalize_text(text) for text in texts]


def build_frozen_detector(generator_dir: str, rows: list[dict], output_dir: str,
                          lengths: tuple[int, ...] = (100, 200, 400), l2: float = 1e-2, test_share: float = 0.3,
                          max_false_positive_rate: float = 0.05, batch_size: int = 32, seed: int = 0,
                          ngram_buckets: int = 0, ngram_max_n: int = 4, likelihood: bool = False) -> dict:
    """
    Saves to `output_dir` a detector whose LSTM is the generator's, frozen, and whose head is a logistic regression
    on the mean top-layer state, averaged with one on the hashed character n-grams when `ngram_buckets` and with one
    on the generator's likelihood statistics when `likelihood` (each standardised over the tested texts' longest
    crops), fitted on crops of every length in `lengths` of a `1 - test_share` part of `rows` (dicts with text,
    label 0/1, source, generator; split by `text_groups`, so no rewrite of a tested text is trained on). Its
    tokenizer normalises (`normalize_text`) and reads at most max(`lengths`) characters. On the tested part, read by
    the saved detector as `charlstm detect` reads it: the threshold at which at most `max_false_positive_rate` of
    each source's human texts are called machine, the uncertain band, and per source and per generator family the
    AUC, the AUC of a head fitted without it (a generator it never saw) and the share of machine texts caught, all
    recorded in its config (`record_decision`). Returns what it measured.
    """
    import time

    import datasets
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from ..training.report import device_name
    from .decision import choose_decision, record_decision
    from .detector import Detector
    from .families import (
        HUMAN_FAMILY,
        OWN_FAMILY,
        describe_set,
        generator_family,
        group_split,
        held_out_split,
        text_groups,
    )
    from .metrics import roc_auc, threshold_metrics
    from .training import source_counts

    started = time.perf_counter()
    generator = AutoModelForCausalLM.from_pretrained(generator_dir, dtype=torch.float32).eval()
    tokenizer = AutoTokenizer.from_pretrained(generator_dir)
    texts = normalised([row["text"] for row in rows])
    labels = np.array([int(row["label"]) for row in rows])
    sources = [row["source"] for row in rows]
    own = frozenset(row["generator"] for row in rows if row["source"] == Path(generator_dir).name and row["label"])
    families = [HUMAN_FAMILY if not label else generator_family(row["generator"], own)
                for row, label in zip(rows, labels)]
    groups = text_groups(texts, [row.get("pair_id") for row in rows])
    train, test = group_split(groups, test_share, seed)
    features = frozen_features(generator, tokenizer, texts, lengths, batch_size)
    counts = {k: ngram_counts(tokenizer, texts, k, ngram_max_n, ngram_buckets) if ngram_buckets else None
              for k in lengths}
    views = {k: Views(features.top[k], counts[k], features.likelihood[k] if likelihood else None) for k in lengths}
    longest = max(lengths)

    def usable(length: int, indices: list[int]) -> list[int]:
        return [i for i in indices if not np.isnan(features.top[length][i, 0])]

    def fit(indices: list[int], scored: list[int]) -> StackedHead:
        """Fitted on the crops of `indices`; the parts standardised over the longest crops of `scored`."""
        crops = [views[k][usable(k, indices)] for k in lengths]
        crop_labels = [int(labels[i]) for k in lengths for i in usable(k, indices)]
        head = StackedHead(LinearHead.fit(np.concatenate([crop.top for crop in crops]), crop_labels, l2=l2))
        if ngram_buckets:
            from scipy.sparse import vstack

            head.ngrams = NgramHead.fit(vstack([crop.counts for crop in crops]), crop_labels)
        if likelihood:
            head.likelihood = LikelihoodHead.fit(np.concatenate([crop.statistics for crop in crops]), crop_labels,
                                                 l2=l2)
        return head.standardised_on(views[longest][usable(longest, scored)])

    head = fit(train, test)
    frozen_detector_model(generator_dir, head, ngram_max_n).save_pretrained(output_dir)
    AutoTokenizer.from_pretrained(generator_dir, normalize_text=True,
                                  model_max_length=max(lengths) + 1).save_pretrained(output_dir)
    detector = Detector(output_dir)
    detections = detector.predict([rows[i]["text"] for i in test], batch_size=batch_size)
    judged = [(i, detection.machine_probability) for i, detection in zip(test, detections)
              if detection.machine_probability is not None]
    scored = dict(judged)
    tested = [i for i, _ in judged]
    threshold, band = choose_decision([int(labels[i]) for i in tested], [scored[i] for i in tested],
                                      [sources[i] for i in tested], max_false_positive_rate)

    def unseen_auc(held_out: list[bool]) -> float | None:
        """A head fitted without these texts (and their groups), on them and human texts of the same sets."""
        fitted_without, on = held_out_split(held_out, groups, labels.tolist(), sources, seed=seed)
        on = usable(longest, on)
        if len(set(labels[on].tolist())) < 2:
            return None
        return roc_auc(labels[on].tolist(), fit(fitted_without, on).margins(views[longest][on]).tolist())

    def row_for(name: str, kind: str, members: list[int], held_out: list[bool]) -> dict | None:
        member_labels = [int(labels[i]) for i in members]
        if len(set(member_labels)) < 2:
            return None
        scores = [scored[i] for i in members]
        figures = threshold_metrics(member_labels, scores, threshold)
        return {"name": name, "kind": kind, "roc_auc": roc_auc(member_labels, scores),
                "unseen_roc_auc": unseen_auc(held_out),
                "false_positive_rate": figures["false_positive_rate"], "recall": figures["recall"],
                "human": member_labels.count(0), "machine": member_labels.count(1)}

    tested_on = []
    for source in sorted(set(sources)):
        name = "Yelp reviews by our own generator" if source == Path(generator_dir).name else describe_set(source)
        row = row_for(name, "set", [i for i in tested if sources[i] == source], [of == source for of in sources])
        tested_on += [row] if row else []
    by_family = []
    for family in sorted(set(families) - {HUMAN_FAMILY}):
        family_sources = {sources[i] for i in tested if families[i] == family}
        members = [i for i in tested if families[i] == family or (labels[i] == 0 and sources[i] in family_sources)]
        row = row_for(f"machine text by {family if family != OWN_FAMILY else 'our own generator'}", "family", members,
                      [of == family for of in families])
        by_family += [row] if row else []
    record_decision(output_dir, threshold=threshold, uncertain_band=band, tested_on=tuple(tested_on + by_family),
                    threshold_false_positive_rate=max_false_positive_rate, min_characters=min(lengths))
    tested_labels = [int(labels[i]) for i in tested]
    overall = {"roc_auc": roc_auc(tested_labels, [scored[i] for i in tested]), "texts": len(tested),
               **threshold_metrics(tested_labels, [scored[i] for i in tested], threshold)}
    return {"generator": str(generator_dir), "frozen": True, "texts": len(rows), "train_texts": len(train),
            "test_texts": len(test), "test": overall, "crop_chars": [min(lengths), max(lengths)],
            "train_sources": source_counts(datasets.Dataset.from_list(
                [{key: rows[i][key] for key in ("source", "domain", "generator", "label")} for i in train])),
            "train_seconds": round(time.perf_counter() - started, 1), "device": device_name(torch.device("cpu")),
            "cannot_judge": len(test) - len(tested), "lengths": list(lengths), "l2": l2, "ngram_buckets": ngram_buckets,
            "ngram_max_n": ngram_max_n, "likelihood": likelihood, "threshold": threshold,
            "uncertain_band": list(band), "tested_on": tested_on, "families": by_family}
