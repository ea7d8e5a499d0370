"""The `Detector`: a saved detector behind `pipeline("text-classification")`, its verdicts, and how well it does on
labelled texts.

A detector is a saved `CharLSTMForSequenceClassification` (labels `human`, `machine`) whose config carries its
decision (`charlstm.detection.decision`): the threshold, the uncertain band and what it was tested on. It loads with
`pipeline("text-classification")` like any model; `Detector` adds the rules for empty, over-long, too short and
mostly foreign text ("cannot judge") and reads the decision from the config, so it gives the same verdict whether it
was loaded from a directory or a Hub id.
Inference only: nothing here imports training or the Hub code.
"""

from dataclasses import dataclass

import datasets
from transformers import pipeline

from ..errors import UsageError
from ..loading import DETECTOR, load_model
from .decision import DetectorDecision
from .families import describe_set
from .metrics import roc_auc, threshold_metrics
from .settings import MACHINE, TOKENIZER_KWARGS

WEAK_AUC = 0.8  # a source the detector separates worse than this is one where its verdict says little


@dataclass
class Detection:
    """
    verdict: what to tell a user, in plain words: "machine-written", "human-written", "uncertain, leaning ..." or
    "cannot judge". machine_probability: the detector's P(machine), None where it cannot judge. label: "machine" or
    "human" by the threshold, or "cannot judge". uncertain: the probability lies where the detector's measured calls
    are too often wrong to state (its `uncertain_band`). reason: why it cannot judge, else None. truncated: only the
    first `characters_read` were judged.
    """

    verdict: str
    machine_probability: float | None
    label: str
    uncertain: bool
    characters_read: int
    truncated: bool
    reason: str | None = None


CANNOT_JUDGE = "cannot judge"


class Detector:
    """A saved detector (a local directory or a Hub id) behind `pipeline("text-classification")`."""

    def __init__(self, path=None):
        model, tokenizer, self.path = load_model(path, DETECTOR)
        self.decision = DetectorDecision.of(model.config, self.path)
        self.pipeline = pipeline("text-classification", model=model, tokenizer=tokenizer, device="cpu")
        # <bos> takes one position of model_max_length.
        self.max_characters = self.pipeline.tokenizer.model_max_length - 1
        self.vocabulary = set(self.pipeline.tokenizer.get_vocab())

    @property
    def threshold(self) -> float:
        return self.decision.threshold

    @property
    def tested_on(self) -> tuple[dict, ...]:
        return self.decision.tested_on

    def caveat(self) -> str:
        """
        For a user, in plain words: first what it catches and how often it is wrong on real reviews, then the figure
        for each kind of text it was tested on, or that nobody knows.
        """
        if not self.tested_on:
            return "This detector records no test against labelled machine-written text: its verdicts are unmeasured."
        # Rows per kind of text (a set, a source) and, where recorded, per generator family.
        sets = [row for row in self.tested_on if row.get("kind") != "family"] or list(self.tested_on)
        families = [row for row in self.tested_on if row.get("kind") == "family"]
        flagged = [row["false_positive_rate"] for row in sets if row.get("false_positive_rate") is not None]
        caught = [row["recall"] for row in sets if row.get("recall") is not None]
        lead = "On the kinds of text it was tested on, it"
        if caught:
            lead += f" caught {_span(caught, '{:.0%}')} of the machine-written ones and"
        lead += (f" wrongly called {_span(flagged, '{:.0%}')} of the real ones machine-written" if flagged
                 else " has no measured rate of wrongly flagging real text")
        lead += (": a verdict is a reason to look closer, never proof. It does not judge texts shorter than "
                 f"{self.decision.min_characters} characters or written mostly in characters it does not know.")
        figures = "; ".join(f"{plain_name(row['name'])} AUC {row['roc_auc']:.2f}" for row in sets)
        details = f" Tested on held-out texts ({figures})."
        weak = [plain_name(row["name"]) for row in sets if row["roc_auc"] < WEAK_AUC]
        if weak:
            details += f" Its verdict says little on: {', '.join(weak)}."
        unseen = [row["unseen_roc_auc"] for row in families or sets if row.get("unseen_roc_auc") is not None]
        if unseen:
            left_out = "family of generators" if families else "of these kinds"
            details += (f" Trained without one {left_out} and tested on it, as on a generator it never saw: "
                        f"AUC {_span(unseen, '{:.2f}')}.")
        details += f" It calls a text machine-written at P(machine) >= {self.threshold:.3g}."
        calibration = self.decision.calibration or {}
        if calibration.get("machine_share") is not None:
            details += (f" P(machine) is calibrated on held-out texts of which {calibration['machine_share']:.0%} "
                        "were machine-written: where fakes are rarer, more of the texts it flags are real.")
        return lead + details

    def cannot_judge(self, text: str) -> str | None:
        """Why this text cannot be judged (too short, or mostly unknown characters), or None when it can; judged on
        the text as the detector's tokenizer reads it (normalised, for a detector whose tokenizer normalises)."""
        read, _ = self.pipeline.tokenizer.prepare_for_tokenization(text)
        if len(read) < self.decision.min_characters:
            return (f"it is {len(read)} characters long; the detector judges texts of at least "
                    f"{self.decision.min_characters} characters (its config's min_characters)")
        unknown = sum(char not in self.vocabulary for char in read) / len(read)
        if unknown > self.decision.max_unknown_share:
            return (f"{unknown:.0%} of its characters are ones the detector does not know (it reads English-language "
                    "reviews)")
        return None

    def predict(self, texts: list[str], batch_size: int = 32) -> list[Detection]:
        """
        One `Detection` per text. Empty text is a UsageError (there is nothing to judge); text too short or mostly
        in characters outside the vocabulary gets the verdict "cannot judge" and the reason; text longer than
        `max_characters` is judged on its first `max_characters` and marked `truncated`.
        """
        texts = check_texts(texts)
        reasons = [self.cannot_judge(text) for text in texts]
        judged = [text for text, reason in zip(texts, reasons) if reason is None]
        outputs = iter(self.pipeline(judged, top_k=None, batch_size=batch_size, **TOKENIZER_KWARGS) if judged else [])
        detections = []
        for text, reason in zip(texts, reasons):
            read = min(len(text), self.max_characters)
            if reason is not None:
                detections.append(Detection(CANNOT_JUDGE, None, CANNOT_JUDGE, False, read, False, reason))
                continue
            probability = next(score["score"] for score in next(outputs) if score["label"] == "machine")
            label, uncertain = self.decision.label(probability), self.decision.is_uncertain(probability)
            verdict = f"{label}-written"
            detections.append(Detection(f"uncertain, leaning {verdict}" if uncertain else verdict, probability,
                                        label, uncertain, read, len(text) > self.max_characters))
        return detections


def plain_name(name: str) -> str:
    """A tested-on row's name without file names: 'set.jsonl (machine text by X)' -> what the set holds."""
    source, _, _ = name.partition(" (machine text by ")
    return describe_set(source) if source.endswith((".jsonl", ".json")) else name


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
    """ROC-AUC, accuracy, precision and recall of `detector` on the labelled texts it can judge, at the detector's
    threshold, and how many it cannot judge."""
    detections = detector.predict(data["text"])
    judged = [(int(label == MACHINE), detection.machine_probability)
              for label, detection in zip(data["label"], detections) if detection.machine_probability is not None]
    labels, scores = [label for label, _ in judged], [score for _, score in judged]
    return {"roc_auc": roc_auc(labels, scores), **threshold_metrics(labels, scores, detector.threshold),
            "texts": len(labels), "cannot_judge": len(detections) - len(judged)}
