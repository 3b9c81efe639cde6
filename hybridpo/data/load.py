"""The data pipeline: sources -> rows -> texts (formats) -> train/eval split -> token ids (cached).

`load_preferences` / `load_prompts` return `(train, eval)` lists; `prepare_preferences` /
`prepare_prompts` also return the `DataStats` of the load, for the run folder. Every load logs
its counts on the "hybridpo.data" logger, as a warning when anything was dropped or cut.
"""

from __future__ import annotations

import hashlib
import logging
from dataclasses import dataclass

from hybridpo.data import cache
from hybridpo.data.config import DataConfig
from hybridpo.data.examples import DataError, DataStats, PreferenceExample, PromptExample
from hybridpo.data.formats import FORMATS, Dropped, RowReader, TextPair, TextPrompt, detect_format
from hybridpo.data.sources import Source
from hybridpo.data.tokenize import Fitter, encode, tokenizer_fingerprint

log = logging.getLogger("hybridpo.data")
DROP_COUNTERS = {"tie": "dropped_ties", "empty": "dropped_empty"}  # Dropped.reason -> DataStats field


@dataclass
class Prepared:
    train: list  # PreferenceExample or PromptExample, in source order
    eval: list  # the held-out examples (empty when no evaluation data is configured)
    stats: DataStats  # what was read, dropped, truncated and kept


def load_preferences(cfg: DataConfig, tokenizer) -> tuple[list[PreferenceExample], list[PreferenceExample]]:
    p = prepare_preferences(cfg, tokenizer)
    return p.train, p.eval


def load_prompts(cfg: DataConfig, tokenizer) -> tuple[list[PromptExample], list[PromptExample]]:
    p = prepare_prompts(cfg, tokenizer)
    return p.train, p.eval


def prepare_preferences(cfg: DataConfig, tokenizer) -> Prepared:
    """Preference pairs (standard, conversational or implicit-prompt rows)."""
    return _prepare("preferences", cfg, tokenizer)


def prepare_prompts(cfg: DataConfig, tokenizer) -> Prepared:
    """Prompts: prompt-only rows, SFT rows (reference = the response), or preference rows
    (reference = chosen; so SFT can train on TL;DR's chosen summaries and evaluation can use the
    preference set's prompts). Exact repeats of (prompt, reference) are dropped and counted."""
    return _prepare("prompts", cfg, tokenizer)


def _sources(cfg: DataConfig) -> tuple[Source, Source | None]:
    train = Source(cfg.source, split=cfg.split, subset=cfg.subset, cache_dir=cfg.hf_cache_dir)
    if cfg.eval_source:
        return train, Source(cfg.eval_source, split=cfg.eval_split or cfg.split, subset=cfg.subset,
                             cache_dir=cfg.hf_cache_dir)
    if cfg.eval_split:
        return train, Source(cfg.source, split=cfg.eval_split, subset=cfg.subset, cache_dir=cfg.hf_cache_dir)
    return train, None


def _prepare(kind: str, cfg: DataConfig, tokenizer) -> Prepared:
    train_src, eval_src = _sources(cfg)
    path = None
    if cfg.use_cache:
        fps = [train_src.fingerprint()] + ([eval_src.fingerprint()] if eval_src else [])
        path = cache.cache_path(kind, cfg, cache.cache_key(kind, cfg, fps, tokenizer_fingerprint(tokenizer)))
        hit = cache.load(path)
        if hit is not None:
            prepared = Prepared(*hit)
            _log(cfg, prepared.stats)
            return prepared
    stats = DataStats()
    train_texts = _texts(kind, cfg, tokenizer, train_src, stats)
    if eval_src is not None:
        eval_texts = _texts(kind, cfg, tokenizer, eval_src, stats)
    else:
        train_texts, eval_texts = split_by_group(train_texts, cfg.eval_fraction, cfg.split_seed)
    stats.beyond_max_rows = len(train_texts[cfg.max_rows or len(train_texts):])
    stats.beyond_max_rows += len(eval_texts[cfg.max_eval_rows or len(eval_texts):])
    train_texts, eval_texts = train_texts[: cfg.max_rows], eval_texts[: cfg.max_eval_rows]
    fitter = Fitter(cfg, tokenizer, stats)
    prepared = Prepared(_tokenise(train_texts, tokenizer, fitter), _tokenise(eval_texts, tokenizer, fitter), stats)
    stats.train_examples, stats.eval_examples = len(prepared.train), len(prepared.eval)
    stats.train_groups = len({e.group for e in prepared.train})
    stats.eval_groups = len({e.group for e in prepared.eval})
    if path is not None:
        cache.save(path, prepared.train, prepared.eval, stats)
    _log(cfg, stats)
    return prepared


def _texts(kind: str, cfg: DataConfig, tokenizer, source: Source, stats: DataStats) -> list:
    """Rows of one source -> TextPair / TextPrompt, dropping (counted) or rejecting bad rows."""
    rows = source.rows()
    stats.rows_read += len(rows)
    if not rows:
        raise DataError(f"{source.spec}: no rows")
    fmt = detect_format(cfg, rows[0])
    yields, parse = FORMATS[fmt]
    if kind == "preferences" and yields != "preference":
        raise DataError(f"{source.spec}: rows are in the {fmt!r} format (fields {sorted(rows[0].data)}); "
                        "preference training needs chosen and rejected responses")
    reader = RowReader(cfg, tokenizer, fmt)
    out, seen = [], set()
    for row in rows:
        item = parse(reader, row)
        if isinstance(item, Dropped):
            if getattr(cfg, f"on_{item.reason}") == "error":
                raise DataError(item.message)
            counter = DROP_COUNTERS[item.reason]
            setattr(stats, counter, getattr(stats, counter) + 1)
            continue
        if kind == "prompts":
            if isinstance(item, TextPair):
                item = TextPrompt(item.prompt, item.chosen, item.group, item.where)
            key = item.prompt if cfg.unique_prompts else (item.prompt, item.reference)
            if key in seen:
                stats.dropped_duplicates += 1
                continue
            seen.add(key)
        out.append(item)
    return out


def _unit_hash(seed: int, unit) -> str:
    return hashlib.sha256(f"{seed}\x00{unit!r}".encode()).hexdigest()


def split_by_group(items: list, eval_fraction: float, seed: int) -> tuple[list, list]:
    """Hold out round(eval_fraction * number of groups) whole groups, so no group (TL;DR post) is
    in both splits. Groups are ordered by a seeded hash of their key, which keeps the assignment
    stable when rows are reordered or added. Items with group None are their own units."""
    if eval_fraction <= 0 or not items:
        return items, []
    units = [it.group if it.group is not None else ("row", i) for i, it in enumerate(items)]
    distinct = sorted(set(units), key=lambda u: _unit_hash(seed, u))
    held = set(distinct[: round(eval_fraction * len(distinct))])
    train = [it for it, u in zip(items, units) if u not in held]
    eval_ = [it for it, u in zip(items, units) if u in held]
    return train, eval_


def _tokenise(items: list, tokenizer, fitter: Fitter) -> list:
    if not items:
        return []
    prompts = encode(tokenizer, [it.prompt for it in items])
    out = []
    if isinstance(items[0], TextPair):
        chosen = encode(tokenizer, [it.chosen for it in items])
        rejected = encode(tokenizer, [it.rejected for it in items])
        for it, p, c, r in zip(items, prompts, chosen, rejected):
            fitted = fitter.fit(p, [c, r])
            if fitted is not None:
                p, (c, r) = fitted
                out.append(PreferenceExample(p, c, r, it.prompt, it.chosen, it.rejected, it.group))
        return out
    refs = encode(tokenizer, [it.reference or "" for it in items])
    for it, p, ref in zip(items, prompts, refs):
        fitted = fitter.fit(p, [ref] if it.reference is not None else [])
        if fitted is not None:
            p, responses = fitted
            out.append(PromptExample(p, it.prompt, responses[0] if responses else None, it.reference, it.group))
    return out


def _log(cfg: DataConfig, stats: DataStats) -> None:
    lossy = stats.dropped_ties + stats.dropped_empty + stats.dropped_duplicates + stats.dropped_overlong
    lossy += stats.truncated_prompts + stats.truncated_responses
    log.log(logging.WARNING if lossy else logging.INFO, "data %s: %s", cfg.source, stats.summary())
