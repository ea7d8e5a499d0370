"""The `Detector`: a saved detector behind `pipeline("text-classification")`, its verdicts, and how well it does on
labelled texts.

A detector is a saved `CharLSTMForSequenceClassification` (labels `human`, `machine`) whose config carries its
decision (`charlstm.detection.decision`): the threshold, the uncertain band and what it was tested on. It loads with
`pipeline("text-classification")` like any model; `Detector` adds the rules for empty and over-long text and reads the
decision from the config, so it gives the same verdict whether it was loaded from a directory or a Hub id.
Inference only: nothing here imports training or the Hub code.
"""

from dataclasses import dataclass

import datasets
from transformers import pipeline

from ..errors import UsageError
from ..loading import DETECTOR, load_model
from .decision import DetectorDecision
from .metrics import roc_auc, threshold_metrics
from .settings import MACHINE, TOKENIZER_KWARGS

WEAK_AUC = 0.8  # a source the detector separates worse than this is one where its verdict says little


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

    def __init__(self, path=None):
        model, tokenizer, self.path = load_model(path, DETECTOR)
        self.decision = DetectorDecision.of(model.config, self.path)
        self.pipeline = pipeline("text-classification", model=model, tokenizer=tokenizer, device="cpu")
        # <bos> takes one position of model_max_length.
        self.max_characters = self.pipeline.tokenizer.model_max_length - 1

    @property
    def threshold(self) -> float:
        return self.decision.threshold

    @property
    def tested_on(self) -> tuple[dict, ...]:
        return self.decision.tested_on

    def caveat(self) -> str:
        """For a user, in a few sentences: what this detector was tested against and how well, or that nobody knows."""
        if not self.tested_on:
            return "This detector records no test against labelled machine-written text."
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
        calibration = self.decision.calibration or {}
        if calibration.get("machine_share") is not None:
            warning += (f" P(machine) is calibrated on held-out texts of which {calibration['machine_share']:.0%} were "
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
                    label=self.decision.label(probability),
                    uncertain=self.decision.is_uncertain(probability),
                    characters_read=min(len(text), self.max_characters),
                    truncated=len(text) > self.max_characters,
                )
            )
        return detections


def _span(values: list[float], form: str) -> str:
    """'0.72' for one value (or equal ones), '0.69-0.91' for a range."""
    low, high = form.format(min(values)), form.format(max(values))
    return low if low == high else f"{low}-{high}"


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
