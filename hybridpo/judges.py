"""Win-rate judges: which of two responses to the same prompt is better.

Every judge maps (prompts, responses_a, responses_b) to one `Verdict` per item: score 1 (a wins),
0.5 (tie), 0 (b wins) or None (no verdict: the judge failed on that item; counted as an error,
NEVER as a verdict). `win_rate` averages the scores of the items that have one: ties count half.

- `ScoreJudge`: compares scalar scores, from the task's gold reward (`gold_judge`) or a reward
  model (`reward_model_judge`, through any batch scoring callable of texts).
- `ScorerJudge`: compares the scores one of `hybridpo.evaluate`'s scorers already gave the
  generation and the reference (a reward model's, on the token ids it scored: no second pass, no
  re-encoding of text).
- `ApiJudge`: an OpenAI-compatible chat-completions endpoint (the paper's GPT-4 TL;DR judge) with
  the DPO paper's TL;DR judging prompt (Rafailov et al. 2023, App. C.2). The two responses are
  shown in an order drawn per item from a hash of (seed, prompt, a, b), recorded in the verdict;
  server errors (5xx, 429) and timeouts are retried with exponential backoff; an answer without
  a "Preferred: A|B" line is asked again and, if it stays malformed, reported as an error. Verdicts
  are cached on disk keyed by (model, prompt, both responses, order), so a rerun makes no request.
  The API key is sent in the Authorization header and nowhere else: not logged, not cached, not in
  repr or error messages. This module never reads the environment (the CLI does).
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import re
import threading
import time
import urllib.error
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Protocol

log = logging.getLogger(__name__)

# The DPO paper's GPT-4 judging prompt for TL;DR summarisation (Rafailov et al. 2023, App. C.2),
# also the judge of the HyPO paper's Table 1.
TLDR_JUDGE_PROMPT = """Which of the following summaries does a better job of summarizing the most \
important points in the given forum post, without including unimportant or irrelevant details? A \
good summary is both precise and concise.

Post:
{post}

Summary A:
{summary_a}

Summary B:
{summary_b}

FIRST provide a one-sentence comparison of the two summaries, explaining which you prefer and why. \
SECOND, on a new line, state only "A" or "B" to indicate your choice. Your response should use the \
format:
Comparison: <one-sentence comparison and explanation>
Preferred: <"A" or "B">"""

_PREFERRED_RE = re.compile(r'^\s*\**Preferred:?\**\s*:?\s*["\'<]?\s*([AB])\s*["\'>]?\s*\.?\s*$', re.M | re.I)


@dataclass
class Verdict:
    score: float | None  # 1 = a better, 0.5 = tie, 0 = b better; None = no verdict (see error)
    order: str = "ab"  # order the judge saw them: "ab" (a shown first, as "A") or "ba"
    error: str | None = None  # why there is no verdict (never counted in the win rate)
    detail: dict = field(default_factory=dict)  # judge-specific: the scores, or the raw answer
    cached: bool = False  # the verdict came from the on-disk cache (no request made)


class Judge(Protocol):
    name: str

    def judge(self, prompts: list[str], responses_a: list[str], responses_b: list[str]) -> list[Verdict]: ...


def win_rate(verdicts: list[Verdict]) -> dict:
    """Mean score over items with a verdict (ties = 0.5), its standard error, and the counts."""
    scores = [v.score for v in verdicts if v.score is not None]
    n = len(scores)
    mean = sum(scores) / n if n else float("nan")
    var = sum((s - mean) ** 2 for s in scores) / (n - 1) if n > 1 else float("nan")
    return {
        "win_rate": mean,
        "win_rate_stderr": math.sqrt(var / n) if n > 1 else float("nan"),
        "wins": sum(s == 1.0 for s in scores),
        "ties": sum(s == 0.5 for s in scores),
        "losses": sum(s == 0.0 for s in scores),
        "judged": n,
        "errors": len(verdicts) - n,
    }


class ScoreJudge:
    """a beats b when score(a) > score(b) + tie_tol; |difference| <= tie_tol is a tie."""

    def __init__(self, name: str, score_batch: Callable[[list[str], list[str]], list[float]], tie_tol: float = 0.0):
        self.name = name
        self.score_batch = score_batch  # (prompts, responses) -> scores
        self.tie_tol = tie_tol

    def judge(self, prompts, responses_a, responses_b) -> list[Verdict]:
        _check_lengths(prompts, responses_a, responses_b)
        return compare_scores(self.score_batch(prompts, responses_a), self.score_batch(prompts, responses_b), self.tie_tol)


def compare_scores(scores_a, scores_b, tie_tol: float = 0.0) -> list[Verdict]:
    """One verdict per item: a wins when score_a > score_b + tie_tol; |difference| <= tie_tol is a tie."""
    if len(scores_a) != len(scores_b):
        raise ValueError(f"compare_scores needs equal lengths: {len(scores_a)} and {len(scores_b)}")
    out = []
    for a, b in zip(scores_a, scores_b):
        a, b = float(a), float(b)
        s = 0.5 if abs(a - b) <= tie_tol else (1.0 if a > b else 0.0)
        out.append(Verdict(score=s, detail={"score_a": a, "score_b": b}))
    return out


@dataclass
class ScorerJudge:
    """Judge by the scores `hybridpo.evaluate` got from its scorer `scorer` (generation vs reference)."""

    scorer: str  # the key of the scorer in evaluate's `scorers`, e.g. "rm"
    name: str = "reward_model"  # eval.json's `judge`
    tie_tol: float = 0.0  # |score difference| <= tie_tol is a tie

    def verdicts(self, scores_a: list[float], scores_b: list[float]) -> list[Verdict]:
        return compare_scores(scores_a, scores_b, self.tie_tol)


def gold_judge(reward: Callable[[str, str], float]) -> ScoreJudge:
    """Judge by a gold reward r*(prompt, response) (e.g. hybridpo.experiments.gold.task.gold_reward); exact ties."""
    return ScoreJudge("gold", lambda ps, ys: [reward(p, y) for p, y in zip(ps, ys)])


def reward_model_judge(score_batch: Callable[[list[str], list[str]], list[float]], tie_tol: float = 0.0) -> ScoreJudge:
    """Judge by a reward model's scores; `score_batch(prompts, responses)` wraps the model."""
    return ScoreJudge("reward_model", score_batch, tie_tol)


class JudgeError(RuntimeError):
    """The judge cannot work at all (e.g. 401/404 from the API): raised, not turned into verdicts."""


@dataclass
class ApiJudgeConfig:
    base_url: str  # OpenAI-compatible API root, e.g. https://api.openai.com/v1 (".../chat/completions" is appended)
    model: str  # judge model name, e.g. gpt-4-0613 (the paper's judge is GPT-4)
    api_key: str = field(default="", repr=False)  # sent as "Authorization: Bearer"; never logged, cached or printed
    prompt_template: str = TLDR_JUDGE_PROMPT  # with {post}, {summary_a}, {summary_b}
    temperature: float = 0.0  # judge sampling temperature
    max_tokens: int = 256  # judge answer length limit
    timeout_s: float = 60.0  # per-request timeout
    max_retries: int = 5  # extra attempts after a server error (5xx, 429) or timeout
    backoff_s: float = 1.0  # first retry waits this long; each next one twice as long
    backoff_max_s: float = 60.0  # cap on one wait
    malformed_retries: int = 2  # extra attempts when the answer has no "Preferred: A|B" line
    seed: int = 0  # seeds the per-item order of the two responses
    cache_dir: str | None = None  # folder of the verdict cache (verdicts.jsonl); None = no cache
    workers: int = 4  # concurrent requests


class ApiJudge:
    def __init__(self, cfg: ApiJudgeConfig, sleep: Callable[[float], None] = time.sleep):
        if not cfg.base_url or not cfg.model:
            raise JudgeError("API judge needs base_url and model")
        self.cfg = cfg
        self.name = f"api:{cfg.model}"
        self._sleep = sleep
        self._lock = threading.Lock()
        self._cache: dict[str, dict] = {}
        self._cache_path = Path(cfg.cache_dir) / "verdicts.jsonl" if cfg.cache_dir else None
        if self._cache_path and self._cache_path.exists():
            for line in self._cache_path.read_text(encoding="utf-8").splitlines():
                if line.strip():
                    rec = json.loads(line)
                    self._cache[rec["key"]] = rec
        self.requests = 0  # HTTP requests made by this judge (for tests and cost accounting)

    def __repr__(self) -> str:
        return f"ApiJudge(base_url={self.cfg.base_url!r}, model={self.cfg.model!r})"

    def order(self, prompt: str, a: str, b: str) -> str:
        """"ab" or "ba", a deterministic coin per item (so reruns ask the same question)."""
        h = hashlib.sha256(json.dumps([self.cfg.seed, prompt, a, b]).encode()).digest()
        return "ba" if h[0] & 1 else "ab"

    def cache_key(self, prompt: str, a: str, b: str, order: str) -> str:
        return hashlib.sha256(json.dumps([self.cfg.model, prompt, a, b, order]).encode()).hexdigest()

    def judge(self, prompts, responses_a, responses_b) -> list[Verdict]:
        _check_lengths(prompts, responses_a, responses_b)
        items = list(zip(prompts, responses_a, responses_b))
        if self.cfg.workers <= 1:
            return [self._one(*it) for it in items]
        with ThreadPoolExecutor(self.cfg.workers) as pool:
            return list(pool.map(lambda it: self._one(*it), items))

    def _one(self, prompt: str, a: str, b: str) -> Verdict:
        order = self.order(prompt, a, b)
        key = self.cache_key(prompt, a, b, order)
        with self._lock:
            hit = self._cache.get(key)
        if hit is not None:
            return _verdict(hit["preferred"], order, hit["answer"], cached=True)
        first, second = (a, b) if order == "ab" else (b, a)
        text = self.cfg.prompt_template.format(post=prompt, summary_a=first, summary_b=second)
        answer = ""
        for _ in range(self.cfg.malformed_retries + 1):
            try:
                answer = self._complete(text)
            except _ServerFailure as e:
                return Verdict(score=None, order=order, error=str(e))
            preferred = parse_preferred(answer)
            if preferred is not None:
                self._store({"key": key, "model": self.cfg.model, "order": order, "preferred": preferred, "answer": answer})
                return _verdict(preferred, order, answer)
            log.warning("judge answer without a 'Preferred: A|B' line; asking again: %.200r", answer)
        return Verdict(score=None, order=order, error=f"malformed answer: {answer[:200]!r}", detail={"answer": answer})

    def _complete(self, text: str) -> str:
        """One chat completion, with retries on server errors and timeouts."""
        body = json.dumps({
            "model": self.cfg.model,
            "messages": [{"role": "user", "content": text}],
            "temperature": self.cfg.temperature,
            "max_tokens": self.cfg.max_tokens,
        }).encode()
        url = self.cfg.base_url.rstrip("/") + "/chat/completions"
        headers = {"Content-Type": "application/json"}
        if self.cfg.api_key:
            headers["Authorization"] = f"Bearer {self.cfg.api_key}"
        wait, last = self.cfg.backoff_s, ""
        for attempt in range(self.cfg.max_retries + 1):
            if attempt:
                self._sleep(min(wait, self.cfg.backoff_max_s))
                wait *= 2
            with self._lock:
                self.requests += 1
            try:
                with urllib.request.urlopen(urllib.request.Request(url, body, headers), timeout=self.cfg.timeout_s) as r:
                    payload = r.read()
            except urllib.error.HTTPError as e:
                if e.code >= 500 or e.code == 429:
                    last = f"HTTP {e.code} from {url}"
                    log.warning("judge server error (%s), attempt %d/%d", last, attempt + 1, self.cfg.max_retries + 1)
                    continue
                text = e.read()[:300].decode("utf-8", "replace")
                if self.cfg.api_key:  # a server may echo the key back in its error body
                    text = text.replace(self.cfg.api_key, "***")
                raise JudgeError(f"HTTP {e.code} from {url}: {text!r}") from None
            except (urllib.error.URLError, TimeoutError, ConnectionError) as e:
                last = f"{type(e).__name__} from {url}: {getattr(e, 'reason', e)}"
                log.warning("judge request failed (%s), attempt %d/%d", last, attempt + 1, self.cfg.max_retries + 1)
                continue
            try:
                return json.loads(payload)["choices"][0]["message"]["content"] or ""
            except (ValueError, KeyError, IndexError, TypeError):
                return payload.decode("utf-8", "replace")  # not a completion: parsed as malformed
        raise _ServerFailure(f"no answer after {self.cfg.max_retries + 1} attempts; last: {last}")

    def _store(self, rec: dict) -> None:
        with self._lock:
            self._cache[rec["key"]] = rec
            if self._cache_path is not None:
                self._cache_path.parent.mkdir(parents=True, exist_ok=True)
                with self._cache_path.open("a", encoding="utf-8") as f:
                    f.write(json.dumps(rec) + "\n")


class _ServerFailure(Exception):
    pass


def parse_preferred(answer: str) -> str | None:
    """"A" or "B" from the last "Preferred:" line of a judge answer; None when there is none."""
    found = _PREFERRED_RE.findall(answer or "")
    return found[-1].upper() if found else None


def _verdict(preferred: str, order: str, answer: str, cached: bool = False) -> Verdict:
    a_shown_first = order == "ab"
    a_wins = (preferred == "A") == a_shown_first
    return Verdict(score=1.0 if a_wins else 0.0, order=order, detail={"answer": answer, "preferred": preferred}, cached=cached)


def _check_lengths(prompts, a, b) -> None:
    if not len(prompts) == len(a) == len(b):
        raise ValueError(f"judge needs equal lengths: {len(prompts)} prompts, {len(a)} a, {len(b)} b")
