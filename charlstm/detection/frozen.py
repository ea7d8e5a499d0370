"""A detector that leaves the generator as it is: heads fitted on what one pass of the frozen generator gives
(`charlstm.detection.probe`), saved as an ordinary `CharLSTMForSequenceClassification` whose layers hold them, and
measured on texts held out by groups, with each set and generator family left out in turn.
"""

import time
from dataclasses import dataclass
from pathlib import Path

import datasets
import numpy as np
import torch
from transformers import AutoModelForCausalLM, AutoModelForSequenceClassification, AutoTokenizer

from ..errors import UsageError
from ..modeling_charlstm import CharLSTMNgramScore
from ..training.report import device_name
from .calibration import calibrated_probability, fold_platt_scaling
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
from .probe import (
    LikelihoodHead,
    LinearHead,
    NgramHead,
    OwnSampleHead,
    StackedHead,
    Views,
    frozen_features,
    ngram_counts,
    normalised,
    word_kinds,
)
from .settings import DETECTOR_TOKENIZER, LABELS, MACHINE
from .training import source_counts


def frozen_detector_model(generator_dir: str, head: StackedHead, ngram_max_n: int = 4, ngram_word_max_n: int = 0):
    """The generator's embedding and LSTM layers under a mean-pooling two-way head that is `head`: its n-gram part
    in the model's `CharLSTMNgramScore` (counting the n-grams `ngram_counts` counted with `ngram_max_n` and
    `ngram_word_max_n`), its likelihood part in `CharLSTMLikelihoodScore` (the generator's LM head), its own-sample
    part in `CharLSTMOwnSampleScore`."""
    model = AutoModelForSequenceClassification.from_pretrained(
        generator_dir, num_labels=len(LABELS), id2label=dict(enumerate(LABELS)),
        label2id={label: index for index, label in enumerate(LABELS)}, classifier_pooling="mean",
        ngram_buckets=0 if head.ngrams is None else len(head.ngrams.weights), ngram_max_n=ngram_max_n,
        ngram_word_max_n=ngram_word_max_n, likelihood_features=head.likelihood is not None,
        own_sample_score=head.own is not None, dtype=torch.float32,
    )
    kinds = word_kinds(AutoTokenizer.from_pretrained(generator_dir)) if ngram_word_max_n else None
    if head.likelihood is not None or head.own is not None:  # their LM head is the generator's
        generator = AutoModelForCausalLM.from_pretrained(generator_dir, dtype=torch.float32)

    def folded(name: str, linear) -> tuple[torch.Tensor, float]:
        center, scale = head.standardise.get(name, (0.0, 1.0))
        return torch.from_numpy(linear.weights / scale).float(), (linear.bias - center) / scale

    with torch.no_grad():
        for parameter in (model.score.weight, model.score.bias):
            parameter.zero_()
        # Only the difference of the two logits counts: the machine row carries the whole margin.
        model.score.weight[MACHINE], bias = folded("top", head.top)
        for module in model.modules():  # the n-gram head and the own-sample head's gate count the same words
            if isinstance(module, CharLSTMNgramScore) and module.word_kinds is not None:
                module.word_kinds.copy_(kinds)
        if head.ngrams is not None:
            model.ngrams.idf.copy_(torch.from_numpy(head.ngrams.idf))
            model.ngrams.weight[MACHINE], part_bias = folded("ngrams", head.ngrams)
            bias += part_bias
        if head.likelihood is not None:
            bias += _load_likelihood(model.likelihood, generator, head.likelihood, *head.standardise.get(
                "likelihood", (0.0, 1.0)))
        model.score.bias[MACHINE] = bias
        if head.own is not None:
            own = model.own_samples
            own.bias[MACHINE] = _load_likelihood(own.likelihood, generator, head.own.likelihood,
                                                 -head.own.shift / head.own.scale, 1 / head.own.scale)
            own.gate.idf.copy_(torch.from_numpy(head.own.gate.idf))
            own.gate.weight[0] = torch.from_numpy(head.own.gate.weights).float()
            own.gate_bias[0] = head.own.gate.bias
    return model.eval()


def _load_likelihood(score, generator, head, center: float, scale: float) -> float:
    """Fills a `CharLSTMLikelihoodScore` with the generator's LM head and `head`, its margins as (margin - center) /
    scale; returns the bias that goes with them."""
    score.lm_head.load_state_dict(generator.lm_head.state_dict())
    score.human_center.copy_(torch.from_numpy(head.center))
    score.human_spread.copy_(torch.from_numpy(head.spread))
    score.weight[MACHINE] = torch.from_numpy(head.head.weights / scale).float()
    return (head.head.bias - center) / scale


@dataclass
class FrozenHeads:
    """What the heads are fitted on: every text's views per crop length (NaN rows where a text is shorter), its
    label, and which heads to fit; for the own-sample head, which texts are of the generator's domain and which are
    its own (None: no such head)."""

    views: dict[int, Views]
    labels: np.ndarray
    ngrams: bool
    likelihood: bool
    l2: float
    in_domain: np.ndarray | None = None
    own: np.ndarray | None = None

    @property
    def longest(self) -> int:
        return max(self.views)

    def usable(self, length: int, indices: list[int]) -> list[int]:
        return [i for i in indices if not np.isnan(self.views[length].top[i, 0])]

    def fit(self, indices: list[int], scored: list[int]) -> StackedHead:
        """Fitted on every crop of `indices`; the parts standardised over the longest crops of `scored`."""
        chosen = {k: self.usable(k, indices) for k in self.views}
        crops = [self.views[k][rows] for k, rows in chosen.items()]
        labels = [int(self.labels[i]) for rows in chosen.values() for i in rows]
        head = StackedHead(LinearHead.fit(np.concatenate([crop.top for crop in crops]), labels, l2=self.l2))
        counts = None  # what the n-gram head and the own-sample head's gate read
        if self.ngrams:
            from scipy.sparse import vstack

            counts = vstack([crop.counts for crop in crops])
            head.ngrams = NgramHead.fit(counts, labels)
        if self.likelihood:
            head.likelihood = LikelihoodHead.fit(np.concatenate([crop.statistics for crop in crops]), labels,
                                                 l2=self.l2)
        own_samples = [i for i in indices if self.own[i] and self.labels[i]] if self.own is not None else []
        if own_samples:  # not when the generator itself is left out
            rows = np.concatenate(list(chosen.values()))
            head.own = OwnSampleHead.fit(counts, np.concatenate([crop.own_statistics for crop in crops]),
                                         np.array(labels), self.in_domain[rows], self.own[rows], l2=self.l2)
        return head.standardised_on(self.views[self.longest][self.usable(self.longest, scored)])

    def unseen_auc(self, train: list[int], test: list[int]) -> float | None:
        """The AUC on the longest crops of `test` of heads fitted on `train` alone."""
        test = self.usable(self.longest, test)
        if len(set(self.labels[test].tolist())) < 2:
            return None
        margins = self.fit(train, test).margins(self.views[self.longest][test])
        return roc_auc(self.labels[test].tolist(), margins.tolist())


TEST_SHARE = 0.3  # the share of the text groups a frozen detector is tested on, not fitted on


def rewrite_groups(rows: list[dict]) -> list[int]:
    """`text_groups` of the rows as a detector reads them: a text and its rewrites share a group, which a split keeps
    on one side."""
    return text_groups(normalised([row["text"] for row in rows]), [row.get("pair_id") for row in rows])


def row_families(rows: list[dict], own_source: str) -> list[str]:
    """Each row's generator family (HUMAN_FAMILY for human text); `own_source` names our own generator's rows."""
    own = frozenset(row["generator"] for row in rows if row["source"] == own_source and row["label"])
    return [HUMAN_FAMILY if not row["label"] else generator_family(row["generator"], own) for row in rows]


def set_row_name(source: str, own_source: str) -> str:
    """How a detector's figures name a labelled set, or the samples of the generator whose source is `own_source`."""
    return "Yelp reviews by our own generator" if source == own_source else describe_set(source)


def family_row_name(family: str) -> str:
    """How a detector's figures name a generator family."""
    return f"machine text by {family if family != OWN_FAMILY else 'our own generator'}"


def frozen_heads(generator_dir: str, rows: list[dict], lengths: tuple[int, ...] = (100, 200, 400), l2: float = 1e-2,
                 batch_size: int = 32, ngram_buckets: int = 0, ngram_max_n: int = 4, ngram_word_max_n: int = 0,
                 likelihood: bool = False, own_domain: str | None = None) -> FrozenHeads:
    """What a frozen detector's heads (as `build_frozen_detector` describes them) are fitted on, for `rows`: one pass
    of the generator over each normalised text, and its n-grams counted, per crop length."""
    generator = AutoModelForCausalLM.from_pretrained(generator_dir, dtype=torch.float32).eval()
    tokenizer = AutoTokenizer.from_pretrained(generator_dir)
    texts = normalised([row["text"] for row in rows])
    own = np.array([row["source"] == Path(generator_dir).name for row in rows])
    in_domain = own | np.array([row.get("domain") == own_domain for row in rows]) if own_domain else None
    # The own-sample head of a rated generator reads the rating gain, of texts of its domain only.
    rated = np.flatnonzero(in_domain) if own_domain and generator.config.conditioned_on_stars else ()
    features = frozen_features(generator, tokenizer, texts, lengths, batch_size, rated=rated)
    counts = {k: ngram_counts(tokenizer, texts, k, ngram_max_n, ngram_buckets, ngram_word_max_n) if ngram_buckets
              else None for k in lengths}
    views = {k: Views(features.top[k], counts[k], features.likelihood[k] if likelihood or own_domain else None,
                      None if features.gain is None else features.gain[k]) for k in lengths}
    return FrozenHeads(views, np.array([int(row["label"]) for row in rows]), bool(ngram_buckets), likelihood, l2,
                       in_domain, own if own_domain else None)


def build_frozen_detector(generator_dir: str, rows: list[dict], output_dir: str,
                          lengths: tuple[int, ...] = (100, 200, 400), l2: float = 1e-2, test_share: float = TEST_SHARE,
                          max_false_positive_rate: float = 0.05, batch_size: int = 32, seed: int = 0,
                          ngram_buckets: int = 0, ngram_max_n: int = 4, ngram_word_max_n: int = 0,
                          likelihood: bool = False, own_domain: str | None = None) -> dict:
    """
    Saves to `output_dir` a detector whose LSTM is the generator's, frozen, and whose head is a logistic regression on
    the mean top-layer state, averaged with one on the hashed n-grams when `ngram_buckets` (of 1 to `ngram_max_n`
    characters and 1 to `ngram_word_max_n` words) and with one on the generator's likelihood statistics when
    `likelihood` (each standardised over the tested texts' longest crops) and, with `own_domain`, overruled by an
    `OwnSampleHead` on texts of the generator's domain (its own rows and rows whose domain is `own_domain`), fitted on
    crops of every length in `lengths` of a `1 - test_share` part of `rows` (dicts with text, label 0/1, source,
    generator, domain; split by `text_groups`, so no rewrite of a tested text is trained on). Its tokenizer normalises
    (`normalize_text`) and reads at most max(`lengths`) characters. On the tested part, read by the saved detector as
    `charlstm detect` reads it: its P(machine) calibrated (`fold_platt_scaling`), the threshold at which at most
    `max_false_positive_rate` of each source's human texts are called machine, the uncertain band, and per source and
    per generator family the AUC, the AUC of a head fitted without it (a generator it never saw) and the share of
    machine texts caught, all recorded in its config (`record_decision`). Returns what it measured.
    """
    started = time.perf_counter()
    if own_domain and not any(row["source"] == Path(generator_dir).name and row["label"] for row in rows):
        raise UsageError(f"--own-domain: the data has no samples of the generator {Path(generator_dir).name}, "
                         "which its head would be fitted on")
    if own_domain and not any(row.get("domain") == own_domain for row in rows):
        domains = ", ".join(sorted({str(row.get("domain")) for row in rows}))
        raise UsageError(f"--own-domain: the data has no rows of domain {own_domain!r} (domains: {domains})")
    heads = frozen_heads(generator_dir, rows, lengths, l2, batch_size, ngram_buckets, ngram_max_n, ngram_word_max_n,
                         likelihood, own_domain)
    labels = heads.labels
    sources = [row["source"] for row in rows]
    families = row_families(rows, Path(generator_dir).name)
    groups = rewrite_groups(rows)
    train, test = group_split(groups, test_share, seed)
    head = heads.fit(train, test)
    model = frozen_detector_model(generator_dir, head, ngram_max_n, ngram_word_max_n)
    model.save_pretrained(output_dir)
    AutoTokenizer.from_pretrained(generator_dir, normalize_text=True, model_max_length=max(lengths) + 1,
                                  **DETECTOR_TOKENIZER).save_pretrained(output_dir)
    detections = Detector(output_dir).predict([rows[i]["text"] for i in test], batch_size=batch_size)
    judged = [(i, detection.machine_probability) for i, detection in zip(test, detections)
              if detection.machine_probability is not None]
    tested = [i for i, _ in judged]
    # The heads' combined margin calibrated on the tested texts as the detector reads them (Platt scaling, folded into
    # the weights): no ranking changes, so every figure below stays what it was.
    uncalibrated = torch.tensor([probability for _, probability in judged], dtype=torch.float64)
    calibration = fold_platt_scaling(model, torch.logit(uncalibrated.clamp(1e-12, 1 - 1e-12)).unsqueeze(1),
                                     torch.tensor([float(labels[i]) for i in tested], dtype=torch.float64))
    model.save_pretrained(output_dir)
    scored = {i: calibrated_probability(probability, calibration["margin_scale"], calibration["bias"])
              for i, probability in judged}
    threshold, band = choose_decision([int(labels[i]) for i in tested], [scored[i] for i in tested],
                                      [sources[i] for i in tested], max_false_positive_rate)

    def unseen_auc(held_out: list[bool]) -> float | None:
        """Heads fitted without these texts (and their groups), on them and human texts of the same sets."""
        return heads.unseen_auc(*held_out_split(held_out, groups, labels.tolist(), sources, seed=seed))

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
        members = [i for i in tested if sources[i] == source]
        row = row_for(set_row_name(source, Path(generator_dir).name), "set", members, [of == source for of in sources])
        tested_on += [row] if row else []
    by_family = []
    for family in sorted(set(families) - {HUMAN_FAMILY}):
        family_sources = {sources[i] for i in tested if families[i] == family}
        members = [i for i in tested if families[i] == family or (labels[i] == 0 and sources[i] in family_sources)]
        row = row_for(family_row_name(family), "family", members, [of == family for of in families])
        by_family += [row] if row else []
    record_decision(output_dir, threshold=threshold, uncertain_band=band, tested_on=tuple(tested_on + by_family),
                    threshold_false_positive_rate=max_false_positive_rate, min_characters=min(lengths),
                    calibration={**calibration, "split": "test"})
    tested_labels = [int(labels[i]) for i in tested]
    overall = {"roc_auc": roc_auc(tested_labels, [scored[i] for i in tested]), "texts": len(tested),
               **threshold_metrics(tested_labels, [scored[i] for i in tested], threshold)}
    return {"generator": str(generator_dir), "frozen": True, "texts": len(rows), "train_texts": len(train),
            "test_texts": len(test), "test": overall, "crop_chars": [min(lengths), max(lengths)],
            "train_sources": source_counts(datasets.Dataset.from_list(
                [{key: rows[i][key] for key in ("source", "domain", "generator", "label")} for i in train])),
            "train_seconds": round(time.perf_counter() - started, 1), "device": device_name(torch.device("cpu")),
            "cannot_judge": len(test) - len(tested), "lengths": list(lengths), "l2": l2, "ngram_buckets": ngram_buckets,
            "ngram_max_n": ngram_max_n, "ngram_word_max_n": ngram_word_max_n, "likelihood": likelihood,
            "own_domain": own_domain, "calibration": calibration,
            "threshold": threshold, "uncertain_band": list(band), "tested_on": tested_on, "families": by_family}
