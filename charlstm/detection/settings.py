"""What the detector commands can be asked, import-light (no torch): `charlstm detector ... --help` shows it."""

from dataclasses import dataclass

# What the detector's head can read: `configuration_charlstm.CLASSIFIER_POOLINGS`. That file travels to the Hub, so
# it cannot import this module, and it imports transformers, which this one must not; a test keeps the two equal.
POOLINGS = ("last", "mean")


@dataclass(frozen=True)
class SamplingGrid:
    """The settings machine reviews are written with. Temperatures take turns; the rest is drawn at random."""

    temperatures: tuple[float, ...] = (0.5, 0.7, 0.8, 1.0, 1.2)
    top_ks: tuple[int, ...] = (0, 20)
    top_ps: tuple[float, ...] = (1.0, 0.9)
    max_new_tokens: tuple[int, ...] = (300, 600, 1000)
