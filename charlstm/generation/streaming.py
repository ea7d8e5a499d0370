"""Following a batch of reviews as `generate` writes them, one character at a time."""

import queue
from collections.abc import Iterator
from typing import NamedTuple

import torch
from transformers.generation.streamers import BaseStreamer

# Between reviews on the terminal and in the Space: a review may contain blank lines of its own.
REVIEW_SEPARATOR = "\n" + "-" * 40 + "\n"


class ReviewsSoFar(NamedTuple):
    """
    The text of every review in the batch (prompt included), whether each one has ended and, once all have, whether
    each was cut for length rather than ended by the model (empty until then).
    """

    texts: tuple[str, ...]
    finished: tuple[bool, ...]
    cut: tuple[bool, ...] = ()


class BatchCharacterStreamer(BaseStreamer):
    """
    Receives every generated character of a whole batch from `generate` and hands out `ReviewsSoFar` updates.

    Our own rather than the library's `TextIteratorStreamer`, which refuses batches larger than one and holds text
    back until it sees a space (it is built for subword tokens). Here one token is one character, so each can be
    shown the moment it exists. A slow reader is not flooded: iterating skips to the newest update waiting.
    """

    _END = object()

    def __init__(self, tokenizer, prompt: str, batch_size: int):
        special = set(tokenizer.all_special_ids)
        tokens = tokenizer.convert_ids_to_tokens(list(range(len(tokenizer))))
        # What each id adds to the text: decoding with skip_special_tokens, one id at a time.
        self._pieces = ["" if index in special else token for index, token in enumerate(tokens)]
        self._eos = tokenizer.eos_token_id
        self._texts = [prompt] * batch_size
        self._finished = [False] * batch_size
        self._updates: queue.Queue = queue.Queue()
        self._ended = False

    def put(self, value: torch.Tensor):
        if value.dim() == 2:
            return  # generate first hands over the prompt, [batch, length]; each step then gives [batch]
        for row, token in enumerate(value.tolist()):
            if self._finished[row]:
                continue
            if token == self._eos:
                self._finished[row] = True
            else:
                self._texts[row] += self._pieces[token]
        # Trailing spaces wait for the next character: a review cut for length at a word's end ends without them.
        shown = tuple(text if finished else text.rstrip() for text, finished in zip(self._texts, self._finished))
        self._updates.put(ReviewsSoFar(shown, tuple(self._finished)))

    def end(self):
        """
        `generate` calls this when it stops; the last update waits for `finish`, which the caller sends once it has
        the finished reviews (trimmed, with whether each was cut).
        """

    def finish(self, reviews=None):
        """The last update: the finished reviews (`WrittenReview`s) when generation completed, else as they stand."""
        if self._ended:
            return
        self._ended = True
        if reviews is None:
            texts, cut = tuple(self._texts), tuple(not finished for finished in self._finished)
        else:
            texts, cut = tuple(review.text for review in reviews), tuple(review.cut for review in reviews)
        self._updates.put(ReviewsSoFar(texts, (True,) * len(texts), cut))
        self._updates.put(self._END)

    def __iter__(self) -> Iterator[ReviewsSoFar]:
        while (update := self._updates.get()) is not self._END:
            while True:
                try:
                    newer = self._updates.get_nowait()
                except queue.Empty:
                    break
                if newer is self._END:
                    yield update
                    return
                update = newer
            yield update
