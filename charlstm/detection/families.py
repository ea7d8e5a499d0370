"""Who wrote a machine text, by family, and train/test splits that hold a whole family or a whole set out.

A detector's figure on the generators it trained on says little about the next one; its figure on a family it never
saw is what a user can expect. These splits measure that: every text of the held-out family (or set) is tested and
none is trained on, human texts of the same collections are split between the two sides, and a text and its rewrites
(the same article or review, rewritten by several models or kept in several files) always fall on the same side.
Pure Python: the splits are checked by tests without a model.
"""

import hashlib
import re
from collections import Counter

HUMAN_FAMILY = "human"
OWN_FAMILY = "char-LSTM (ours)"

# (family, name prefixes after lower-casing and dropping how the text was made: ':polish', '+dipper-paraphrase').
# Checked in order: "gpt-3.5" before "gpt-3", "gpt-neox" before "gpt-neo".
FAMILIES = (
    ("OpenAI GPT-3.5/4/4o", ("gpt-3.5", "gpt-4", "chatgpt")),
    ("OpenAI GPT-3", ("gpt-3", "davinci", "text-davinci", "ada", "babbage", "curie")),
    ("Anthropic Claude", ("claude",)),
    ("Google Gemini/PaLM", ("gemini", "palm", "bard")),
    ("Meta Llama", ("llama",)),
    ("Mistral", ("mistral", "mixtral")),
    ("Qwen", ("qwen",)),
    ("DeepSeek", ("deepseek",)),
    ("open base models", ("gpt2", "gpt-2", "gpt-neo", "gpt-j", "opt-", "pythia")),
    ("Flan-T5", ("flan-t5",)),
)

# What the labelled sets of ../shared/data/detection hold, for a reader who never saw the files.
SET_DESCRIPTIONS = {
    "gambetti2023_yelp_gpt3_val": "Yelp reviews by GPT-3",
    "salminen2022_amazon_gpt2_dev": "Amazon reviews by GPT-2",
    "raidar2024_yelp_gpt": "Yelp reviews rewritten by GPT-3.5/4, davinci and ada",
    "biscope2024_llm_rewrites": "Yelp reviews, stories and abstracts rewritten by GPT, Claude and Gemini",
    "fastdetectgpt2024_open_and_gpt": "news, Wikipedia, stories and medical answers continued by GPT-2 to GPT-4",
    "imbd2025_llm_revisions": "news, Wikipedia, stories and medical answers polished by Llama, Mistral, Qwen, "
                              "DeepSeek and GPT",
    "detectllm2023_amazon_chatgpt": "Amazon reviews by ChatGPT",
    "outfox2024_essays": "student essays by ChatGPT, davinci and Flan-T5, some paraphrased",
}


def generator_family(generator: str, own_generators: frozenset[str] = frozenset()) -> str:
    """The family of a `generator` name (a row's `generator` column); `own_generators` name our own char-LSTMs. A
    name no family claims is a family of its own (its name without how the text was made)."""
    if generator == "human":
        return HUMAN_FAMILY
    if generator in own_generators:
        return OWN_FAMILY
    name = re.split(r"[:+]", generator.lower(), maxsplit=1)[0]
    for family, prefixes in FAMILIES:
        if name.startswith(prefixes):
            return family
    return name


def describe_set(source: str) -> str:
    """A labelled set's file name -> what it holds, in words; other names as they are."""
    stem = re.sub(r"\.jsonl?$", "", source.rsplit("/", 1)[-1])
    return SET_DESCRIPTIONS.get(stem, stem)


def text_groups(texts: list[str], pair_ids: list | None = None, shingle_words: int = 8,
                common_above: int = 20) -> list[int]:
    """
    A group number per text: texts that share a run of `shingle_words` words (a rewrite and its original, the same
    article in two files), or the same `pair_ids` value (where a set links a rewrite to its review), are one group.
    Runs found in more than `common_above` texts are stock phrases, not a shared source, and do not link.
    """
    parent = list(range(len(texts)))

    def root(index: int) -> int:
        while parent[index] != index:
            parent[index] = parent[parent[index]]
            index = parent[index]
        return index

    def join(first: int, second: int) -> None:
        parent[root(first)] = root(second)

    keys: dict = {}
    for index, text in enumerate(texts):
        words = re.findall(r"\w+", text.lower())
        runs = {" ".join(words[start : start + shingle_words]) for start in range(len(words) - shingle_words + 1)}
        for run in runs:
            keys.setdefault(hashlib.blake2b(run.encode(), digest_size=8).digest(), []).append(index)
        if pair_ids is not None and pair_ids[index] is not None:
            keys.setdefault(("pair", pair_ids[index]), []).append(index)
    for key, members in keys.items():
        if len(members) > 1 and (isinstance(key, tuple) or len(members) <= common_above):
            for member in members[1:]:
                join(member, members[0])
    roots = [root(index) for index in range(len(texts))]
    numbers = {value: number for number, value in enumerate(dict.fromkeys(roots))}
    return [numbers[value] for value in roots]


def held_out_split(held_out: list[bool], groups: list[int], labels: list[int], sources: list[str],
                   human_test_share: float = 0.5, seed: int = 0) -> tuple[list[int], list[int]]:
    """
    (train, test) indices for testing on the texts marked `held_out` (a family's or a set's): they are all tested,
    never trained on. Human texts (label 0) of the sources the held-out machine texts come from are tested too, a
    `human_test_share` of their groups chosen by `seed`, so that the test has both kinds from the same collections.
    Every group with a tested text is out of training entirely: no text is trained on whose rewrite is tested.
    Machine texts of other families in such a group are in neither.
    """
    sources_tested = {source for source, out, label in zip(sources, held_out, labels) if out and label == 1}
    test_groups = {group for group, out in zip(groups, held_out) if out}
    test_groups |= {group for group, label, source in zip(groups, labels, sources)
                    if label == 0 and source in sources_tested and _drawn(group, human_test_share, seed)}
    train, test = [], []
    for index, (group, out, label) in enumerate(zip(groups, held_out, labels)):
        if group not in test_groups:
            if not out:
                train.append(index)
        elif out or label == 0:
            test.append(index)
    return train, test


def group_split(groups: list[int], test_share: float = 0.5, seed: int = 0) -> tuple[list[int], list[int]]:
    """(train, test) indices, whole groups on one side, `test_share` of the groups tested (drawn with `seed`)."""
    train, test = [], []
    for index, group in enumerate(groups):
        (test if _drawn(group, test_share, seed) else train).append(index)
    return train, test


def family_counts(families: list[str]) -> Counter:
    return Counter(family for family in families if family != HUMAN_FAMILY)


def _drawn(group: int, share: float, seed: int) -> bool:
    """Whether `group` falls in the drawn `share`: the same answer for a group every time, whatever else is drawn."""
    digest = hashlib.blake2b(f"{seed}:{group}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big") / 2**64 < share


def balanced_selection(rows: list[dict], per_side: int, seed: int = 0, balance_each_set: bool = False) -> list[dict]:
    """
    At most `per_side` human and `per_side` machine rows of each source, the machine ones shared equally between its
    generators and, within a generator, drawn in the domain shares of the source's human rows: no set, generator or
    domain dominates, and a domain does not read as machine because one side of a set has more of it.
    `balance_each_set`: no more machine rows than the source's human ones either, so that a whole set does not.
    """
    import random

    rng = random.Random(seed)
    chosen = []
    for source in sorted({row["source"] for row in rows}):
        mine = [row for row in rows if row["source"] == source]
        human = [row for row in mine if row["label"] == 0]
        human = rng.sample(human, min(per_side, len(human)))
        machine_quota = len(human) if balance_each_set and human else per_side
        domains = Counter(row["domain"] for row in human)
        machine: dict = {}
        for row in mine:
            if row["label"] == 1:
                machine.setdefault((row["generator"], row["domain"]), []).append(row)
        generators = sorted({generator for generator, _ in machine})
        for generator in generators:
            shares = {domain: domains[domain] for named, domain in machine if named == generator}
            if not sum(shares.values()):  # no human text of these domains: equal shares
                shares = dict.fromkeys(shares, 1)
            for domain, share in shares.items():
                pool = machine[(generator, domain)]
                want = round(machine_quota / len(generators) * share / sum(shares.values()))
                chosen += rng.sample(pool, min(want, len(pool)))
        chosen += human
    return chosen
