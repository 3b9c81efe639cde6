"""r*(x, y) for TL;DR summaries: a reward program on the text, so that the gold setting's numbers
are exact (no judge's opinion) and the human setting has an evaluator no method trained on.

It rewards a summary for naming the post's salient words, and penalises it for being too short,
too long or repetitive:

    r*(x, y) = coverage - length_cost · max(0, |y| - max_words) - short_cost · max(0, min_words - |y|)
               - repeat_cost · repeated_bigram_share

    salient(x)  the `k` content words (lower-case, letters and apostrophes, at least 3 letters, not
                a stop word, a final "s" dropped) most frequent in the post, the title counted
                twice; ties by first appearance. The SUBREDDIT line is not part of it.
    coverage    the share of the salient words' total count whose word y names: in [0, 1]
    |y|         the number of whitespace-separated words of y
    repeated_bigram_share   (word bigrams of y - distinct ones) / word bigrams of y: in [0, 1)

So r* ∈ [-∞, 1]: 1 for a summary of min_words-max_words words, without repeats, naming every
salient word. It does NOT read the human reference, so the reference can be scored and judged
like any generation. What it misses (by design, and said in docs/science): fluency, faithfulness,
and whether the named words are used in a true statement; a policy can raise r* by listing
salient words, which is the kind of reward over-optimisation the KL terms are there to limit.
"""

from __future__ import annotations

import re
from collections import Counter
from dataclasses import dataclass

STOP_WORDS = frozenset("""
a about above after again against all also am an and any are aren't as at be because been before being below
between both but by can can't cannot could couldn't did didn't do does doesn't doing don't down during each even
ever every few for from further get gets getting got had hadn't has hasn't have haven't having he he'd he'll he's
her here here's hers herself him himself his how how's i i'd i'll i'm i've if in into is isn't it it's its itself
just know let's like me more most much mustn't my myself no nor not now of off on once one only or other ought our
ours ourselves out over own really same say said she she'd she'll she's should shouldn't so some still such than
that that's the their theirs them themselves then there there's these they they'd they'll they're they've thing
things think this those though through to too under until up upon us very want was wasn't way we we'd we'll we're
we've well were weren't what what's when when's where where's which while who who's whom why why's will with
won't would wouldn't yet you you'd you'll you're you've your yours yourself yourselves going go went gonna
wanna really pretty lot lots maybe time back make made something anything everything nothing someone anyone
tl;dr tldr post title subreddit edit update
""".split())
_WORD = re.compile(r"[a-z][a-z']*")
_TITLE = re.compile(r"TITLE:(.*?)POST:(.*)", re.S)


@dataclass(frozen=True)
class GoldRewardConfig:
    k: int = 8  # salient words per post
    min_words: int = 8  # shorter summaries pay short_cost per missing word
    max_words: int = 40  # longer summaries pay length_cost per extra word (human TL;DRs: 5-60 words, median ~25)
    length_cost: float = 0.02  # per word beyond max_words
    short_cost: float = 0.05  # per word below min_words
    repeat_cost: float = 1.0  # times the share of repeated word bigrams


@dataclass(frozen=True)
class GoldScore:
    reward: float  # r*(x, y)
    coverage: float  # weighted share of the salient words named
    words: int  # |y|
    repeats: float  # repeated-bigram share


def stem(word: str) -> str:
    """The crude normal form r* compares: no trailing 's / apostrophes, a final plural "s" dropped."""
    word = word.strip("'")
    if word.endswith("'s"):
        word = word[:-2]
    if len(word) > 3 and word.endswith("s") and not word.endswith("ss"):
        word = word[:-1]
    return word


def content_words(text: str) -> list[str]:
    """Stemmed content words of `text`, in order (stop words and words under 3 letters left out)."""
    out = []
    for w in _WORD.findall(text.lower()):
        if w in STOP_WORDS or w.strip("'") in STOP_WORDS:
            continue
        s = stem(w)
        if len(s) >= 3 and s not in STOP_WORDS:
            out.append(s)
    return out


def post_parts(prompt: str) -> tuple[str, str]:
    """(title, body) of a TL;DR prompt ("SUBREDDIT: r TITLE: t POST: p", maybe ending in "TL;DR:");
    a text that is not one is all body."""
    text = prompt.rsplit("TL;DR:", 1)[0] if prompt.rstrip().endswith("TL;DR:") else prompt
    m = _TITLE.search(text)
    return (m.group(1), m.group(2)) if m else ("", text)


def salient_words(prompt: str, k: int = 8) -> dict[str, int]:
    """The k most frequent content words of the post (title counted twice), with their counts."""
    title, body = post_parts(prompt)
    counts: Counter = Counter()
    first: dict[str, int] = {}
    for i, w in enumerate(content_words(title) * 2 + content_words(body)):
        counts[w] += 1
        first.setdefault(w, i)
    ranked = sorted(counts, key=lambda w: (-counts[w], first[w]))
    return {w: counts[w] for w in ranked[:k]}


def score(prompt: str, response: str, cfg: GoldRewardConfig | None = None) -> GoldScore:
    """r*(x, y) and its parts (module docstring); `response` is text without EOS."""
    cfg = cfg or GoldRewardConfig()
    salient = salient_words(prompt, cfg.k)
    named = set(content_words(response))
    total = sum(salient.values())
    coverage = sum(c for w, c in salient.items() if w in named) / total if total else 0.0
    words = response.split()
    bigrams = list(zip(words, words[1:]))
    repeats = (len(bigrams) - len(set(bigrams))) / len(bigrams) if bigrams else 0.0
    n = len(words)
    reward = (coverage - cfg.length_cost * max(0, n - cfg.max_words) - cfg.short_cost * max(0, cfg.min_words - n)
              - cfg.repeat_cost * repeats)
    return GoldScore(reward=reward, coverage=coverage, words=n, repeats=repeats)


def gold_reward(prompt: str, response: str) -> float:
    """r*(x, y) as a float: the `scorer` of online methods (hybridpo.models.TextReward) and the judge."""
    return score(prompt, response).reward


GOLD_SCORER = "hybridpo.experiments.tldr.gold:gold_reward"  # r* as a method_args.scorer
