"""One generation contract for every caller (issue 16): what training saves in generation_config.json keeps the
special tokens out of `pipeline("text-generation")` and the endpoint handler, and the handler seeds each request
with a random generator of its own."""

import json
import threading

import pytest
import torch
from transformers import pipeline

from charlstm.generation.sampling import saved_generation_config
from charlstm.generation.settings import GenerationSettings
from charlstm.hub import endpoint_handler
from charlstm.hub.endpoint_handler import EndpointHandler
from charlstm.loading import BUNDLED_MODEL
from tests.conftest import make_tiny_model

PROMPT = "The tacos"


def special_loving_model(tokenizer, path, suppress: bool):
    """A tiny model that, left alone, would write almost nothing but special tokens; saved as training saves it
    (or, with suppress False, without the suppressed tokens)."""
    model = make_tiny_model(tokenizer, seed=2)
    config = saved_generation_config(tokenizer)
    with torch.no_grad():
        model.lm_head.bias[config.suppress_tokens] = 8.0
    if not suppress:
        config.suppress_tokens = None
    model.generation_config = config
    model.save_pretrained(path)
    tokenizer.save_pretrained(path)
    return path


def pipeline_ids(path) -> list[int]:
    generate = pipeline("text-generation", model=str(path), device="cpu")
    torch.manual_seed(0)
    outputs = generate([PROMPT] * 4, max_new_tokens=40, return_tensors=True)
    prompt_length = len(generate.tokenizer(PROMPT)["input_ids"])  # <bos> and the prompt: not generated
    return [index for output in outputs for index in output[0]["generated_token_ids"][prompt_length:]]


def test_saved_config_names_every_special_token_but_eos(tiny_tokenizer):
    suppressed = set(saved_generation_config(tiny_tokenizer).suppress_tokens)
    assert tiny_tokenizer.eos_token_id not in suppressed
    assert suppressed == set(tiny_tokenizer.all_special_ids) - {tiny_tokenizer.eos_token_id}
    assert {tiny_tokenizer.pad_token_id, tiny_tokenizer.bos_token_id, tiny_tokenizer.unk_token_id} <= suppressed


def test_pipeline_never_writes_the_suppressed_tokens(tmp_path, tiny_tokenizer):
    special = set(saved_generation_config(tiny_tokenizer).suppress_tokens)
    unguarded = pipeline_ids(special_loving_model(tiny_tokenizer, tmp_path / "unguarded", suppress=False))
    assert special & set(unguarded), "the test model does not favour special tokens; the check below says nothing"
    guarded = pipeline_ids(special_loving_model(tiny_tokenizer, tmp_path / "guarded", suppress=True))
    assert len(guarded) > 0 and not special & set(guarded)


def test_endpoint_handler_never_writes_the_suppressed_tokens(tmp_path, tiny_tokenizer):
    path = special_loving_model(tiny_tokenizer, tmp_path / "model", suppress=True)
    texts = EndpointHandler(str(path))({"inputs": PROMPT, "parameters": {"max_new_tokens": 40, "seed": 1,
                                                                         "num_return_sequences": 4}})
    specials = {token for token in tiny_tokenizer.all_special_tokens if token != tiny_tokenizer.eos_token}
    assert all(not any(token in text["generated_text"] for token in specials) for text in texts)
    assert all(len(text["generated_text"]) > len(PROMPT) for text in texts)


def test_bundled_generation_config_suppresses_the_special_tokens():
    saved = json.loads((BUNDLED_MODEL / "generation_config.json").read_text(encoding="utf-8"))
    assert saved["suppress_tokens"] == [0, 1, 3, 4, 5, 6, 7, 8]  # pad, bos, unk, the five star tokens


def test_pipeline_and_charlstm_generate_sample_with_the_same_defaults():
    # generation_config.json is what pipeline("text-generation"), the endpoint and a Hub user's generate read; the
    # command line and the Space start from GenerationSettings. One source: the bundled model must agree with it.
    saved = json.loads((BUNDLED_MODEL / "generation_config.json").read_text(encoding="utf-8"))
    defaults = GenerationSettings()
    assert saved["do_sample"] is True
    assert (saved["temperature"], saved.get("top_k", 50), saved.get("top_p", 1.0), saved["max_new_tokens"]) == (
        defaults.temperature, defaults.top_k, defaults.top_p, defaults.max_new_tokens)


@pytest.fixture(scope="module")
def handler(star_model_dir):
    return EndpointHandler(str(star_model_dir))


def test_endpoint_seed_is_the_requests_own(handler):
    request = {"inputs": PROMPT, "parameters": {"max_new_tokens": 30, "seed": 5, "num_return_sequences": 2}}
    first = handler(request)
    torch.manual_seed(123)  # the process-wide state a request must not depend on
    torch.rand(7)
    assert handler(request) == first
    assert handler({**request, "parameters": {**request["parameters"], "seed": 6}}) != first
    assert first[0] != first[1]  # the rows of one request are different draws


def test_endpoint_guidance_defaults_to_charlstm_generates_and_is_checked(handler):
    assert endpoint_handler.DEFAULT_GUIDANCE == GenerationSettings.guidance
    request = {"inputs": PROMPT, "parameters": {"max_new_tokens": 30, "seed": 5, "stars": 1}}
    assert handler({**request, "parameters": {**request["parameters"], "guidance": GenerationSettings.guidance}}) == \
        handler(request)
    with pytest.raises(ValueError, match="guidance must be from 1"):
        handler({**request, "parameters": {**request["parameters"], "guidance": 0.5}})


def test_concurrent_requests_keep_their_seeded_text(handler):
    requests = [{"inputs": PROMPT, "parameters": {"max_new_tokens": 30, "seed": seed}} for seed in (1, 2, 3, 4)]
    alone = [handler(request) for request in requests]
    together = [None] * len(requests)

    def serve(index):
        together[index] = handler(requests[index])

    threads = [threading.Thread(target=serve, args=(index,)) for index in range(len(requests))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert together == alone
