"""What the detector commands can be asked, import-light (no torch): `charlstm detector ... --help` shows it."""

from dataclasses import dataclass

# What the detector's head can read: `configuration_charlstm.CLASSIFIER_POOLINGS`. That file travels to the Hub, so
# it cannot import this module, and it imports transformers, which this one must not; a test keeps the two equal.
POOLINGS = ("last", "mean")


@dataclass(frozen=True)
class DetectorTraining:
    """How `charlstm detector train` trains a detector (`train_detector`); the command line's defaults are these."""

    max_steps: int = 1000
    batch_size: int = 32
    learning_rate: float = 1e-3
    min_chars: int = 40  # shortest training crop
    max_chars: int = 800  # longest crop, and what the detector reads at most
    layers: int | None = None  # keep only the generator's first N LSTM layers (None: all)
    pooling: str = "mean"
    seed: int = 0


@dataclass(frozen=True)
class SamplingGrid:
    """The settings machine reviews are written with. Temperatures take turns; the rest is drawn at random."""

    temperatures: tuple[float, ...] = (0.5, 0.7, 0.8, 1.0, 1.2)
    top_ks: tuple[int, ...] = (0, 20)
    top_ps: tuple[float, ...] = (1.0, 0.9)
    max_new_tokens: tuple[int, ...] = (300, 600, 1000)

# The detector's classes, as label ids and names (its config's id2label).
HUMAN, MACHINE = 0, 1
LABELS = ["human", "machine"]

# How texts are tokenized for the detector, in training and in `charlstm detect` alike: a literal "<5star>" in a
# review is seven characters, and text past `model_max_length` is cut.
TOKENIZER_KWARGS = {"split_special_tokens": True, "truncation": True}
# The same, saved with a detector's tokenizer, so that a plain `pipeline`, the Hub widget and the endpoint read it so.
DETECTOR_TOKENIZER = {"split_special_tokens": True, "truncate_by_default": True}
