"""Writing reviews: checked settings in, one `model.generate` call out, for `charlstm generate` and the Space alike.

Everything between a person's settings and `generate` lives here (building the prompt, seeding, streaming, stopping
early), so the command line and the Space give the same reviews for the same seed.
"""

import os
import threading
from collections.abc import Iterator
from dataclasses import dataclass, replace

import torch
from transformers import GenerationConfig
from transformers.generation import (
    LogitsProcessor,
    LogitsProcessorList,
    StoppingCriteria,
    StoppingCriteriaList,
    SuppressTokensLogitsProcessor,
    TemperatureLogitsWarper,
    TopKLogitsWarper,
    TopPLogitsWarper,
)

from ..errors import UsageError
from ..loading import GENERATOR, load_model
from ..quantization import quantize
from ..tokenization_charlstm import star_token
from .cpu import use_one_thread, warm_up
from .rating import star_probabilities
from .settings import GenerationSettings
from .streaming import BatchCharacterStreamer, ReviewsSoFar

# Past the length asked for, a review runs on to the end of a sentence for at most a quarter of that length (and at
# least SENTENCE_SLACK_MIN characters), then to the end of a word for WORD_SLACK more, and is cut there at the latest.
SENTENCE_SLACK_MIN = 16
WORD_SLACK = 16
SENTENCE_ENDS = ".!?"


class StopWhenSet(StoppingCriteria):
    """Ends every row at the next character once any of the events is set (a stop button, a closed stream)."""

    def __init__(self, *events: threading.Event):
        self.events = events

    def __call__(self, input_ids: torch.LongTensor, scores, **kwargs) -> torch.BoolTensor:
        stop = any(event.is_set() for event in self.events)
        return torch.full((input_ids.shape[0],), stop, dtype=torch.bool, device=input_ids.device)


class SeededSampling(LogitsProcessor):
    """
    Filters the scores through `filters` (the library's own processors, in order), draws the next character from
    the result with a random generator of its own, and leaves that character the only possible one.

    Why not `generate(do_sample=True)` after `torch.manual_seed`: that draws from torch's global random state,
    which all threads share, so two people generating at once in the Space would change each other's seeded
    results. `generate` runs greedily over the distribution this processor has collapsed, so a seed gives the same
    reviews however many other requests are running.

    Why the filters run in here rather than as processors of their own: `generate`'s list of processors inspects
    every processor's signature on every step (`inspect.signature`), which cost more per character than the int8
    model's whole step when the Space used four of them.
    """

    def __init__(self, seed: int, filters: list[LogitsProcessor] = ()):
        self.generator = torch.Generator().manual_seed(seed)
        self.filters = list(filters)

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor) -> torch.FloatTensor:
        for processor in self.filters:
            scores = processor(input_ids, scores)
        probabilities = scores.float().softmax(dim=-1).cpu()
        choice = torch.multinomial(probabilities, 1, generator=self.generator).to(scores.device)
        return torch.full_like(scores, float("-inf")).scatter_(1, choice, 0.0)


def suppressed_ids(tokenizer) -> list[int]:
    """A review is characters and then <eos>: never <pad>, <bos>, <unk> or a star token in the middle."""
    return sorted(set(tokenizer.all_special_ids) - {tokenizer.eos_token_id})


def saved_generation_config(tokenizer) -> GenerationConfig:
    """
    The generation_config.json a trained model is saved with: the sampling defaults of `GenerationSettings` (so
    `pipeline("text-generation")`, a Hub user's `generate`, the endpoint handler, `charlstm generate` and the Space
    sample the same way), and the special tokens that never belong inside a review as `suppress_tokens`.
    """
    defaults = GenerationSettings()
    return GenerationConfig(
        do_sample=True,
        temperature=defaults.temperature,
        top_k=defaults.top_k,
        top_p=defaults.top_p,
        max_new_tokens=defaults.max_new_tokens,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
        suppress_tokens=suppressed_ids(tokenizer),
    )


class StopNearLength(StoppingCriteria):
    """
    Ends each row, once it has `max_new_tokens` new characters, at the next end of a sentence (a sentence mark
    followed by a space or line break) or, after `sentence_slack` more, at the next end of a word: a review cut for
    length then ends where a reader would expect it to, not inside a word.
    """

    def __init__(self, tokenizer, prompt_length: int, max_new_tokens: int):
        vocab = tokenizer.get_vocab()
        self.spaces = torch.tensor([vocab[char] for char in " \n\t" if char in vocab], dtype=torch.long)
        self.sentence_ends = torch.tensor([vocab[char] for char in SENTENCE_ENDS if char in vocab], dtype=torch.long)
        self.prompt_length = prompt_length
        self.max_new_tokens = max_new_tokens
        self.sentence_slack = sentence_slack(max_new_tokens)

    def __call__(self, input_ids: torch.LongTensor, scores, **kwargs) -> torch.BoolTensor:
        written = input_ids.shape[1] - self.prompt_length
        if written < self.max_new_tokens or input_ids.shape[1] < 2:
            return torch.zeros(input_ids.shape[0], dtype=torch.bool, device=input_ids.device)
        at_word_end = torch.isin(input_ids[:, -1], self.spaces.to(input_ids.device))
        if written >= self.max_new_tokens + self.sentence_slack:
            return at_word_end
        return at_word_end & torch.isin(input_ids[:, -2], self.sentence_ends.to(input_ids.device))


def sentence_slack(max_new_tokens: int) -> int:
    return max(SENTENCE_SLACK_MIN, max_new_tokens // 4)


def most_new_characters(max_new_tokens: int) -> int:
    """The hard limit on a review's new characters, when neither a sentence nor a word ends near the length asked."""
    return max_new_tokens + sentence_slack(max_new_tokens) + WORD_SLACK


@dataclass(frozen=True)
class WrittenReview:
    """
    text: the review, prompt included. stars: the rating it was written for, asked or drawn (None: the model has
    no ratings). cut: it was ended for length (or by a stop) rather than by the model's own `<eos>`.
    """

    text: str
    stars: int | None
    cut: bool


@dataclass
class ReviewGenerator:
    """A causal LM and its tokenizer, and where they came from (shown in the Space and in errors)."""

    model: torch.nn.Module
    tokenizer: object
    source: str

    @property
    def conditioned_on_stars(self) -> bool:
        return bool(getattr(self.model.config, "conditioned_on_stars", False))

    def unknown_characters(self, text: str) -> list[str]:
        """The characters of `text` the model has no token for; they are fed to it as `<unk>`."""
        vocab = self.tokenizer.get_vocab()
        return sorted({char for char in text if char not in vocab})

    def prompt_ids(self, settings: GenerationSettings) -> torch.LongTensor:
        """
        `<bos>`, then the star token when stars are asked for, then one id per character of the prompt (mapped one
        by one, so a literal "<5star>" typed into the prompt stays seven characters): [1, length].
        """
        if settings.stars is not None and not self.conditioned_on_stars:
            raise UsageError(
                "this model was not trained with star ratings (conditioned_on_stars is false), "
                "so it cannot be asked for a number of stars: leave stars unset"
            )
        prompt = settings.prompt
        if prompt and len(self.unknown_characters(prompt)) == len(set(prompt)):
            raise UsageError("the prompt has no character the model knows: write it in the model's alphabet")
        ids = [self.tokenizer.bos_token_id]
        if settings.stars is not None:
            ids.append(self.tokenizer.convert_tokens_to_ids(star_token(settings.stars)))
        ids += self.tokenizer.convert_tokens_to_ids(list(prompt))
        return torch.tensor([ids], dtype=torch.long, device=self.model.device)

    def ratings(self, settings: GenerationSettings) -> list[int | None]:
        """
        The rating each review is written for: the one asked; None for a model without ratings; else one drawn per
        review, with the request's seed, from P(stars | prompt) under the training reviews' prior. A review asked
        for no rating then starts as the training reviews did, after a star token, instead of where the model was
        never taught to start (right after `<bos>`, whose next character the training loss skips).
        """
        if settings.stars is not None or not self.conditioned_on_stars:
            return [settings.stars] * settings.num_reviews
        probabilities = star_probabilities(self.model, self.tokenizer, settings.prompt, "training", complete=False)
        generator = torch.Generator().manual_seed(settings.seed)
        draws = torch.multinomial(torch.tensor(probabilities), settings.num_reviews, replacement=True,
                                  generator=generator)
        return [int(draw) + 1 for draw in draws]

    def _rows(self, settings: GenerationSettings, ratings: list[int | None]) -> torch.LongTensor:
        """One prompt row per review [num_reviews, length]: rows differ only in their star token."""
        return torch.cat([self.prompt_ids(replace(settings, stars=stars)) for stars in ratings])

    def write(self, settings: GenerationSettings, stop: threading.Event | None = None) -> list[WrittenReview]:
        """The finished reviews with their ratings and whether each was cut. Settings: through `check_settings`."""
        self.prompt_ids(settings)  # a bad prompt or rating fails before any work
        ratings = self.ratings(settings)
        input_ids = self._rows(settings, ratings)
        output = self._run(input_ids, settings, stop or threading.Event())
        return self._reviews(output[:, input_ids.shape[1] :], settings, ratings)

    def generate(self, settings: GenerationSettings, stop: threading.Event | None = None) -> list[str]:
        """The finished reviews' texts, prompt included. Settings must have been through `check_settings`."""
        return [review.text for review in self.write(settings, stop)]

    def _reviews(self, new_ids: torch.LongTensor, settings, ratings) -> list[WrittenReview]:
        reviews = []
        for row, stars in zip(new_ids.tolist(), ratings):
            cut = self.tokenizer.eos_token_id not in row
            text = settings.prompt + self.tokenizer.decode(row, skip_special_tokens=True)
            if cut and len(text) - len(settings.prompt) > settings.max_new_tokens:
                text = text.rstrip()  # ended for length at a sentence or word end: the space after it is not text
            reviews.append(WrittenReview(text, stars, cut))
        return reviews

    def stream(self, settings: GenerationSettings, stop: threading.Event | None = None) -> Iterator[ReviewsSoFar]:
        """
        Yields the reviews as they grow, one character at a time when the reader keeps up; the last update has every
        review finished and equals what `generate` returns. Generation runs in a thread; it stops early when `stop`
        is set or when the reader closes this iterator (a cancelled request in the Space).
        """
        self.prompt_ids(settings)  # a bad prompt fails here, in the reader's thread
        ratings = self.ratings(settings)
        input_ids = self._rows(settings, ratings)
        streamer = BatchCharacterStreamer(self.tokenizer, settings.prompt, settings.num_reviews)
        closed = threading.Event()
        failure: list[BaseException] = []

        def work():
            final = None
            try:
                output = self._run(input_ids, settings, stop or threading.Event(), closed, streamer=streamer)
                final = self._reviews(output[:, input_ids.shape[1] :], settings, ratings)
            except BaseException as error:  # handed to the reader, who raises it in its own thread
                failure.append(error)
            finally:
                streamer.finish(final)

        thread = threading.Thread(target=work, name="charlstm-generate", daemon=True)
        thread.start()
        try:
            yield from streamer
            thread.join()
            if failure:
                raise failure[0]
        finally:
            closed.set()
            thread.join()

    @torch.no_grad()
    def _run(
        self, input_ids: torch.LongTensor, settings: GenerationSettings, *stops: threading.Event, streamer=None
    ) -> torch.LongTensor:
        if settings.seed is None:
            raise ValueError("settings have no seed: pass them through check_settings first")
        input_ids = input_ids.expand(settings.num_reviews, -1)
        filters = [SuppressTokensLogitsProcessor(suppressed_ids(self.tokenizer), device=str(input_ids.device))]
        if settings.temperature != 1.0:
            filters.append(TemperatureLogitsWarper(settings.temperature))
        if settings.top_k:
            filters.append(TopKLogitsWarper(settings.top_k))
        if settings.top_p < 1.0:
            filters.append(TopPLogitsWarper(settings.top_p))
        model_config = self.model.generation_config
        guidance = {}
        if settings.guidance != 1.0 and self.conditioned_on_stars:
            # The library's classifier-free guidance: it runs the model a second time on the same prompt without its
            # star token (rating 0, as the model was shown a share of its training reviews) and draws each character
            # from P(c | rating)^g / P(c | no rating)^(g-1).
            unrated = self.prompt_ids(replace(settings, stars=None)).expand(settings.num_reviews, -1)
            guidance = {"negative_prompt_ids": unrated, "negative_prompt_attention_mask": torch.ones_like(unrated)}
        # A fresh config: the settings alone decide how to sample, whatever defaults the saved model carries.
        generation_config = GenerationConfig(
            max_new_tokens=most_new_characters(settings.max_new_tokens),
            do_sample=False,
            # Neutral on purpose: `SeededSampling` samples. Left unset, generate would fill these from the saved
            # model's sampling defaults and warn that they do nothing without do_sample (50 is the library's own
            # top_k default, the one value it does not warn about).
            temperature=1.0,
            top_p=1.0,
            top_k=50,
            bos_token_id=model_config.bos_token_id,
            eos_token_id=model_config.eos_token_id,
            pad_token_id=model_config.pad_token_id,
            guidance_scale=settings.guidance if guidance else None,
        )
        return self.model.generate(
            input_ids=input_ids,
            attention_mask=torch.ones_like(input_ids),
            generation_config=generation_config,
            logits_processor=LogitsProcessorList([SeededSampling(settings.seed, filters)]),
            stopping_criteria=StoppingCriteriaList([
                StopWhenSet(*stops), StopNearLength(self.tokenizer, input_ids.shape[1], settings.max_new_tokens),
            ]),
            streamer=streamer,
            **guidance,
        )


def load_generator(model: str | os.PathLike | None = None, int8: bool = True) -> ReviewGenerator:
    """
    The generator at `model` (None: the bundled one) behind `ReviewGenerator`. `int8` quantizes the LSTM and
    linear weights for CPU inference (`charlstm.quantize`), several times faster at batch 1; where int8 cannot
    run, the model stays fp32 with a warning.
    """
    causal_lm, tokenizer, source = load_model(model, GENERATOR)
    use_one_thread()  # see charlstm.generation.cpu: a second thread made the first requests several times slower
    if int8:
        causal_lm = quantize(causal_lm, inplace=True)
        warm_up(causal_lm, tokenizer)
    return ReviewGenerator(causal_lm, tokenizer, source)
