"""Tokenisation with an exact prompt/response boundary, EOS, and the truncation policy.

Boundary. The prompt text and each response text are tokenised separately (no special tokens
added) and the example is `prompt_ids + response_ids`: the boundary is where the two lists meet,
by construction, and no BPE merge can cross it because the joined string is never tokenised.
This is also what the model sees when it samples (generation starts after the prompt's ids).
So that the separate pieces are the natural BPE split, prompts end on a word or punctuation
(TL;DR: "...\nTL;DR:") and responses carry the separating space themselves (" summary...");
byte-level BPE (GPT-2, Pythia) attaches a space to the word after it, so `tok(" summary")` is
exactly the tokens the joined text would give (tests check this on the shared TL;DR rows).

EOS. Every response ends at its first EOS token, which is kept, exactly as a sample of the
policy ends (hybridpo.rollout): a rendered response that holds the EOS token is cut after it (a
ChatML turn, SmolLM2's or Qwen's, ends "<|im_end|>\n": the "\n" after the EOS is dropped, since
no sample would ever produce it), and EOS is appended to one that does not (plain text).

Truncation (`max_prompt_length`, `max_response_length`, `max_length`):
- a long prompt keeps its END (left-truncation): the instruction / "TL;DR:" nearest the response
  is what must survive; a leading BOS is kept in front of the kept end;
- a long response keeps its START (right-truncation) and therefore loses its EOS: the model is
  trained on a prefix, never taught to stop at an arbitrary cut;
- `max_length` bounds prompt + response: responses are cut to `max_length - len(prompt_ids)`.
Each cut is counted in `DataStats` (or the row dropped, `on_overlong: drop`).
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

from hybridpo.data.config import DataConfig
from hybridpo.data.examples import DataError, DataStats

# Well-known special tokens, looked up when a tokenizer does not declare its own.
EOS_CANDIDATES = ("<|endoftext|>", "</s>", "<|end_of_text|>", "<eos>")
PAD_CANDIDATES = ("<|padding|>", "<pad>", "[PAD]")


def load_tokenizer(name_or_path: str, *, trust_remote_code: bool = False):
    """A hub name or local folder (through AutoTokenizer) or a bare `tokenizer.json`
    (through PreTrainedTokenizerFast), with eos and pad set when missing:
    Pythia gets eos "<|endoftext|>" (0) and pad "<|padding|>" (1); GPT-2 gets pad = eos."""
    from transformers import AutoTokenizer, PreTrainedTokenizerFast  # late: heavy import

    from hybridpo.zoo.checkpoints import resolve

    name_or_path = resolve(name_or_path)  # a .gguf file (or a packaged model's name) becomes its converted folder
    path = Path(name_or_path).expanduser()
    try:
        if path.is_file():
            tok = PreTrainedTokenizerFast(tokenizer_file=str(path))
        elif path.is_dir() and (path / "tokenizer.json").exists() and not (path / "tokenizer_config.json").exists():
            tok = PreTrainedTokenizerFast(tokenizer_file=str(path / "tokenizer.json"))
        else:
            tok = AutoTokenizer.from_pretrained(name_or_path, trust_remote_code=trust_remote_code)
    except Exception as e:
        raise DataError(f"cannot load a tokenizer from {name_or_path!r}: {type(e).__name__}: {e}") from e
    vocab = tok.get_vocab()
    if tok.eos_token is None:
        found = [t for t in EOS_CANDIDATES if t in vocab]
        if not found:
            raise DataError(f"tokenizer {name_or_path!r} has no EOS token and none of {list(EOS_CANDIDATES)}; "
                            "responses need an EOS")
        tok.eos_token = found[0]
    if tok.pad_token is None:
        found = [t for t in PAD_CANDIDATES if t in vocab]
        tok.pad_token = found[0] if found else tok.eos_token
    return tok


def tokenizer_fingerprint(tokenizer) -> str:
    """Identity of a tokenizer for the cache: its full vocabulary/merges, special ids and chat template."""
    h = hashlib.sha256()
    backend = getattr(tokenizer, "backend_tokenizer", None)
    h.update(backend.to_str().encode() if backend is not None else json.dumps(tokenizer.get_vocab(), sort_keys=True).encode())
    specials = [tokenizer.eos_token_id, tokenizer.pad_token_id, tokenizer.bos_token_id,
                getattr(tokenizer, "chat_template", None), type(tokenizer).__name__]
    h.update(json.dumps(specials, default=str).encode())
    return h.hexdigest()[:16]


def encode(tokenizer, texts: list[str]) -> list[list[int]]:
    """Texts -> ids without special tokens; repeated texts (TL;DR posts) are tokenised once."""
    unique = list(dict.fromkeys(texts))
    ids = tokenizer(unique, add_special_tokens=False)["input_ids"] if unique else []
    table = dict(zip(unique, ids))
    return [list(table[t]) for t in texts]


class Fitter:
    """Applies EOS, BOS and the truncation policy of one config, counting into `stats`."""

    def __init__(self, cfg: DataConfig, tokenizer, stats: DataStats):
        self.cfg = cfg
        self.stats = stats
        self.eos_id = tokenizer.eos_token_id
        self.bos_id = tokenizer.bos_token_id  # kept through left-truncation when a prompt starts with it
        if self.eos_id is None:
            raise DataError("the tokenizer has no eos_token_id; load it with hybridpo.data.load_tokenizer")
        if cfg.add_bos and self.bos_id is None:
            raise DataError("data.add_bos is set but the tokenizer has no BOS token")

    def prompt(self, ids: list[int]) -> tuple[list[int], bool]:
        if self.cfg.add_bos and ids[:1] != [self.bos_id]:
            ids = [self.bos_id] + ids
        limit = self.cfg.max_prompt_length
        if limit is not None and len(ids) > limit:
            # keep the END of the prompt, and a leading BOS (added, or rendered by a chat template)
            head = ids[:1] if self.bos_id is not None and ids[:1] == [self.bos_id] and limit > 1 else []
            return head + ids[len(ids) - (limit - len(head)):], True
        return ids, False

    def response(self, ids: list[int], prompt_len: int) -> tuple[list[int], bool]:
        if self.eos_id in ids:  # the response ends at its first EOS, as a sample does (ChatML turns end "<|im_end|>\n")
            ids = ids[: ids.index(self.eos_id) + 1]
        else:
            ids = ids + [self.eos_id]
        limits = [self.cfg.max_response_length]
        if self.cfg.max_length is not None:
            limits.append(self.cfg.max_length - prompt_len)
        limit = min((x for x in limits if x is not None), default=None)
        if limit is not None and len(ids) > limit:
            return ids[:limit], True  # keep the START; the EOS is cut off with the end
        return ids, False

    def fit(self, prompt_ids: list[int], responses: list[list[int]]) -> tuple[list[int], list[list[int]]] | None:
        """-> (prompt_ids, response_ids...) within the limits, or None when the row is dropped."""
        prompt_ids, cut_prompt = self.prompt(prompt_ids)
        fitted = [self.response(r, len(prompt_ids)) for r in responses]
        cut_responses = sum(cut for _, cut in fitted)
        if (cut_prompt or cut_responses) and self.cfg.on_overlong == "drop":
            self.stats.dropped_overlong += 1
            return None
        self.stats.truncated_prompts += int(cut_prompt)
        self.stats.truncated_responses += cut_responses
        return prompt_ids, [ids for ids, _ in fitted]
