"""The `Detector`: a saved detector behind `pipeline("text-classification")`, and how well it does on labelled texts.

A detector is a saved `CharLSTMForSequenceClassification` (labels `human`, `machine`), after calibration with a
lexicon of the generator's training words in its weights; it loads with `pipeline("text-classification")` like
any model, and `Detector` below is that pipeline plus the rules for empty and over-long text.
"""

import os
from dataclasses import dataclass

import datasets
import torch
from transformers import AutoConfig, pipeline

from .. import register
from ..errors import MissingFileError, UsageError
from ..generation.loading import BUNDLED_DETECTOR, model_or_bundled
from .data import MACHINE
from .metrics import roc_auc, threshold_metrics
from .training import TOKENIZER_KWARGS

THRESHOLD = 0.5  # machine when P(machine) >= 0.5: the classes were balanced in training

# A saved directory loads through the Auto classes without trust_remote_code.
register()


@dataclass
class Detection:
    """machine_probability: the detector's P(machine). truncated: only the first `characters_read` were judged."""

    machine_probability: float
    label: str
    characters_read: int
    truncated: bool


class Detector:
    """A saved detector (a local directory or a Hub id) behind `pipeline("text-classification")`."""

    def __init__(self, path: str | os.PathLike | None = None):
        self.path = model_or_bundled(path, BUNDLED_DETECTOR, "charlstm detector train", "--detector")
        try:
            labels = sorted(AutoConfig.from_pretrained(self.path).label2id)
            if labels != ["human", "machine"]:
                raise UsageError(f"{self.path} is not a detector: its labels are {labels}, not human and machine")
            # float32 whatever the stored dtype: half-precision LSTM steps on a CPU are slow or unsupported.
            self.pipeline = pipeline("text-classification", model=self.path, device="cpu", dtype=torch.float32)
        except OSError as error:
            first_line = (str(error).strip().splitlines() or [type(error).__name__])[0]
            raise MissingFileError(f"could not load the detector {self.path}: {first_line}") from None
        # <bos> takes one position of model_max_length.
        self.max_characters = self.pipeline.tokenizer.model_max_length - 1

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
                    label="machine" if probability >= THRESHOLD else "human",
                    characters_read=min(len(text), self.max_characters),
                    truncated=len(text) > self.max_characters,
                )
            )
        return detections


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
    return {"roc_auc": roc_auc(labels, scores), **threshold_metrics(labels, scores, THRESHOLD), "texts": len(labels)}
