"""The gold-reward task: pick the marked items of a list, most important first, and nothing else.

A prompt lists 5-8 short items; some carry importance marks (`*` = 1, `**` = 2):

    items: cat dog* sun box** pen
    key:

and the ideal response (the SFT reference) names the marked items, heavier first, ties in the
order of the prompt:  " box dog". This is summarisation in miniature: select the important points,
order them, leave out the rest, be short. Every item word is ONE Pythia token with its leading
space and a mark is one more token (" dog" "*", " box" "**"), so a prompt is ~15 tokens and a
reference 2-4.

`capitalise_key` also writes the marked items Capitalised (`items: cat Dog* sun Box** pen`; the
response stays lower-case, " box dog"). A Capitalised word is its own Pythia token, so a marked
item is visible from its own position and one attention layer can select it; with lower-case
items, knowing that " dog" is marked takes a second layer (the mark comes AFTER the word), and a
tiny 2-layer model trained a few hundred steps on a CPU never learns the selection (it learns the
format: 2-3 random item words, then EOS). Ordering by weight still needs the marks, so with
capitalisation a small SFT model selects well and orders imperfectly: room for preference learning.

The gold reward r*(x, y) reads the response TEXT (words split on whitespace) against the prompt:

    r* = recall + order_weight * order - extra_cost * extras - length_cost * |y|_words

    recall = (weights of the distinct key items named) / (weights of all key items)      in [0, 1]
    order  = (pairs of key items named in the target's relative order) / C(K, 2)          in [0, 1]
    extras = words that are not the first mention of a key item (other items, repeats, junk)
    |y|    = number of words (the length cost)

The reference scores 1 + order_weight - length_cost * K, the maximum; the empty response 0.
r* is known exactly, so every evaluation number on this task is exact, not a judge's opinion.
"""

from __future__ import annotations

import random
import re
from dataclasses import dataclass
from itertools import combinations

# One Pythia token each with a leading space, and " word*" / " word**" split into word + mark
# (checked in tests/eval/test_gold_task.py). "key" is left out: it is the prompt's cue word.
# " Word" is one token too for all but the last two (" Ink", " Toe" are two): keep n_words <= 44
# with capitalise_key.
WORDS = (
    "cat dog sun box pen cup hat map bag bed car egg fan fox gem jar kit log mug net pig rug tea "
    "toy van web zip ant bee cow ham ice jam leg lip nut oak pan pot ram rat sea sky tub ink toe"
).split()

PROMPT_HEAD = "items:"  # the prompt starts with this, then the items
PROMPT_CUE = "\nkey:"  # the prompt ends with this; the response follows after a space
_PROMPT_RE = re.compile(r"^items:((?: [A-Za-z]+\*{0,2})+)\nkey:$")


@dataclass
class GoldTaskConfig:
    min_items: int = 5  # fewest items in a prompt's list
    max_items: int = 8  # most items in a prompt's list (at most len(WORDS))
    min_key: int = 2  # fewest marked (key) items per prompt (>= 2, so order is defined)
    max_key: int = 3  # most marked items per prompt (< min_items, so something is left out)
    order_weight: float = 0.5  # weight of the order score in r*
    extra_cost: float = 0.25  # r* lost per word that is not a first mention of a key item
    length_cost: float = 0.02  # r* lost per word of the response (the length cost)
    n_words: int = len(WORDS)  # items are drawn from WORDS[:n_words]; fewer words = an easier task for tiny models
    capitalise_key: bool = False  # write marked items Capitalised (" Dog*"): a distinct token, so selecting them is easy

    def __post_init__(self) -> None:
        if not self.max_items <= self.n_words <= len(WORDS):
            raise ValueError(f"gold task needs max_items={self.max_items} <= n_words={self.n_words} <= {len(WORDS)}")
        if not 2 <= self.min_key <= self.max_key < self.min_items <= self.max_items <= len(WORDS):
            raise ValueError(
                f"gold task needs 2 <= min_key <= max_key < min_items <= max_items <= {len(WORDS)}; got "
                f"min_key={self.min_key} max_key={self.max_key} min_items={self.min_items} max_items={self.max_items}"
            )


@dataclass(frozen=True)
class Item:
    word: str  # the item, one of WORDS
    weight: int  # 0 (unmarked), 1 (`*`) or 2 (`**`)


@dataclass(frozen=True)
class GoldExample:
    prompt: str  # "items: cat dog* sun box** pen\nkey:"
    reference: str  # " box dog": the key items, heavier first, ties in prompt order (max r*)
    items: tuple[Item, ...]  # the list in prompt order


@dataclass(frozen=True)
class GoldScore:
    reward: float  # r*(x, y)
    recall: float  # weight share of the key items named
    order: float  # share of key-item pairs named in the target order
    extras: int  # words that are not the first mention of a key item
    words: int  # |y| in words


def render_prompt(items: tuple[Item, ...], capitalise_key: bool = False) -> str:
    def show(it: Item) -> str:
        return it.word.capitalize() if capitalise_key and it.weight > 0 else it.word

    return PROMPT_HEAD + "".join(f" {show(it)}{'*' * it.weight}" for it in items) + PROMPT_CUE


def parse_prompt(prompt: str) -> tuple[Item, ...]:
    """The items of a rendered prompt; ValueError naming the prompt when it is not one of ours."""
    m = _PROMPT_RE.match(prompt)
    if m is None:
        raise ValueError(f"not a gold-task prompt (want 'items: a b* c**\\nkey:'): {prompt!r}")
    items = tuple(Item(t.rstrip("*").lower(), len(t) - len(t.rstrip("*"))) for t in m.group(1).split())
    words = [it.word for it in items]
    if len(set(words)) != len(words):
        raise ValueError(f"gold-task prompt repeats an item: {prompt!r}")
    return items


def target_order(items: tuple[Item, ...]) -> list[str]:
    """The key items, heavier first; ties keep the prompt's order (sort is stable)."""
    return [it.word for it in sorted((it for it in items if it.weight > 0), key=lambda it: -it.weight)]


def score(prompt: str, response: str, cfg: GoldTaskConfig | None = None) -> GoldScore:
    """r*(x, y) and its parts (module docstring). `response` is text without EOS."""
    cfg = cfg or GoldTaskConfig()
    items = parse_prompt(prompt)
    weight = {it.word: it.weight for it in items if it.weight > 0}
    target = target_order(items)
    words = response.split()
    named: list[str] = []  # first mentions of key items, in response order
    extras = 0
    for w in words:
        if w in weight and w not in named:
            named.append(w)
        else:
            extras += 1
    recall = sum(weight[w] for w in named) / sum(weight.values())
    pos = {w: i for i, w in enumerate(named)}
    pairs = list(combinations(target, 2))  # (a, b): a must come before b
    in_order = sum(1 for a, b in pairs if a in pos and b in pos and pos[a] < pos[b])
    order = in_order / len(pairs)
    reward = recall + cfg.order_weight * order - cfg.extra_cost * extras - cfg.length_cost * len(words)
    return GoldScore(reward=reward, recall=recall, order=order, extras=extras, words=len(words))


def gold_reward(prompt: str, response: str, cfg: GoldTaskConfig | None = None) -> float:
    """r*(x, y) as a float (the scorer judges and pair labelling call)."""
    return score(prompt, response, cfg).reward


def make_examples(n: int, seed: int, cfg: GoldTaskConfig | None = None) -> list[GoldExample]:
    """n distinct prompts with their references; the same (n, seed, cfg) gives the same list."""
    cfg = cfg or GoldTaskConfig()
    rng = random.Random(seed)
    out: list[GoldExample] = []
    seen: set[str] = set()
    attempts = 0
    while len(out) < n:
        attempts += 1
        if attempts > 100 * n + 1000:
            raise ValueError(f"cannot draw {n} distinct gold-task prompts with {cfg}")
        words = rng.sample(WORDS[: cfg.n_words], rng.randint(cfg.min_items, cfg.max_items))
        key = set(rng.sample(range(len(words)), rng.randint(cfg.min_key, cfg.max_key)))
        items = tuple(Item(w, rng.choice((1, 2)) if i in key else 0) for i, w in enumerate(words))
        prompt = render_prompt(items, cfg.capitalise_key)
        if prompt in seen:
            continue
        seen.add(prompt)
        out.append(GoldExample(prompt=prompt, reference=" " + " ".join(target_order(items)), items=items))
    return out


def noisy_responses(example: GoldExample, n: int, rng: random.Random, p_edit: float = 0.5) -> list[str]:
    """n model-free candidate responses near the reference: each edit (drop a key item, add an
    unmarked item, swap two neighbours, repeat a word) happens with probability p_edit.

    For building offline data and tests without a model; the pipeline samples from π_SFT instead.
    """
    others = [it.word for it in example.items if it.weight == 0]
    out = []
    for _ in range(n):
        words = example.reference.split()
        if words and rng.random() < p_edit:
            words.pop(rng.randrange(len(words)))
        if others and rng.random() < p_edit:
            words.insert(rng.randint(0, len(words)), rng.choice(others))
        if len(words) > 1 and rng.random() < p_edit:
            i = rng.randrange(len(words) - 1)
            words[i], words[i + 1] = words[i + 1], words[i]
        if words and rng.random() < p_edit / 2:
            words.append(rng.choice(words))
        out.append(" " + " ".join(words) if words else "")
    return out


def make_split(n_train: int, n_eval: int, seed: int, cfg: GoldTaskConfig | None = None) -> tuple[list[GoldExample], list[GoldExample]]:
    """Disjoint train / eval prompts: n_train + n_eval distinct prompts, the last n_eval held out."""
    examples = make_examples(n_train + n_eval, seed, cfg)
    return examples[:n_train], examples[n_train:]
