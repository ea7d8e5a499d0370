"""The `Detector`: a saved detector behind `pipeline("text-classification")`, and how well it does on labelled texts.

A detector is a saved `CharLSTMForSequenceClassification` (labels `human`, `machine`), after calibration with a
lexicon of the generator's training words in its weights; it loads with `pipeline("text-classification")` like
any model, and `Detector` below is that pipeline plus the rules for empty and over-long text.
"""

import json
import os
from dataclasses import dataclass
from pathlib import Path

import datasets
from transformers import pipeline

from .. import register
from ..errors import UsageError
from ..loading import DETECTOR, load_model
from ..runfiles import DETECTOR_LOG
from .data import MACHINE
from .metrics import roc_auc, threshold_metrics
from .training import TOKENIZER_KWARGS

THRESHOLD = 0.5  # machine when P(machine) >= 0.5, unless the log names a threshold: the classes were balanced
WEAK_AUC = 0.8  # a source the detector separates worse than this is one where its verdict says little

# A saved directory loads through the Auto classes without trust_remote_code.
register()


@dataclass
class Detection:
    """
    machine_probability: the detector's P(machine). label: "machine" or "human", by the threshold. uncertain: the
    probability lies where the detector's measured calls are too often wrong to state (its `uncertain_band`).
    truncated: only the first `characters_read` were judged.
    """

    machine_probability: float
    label: str
    uncertain: bool
    characters_read: int
    truncated: bool


class Detector:
    """A saved detector (a local directory or a Hub id) behind `pipeline("text-classification")`."""

    def __init__(self, path: str | os.PathLike | None = None):
        model, tokenizer, self.path = load_model(path, DETECTOR)
        self.pipeline = pipeline("text-classification", model=model, tokenizer=tokenizer, device="cpu")
        # <bos> takes one position of model_max_length.
        self.max_characters = self.pipeline.tokenizer.model_max_length - 1
        log = _read_log(self.path)
        # What `scripts/eval_detector.py --record` measured: per source, how well it separates; the threshold at
        # which few enough of each source's human texts are called machine; and the range of P(machine) in which
        # fewer than 90% of its calls were right.
        self.tested_on: list[dict] = log.get("tested_on", [])
        self.threshold = log.get("threshold", THRESHOLD)
        if not isinstance(self.threshold, (int, float)) or not 0.0 < self.threshold <= 1.0:
            raise UsageError(f"{self.path}/{DETECTOR_LOG} names threshold {self.threshold!r}: expected a "
                             "probability in (0, 1]")
        band = log.get("uncertain_band")
        self.uncertain_band: tuple[float, float] | None = tuple(band) if band else None
        # The share of machine text among the texts P(machine) was calibrated on, where it was.
        self.calibrated_share: float | None = (log.get("calibration") or {}).get("machine_share")

    def is_uncertain(self, probability: float) -> bool:
        low, high = self.uncertain_band or (self.threshold, self.threshold)
        return low <= probability < high

    def caveat(self) -> str:
        """For a user, in a few sentences: what this detector was tested against and how well, or that nobody knows."""
        if not self.tested_on:
            return "This detector's log records no test against labelled machine-written text."
        figures = "; ".join(f"{row['name']} AUC {row['roc_auc']:.2f}" for row in self.tested_on)
        verdict = f" It calls a text machine-written at P(machine) >= {self.threshold:.3g}."
        weak = [row["name"] for row in self.tested_on if row["roc_auc"] < WEAK_AUC]
        warning = f" Its verdict says little on text like: {', '.join(weak)}." if weak else ""
        unseen = [row["unseen_roc_auc"] for row in self.tested_on if row.get("unseen_roc_auc") is not None]
        if unseen:
            warning += (f" Trained without one of these sources and tested on it, as on a generator it never saw: "
                        f"AUC {_span(unseen, '{:.2f}')}.")
        flagged = [row["false_positive_rate"] for row in self.tested_on if row.get("false_positive_rate") is not None]
        if flagged:
            warning += (f" It called {_span(flagged, '{:.0%}')} of these sources' human reviews "
                        "machine-written: a verdict is a reason to look closer, never proof.")
        if self.calibrated_share is not None:
            warning += (f" P(machine) is calibrated on held-out texts of which {self.calibrated_share:.0%} were "
                        "machine-written: where fakes are rarer, more of the reviews it flags are real.")
        return f"Tested on held-out texts (whole reviews): {figures}.{verdict}{warning}"

    def predict(self, texts: list[str], batch_size: int = 32) -> list[Detection]:
        """
        One `Detection` per text. Empty text is a UsageError (there is nothing to judge); text longer than
        `max_characters` is judged on its first `max_characters` and marked `truncated`.
        """
        texts = check_texts(texts)
        outputs = self.pipeline(texts, top_k=None, batch_size=batch_size, **TOKENIZER_KWARGS)
        detections = []
        for text, scores in zip(texts, outputs):
            probability = next(score["score"] for score in scores if score["label"] == "machine")
            detections.append(
                Detection(
                    machine_probability=probability,
                    label="machine" if probability >= self.threshold else "human",
                    uncertain=self.is_uncertain(probability),
                    characters_read=min(len(text), self.max_characters),
                    truncated=len(text) > self.max_characters,
                )
            )
        return detections


def _span(values: list[float], form: str) -> str:
    """'0.72' for one value (or equal ones), '0.69-0.91' for a range."""
    low, high = form.format(min(values)), form.format(max(values))
    return low if low == high else f"{low}-{high}"


def _read_log(path: str) -> dict:
    """The detector's detector_log.json when it is a local directory that has one (a Hub id: none is read)."""
    log = Path(path) / DETECTOR_LOG
    try:
        return json.loads(log.read_text(encoding="utf-8")) if log.is_file() else {}
    except (OSError, json.JSONDecodeError):
        return {}


def check_texts(texts) -> list[str]:
    texts = list(texts)
    for index, text in enumerate(texts):
        if not isinstance(text, str) or not text.strip():
            raise UsageError(f"text {index + 1} is empty: there is nothing to judge")
    return texts


def evaluate(detector: Detector, data: datasets.Dataset) -> dict[str, float]:
    """ROC-AUC, accuracy, precision and recall of `detector` on labelled texts, at the detector's threshold."""
    labels = [int(label == MACHINE) for label in data["label"]]
    scores = [detection.machine_probability for detection in detector.predict(data["text"])]
    return {"roc_auc": roc_auc(labels, scores), **threshold_metrics(labels, scores, detector.threshold),
            "texts": len(labels)}
