"""The models themselves: config checks, padding, the state as cache, heads, loading and bad checkpoints."""

import json
import math
import shutil
import subprocess
import sys
import textwrap

import pytest
import torch
from transformers import AutoConfig, AutoModel, AutoModelForCausalLM, AutoModelForSequenceClassification

from charlstm import (
    CharLSTMConfig,
    CharLSTMForCausalLM,
    CharLSTMForSequenceClassification,
    CharLSTMModel,
)
from tests.conftest import make_tiny_model

PROMPTS = ["The tacos were", "Cold", "Best brunch in town, fluffy"]


@pytest.mark.parametrize(
    ("fields", "named"),
    [
        ({"hidden_sizes": []}, "hidden_sizes"),
        ({"hidden_sizes": [32, 0]}, "hidden_sizes"),
        ({"vocab_size": 5}, "vocab_size"),
        ({"embedding_dim": 0}, "embedding_dim"),
        ({"dropout": 1.5}, "dropout"),
        ({"tie_word_embeddings": True, "embedding_dim": 16, "hidden_sizes": [32, 24]}, "tie_word_embeddings"),
        ({"vocab_size": 20, "eos_token_id": 40}, "eos_token_id"),
        ({"classifier_pooling": "max"}, "classifier_pooling"),
        ({"ngram_word_max_n": 5}, "ngram_word_max_n"),
        ({"ngram_buckets": 101, "ngram_max_n": 0}, "no n-grams to count"),
    ],
)
def test_invalid_config_names_the_field(fields, named):
    with pytest.raises(ValueError, match=named):
        CharLSTMConfig(**fields)


def test_layers_of_different_sizes(tiny_model):
    sizes = [lstm.hidden_size for lstm in tiny_model.model.layers]
    assert sizes == [32, 24]
    assert tiny_model.lm_head.in_features == 24


def test_tied_embeddings_share_one_tensor(tiny_tokenizer):
    model = make_tiny_model(tiny_tokenizer, hidden_sizes=[32, 16], tie_word_embeddings=True)
    assert model.lm_head.weight.data_ptr() == model.model.embeddings.weight.data_ptr()


def test_loss_is_next_character_cross_entropy(tiny_model, tiny_tokenizer):
    batch = tiny_tokenizer(["Tasty soup."], return_tensors="pt")
    output = tiny_model(**batch, labels=batch["input_ids"])
    log_probs = torch.log_softmax(output.logits[0, :-1], dim=-1)
    targets = batch["input_ids"][0, 1:]
    expected = -log_probs.gather(1, targets[:, None]).mean()
    torch.testing.assert_close(output.loss, expected)
    # An untrained model is close to uniform: loss near ln(vocab).
    assert abs(output.loss.item() - math.log(len(tiny_tokenizer))) < 1.0


@pytest.mark.parametrize("padding_side", ["left", "right"])
def test_padded_rows_equal_rows_alone(tiny_model, tiny_tokenizer, padding_side):
    tiny_tokenizer.padding_side = padding_side
    try:
        batch = tiny_tokenizer(PROMPTS, return_tensors="pt", padding=True)
    finally:
        tiny_tokenizer.padding_side = "left"
    with torch.no_grad():
        logits = tiny_model(**batch).logits
        for row, prompt in enumerate(PROMPTS):
            alone = tiny_model(**tiny_tokenizer(prompt, return_tensors="pt")).logits[0]
            real = batch["attention_mask"][row].bool()
            torch.testing.assert_close(logits[row][real], alone, rtol=1e-4, atol=1e-5)


def test_padding_in_the_middle_of_a_continuation_leaves_the_state_alone(tiny_model, tiny_tokenizer):
    """A chunk fed after a cache, with pad tokens in it, gives the same state as the real characters alone."""
    ids = tiny_tokenizer("Fresh salsa", return_tensors="pt")["input_ids"]
    pad = tiny_tokenizer.pad_token_id
    with torch.no_grad():
        first = tiny_model(ids[:, :5], use_cache=True)
        padded_chunk = torch.cat([ids[:, 5:8], torch.tensor([[pad, pad]]), ids[:, 8:]], dim=1)
        mask = torch.cat([torch.ones(1, 8), torch.zeros(1, 2), torch.ones(1, ids.shape[1] - 8)], dim=1).long()
        padded = tiny_model(padded_chunk, attention_mask=mask, cache=first.cache)
        whole = tiny_model(ids)
    torch.testing.assert_close(padded.logits[0, -1], whole.logits[0, -1], rtol=1e-4, atol=1e-5)


def test_cache_continuation_equals_one_pass(tiny_model, tiny_tokenizer):
    ids = tiny_tokenizer("Decent pizza for the price", return_tensors="pt")["input_ids"]
    with torch.no_grad():
        whole = tiny_model(ids).logits
        head = tiny_model(ids[:, :10], use_cache=True)
        cache = head.cache
        steps = [tiny_model(ids[:, [t]], cache=cache).logits for t in range(10, ids.shape[1])]
    assert cache.get_seq_length() == ids.shape[1]
    torch.testing.assert_close(torch.cat([head.logits, *steps], dim=1), whole, rtol=1e-4, atol=1e-5)


def test_hidden_states_cover_embeddings_and_every_layer(tiny_model, tiny_tokenizer):
    batch = tiny_tokenizer(PROMPTS, return_tensors="pt", padding=True)
    output = tiny_model.model(**batch, output_hidden_states=True)
    assert [state.shape[-1] for state in output.hidden_states] == [16, 32, 24]
    torch.testing.assert_close(output.hidden_states[-1], output.last_hidden_state)


@pytest.mark.parametrize("pooling", ["last", "mean"])
def test_classifier_pools_real_characters_only(tiny_model_dir, tiny_tokenizer, pooling):
    classifier = CharLSTMForSequenceClassification.from_pretrained(
        tiny_model_dir, num_labels=2, id2label={0: "human", 1: "machine"}, label2id={"human": 0, "machine": 1},
        classifier_pooling=pooling,
    ).eval()
    generator = CharLSTMForCausalLM.from_pretrained(tiny_model_dir)
    # Initialised from the generator: same embedding and LSTM weights.
    torch.testing.assert_close(classifier.model.layers[0].weight_hh_l0, generator.model.layers[0].weight_hh_l0)
    for padding_side in ("left", "right"):
        tiny_tokenizer.padding_side = padding_side
        batch = tiny_tokenizer(PROMPTS, return_tensors="pt", padding=True)
        tiny_tokenizer.padding_side = "left"
        with torch.no_grad():
            logits = classifier(**batch).logits
            alone = torch.cat([classifier(**tiny_tokenizer(p, return_tensors="pt")).logits for p in PROMPTS])
        torch.testing.assert_close(logits, alone, rtol=1e-4, atol=1e-5)
    labels = torch.tensor([0, 1, 1])
    with torch.no_grad():
        output = classifier(**batch, labels=labels)
    torch.testing.assert_close(output.loss, torch.nn.functional.cross_entropy(output.logits, labels))


def test_mean_pooling_reads_every_character_and_last_pooling_the_last_state(tiny_model_dir, tiny_tokenizer):
    ids = tiny_tokenizer("Great tacos, slow service", return_tensors="pt")["input_ids"]
    with torch.no_grad():
        states = CharLSTMForCausalLM.from_pretrained(tiny_model_dir).model(ids).last_hidden_state[0]
        for pooling, pooled in (("last", states[-1]), ("mean", states.mean(dim=0))):
            classifier = CharLSTMForSequenceClassification.from_pretrained(
                tiny_model_dir, num_labels=2, classifier_pooling=pooling
            ).eval()
            torch.testing.assert_close(classifier(ids).logits[0], classifier.score(pooled))


def test_auto_classes_load_the_installed_package_without_remote_code(tiny_model_dir, tiny_model, tiny_tokenizer):
    assert isinstance(AutoConfig.from_pretrained(tiny_model_dir), CharLSTMConfig)
    assert type(AutoModel.from_pretrained(tiny_model_dir)) is CharLSTMModel
    assert type(AutoModelForSequenceClassification.from_pretrained(tiny_model_dir)) is CharLSTMForSequenceClassification
    loaded = AutoModelForCausalLM.from_pretrained(tiny_model_dir)
    assert type(loaded) is CharLSTMForCausalLM
    ids = tiny_tokenizer("Tasty", return_tensors="pt")["input_ids"]
    torch.testing.assert_close(loaded(ids).logits, tiny_model(ids).logits)


def test_saved_directory_carries_code_and_auto_map(tiny_model_dir):
    names = {path.name for path in tiny_model_dir.iterdir()}
    assert {"model.safetensors", "config.json", "vocab.json", "tokenizer_config.json"} <= names
    assert {"configuration_charlstm.py", "modeling_charlstm.py", "tokenization_charlstm.py"} <= names
    auto_map = json.loads((tiny_model_dir / "config.json").read_text())["auto_map"]
    assert set(auto_map) == {"AutoConfig", "AutoModel", "AutoModelForCausalLM", "AutoModelForSequenceClassification"}
    tokenizer_map = json.loads((tiny_model_dir / "tokenizer_config.json").read_text())["auto_map"]
    assert tokenizer_map["AutoTokenizer"][0] == "tokenization_charlstm.CharLSTMTokenizer"


REMOTE_CODE_SCRIPT = textwrap.dedent(
    """
    import json, sys
    # As on a machine without the package: neither the checkout nor the (editable) install can be imported.
    sys.path = [p for p in sys.path if p not in ("", {project!r})]
    sys.modules["charlstm"] = None
    try:
        import charlstm
        raise SystemExit("charlstm must not be importable here")
    except ImportError:
        pass
    import torch
    from transformers import AutoModelForCausalLM, AutoModelForSequenceClassification, AutoTokenizer
    path = {path!r}
    model = AutoModelForCausalLM.from_pretrained(path, trust_remote_code=True).eval()
    tokenizer = AutoTokenizer.from_pretrained(path, trust_remote_code=True)
    classifier = AutoModelForSequenceClassification.from_pretrained(path, trust_remote_code=True, num_labels=2)
    ids = tokenizer("Tasty", return_tensors="pt")["input_ids"]
    with torch.no_grad():
        logits = model(ids).logits[0].tolist()
        greedy = model.generate(ids, max_new_tokens=12, do_sample=False)[0].tolist()
    print(json.dumps({{"module": type(model).__module__, "tokenizer": type(tokenizer).__module__,
                      "classifier": type(classifier).__name__, "logits": logits, "greedy": greedy}}))
    """
)


def test_copied_directory_loads_with_remote_code_where_the_package_is_missing(
    tmp_path, tiny_model_dir, tiny_model, tiny_tokenizer
):
    copy = shutil.copytree(tiny_model_dir, tmp_path / "copy")
    project = str(__import__("pathlib").Path(__file__).resolve().parents[1])
    script = REMOTE_CODE_SCRIPT.format(project=project, path=str(copy))
    result = subprocess.run([sys.executable, "-c", script], cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    remote = json.loads(result.stdout.strip().splitlines()[-1])
    assert remote["module"].startswith("transformers_modules.")
    assert remote["tokenizer"].startswith("transformers_modules.")
    assert remote["classifier"] == "CharLSTMForSequenceClassification"
    ids = tiny_tokenizer("Tasty", return_tensors="pt")["input_ids"]
    with torch.no_grad():
        torch.testing.assert_close(torch.tensor(remote["logits"]), tiny_model(ids).logits[0])
        local_greedy = tiny_model.generate(ids, max_new_tokens=12, do_sample=False)[0].tolist()
    assert remote["greedy"] == local_greedy


def test_empty_input_is_a_clear_error(tiny_model):
    with pytest.raises(ValueError, match="input_ids is empty"):
        tiny_model(torch.zeros(1, 0, dtype=torch.long))
    with pytest.raises(ValueError, match="input_ids is empty"):
        tiny_model.generate(torch.zeros(1, 0, dtype=torch.long), max_new_tokens=3)


def test_bad_field_in_config_json_names_it(tmp_path, tiny_model_dir):
    copy = shutil.copytree(tiny_model_dir, tmp_path / "copy")
    config = json.loads((copy / "config.json").read_text())
    config["hidden_sizes"] = []
    (copy / "config.json").write_text(json.dumps(config))
    with pytest.raises(ValueError, match="hidden_sizes"):
        AutoModelForCausalLM.from_pretrained(copy)


def test_config_json_that_does_not_match_the_weights_is_refused(tmp_path, tiny_model_dir):
    copy = shutil.copytree(tiny_model_dir, tmp_path / "copy")
    config = json.loads((copy / "config.json").read_text())
    config["hidden_sizes"] = [32, 99]
    (copy / "config.json").write_text(json.dumps(config))
    with pytest.raises(RuntimeError, match="ignore_mismatched_sizes"):
        AutoModelForCausalLM.from_pretrained(copy)


def test_missing_weights_file_is_a_clear_error(tmp_path, tiny_model_dir):
    copy = shutil.copytree(tiny_model_dir, tmp_path / "copy")
    (copy / "model.safetensors").unlink()
    with pytest.raises(OSError, match="no file named model.safetensors"):
        AutoModelForCausalLM.from_pretrained(copy)


def test_truncated_weights_file_is_a_clear_error(tmp_path, tiny_model_dir):
    copy = shutil.copytree(tiny_model_dir, tmp_path / "copy")
    weights = copy / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[: weights.stat().st_size // 2])
    with pytest.raises(OSError, match="corrupt or truncated"):
        AutoModelForCausalLM.from_pretrained(copy)
