"""How writing reviews uses the CPU: one torch thread, and the int8 step compiled before the first request.

Writing is a chain of small products, one character after another. A second thread adds a barrier to every
product; on a machine whose other core is busy (another process, the Space's web server), each barrier waits for a
time slice, and a step that takes well under a millisecond alone takes many. That, not int8 itself, is what made
`charlstm generate` slower with int8 weights than with fp32 in a fresh process; `scripts/bench_cold_start.py`
measures both.
"""

import os

import torch


def use_one_thread() -> None:
    """One torch thread for this process, unless the user chose a number with OMP_NUM_THREADS."""
    if "OMP_NUM_THREADS" not in os.environ:
        torch.set_num_threads(1)


@torch.no_grad()
def warm_up(model, tokenizer, steps: int = 3) -> None:
    """
    A few greedy decoding steps at batch 1, so that TorchScript's profiling runs of the int8 step (`scripted` in
    `charlstm.quantization`) happen at load rather than in a person's first request.
    """
    ids = torch.tensor([[tokenizer.bos_token_id]], device=model.device)
    model.generate(ids, attention_mask=torch.ones_like(ids), max_new_tokens=steps, min_new_tokens=steps,
                   do_sample=False, top_k=50, pad_token_id=tokenizer.pad_token_id)  # 50: see ReviewGenerator._run
