"""What a person asks of the generator, checked: the same rules for `charlstm generate` and the Space.

Import-light (no torch): the command line reads the defaults from here before any model is loaded.
"""

import random
from dataclasses import dataclass, replace

from ..errors import UsageError

MAX_SEED = 2**32 - 1


@dataclass(frozen=True)
class Limits:
    """Upper bounds on the settings. The Space passes tighter ones than the command line."""

    max_prompt_chars: int = 1000
    max_new_tokens: int = 4000
    max_num_reviews: int = 16
    max_temperature: float = 5.0
    max_guidance: float = 10.0


@dataclass(frozen=True)
class GenerationSettings:
    """
    prompt: the start of the review(s); may be empty. stars: 1-5 asks a star-conditioned model for that rating.
    num_reviews: how many reviews to write at once (one batch). top_k=0 and top_p=1.0 switch those filters off.
    guidance: how strongly a review is pushed towards its rating (classifier-free guidance: each character drawn
    from P(c | rating)^g / P(c | no rating)^(g-1)); 1 samples the model as trained. The default was chosen with
    scripts/bench_stars.py: with it generated 1- and 5-star reviews read like real ones (the model alone lets the
    rating fade), at the cost of a second pass of the model per character.
    seed: the same seed and settings give the same reviews; None picks one (see `check_settings`).
    """

    prompt: str = ""
    stars: int | None = None
    num_reviews: int = 1
    temperature: float = 0.8
    top_k: int = 0
    top_p: float = 1.0
    max_new_tokens: int = 300
    guidance: float = 5.0
    seed: int | None = None


def check_settings(settings: GenerationSettings, limits: Limits = Limits()) -> GenerationSettings:
    """
    Rejects absurd settings with a UsageError naming the setting and the allowed range. Returns the settings with
    whole numbers as `int` (a UI may send 5.0) and a random seed filled in when none was given, so the caller can
    show the seed that reproduces the result.
    """
    if not isinstance(settings.prompt, str):
        raise UsageError(f"prompt must be text, got {type(settings.prompt).__name__}")
    if len(settings.prompt) > limits.max_prompt_chars:
        raise UsageError(
            f"prompt is {len(settings.prompt)} characters long; the limit is {limits.max_prompt_chars}"
        )
    stars = None if settings.stars is None else _whole_number("stars", settings.stars, 1, 5)
    temperature = _number("temperature", settings.temperature)
    if not 0.0 < temperature <= limits.max_temperature:
        raise UsageError(f"temperature must be above 0 and at most {limits.max_temperature}, got {temperature}")
    top_p = _number("top_p", settings.top_p)
    if not 0.0 < top_p <= 1.0:
        raise UsageError(f"top_p must be above 0 and at most 1 (1 = off), got {top_p}")
    guidance = _number("guidance", settings.guidance)
    if not 1.0 <= guidance <= limits.max_guidance:
        raise UsageError(f"guidance must be from 1 to {limits.max_guidance} (1 = none), got {guidance}")
    seed = settings.seed
    # A chosen seed is never 0, which the Space reads as "pick one for me".
    seed = random.SystemRandom().randint(1, MAX_SEED) if seed is None else _whole_number("seed", seed, 0, MAX_SEED)
    return replace(
        settings,
        stars=stars,
        num_reviews=_whole_number("number of reviews", settings.num_reviews, 1, limits.max_num_reviews),
        temperature=temperature,
        top_k=_whole_number("top_k", settings.top_k, 0, None),
        top_p=top_p,
        max_new_tokens=_whole_number("max_new_tokens", settings.max_new_tokens, 1, limits.max_new_tokens),
        guidance=guidance,
        seed=seed,
    )


def _number(name: str, value) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or value != value:
        raise UsageError(f"{name} must be a number, got {value!r}")
    return float(value)


def _whole_number(name: str, value, low: int, high: int | None) -> int:
    number = _number(name, value)
    if not number.is_integer():
        raise UsageError(f"{name} must be a whole number, got {value!r}")
    if number < low or (high is not None and number > high):
        allowed = f"from {low} to {high}" if high is not None else f"at least {low}"
        raise UsageError(f"{name} must be {allowed}, got {int(number)}")
    return int(number)
