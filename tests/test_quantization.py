"""int8 weights for CPU inference: same behaviour as fp32 where it matters, clear limits where it cannot."""

from threading import Thread

import pytest
import torch
from transformers import TextIteratorStreamer

from charlstm import CharLSTMConfig, CharLSTMForCausalLM, quantize
from charlstm.modeling_charlstm import CharLSTMCache, lstm_step
from charlstm.quantization import int8_engine, int8_lstm_cell, int8_model_step, is_quantized, scripted
from tests.conftest import make_tiny_model

PROMPTS = ["The tacos were", "Cold", "Best brunch in town"]

needs_int8 = pytest.mark.skipif(int8_engine() is None, reason="this platform has no int8 engine")


@pytest.fixture(scope="module")
def int8_model(tiny_model):
    return quantize(tiny_model)


@needs_int8
def test_quantize_returns_an_int8_copy(tiny_model, int8_model):
    assert is_quantized(int8_model)
    assert not is_quantized(tiny_model)  # the fp32 model is left as it was


@needs_int8
def test_int8_logits_stay_close_to_fp32(tiny_model, int8_model, tiny_tokenizer):
    batch = tiny_tokenizer(PROMPTS, return_tensors="pt", padding=True)
    with torch.no_grad():
        fp32 = torch.log_softmax(tiny_model(**batch).logits, dim=-1)
        int8 = torch.log_softmax(int8_model(**batch).logits, dim=-1)
    real = batch["attention_mask"].bool()
    assert (fp32 - int8)[real].abs().max() < 0.05


@needs_int8
def test_int8_greedy_text_is_stable_across_runs(tiny_model, tiny_tokenizer):
    ids = tiny_tokenizer("The tacos", return_tensors="pt")["input_ids"]
    runs = [quantize(tiny_model).generate(ids, max_new_tokens=40, do_sample=False).tolist() for _ in range(3)]
    assert runs[0] == runs[1] == runs[2]


@needs_int8
def test_int8_padding_never_touches_the_state(int8_model, tiny_tokenizer):
    """What lies under the padding changes nothing, in the prompt pass and in every generated step."""
    batch = tiny_tokenizer(PROMPTS, return_tensors="pt", padding=True)
    scrambled = batch["input_ids"].masked_fill(batch["attention_mask"] == 0, tiny_tokenizer.convert_tokens_to_ids("x"))
    settings = dict(attention_mask=batch["attention_mask"], max_new_tokens=15, do_sample=False)
    assert int8_model.generate(batch["input_ids"], **settings)[:, -15:].tolist() == (
        int8_model.generate(scrambled, **settings)[:, -15:].tolist()
    )


@needs_int8
def test_int8_padded_batch_stays_close_to_each_prompt_alone(int8_model, tiny_tokenizer):
    """Rows of a batch share activation scales in dynamic int8, so they match the row alone closely, not bit for bit."""
    batch = tiny_tokenizer(PROMPTS, return_tensors="pt", padding=True)
    with torch.no_grad():
        together = torch.log_softmax(int8_model(**batch).logits[:, -1], dim=-1)
        for row, prompt in enumerate(PROMPTS):
            alone = torch.log_softmax(int8_model(**tiny_tokenizer(prompt, return_tensors="pt")).logits[0, -1], dim=-1)
            assert (together[row] - alone).abs().max() < 0.05


@needs_int8
def test_int8_cached_steps_match_a_full_rerun(int8_model, tiny_tokenizer):
    # A full run quantizes each layer's inputs with one scale for the whole sequence and a step with one for its
    # character, so the two agree closely, not bit for bit (as with rows of a batch above).
    ids = tiny_tokenizer("Decent pizza", return_tensors="pt")["input_ids"]
    out = int8_model.generate(
        ids, max_new_tokens=20, do_sample=False, output_logits=True, return_dict_in_generate=True
    )
    with torch.no_grad():
        rerun = int8_model(out.sequences[:, :-1], use_cache=False).logits[0, ids.shape[1] - 1 :]
    stepped = torch.stack(out.logits, dim=1)[0]
    assert (torch.log_softmax(stepped, -1) - torch.log_softmax(rerun, -1)).abs().max() < 0.05


@needs_int8
def test_int8_decoding_step_equals_the_layers_own_kernel(int8_model):
    # The decoding step calls the layer's two int8 products itself, compiled by TorchScript (the plain function is
    # the fallback); both must give the very state of a one-character run through the module's own kernel.
    assert isinstance(scripted(int8_lstm_cell), torch.jit.ScriptFunction)  # else the pinned torch lost speed
    torch.manual_seed(0)
    for lstm in int8_model.model.layers:
        x = torch.randn(3, lstm.input_size)
        h, c = torch.randn(3, lstm.hidden_size), torch.randn(3, lstm.hidden_size)
        _, kernel = lstm(x.unsqueeze(1), (h.unsqueeze(0), c.unsqueeze(0)))
        packed = lstm.character_step.packed_ih, lstm.character_step.packed_hh
        for stepped in (lstm_step(lstm, x, h, c), int8_lstm_cell(x, h, c, *packed)):
            assert torch.equal(stepped[0], kernel[0][0]) and torch.equal(stepped[1], kernel[1][0])


@needs_int8
@pytest.mark.parametrize("threads", [1, 2])
def test_int8_whole_decoding_step_equals_the_layer_by_layer_path(int8_model, tiny_tokenizer, threads):
    # generate's decoding steps take the compiled whole step, which at batch 1 looks up the first layer's input
    # product and, with one torch thread, starts the next step's recurrent products early on another thread;
    # asking for hidden states takes the general path, layer by layer. Greedy generation and beam search (whose
    # beams are rows of a batch) must give the same results to the bit either way, and the plain fallback too.
    assert isinstance(scripted(int8_model_step), torch.jit.ScriptFunction)  # else the pinned torch lost speed
    settings = dict(max_new_tokens=12, do_sample=False, output_logits=True, return_dict_in_generate=True)
    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        for prompts, beams in ((["Great tacos"], 1), (["Great tacos", "Slow servic"], 1), (["Slow servic"], 3)):
            ids = tiny_tokenizer(prompts, return_tensors="pt")["input_ids"]
            fused = int8_model.generate(ids, num_beams=beams, **settings)
            general = int8_model.generate(ids, num_beams=beams, output_hidden_states=True, **settings)
            assert torch.equal(fused.sequences, general.sequences)
            assert all(torch.equal(a, b) for a, b in zip(fused.logits, general.logits))
        step = int8_model.decoding_step
        with torch.no_grad():
            cache = int8_model(ids[:, :-1], use_cache=True).cache
            int8_model(ids[:, -1:], cache=cache)  # with one thread, starts the next products early
            early = step.recurrent_products_ready(cache.hidden)
            plain = int8_model_step(
                ids[:, -1:], step.embeddings, step.first_layer_inputs, cache.hidden, cache.cell, step.packed,
                step.head_weight, step.head_bias, None, False, torch.zeros(1, dtype=torch.long), None,
            )
            again = int8_model(ids[:, -1:], cache=cache).logits
            cache.hidden[-1] = cache.hidden[-1].clone()  # any change of state voids the products started early
            voided = step.recurrent_products_ready(cache.hidden)
    finally:
        torch.set_num_threads(before)
    assert (early is not None) == (threads == 1)  # one thread: the next step's products were started early
    assert torch.equal(plain[0], again)  # the plain function, computing it all itself, agrees with that
    assert voided is None


@needs_int8
def test_int8_streams_like_fp32(int8_model, tiny_tokenizer):
    ids = tiny_tokenizer("The tacos", return_tensors="pt")["input_ids"]
    streamer = TextIteratorStreamer(tiny_tokenizer, skip_prompt=True, skip_special_tokens=True)
    thread = Thread(target=int8_model.generate, args=(ids,), kwargs=dict(max_new_tokens=25, streamer=streamer))
    thread.start()
    streamed = "".join(streamer)
    thread.join()
    expected = int8_model.generate(ids, max_new_tokens=25)[0, ids.shape[1] :]
    assert streamed == tiny_tokenizer.decode(expected, skip_special_tokens=True)


@needs_int8
def test_saving_an_int8_model_says_what_to_do(tmp_path, int8_model):
    with pytest.raises(ValueError, match=r"Save the fp32 model instead and quantize after loading"):
        int8_model.save_pretrained(tmp_path)


def test_a_model_that_cannot_be_quantized_stays_fp32_with_a_warning(tiny_tokenizer):
    with torch.device("meta"):
        model = CharLSTMForCausalLM(CharLSTMConfig(vocab_size=len(tiny_tokenizer), hidden_sizes=[8]))
    with pytest.warns(RuntimeWarning, match="Keeping fp32 weights: .*runs on the CPU only"):
        same = quantize(model)
    assert same is model
    assert not is_quantized(same)


@needs_int8
def test_the_cli_and_space_loader_use_int8_unless_told_not_to(tiny_model_dir, capsys):
    from charlstm.cli import main
    from charlstm.generation.sampling import load_generator

    assert is_quantized(load_generator(tiny_model_dir).model)
    assert not is_quantized(load_generator(tiny_model_dir, int8=False).model)
    arguments = ["generate", "The", "--model", str(tiny_model_dir), "--seed", "3", "--max-new-tokens", "20"]
    assert main([*arguments, "--fp32"]) == 0
    assert capsys.readouterr().out.startswith("The")


@needs_int8
def test_eval_int8_reports_bpc_close_to_fp32(tmp_path, tiny_model_dir):
    import json

    from charlstm.cli import main
    from tests.conftest import TINY_CORPUS

    data = tmp_path / "reviews.jsonl"
    data.write_text("".join(json.dumps({"text": text, "stars": 3}) + "\n" for text in TINY_CORPUS * 4))
    figures = {}
    for weights in ("fp32", "int8"):
        report = tmp_path / f"{weights}.json"
        flags = ["--int8"] if weights == "int8" else []
        command = ["eval", "--model", str(tiny_model_dir), "--dataset", str(data), "--validation-fraction", "0.5"]
        assert main([*command, "--seq-len", "64", "--json", str(report), *flags]) == 0
        figures[weights] = json.loads(report.read_text())
    assert figures["int8"]["weights"] == "int8" and figures["fp32"]["weights"] == "fp32"
    assert abs(figures["int8"]["eval_bpc"] - figures["fp32"]["eval_bpc"]) < 0.02


@needs_int8
def test_int8_generations_taking_turns_each_get_their_own_numbers(int8_model, tiny_tokenizer):
    # The early recurrent products live with the model's decoding step, not with a cache: two generations taking
    # turns on one model (as two users of the Space can) must each get the numbers they get alone.
    ids = [tiny_tokenizer(text, return_tensors="pt")["input_ids"] for text in ("Great tacos", "Slow servic")]

    def steps(rows, turns):
        caches = [int8_model(row[:, :-1], use_cache=True).cache for row in rows]
        logits = [[] for _ in rows]
        for _ in range(turns):
            for row, cache, out in zip(rows, caches, logits):
                out.append(int8_model(row[:, -1:], cache=cache).logits)
        return logits

    before = torch.get_num_threads()
    torch.set_num_threads(1)  # the early products are started with one thread only
    try:
        with torch.no_grad():
            together = steps(ids, 4)
            alone = [steps([row], 4)[0] for row in ids]
    finally:
        torch.set_num_threads(before)
    assert all(torch.equal(a, b) for mine, theirs in zip(together, alone) for a, b in zip(mine, theirs))


@needs_int8
def test_quantize_works_on_a_model_loaded_as_remote_code(tmp_path, tiny_model_dir, int8_model, tiny_tokenizer):
    # A Hub user's model class comes from the downloaded modeling file, not from this package: quantize finds the
    # layers and the decoding step by what they are, and the numbers are those of the package's own int8 model.
    import shutil

    from transformers.dynamic_module_utils import get_class_from_dynamic_module

    # The class AutoModelForCausalLM takes with trust_remote_code where this package is not installed.
    copy = shutil.copytree(tiny_model_dir, tmp_path / "copy")
    remote_class = get_class_from_dynamic_module("modeling_charlstm.CharLSTMForCausalLM", str(copy))
    remote = remote_class.from_pretrained(copy).eval()
    assert type(remote).__module__.startswith("transformers_modules.")
    remote_int8 = quantize(remote)
    assert is_quantized(remote_int8) and remote_int8.decoding_step is not None
    ids = tiny_tokenizer("The tacos", return_tensors="pt")["input_ids"]
    settings = {"max_new_tokens": 20, "do_sample": False, "output_logits": True, "return_dict_in_generate": True}
    expected, got = int8_model.generate(ids, **settings), remote_int8.generate(ids, **settings)
    assert torch.equal(got.sequences, expected.sequences)
    assert all(torch.equal(a, b) for a, b in zip(got.logits, expected.logits))


@needs_int8
def test_a_copy_of_an_int8_model_after_generating_generates_the_same(int8_model, tiny_tokenizer):
    import copy

    ids = tiny_tokenizer("Cold", return_tensors="pt")["input_ids"]
    first = int8_model.generate(ids, max_new_tokens=15, do_sample=False)  # leaves early products behind
    assert torch.equal(copy.deepcopy(int8_model).generate(ids, max_new_tokens=15, do_sample=False), first)


@needs_int8
def test_int8_with_a_rating_input_matches_its_layers_and_fp32(tiny_tokenizer):
    # The rating input widens the first layer's input: the whole int8 step looks up (rating, character) rows at
    # batch 1 and concatenates the rating embedding at larger batches; both must be the layer-by-layer numbers,
    # carry the rating in the cache as fp32 does, and stay close to fp32.
    model = make_tiny_model(tiny_tokenizer, seed=2, conditioned_on_stars=True, star_embedding_dim=6)
    int8 = quantize(model)
    settings = dict(max_new_tokens=12, do_sample=False, output_logits=True, return_dict_in_generate=True)
    for prompts in (["<1star>Great tacos"], ["<1star>Great tacos", "<5star>Great tacos"]):
        ids = tiny_tokenizer(prompts, return_tensors="pt")["input_ids"]
        fused = int8.generate(ids, **settings)
        general = int8.generate(ids, output_hidden_states=True, **settings)
        assert torch.equal(fused.sequences, general.sequences)
        assert all(torch.equal(a, b) for a, b in zip(fused.logits, general.logits))
        fp32 = model.generate(ids, **settings)
        assert max((a - b).abs().max().item() for a, b in zip(fp32.logits, fused.logits)) < 0.05
    with torch.no_grad():
        one = int8(ids[:1, :-1], use_cache=True).cache
        assert one.stars.tolist() == [1]
        # The same state and character with the rating the cache carries changed: other numbers.
        five = CharLSTMCache(list(one.hidden), list(one.cell), stars=torch.tensor([5]))
        stepped = [int8(ids[:1, -1:], cache=cache).logits for cache in (one, five)]
    assert five.stars.tolist() == [5] and (stepped[0] - stepped[1]).abs().max() > 1e-4
