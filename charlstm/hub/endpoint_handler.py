"""Inference Endpoints custom handler for a charlstm review generator.

`charlstm push` copies this file to `handler.py` at the root of the model repo. The Hub's shared inference widget
does not run custom-code models, but a dedicated Inference Endpoint runs a repo's own `handler.py`:
`EndpointHandler(path)` once, then `handler({"inputs": ..., "parameters": {...}})` per request.

The endpoint has no `charlstm` package: like the three model files, this file imports nothing from it and loads
the model and tokenizer from `path` with `trust_remote_code=True`. It lives in the package (not at the project's
top level) so that `charlstm push` finds it wherever the package is installed, and so tests import the same source
that gets published.
"""

import secrets

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer
from transformers.generation import (
    LogitsProcessor,
    LogitsProcessorList,
    TemperatureLogitsWarper,
    TopKLogitsWarper,
    TopPLogitsWarper,
)

# What a request may set in "parameters", with the type each must have. Anything else is refused by name.
PARAMETER_TYPES = {
    "stars": int,
    "max_new_tokens": int,
    "temperature": float,
    "top_k": int,
    "top_p": float,
    "do_sample": bool,
    "num_return_sequences": int,
    "seed": int,
    "guidance": float,
}
# How strongly a review asked for a rating keeps to it (classifier-free guidance; 1 = off): the default of
# `charlstm.generation.settings.GenerationSettings.guidance`, which this file cannot import (a test holds them equal).
DEFAULT_GUIDANCE = 5.0
MAX_GUIDANCE = 10.0
MAX_NEW_TOKENS = 2000
MAX_RETURN_SEQUENCES = 8


class SeededSampling(LogitsProcessor):
    """
    Draws each next token with a `torch.Generator` of the request's own and leaves it the only choice, so that
    `generate`, run greedily over the result, gives the same text for the same seed however many requests the
    endpoint serves at once: `torch.manual_seed` would seed the one random state all threads share. The same idea
    as `charlstm.generation.sampling.SeededSampling`, which this file cannot import (the endpoint has no charlstm).
    """

    def __init__(self, seed: int, temperature: float, top_k: int, top_p: float):
        self.generator = torch.Generator().manual_seed(seed)
        self.filters = [TemperatureLogitsWarper(temperature)] if temperature != 1.0 else []
        self.filters += [TopKLogitsWarper(top_k)] if top_k else []
        self.filters += [TopPLogitsWarper(top_p)] if top_p < 1.0 else []

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor) -> torch.FloatTensor:
        for warper in self.filters:
            scores = warper(input_ids, scores)
        choice = torch.multinomial(scores.float().softmax(dim=-1), 1, generator=self.generator)
        return torch.full_like(scores, float("-inf")).scatter_(1, choice, 0.0)


class EndpointHandler:
    def __init__(self, path: str = ""):
        self.tokenizer = AutoTokenizer.from_pretrained(path, trust_remote_code=True)
        # float32 whatever the stored dtype: half-precision LSTM steps are slow or unsupported on CPUs.
        self.model = AutoModelForCausalLM.from_pretrained(path, trust_remote_code=True, dtype=torch.float32).eval()
        self.conditioned_on_stars = bool(getattr(self.model.config, "conditioned_on_stars", False))

    def __call__(self, data: dict) -> list:
        """
        `inputs`: the start of the review ("" to start from nothing), or a list of such starts. `parameters`:
        `stars` (1-5, star-conditioned models), `guidance` (with `stars`: how strongly the review keeps to them, 1 =
        off), `max_new_tokens`, `temperature`, `top_k`, `top_p`, `do_sample` (default true), `num_return_sequences`,
        `seed`. Returns `[{"generated_text": ...}]` per input (the prompt
        included, as the text-generation pipeline does); a list input gets a list of such lists.
        """
        inputs = data.get("inputs", "")
        prompts = inputs if isinstance(inputs, list) else [inputs]
        if not prompts or not all(isinstance(prompt, str) for prompt in prompts):
            raise ValueError("inputs must be a string or a non-empty list of strings")
        parameters = self._checked_parameters(data.get("parameters") or {})
        results = [self._generate(prompt, dict(parameters)) for prompt in prompts]
        return results if isinstance(inputs, list) else results[0]

    def _checked_parameters(self, parameters: dict) -> dict:
        if not isinstance(parameters, dict):
            raise ValueError("parameters must be an object")
        unknown = sorted(set(parameters) - set(PARAMETER_TYPES))
        if unknown:
            raise ValueError(f"unknown parameters {unknown}; allowed: {sorted(PARAMETER_TYPES)}")
        checked = {}
        for name, value in parameters.items():
            wanted = PARAMETER_TYPES[name]
            if wanted is float and isinstance(value, int) and not isinstance(value, bool):
                value = float(value)
            if not isinstance(value, wanted) or (wanted is int and isinstance(value, bool)):
                raise ValueError(f"parameter {name} must be of type {wanted.__name__}, got {value!r}")
            checked[name] = value
        stars = checked.get("stars")
        if stars is not None and not (self.conditioned_on_stars and 1 <= stars <= 5):
            raise ValueError("stars must be 1-5, and only a star-conditioned model takes them")
        if not 1 <= checked.get("max_new_tokens", 1) <= MAX_NEW_TOKENS:
            raise ValueError(f"max_new_tokens must be from 1 to {MAX_NEW_TOKENS}")
        if not 1 <= checked.get("num_return_sequences", 1) <= MAX_RETURN_SEQUENCES:
            raise ValueError(f"num_return_sequences must be from 1 to {MAX_RETURN_SEQUENCES}")
        if not 1.0 <= checked.get("guidance", 1.0) <= MAX_GUIDANCE:
            raise ValueError(f"guidance must be from 1 (none) to {MAX_GUIDANCE}")
        if checked.get("temperature", 1.0) <= 0 or not 0 < checked.get("top_p", 1.0) <= 1:
            raise ValueError("temperature must be above 0 and top_p in (0, 1]")
        return checked

    @torch.no_grad()
    def _generate(self, prompt: str, parameters: dict) -> list[dict]:
        stars, seed = parameters.pop("stars", None), parameters.pop("seed", None)
        # The tokenizer reads a star token written into the text ("<5star>...") as that token, after its <bos>.
        input_ids = self.tokenizer(f"<{stars}star>{prompt}" if stars else prompt, return_tensors="pt")["input_ids"]
        rows = parameters.pop("num_return_sequences", 1)
        input_ids = input_ids.expand(rows, -1)
        guidance = parameters.pop("guidance", DEFAULT_GUIDANCE)
        if stars and guidance != 1.0:
            # Classifier-free guidance towards the rating, as `charlstm generate` writes: the library's own, with
            # the same prompt without its star token as the unconditional side.
            unrated = self.tokenizer(prompt, return_tensors="pt")["input_ids"].expand(rows, -1)
            parameters.update(guidance_scale=guidance, negative_prompt_ids=unrated,
                              negative_prompt_attention_mask=torch.ones_like(unrated))
        # The saved generation_config.json supplies what a request leaves out, and the tokens never to write.
        defaults = self.model.generation_config
        temperature = parameters.pop("temperature", defaults.temperature or 1.0)
        top_k, top_p = parameters.pop("top_k", defaults.top_k or 0), parameters.pop("top_p", defaults.top_p or 1.0)
        processors = LogitsProcessorList()
        if parameters.pop("do_sample", True):
            seed = secrets.randbits(32) if seed is None else seed
            processors.append(SeededSampling(seed, temperature, top_k, top_p))
        # Greedy over what SeededSampling leaves; the neutral settings keep generate from sampling on its own.
        output = self.model.generate(
            input_ids=input_ids, attention_mask=torch.ones_like(input_ids), logits_processor=processors,
            do_sample=False, temperature=1.0, top_k=None, top_p=1.0, **parameters,
        )
        endings = self.tokenizer.batch_decode(output[:, input_ids.shape[1] :], skip_special_tokens=True)
        return [{"generated_text": prompt + ending} for ending in endings]
