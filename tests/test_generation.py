"""Review generation: settings checks, prompts, seeds, streaming, stopping, and the `charlstm generate` command."""

import subprocess
import sys
import threading

import pytest
import torch

from charlstm import star_token
from charlstm.cli import main
from charlstm.generation.sampling import load_generator, most_new_characters, sentence_slack
from charlstm.generation.settings import GenerationSettings, Limits, check_settings
from charlstm.generation.streaming import REVIEW_SEPARATOR, BatchCharacterStreamer
from charlstm.loading import BUNDLED_MODEL


@pytest.fixture(scope="module")
def generator(star_model_dir):
    return load_generator(star_model_dir)


def settings(**changes) -> GenerationSettings:
    base = dict(prompt="The tacos", stars=5, num_reviews=2, max_new_tokens=40, seed=11)
    return check_settings(GenerationSettings(**{**base, **changes}))


@pytest.mark.parametrize(
    "changes, message",
    [
        (dict(temperature=0), "temperature must be above 0"),
        (dict(temperature=-1.0), "temperature must be above 0"),
        (dict(temperature=1e6), "temperature must be above 0 and at most 5.0"),
        (dict(temperature=float("nan")), "temperature must be a number"),
        (dict(top_k=-1), "top_k must be at least 0"),
        (dict(top_k=2.5), "top_k must be a whole number"),
        (dict(top_p=0.0), "top_p must be above 0 and at most 1"),
        (dict(top_p=1.5), "top_p must be above 0 and at most 1"),
        (dict(max_new_tokens=0), "max_new_tokens must be from 1 to 4000"),
        (dict(max_new_tokens=-5), "max_new_tokens must be from 1 to 4000"),
        (dict(max_new_tokens=10**6), "max_new_tokens must be from 1 to 4000"),
        (dict(num_reviews=0), "number of reviews must be from 1 to 16"),
        (dict(num_reviews=17), "number of reviews must be from 1 to 16"),
        (dict(stars=0), "stars must be from 1 to 5"),
        (dict(stars=6), "stars must be from 1 to 5"),
        (dict(stars="5"), "stars must be a number"),
        (dict(seed=-1), "seed must be from 0 to"),
        (dict(guidance=0.5), "guidance must be from 1 to 10.0"),
        (dict(guidance=1e3), "guidance must be from 1 to 10.0"),
        (dict(prompt="x" * 1001), "prompt is 1001 characters long; the limit is 1000"),
        (dict(prompt=None), "prompt must be text"),
    ],
)
def test_absurd_settings_are_rejected_with_a_message_naming_the_setting(changes, message):
    with pytest.raises(ValueError, match=message):
        settings(**changes)


def test_checked_settings_use_whole_numbers_and_get_a_seed():
    checked = check_settings(GenerationSettings(prompt="Hi", stars=4.0, num_reviews=2.0, top_k=5.0, seed=None))
    assert (checked.stars, checked.num_reviews, checked.top_k) == (4, 2, 5)
    assert all(isinstance(value, int) for value in (checked.stars, checked.num_reviews, checked.top_k, checked.seed))
    assert 0 <= checked.seed < 2**32


def test_limits_can_be_tightened():
    with pytest.raises(ValueError, match="max_new_tokens must be from 1 to 100"):
        check_settings(GenerationSettings(max_new_tokens=101), Limits(max_new_tokens=100))


def test_prompt_is_bos_then_star_token_then_the_characters(generator):
    tokenizer = generator.tokenizer
    ids = generator.prompt_ids(settings(prompt="Hi!", stars=3))[0].tolist()
    assert ids[:2] == [tokenizer.bos_token_id, tokenizer.convert_tokens_to_ids(star_token(3))]
    assert tokenizer.decode(ids[2:]) == "Hi!"
    assert generator.prompt_ids(settings(prompt="Hi!", stars=None))[0].tolist() == [ids[0], *ids[2:]]


def test_a_star_token_typed_into_the_prompt_stays_plain_characters(generator):
    ids = generator.prompt_ids(settings(prompt="<5star>", stars=None))[0].tolist()
    assert len(ids) == 1 + len("<5star>")
    assert generator.tokenizer.convert_tokens_to_ids(star_token(5)) not in ids


def test_a_prompt_of_only_unknown_characters_is_rejected(generator):
    with pytest.raises(ValueError, match="no character the model knows"):
        generator.prompt_ids(settings(prompt="日本語"))
    assert generator.unknown_characters("Tacos 日本") == ["日", "本"]
    generator.prompt_ids(settings(prompt="Tacos 日本"))  # some known characters: accepted, the rest read as <unk>


def test_stars_on_a_model_not_trained_with_ratings_say_so(tiny_model_dir):
    plain = load_generator(tiny_model_dir)
    assert not plain.conditioned_on_stars
    with pytest.raises(ValueError, match="not trained with star ratings"):
        plain.generate(settings(stars=4))
    assert len(plain.generate(settings(stars=None, num_reviews=1))) == 1


def test_generate_writes_the_asked_number_of_reviews_that_continue_the_prompt(generator):
    reviews = generator.generate(settings(num_reviews=3, max_new_tokens=25))
    assert len(reviews) == 3
    for review in reviews:
        assert review.startswith("The tacos")
        # This test model never writes <eos>: each review runs past the length asked for to a word's end.
        assert len("The tacos") + 25 <= len(review) <= len("The tacos") + most_new_characters(25)
    assert len(set(reviews)) == 3


def test_a_review_cut_for_length_ends_at_a_sentence_or_word_end_and_says_so(generator):
    chosen = settings(num_reviews=4, max_new_tokens=25)
    written = generator.write(chosen)
    assert [review.text for review in written] == generator.generate(chosen)
    rows = generator._rows(chosen, [5] * 4)
    raw = generator.tokenizer.batch_decode(
        generator._run(rows, chosen, threading.Event())[:, rows.shape[1] :], skip_special_tokens=True
    )
    for review, untrimmed in zip(written, raw):
        assert review.cut and review.stars == 5  # this test model never writes <eos>
        new = len(review.text) - len("The tacos")
        assert new >= 25 and not review.text[-1].isspace()
        assert ("The tacos" + untrimmed).startswith(review.text)
        if len(untrimmed) < most_new_characters(25):  # stopped early: at a space, which is trimmed
            assert untrimmed[-1].isspace() and len(untrimmed) == new + 1
            if len(untrimmed) <= 25 + sentence_slack(25):  # within reach of a sentence end: after one
                assert untrimmed[-2] in ".!?"
    assert any(len(untrimmed) < most_new_characters(25) for untrimmed in raw)


def test_the_same_seed_gives_the_same_reviews_and_another_seed_others(generator):
    first = generator.generate(settings(seed=5))
    assert generator.generate(settings(seed=5)) == first
    assert generator.generate(settings(seed=6)) != first


def test_a_seed_is_reproducible_while_other_threads_generate_and_draw_random_numbers(generator):
    expected = generator.generate(settings(seed=21, max_new_tokens=120))
    results = [None] * 3

    def run(index):
        results[index] = generator.generate(settings(seed=21 if index == 0 else 100 + index, max_new_tokens=120))

    threads = [threading.Thread(target=run, args=(index,)) for index in range(3)]
    for thread in threads:
        thread.start()
    while any(thread.is_alive() for thread in threads):
        torch.rand(1000)  # the global random state that do_sample=True would draw from
    for thread in threads:
        thread.join()
    assert results[0] == expected


def test_temperature_top_k_and_top_p_change_the_text(generator):
    base = generator.generate(settings(seed=3))
    assert generator.generate(settings(seed=3, temperature=0.3)) != base
    assert generator.generate(settings(seed=3, top_k=1)) != base
    # top_k=1 and a tiny top_p both leave only the top character: greedy decoding, whatever the seed.
    assert generator.generate(settings(seed=3, top_k=1)) == generator.generate(settings(seed=4, top_p=1e-6))


def test_reviews_are_real_characters_even_where_the_model_prefers_special_tokens(star_model_dir):
    # <pad>, <bos>, <unk> and star tokens decode to nothing: sampled mid-review, they would silently eat the review.
    generator = load_generator(star_model_dir)
    tokenizer = generator.tokenizer
    special = [index for index in tokenizer.all_special_ids if index != tokenizer.eos_token_id]
    with torch.no_grad():
        generator.model.lm_head.bias[special] += 30.0
    chosen = settings(max_new_tokens=20, temperature=2.0, top_k=50)
    reviews = generator.generate(chosen)
    assert all(len(review) > len(chosen.prompt) for review in reviews)


def test_stream_grows_one_character_at_a_time_and_ends_with_what_generate_returns(generator):
    chosen = settings(num_reviews=2, max_new_tokens=60)
    updates = list(generator.stream(chosen))
    assert len(updates) > 2
    for before, after in zip(updates, updates[1:]):
        for old, new in zip(before.texts, after.texts):
            assert new.startswith(old)
    assert all(updates[-1].finished) and not any(updates[0].finished)
    assert list(updates[-1].texts) == generator.generate(chosen)


def test_streamer_hands_out_each_character_of_every_row_and_marks_ended_rows(generator):
    tokenizer = generator.tokenizer
    streamer = BatchCharacterStreamer(tokenizer, "Hi", batch_size=2)
    streamer.put(torch.tensor([[1, 8], [1, 8]]))  # the prompt: not part of the new text
    a, b, eos, pad = *tokenizer.convert_tokens_to_ids(["a", "b"]), tokenizer.eos_token_id, tokenizer.pad_token_id
    seen = []
    for step in ([a, b], [eos, b], [pad, a]):
        streamer.put(torch.tensor(step))
        seen.append(next(iter(streamer)))
    assert [update.texts for update in seen] == [("Hia", "Hib"), ("Hia", "Hibb"), ("Hia", "Hibba")]
    assert [update.finished for update in seen] == [(False, False), (True, False), (True, False)]
    streamer.end()  # what generate calls when it stops: the caller's finish sends the last update
    streamer.finish()
    assert list(streamer) == [(("Hia", "Hibba"), (True, True), (False, True))]  # the second was cut, not ended


def test_a_slow_reader_gets_the_newest_texts_not_a_backlog(generator):
    streamer = BatchCharacterStreamer(generator.tokenizer, "", batch_size=1)
    for char in "abcde":
        streamer.put(torch.tensor(generator.tokenizer.convert_tokens_to_ids([char])))
    streamer.finish()
    assert [update.texts for update in streamer] == [("abcde",)]


def test_setting_stop_ends_generation_at_the_next_character(generator):
    stop = threading.Event()
    stop.set()
    reviews = generator.generate(settings(max_new_tokens=500), stop=stop)
    assert [len(review) for review in reviews] == [len("The tacos") + 1] * 2


def test_stop_during_a_stream_ends_it_early(generator):
    stop = threading.Event()
    updates = generator.stream(settings(num_reviews=1, max_new_tokens=4000), stop=stop)
    next(updates)
    stop.set()
    last = list(updates)[-1]
    assert last.finished == (True,)
    assert len(last.texts[0]) < len("The tacos") + 4000


def test_closing_a_stream_stops_its_generation_thread(star_model_dir):
    generator = load_generator(star_model_dir)
    steps = []
    generator.model.register_forward_hook(lambda *_: steps.append(1))  # one forward pass per character written
    updates = generator.stream(settings(num_reviews=1, max_new_tokens=4000))
    next(updates)
    updates.close()  # what the Space does when a request is cancelled; it waits for the thread to end
    assert not [thread for thread in threading.enumerate() if thread.name == "charlstm-generate"]
    assert len(steps) < 4000 // 2  # a close that let generation run on would see all 4000 characters written


def test_an_error_inside_generate_reaches_the_reader(tiny_model_dir):
    plain = load_generator(tiny_model_dir)
    with pytest.raises(ValueError, match="not trained with star ratings"):
        list(plain.stream(settings(stars=2)))


def test_a_missing_model_directory_is_a_clear_error(tmp_path):
    with pytest.raises(FileNotFoundError, match=f"model directory {tmp_path / 'nope'} does not exist"):
        load_generator(tmp_path / "nope")


def test_an_unknown_hub_id_is_a_clear_error(hub_server):
    with pytest.raises(FileNotFoundError, match="could not load the model nobody/no-such-model"):
        load_generator("nobody/no-such-model")


def test_a_hub_id_loads_through_the_auto_classes(hub_server, star_model_dir):
    hub_server.publish(star_model_dir, "charlstm/tiny-star-model", "model")
    from_hub = load_generator("charlstm/tiny-star-model")
    local = load_generator(star_model_dir)
    assert from_hub.generate(settings()) == local.generate(settings())


def test_the_default_is_the_bundled_model():
    bundled = load_generator()
    assert bundled.source == str(BUNDLED_MODEL)
    assert bundled.conditioned_on_stars
    assert len(bundled.generate(settings(max_new_tokens=10))) == 2


# --- the command line


def run_cli(capsys, *args) -> tuple[int, str, str]:
    code = main(["generate", *map(str, args)])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def test_cli_prints_the_reviews_the_library_writes(capsys, generator, star_model_dir):
    code, out, _ = run_cli(
        capsys, "The tacos", "--model", star_model_dir, "--stars", 5, "--num", 2, "--max-new-tokens", 40, "--seed", 11
    )
    assert code == 0
    assert out == REVIEW_SEPARATOR.join(generator.generate(settings())) + "\n"


def test_cli_stream_prints_the_same_text_as_without_stream(capsys, star_model_dir):
    common = ["Hi", "--model", star_model_dir, "--stars", 2, "--num", 3, "--max-new-tokens", 30, "--seed", 4]
    assert run_cli(capsys, *common, "--stream")[:2] == run_cli(capsys, *common)[:2]


def test_cli_without_a_seed_prints_the_seed_that_reproduces_it(capsys, star_model_dir):
    common = ["--model", star_model_dir, "--max-new-tokens", 20]
    _, out, err = run_cli(capsys, *common)
    seed = int(err.split("charlstm generate: seed ")[1].split()[0])
    assert run_cli(capsys, *common, "--seed", seed)[1] == out


@pytest.mark.parametrize(
    "args, message",
    [
        (["--stars", 7], "stars must be from 1 to 5, got 7"),
        (["--stars", 0], "stars must be from 1 to 5, got 0"),
        (["--max-new-tokens", -5], "max_new_tokens must be from 1 to 4000, got -5"),
        (["--temperature", 0], "temperature must be above 0 and at most 5.0, got 0.0"),
        (["--num", 0], "number of reviews must be from 1 to 16, got 0"),
        (["--guidance", -2], "guidance must be from 1 to 10.0 (1 = none), got -2.0"),
    ],
)
def test_cli_rejects_bad_settings_with_exit_2_and_one_line(capsys, star_model_dir, args, message):
    code, out, err = run_cli(capsys, "Hi", "--model", star_model_dir, *args)
    assert code == 2 and out == ""
    assert f"charlstm generate: error: {message}" in err.splitlines()


def test_cli_names_a_missing_model_directory(capsys, tmp_path):
    code, _, err = run_cli(capsys, "Hi", "--model", tmp_path / "missing")
    assert code == 2
    assert f"charlstm generate: error: model directory {tmp_path / 'missing'} does not exist" in err


def test_cli_stars_on_an_unconditioned_model_exit_2(capsys, tiny_model_dir):
    code, _, err = run_cli(capsys, "Hi", "--model", tiny_model_dir, "--stars", 3)
    assert code == 2 and "not trained with star ratings" in err


def test_the_installed_command_exits_2_without_a_traceback(tmp_path):
    result = subprocess.run(
        [sys.executable, "-m", "charlstm.cli", "generate", "--model", str(tmp_path / "missing")],
        capture_output=True, text=True, timeout=120,
    )
    assert result.returncode == 2
    assert "Traceback" not in result.stderr
    assert result.stderr.strip().endswith("give a saved model directory or a Hub id")
