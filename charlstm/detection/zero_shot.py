"""The zero-shot baseline: the generator alone, with no detector trained, judging whether it wrote a text.

Each text is reduced to a few statistics of the generator's own scores (`charlstm.detection.scoring`): bits per
character, the shares of characters among its top 1, 3 and 10 choices, and Fast-DetectGPT's analytic curvature.
Sampling moves these away from human text in both directions: a low temperature makes text too predictable (low
bits, many top-1 characters), a high one too surprising. So the score is two-sided: the distance of one statistic
from its median over human training texts.

Calibration fits no weights. On the training split it picks the statistic whose distance separates best (ROC-AUC)
and the distance threshold with the best accuracy; that is all the baseline learns, which keeps it a fair
"no training" reference for the trained detector.
"""

from dataclasses import asdict, dataclass
from statistics import median

from .metrics import best_threshold, roc_auc
from .scoring import CharacterScores, score_texts

STATISTICS = ("bits_per_character", "top1_share", "top3_share", "top10_share", "curvature")


def text_statistics(scores: CharacterScores) -> dict[str, float]:
    return {
        "bits_per_character": scores.bits_per_character,
        "top1_share": scores.top1_share,
        "top3_share": scores.share_within(3),
        "top10_share": scores.share_within(10),
        "curvature": scores.curvature,
    }


def statistics_of_texts(model, tokenizer, texts: list[str], batch_size: int = 32) -> list[dict[str, float]]:
    """The generator's statistics for each text (text cut to the tokenizer's `model_max_length`)."""
    return [text_statistics(scores) for scores in score_texts(model, tokenizer, texts, batch_size=batch_size)]


@dataclass
class ZeroShotDetector:
    """Calls a text machine-written when `|statistic - center| >= threshold`."""

    statistic: str
    center: float
    threshold: float

    def score(self, statistics: dict[str, float]) -> float:
        return abs(statistics[self.statistic] - self.center)

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def calibrate(cls, statistics: list[dict[str, float]], labels: list[int]) -> "ZeroShotDetector":
        """Picks the statistic and threshold that best separate these (training) texts; labels 1 = machine."""
        human = [row for row, label in zip(statistics, labels) if label != 1]
        if not human or len(human) == len(labels):
            raise ValueError("calibrating the zero-shot baseline needs both human and machine texts")

        def distances(name: str, center: float) -> list[float]:
            return [abs(row[name] - center) for row in statistics]

        centers = {name: median(row[name] for row in human) for name in STATISTICS}
        statistic = max(STATISTICS, key=lambda name: roc_auc(labels, distances(name, centers[name])))
        threshold = best_threshold(labels, distances(statistic, centers[statistic]))
        return cls(statistic=statistic, center=centers[statistic], threshold=threshold)
