"""How a detector turns P(machine) into a verdict, and what it was tested on.

These settings travel in the detector's `config.json` (its `detection` field), which `from_pretrained` always reads,
so a local directory, a Hub id, the pipeline, the endpoint handler and the Space all get the same threshold,
uncertain band and caveat. `record_decision` is the one writer; `DetectorDecision.of` the one reader, which refuses
values that would make the verdict wrong rather than fall back in silence.
"""

import math
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

from ..errors import UsageError
from .metrics import threshold_for_false_positive_rate

DEFAULT_THRESHOLD = 0.5  # machine when P(machine) >= 0.5, until a calibration chooses one: the classes were balanced
# Where fewer than this share of the calls of a side were right, P(machine) is reported as uncertain.
BAND_PRECISION = 0.9
# Below these a detector gives no probability at all ("cannot judge"), unless its config says otherwise: the shortest
# crop the detector's default training shows it (DetectorTraining.min_chars), and a text of which more than a fifth is
# characters the detector has no token for (it reads them all as one `<unk>`, which says nothing about who wrote them).
DEFAULT_MIN_CHARACTERS = 40
DEFAULT_MAX_UNKNOWN_SHARE = 0.2


@dataclass(frozen=True)
class DetectorDecision:
    """
    threshold: machine when P(machine) >= threshold. uncertain_band: [low, high) of P(machine) where the measured
    calls were too often wrong to state. threshold_false_positive_rate: the share of each source's human texts the
    threshold was chosen to call machine at most. calibration: what P(machine) was calibrated on (`machine_share`,
    the scale and bias of the margin, the calibration error before and after). tested_on: one row per source of
    held-out texts: name, roc_auc, unseen_roc_auc (trained without that source), false_positive_rate, recall, counts.
    min_characters, max_unknown_share: text shorter than this (after normalisation), or with a larger share of
    characters outside the vocabulary, gets "cannot judge" instead of a probability.
    """

    threshold: float = DEFAULT_THRESHOLD
    uncertain_band: tuple[float, float] | None = None
    threshold_false_positive_rate: float | None = None
    calibration: dict | None = None
    tested_on: tuple[dict, ...] = field(default_factory=tuple)
    min_characters: int = DEFAULT_MIN_CHARACTERS
    max_unknown_share: float = DEFAULT_MAX_UNKNOWN_SHARE

    @classmethod
    def of(cls, config, source: str = "the detector") -> "DetectorDecision":
        """The decision a detector's config carries (the defaults where it carries none), checked."""
        saved = getattr(config, "detection", None) or {}
        if not isinstance(saved, dict):
            raise UsageError(f"{source}/config.json: 'detection' must be an object, got {saved!r}")
        unknown = set(saved) - {item for item in cls.__dataclass_fields__}
        if unknown:
            raise UsageError(f"{source}/config.json: 'detection' has unknown fields {sorted(unknown)}")
        try:
            decision = cls(**saved)
        except TypeError as error:
            raise UsageError(f"{source}/config.json: 'detection' is malformed ({error})") from None
        return decision.checked(source)

    def checked(self, source: str) -> "DetectorDecision":
        """Itself with lists made tuples, or a UsageError naming the value that cannot be used."""
        where = f"{source}/config.json: detection"
        if not _is_probability(self.threshold) or self.threshold == 0.0:
            raise UsageError(f"{where} threshold {self.threshold!r}: expected a probability in (0, 1]")
        band = self.uncertain_band
        if band is not None:
            if not (isinstance(band, (list, tuple)) and len(band) == 2 and all(map(_is_probability, band))
                    and band[0] <= band[1]):
                raise UsageError(f"{where} uncertain_band {band!r}: expected two probabilities [low, high]")
            band = (float(band[0]), float(band[1]))
        rate = self.threshold_false_positive_rate
        if rate is not None and not _is_probability(rate):
            raise UsageError(f"{where} threshold_false_positive_rate {rate!r}: expected a probability")
        if self.calibration is not None and not (
            isinstance(self.calibration, dict) and _is_probability(self.calibration.get("machine_share", 0.0))
        ):
            raise UsageError(f"{where} calibration {self.calibration!r}: expected an object with a machine_share")
        if not (isinstance(self.min_characters, int) and not isinstance(self.min_characters, bool)
                and self.min_characters >= 1):
            raise UsageError(f"{where} min_characters {self.min_characters!r}: expected a whole number of at least 1")
        if not _is_probability(self.max_unknown_share):
            raise UsageError(f"{where} max_unknown_share {self.max_unknown_share!r}: expected a probability")
        rows = tuple(self.tested_on or ())
        for row in rows:
            if not (isinstance(row, dict) and isinstance(row.get("name"), str) and _is_probability(row.get("roc_auc"))
                    and all(row.get(key) is None or _is_probability(row[key])
                            for key in ("unseen_roc_auc", "false_positive_rate", "recall"))):
                raise UsageError(f"{where} tested_on row {row!r}: expected a name and an roc_auc (and optionally "
                                 "unseen_roc_auc and false_positive_rate) between 0 and 1")
        return replace(self, uncertain_band=band, tested_on=rows)

    def label(self, probability: float) -> str:
        return "machine" if probability >= self.threshold else "human"

    def is_uncertain(self, probability: float) -> bool:
        low, high = self.uncertain_band or (self.threshold, self.threshold)
        return low <= probability < high

    def as_config_value(self) -> dict:
        """What `config.detection` holds: only the fields that differ from the defaults."""
        defaults = asdict(DetectorDecision())
        saved = {key: value for key, value in asdict(self).items() if value != defaults[key]}
        if "uncertain_band" in saved:
            saved["uncertain_band"] = list(saved["uncertain_band"])
        if "tested_on" in saved:
            saved["tested_on"] = list(saved["tested_on"])
        return saved


def record_decision(detector_dir: str | Path, **changes) -> DetectorDecision:
    """Writes `changes` (fields of `DetectorDecision`) into the config.json of the saved detector at `detector_dir`."""
    from transformers import AutoConfig

    config = AutoConfig.from_pretrained(detector_dir)
    decision = replace(DetectorDecision.of(config, str(detector_dir)), **changes).checked(str(detector_dir))
    config.detection = decision.as_config_value()
    config.save_pretrained(detector_dir)
    return decision


def choose_decision(labels: list[int], scores: list[float], sources: list[str], max_false_positive_rate: float,
                    ) -> tuple[float, tuple[float, float]]:
    """
    The threshold and uncertain band for P(machine) `scores` of labelled held-out texts (1 = machine) from several
    `sources`: the lowest threshold at which no source's human texts are called machine more often than
    `max_false_positive_rate`, and the band around it where the calls were too often wrong.
    """
    human_scores = {source: [score for score, label, of in zip(scores, labels, sources) if of == source and not label]
                    for source in sorted({of for of, label in zip(sources, labels) if not label})}
    threshold = threshold_for_false_positive_rate(human_scores, max_false_positive_rate)
    return threshold, uncertain_band(labels, scores, threshold)


def uncertain_band(labels: list[int], scores: list[float], threshold: float) -> tuple[float, float]:
    """
    [low, high) around the threshold: below `low` at least BAND_PRECISION of the texts are human, at or above `high`
    at least that share are machine; between, the detector's calls are wrong too often to state.
    """
    grid = [step / 100 for step in range(1, 100)]

    def share(wanted: int, chosen) -> float:
        picked = [label for label, score in zip(labels, scores) if chosen(score)]
        return picked.count(wanted) / len(picked) if picked else 1.0

    low = max((t for t in grid if t <= threshold and share(0, lambda s, t=t: s < t) >= BAND_PRECISION),
              default=0.0)
    high = min((t for t in grid if t >= threshold and share(1, lambda s, t=t: s >= t) >= BAND_PRECISION),
               default=1.0)
    return (low, high)


def _is_probability(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value) and 0 <= value <= 1
