"""`model.generate` with the LSTM state as cache: equal to re-running, incremental, and every decoding mode."""

from threading import Thread

import pytest
import torch
from transformers import TextIteratorStreamer, pipeline

from charlstm import CharLSTMForSequenceClassification

PROMPT = "The tacos"


@pytest.fixture
def prompt_ids(tiny_tokenizer):
    return tiny_tokenizer(PROMPT, return_tensors="pt")["input_ids"]


def rerun_decode(model, ids, steps, choose):
    """Reference decoding without any cache: the whole text so far goes through the model at every step."""
    for _ in range(steps):
        with torch.no_grad():
            logits = model(ids, use_cache=False).logits[:, -1]
        ids = torch.cat([ids, choose(ids, logits)], dim=1)
    return ids


def test_greedy_equals_a_full_rerun_at_every_step(tiny_model, prompt_ids):
    generated = tiny_model.generate(prompt_ids, max_new_tokens=30, do_sample=False)
    expected = rerun_decode(tiny_model, prompt_ids, 30, lambda ids, logits: logits.argmax(-1, keepdim=True))
    assert generated.tolist() == expected.tolist()


def test_each_step_after_the_prompt_feeds_one_character(tiny_model, prompt_ids):
    lengths = []
    hook = tiny_model.register_forward_pre_hook(
        lambda module, args, kwargs: lengths.append(kwargs["input_ids"].shape[1]), with_kwargs=True
    )
    try:
        tiny_model.generate(prompt_ids, max_new_tokens=20, do_sample=False)
    finally:
        hook.remove()
    assert lengths[0] == prompt_ids.shape[1]
    assert lengths[1:] == [1] * 19


def test_repetition_penalty_matches_its_definition(tiny_model, prompt_ids):
    penalty = 1.8

    def penalised_argmax(ids, logits):
        seen = logits.gather(1, ids)
        logits = logits.scatter(1, ids, torch.where(seen < 0, seen * penalty, seen / penalty))
        return logits.argmax(-1, keepdim=True)

    generated = tiny_model.generate(prompt_ids, max_new_tokens=25, do_sample=False, repetition_penalty=penalty)
    assert generated.tolist() == rerun_decode(tiny_model, prompt_ids, 25, penalised_argmax).tolist()


def test_seeded_sampling_is_reproducible_and_seeds_differ(tiny_model, prompt_ids):
    settings = dict(do_sample=True, temperature=1.3, top_k=20, top_p=0.95, max_new_tokens=40)

    def sample(seed):
        torch.manual_seed(seed)
        return tiny_model.generate(prompt_ids, **settings).tolist()

    assert sample(7) == sample(7)
    assert sample(7) != sample(8)


def test_top_k_one_and_tiny_top_p_are_greedy(tiny_model, prompt_ids):
    greedy = tiny_model.generate(prompt_ids, max_new_tokens=20, do_sample=False).tolist()
    torch.manual_seed(0)
    assert tiny_model.generate(prompt_ids, max_new_tokens=20, do_sample=True, top_k=1).tolist() == greedy
    torch.manual_seed(0)
    assert tiny_model.generate(prompt_ids, max_new_tokens=20, do_sample=True, top_p=1e-6, top_k=0).tolist() == greedy


def test_low_temperature_concentrates_on_the_greedy_choice(tiny_model, prompt_ids):
    greedy = tiny_model.generate(prompt_ids, max_new_tokens=15, do_sample=False).tolist()
    torch.manual_seed(0)
    cold = tiny_model.generate(prompt_ids, max_new_tokens=15, do_sample=True, temperature=1e-4, top_k=0)
    assert cold.tolist() == greedy


def test_num_return_sequences_and_max_new_tokens(tiny_model, prompt_ids):
    torch.manual_seed(0)
    out = tiny_model.generate(prompt_ids, do_sample=True, num_return_sequences=4, max_new_tokens=17, top_k=0)
    assert out.shape == (4, prompt_ids.shape[1] + 17)
    assert (out[:, : prompt_ids.shape[1]] == prompt_ids).all()
    assert len({tuple(row) for row in out.tolist()}) > 1


def test_generation_stops_at_eos(tiny_model, prompt_ids):
    free = tiny_model.generate(prompt_ids, max_new_tokens=12, do_sample=False)[0, prompt_ids.shape[1] :]
    stop_token = int(free[4])
    first = free.tolist().index(stop_token)
    stopped = tiny_model.generate(prompt_ids, max_new_tokens=12, do_sample=False, eos_token_id=stop_token)[0]
    assert stopped[prompt_ids.shape[1] :].tolist() == free[: first + 1].tolist()


def test_beam_search_scores_are_the_true_log_probabilities(tiny_model, prompt_ids):
    """If beams were reordered without their states, the scores would not match a re-run of the sequences."""
    out = tiny_model.generate(
        prompt_ids,
        num_beams=4,
        num_return_sequences=4,
        max_new_tokens=10,
        do_sample=False,
        length_penalty=0.0,
        return_dict_in_generate=True,
        output_scores=True,
    )
    start = prompt_ids.shape[1]
    with torch.no_grad():
        log_probs = torch.log_softmax(tiny_model(out.sequences, use_cache=False).logits, dim=-1)
    chosen = log_probs[:, start - 1 : -1].gather(2, out.sequences[:, start:, None]).squeeze(-1).sum(-1)
    torch.testing.assert_close(out.sequences_scores, chosen, rtol=1e-4, atol=1e-4)
    assert out.sequences_scores[0] >= chosen.new_tensor(
        rerun_log_prob(tiny_model, tiny_model.generate(prompt_ids, max_new_tokens=10, do_sample=False), start)
    ) - 1e-4


def rerun_log_prob(model, sequence, start):
    with torch.no_grad():
        log_probs = torch.log_softmax(model(sequence, use_cache=False).logits, dim=-1)
    return float(log_probs[0, start - 1 : -1].gather(1, sequence[0, start:, None]).sum())


def test_left_padded_batch_generates_what_each_prompt_generates_alone(tiny_model, tiny_tokenizer):
    prompts = ["The tacos were", "Cold", "Best brunch in town"]
    batch = tiny_tokenizer(prompts, return_tensors="pt", padding=True)
    together = tiny_model.generate(**batch, max_new_tokens=15, do_sample=False)
    for row, prompt in enumerate(prompts):
        alone = tiny_model.generate(**tiny_tokenizer(prompt, return_tensors="pt"), max_new_tokens=15, do_sample=False)
        assert tiny_tokenizer.decode(together[row], skip_special_tokens=True) == tiny_tokenizer.decode(
            alone[0], skip_special_tokens=True
        )


def test_text_iterator_streamer_yields_the_generated_text(tiny_model, tiny_tokenizer, prompt_ids):
    streamer = TextIteratorStreamer(tiny_tokenizer, skip_prompt=True, skip_special_tokens=True)
    settings = dict(max_new_tokens=30, do_sample=False)
    thread = Thread(target=tiny_model.generate, args=(prompt_ids,), kwargs={**settings, "streamer": streamer})
    thread.start()
    streamed = "".join(streamer)
    thread.join()
    expected = tiny_model.generate(prompt_ids, **settings)[0, prompt_ids.shape[1] :]
    assert streamed == tiny_tokenizer.decode(expected, skip_special_tokens=True)


def test_text_generation_pipeline(tiny_model_dir):
    generator = pipeline("text-generation", model=str(tiny_model_dir))
    out = generator("<5star>The tacos", max_new_tokens=12, do_sample=False)
    assert out[0]["generated_text"].startswith("<5star>The tacos")
    assert len(out[0]["generated_text"]) > len("<5star>The tacos")


def test_text_classification_pipeline(tmp_path, tiny_model_dir, tiny_tokenizer):
    labels = {0: "human", 1: "machine"}
    classifier = CharLSTMForSequenceClassification.from_pretrained(
        tiny_model_dir, num_labels=2, id2label=labels, label2id={v: k for k, v in labels.items()}
    )
    classifier.save_pretrained(tmp_path)
    tiny_tokenizer.save_pretrained(tmp_path)
    texts = ["Great food!", "Terrible."]
    results = pipeline("text-classification", model=str(tmp_path))(texts)
    with torch.no_grad():  # the pipeline reports the model's own top class and its softmax probability
        probabilities = classifier(**tiny_tokenizer(texts, return_tensors="pt", padding=True)).logits.softmax(-1)
    assert [result["label"] for result in results] == [labels[int(row.argmax())] for row in probabilities]
    for result, row in zip(results, probabilities):
        assert abs(result["score"] - float(row.max())) < 1e-5
