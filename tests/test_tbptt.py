"""`charlstm train --carry-state`: truncated backpropagation through time over parallel streams of the reviews.

What a user relies on: the state really flows from block to block (the loss is the loss of one long sequence), every
row starts from zeros where its stream starts, and a resumed run goes on with the state it stopped with.
"""

import os

import datasets
import pytest
import torch
from safetensors import safe_open
from safetensors.torch import load_file
from transformers import TrainingArguments

from charlstm.cli import main
from charlstm.runfiles import CARRIED_STATE
from charlstm.training.data import IGNORE_INDEX, ParallelStreams, framed_stream
from charlstm.training.trainer import make_trainer
from tests.conftest import make_tiny_model
from tests.test_training import TINY_RUN, make_reviews, run_under_torchrun, write_jsonl

ROWS, SEQ_LEN = 4, 16


@pytest.fixture(scope="module")
def streams(tiny_tokenizer) -> ParallelStreams:
    reviews = datasets.Dataset.from_list(make_reviews(40))
    return ParallelStreams(*framed_stream(reviews, tiny_tokenizer, condition_on_stars=False), SEQ_LEN, ROWS)


@pytest.fixture
def carrying_trainer(tmp_path, tiny_tokenizer, streams):
    """The Trainer `charlstm train --carry-state` builds, on the streams, with a tiny two-layer model."""
    model = make_tiny_model(tiny_tokenizer)
    with torch.no_grad():
        # Untrained weights barely let the state reach the next character; larger ones make it count, so a state
        # that does not flow shows in the loss.
        for parameter in model.model.layers.parameters():
            parameter.mul_(3.0)
        model.lm_head.weight.mul_(6.0)
    arguments = TrainingArguments(output_dir=str(tmp_path), per_device_train_batch_size=ROWS, report_to="none",
                                  use_cpu=True, disable_tqdm=True)
    return make_trainer(model, tiny_tokenizer, arguments, streams, None)


def summed_training_loss(trainer, batches) -> float:
    """What the training steps' losses add up to in nats: compute_loss is a mean over the predicted characters."""
    total = 0.0
    with torch.no_grad():
        for batch in batches:
            predicted = int((batch["labels"][:, 1:] != IGNORE_INDEX).sum())
            total += float(trainer.compute_loss(trainer.model, batch)) * predicted
    return total


def zero_state_loss(model, ids: torch.Tensor, labels: torch.Tensor) -> float:
    """Summed loss in nats of one forward from a zero state."""
    with torch.no_grad():
        return float(model(input_ids=ids, labels=labels).loss) * int((labels[:, 1:] != IGNORE_INDEX).sum())


def test_carried_state_gives_the_loss_of_each_stream_read_in_one_go(carrying_trainer, streams):
    batches = list(carrying_trainer.get_train_dataloader())
    assert len(batches) == streams.blocks_per_stream > 3
    carried = summed_training_loss(carrying_trainer, batches)

    # Each row's stream as one long sequence split at the same points: its blocks overlap by one token.
    length = streams.blocks_per_stream * SEQ_LEN
    starts = [row * length for row in range(ROWS)]
    ids = torch.stack([torch.from_numpy(streams.ids[start : start + length + 1]).long() for start in starts])
    labels = torch.stack([torch.from_numpy(streams.labels[start : start + length + 1]).long() for start in starts])
    labels[:, 0] = IGNORE_INDEX
    assert carried == pytest.approx(zero_state_loss(carrying_trainer.model, ids, labels), rel=1e-5)

    # The comparison can tell: blocks that each start from zeros add up to something clearly different.
    independent = sum(zero_state_loss(carrying_trainer.model, batch["input_ids"], batch["labels"]) for batch in batches)
    assert abs(independent - carried) > 1e-2 * carried


def test_every_row_starts_from_zeros_where_its_stream_starts_again(carrying_trainer):
    batches = list(carrying_trainer.get_train_dataloader())
    first = batches[0]
    assert first["block"].tolist() == [0] * ROWS
    zero_state = zero_state_loss(carrying_trainer.model, first["input_ids"], first["labels"])
    assert summed_training_loss(carrying_trainer, [first]) == pytest.approx(zero_state, rel=1e-6)
    # A whole epoch later the streams start over: the state the rows ended the epoch with is not carried in.
    summed_training_loss(carrying_trainer, batches[1:])
    assert summed_training_loss(carrying_trainer, [first]) == pytest.approx(zero_state, rel=1e-6)
    # ...whereas inside the epoch it is: the second block of the streams does not see zeros.
    second = batches[1]
    summed_training_loss(carrying_trainer, [first])
    carried = summed_training_loss(carrying_trainer, [second])
    assert carried != pytest.approx(zero_state_loss(carrying_trainer.model, second["input_ids"], second["labels"]),
                                    rel=1e-4)


@pytest.fixture(scope="module")
def reviews_file(tmp_path_factory):
    return write_jsonl(tmp_path_factory.mktemp("data") / "reviews.jsonl", make_reviews())


def carried_run(reviews_file, output, *extra) -> list[str]:
    return ["train", "--dataset", str(reviews_file), *TINY_RUN, "--carry-state", "--output-dir", str(output), *extra]


def checkpoint_files(output, step: int) -> tuple[dict, dict, dict]:
    """A checkpoint's weights, carried state and the layout its state belongs to."""
    checkpoint = os.path.join(output, f"checkpoint-{step}")
    path = os.path.join(checkpoint, CARRIED_STATE.format(process=0))
    with safe_open(path, framework="pt") as handle:
        layout = handle.metadata()
    return load_file(os.path.join(checkpoint, "model.safetensors")), load_file(path), layout


def test_a_resumed_run_continues_the_carried_state(tmp_path, reviews_file):
    # 40 steps cross the end of the first epoch (34 blocks per stream), so the second half also starts streams over.
    # A constant learning rate: the first half of the resumed run must not decay as a 20-step run would.
    unbroken, resumed = tmp_path / "unbroken", tmp_path / "resumed"
    steps = ["--lr-schedule", "constant", "--eval-steps", "20"]
    assert main(carried_run(reviews_file, unbroken, *steps, "--max-steps", "40")) == 0
    assert main(carried_run(reviews_file, resumed, *steps, "--max-steps", "20")) == 0
    assert main(carried_run(reviews_file, resumed, *steps, "--max-steps", "40", "--resume")) == 0

    weights, state, layout = checkpoint_files(unbroken, 40)
    resumed_weights, resumed_state, resumed_layout = checkpoint_files(resumed, 40)
    assert layout == resumed_layout and int(layout["next_block"]) == 40 - 34
    assert all(value.abs().max() > 0 for value in state.values())
    for name, value in state.items():
        assert torch.allclose(resumed_state[name], value, atol=1e-5), name
    for name, value in weights.items():
        assert torch.allclose(resumed_weights[name], value, atol=1e-5), name


def test_gradient_accumulation_reads_each_rows_blocks_in_order(tmp_path, reviews_file):
    output = tmp_path / "accumulated"
    assert main(carried_run(reviews_file, output, "--max-steps", "6", "--eval-steps", "6",
                            "--gradient-accumulation-steps", "2")) == 0
    # Two consecutive blocks per optimiser step: the rows have read blocks 0-11 of their streams.
    assert int(checkpoint_files(output, 6)[2]["next_block"]) == 12


@pytest.mark.parametrize(
    ("first", "then", "message"),
    [
        (["--carry-state"], [], "was trained with --carry-state"),
        ([], ["--carry-state"], "was trained without --carry-state"),
        (["--carry-state"], ["--carry-state", "--batch-size", "4"], "resume with the same --batch-size"),
    ],
)
def test_resuming_with_another_layout_is_a_one_line_error(tmp_path, reviews_file, capsys, first, then, message):
    run = ["train", "--dataset", str(reviews_file), *TINY_RUN, "--eval-steps", "2", "--output-dir", str(tmp_path)]
    assert main([*run, *first, "--max-steps", "2"]) == 0
    capsys.readouterr()
    assert main([*run, *then, "--max-steps", "4", "--resume"]) == 2
    error = capsys.readouterr().err.strip().splitlines()
    assert error[-1].startswith("charlstm train: error: ") and message in error[-1], error


@pytest.mark.slow
def test_two_ddp_processes_carry_the_same_streams_as_one_process_with_both_batches(tmp_path, reviews_file):
    # 2 processes x 4 rows lay out the same 8 streams as 1 process x 8 rows, each process taking its 4: with the
    # gradients averaged over all rows, both runs take the same steps.
    steps = ["--max-steps", "10", "--eval-steps", "10"]
    one = carried_run(reviews_file, tmp_path / "one", *steps)
    assert main(one) == 0
    two = carried_run(reviews_file, tmp_path / "two", *steps, "--batch-size", "4")
    finished = run_under_torchrun(*two)
    assert finished.returncode == 0, finished.stderr[-3000:]

    weights, state, _ = checkpoint_files(tmp_path / "one", 10)
    ddp_weights = checkpoint_files(tmp_path / "two", 10)[0]
    for name, value in weights.items():
        assert torch.allclose(ddp_weights[name], value, atol=1e-5), name
    # Process 1 carries the state of streams 4-7.
    process_1 = load_file(tmp_path / "two" / "checkpoint-10" / CARRIED_STATE.format(process=1))
    for name, value in state.items():
        assert torch.allclose(process_1[name], value[4:], atol=1e-5), name
