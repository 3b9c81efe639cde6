"""The truncation policy: a long prompt keeps its END, a long response keeps its START and loses
its EOS; `max_length` bounds prompt + response; every cut is counted (or the row dropped)."""

import json
from pathlib import Path

import pytest

from hybridpo.data import DataConfig, DataError, load_tokenizer, prepare_preferences, prepare_prompts

SHARED = Path(__file__).resolve().parents[3] / "shared"
EOS = 0
PROMPT, LONG, SHORT = "one two three four five", " six seven eight", " nine"


@pytest.fixture
def src(tmp_path):
    path = tmp_path / "pairs.jsonl"
    path.write_text(json.dumps({"prompt": PROMPT, "chosen": LONG, "rejected": SHORT}) + "\n")
    return str(path)


def ids(tok, text):
    return tok(text, add_special_tokens=False)["input_ids"]


def test_lengths_used_below(tok):
    # one token per word with the Pythia tokenizer; the cases below rely on it
    assert (len(ids(tok, PROMPT)), len(ids(tok, LONG)), len(ids(tok, SHORT))) == (5, 3, 1)


def test_no_limits_no_cuts(tok, src):
    p = prepare_preferences(DataConfig(source=src, use_cache=False), tok)
    ex = p.train[0]
    assert ex.chosen_ids == ids(tok, LONG) + [EOS] and ex.rejected_ids == ids(tok, SHORT) + [EOS]
    assert (p.stats.truncated_prompts, p.stats.truncated_responses) == (0, 0)


def test_prompt_keeps_its_end_response_keeps_its_start(tok, src):
    p = prepare_preferences(DataConfig(source=src, use_cache=False, max_prompt_length=3, max_response_length=2), tok)
    ex = p.train[0]
    assert ex.prompt_ids == ids(tok, PROMPT)[-3:]  # "three four five": the start is cut
    assert ex.prompt_ids == ids(tok, " three four five")
    assert ex.chosen_ids == ids(tok, LONG)[:2]  # " six seven": 3 tokens + EOS cut to 2, EOS lost
    assert EOS not in ex.chosen_ids
    assert ex.rejected_ids == ids(tok, SHORT) + [EOS]  # 1 + EOS = 2 tokens: fits exactly, not cut
    assert (p.stats.truncated_prompts, p.stats.truncated_responses) == (1, 1)
    assert ex.prompt == PROMPT and ex.chosen == LONG  # texts stay whole; ids carry the cut


def test_response_limit_counts_the_eos(tok, src):
    # " six seven eight" + EOS is 4 tokens: a limit of 4 keeps it whole, 3 cuts exactly the EOS
    p = prepare_preferences(DataConfig(source=src, use_cache=False, max_response_length=4), tok)
    assert p.train[0].chosen_ids[-1] == EOS and p.stats.truncated_responses == 0
    p = prepare_preferences(DataConfig(source=src, use_cache=False, max_response_length=3), tok)
    assert p.train[0].chosen_ids == ids(tok, LONG) and p.stats.truncated_responses == 1


def test_max_length_bounds_prompt_plus_response(tok, src):
    # prompt cut to 3, then responses get max_length - 3 = 2 tokens each
    p = prepare_preferences(DataConfig(source=src, use_cache=False, max_prompt_length=3, max_length=5), tok)
    ex = p.train[0]
    assert len(ex.prompt_ids) + len(ex.chosen_ids) == 5 and ex.chosen_ids == ids(tok, LONG)[:2]
    assert ex.rejected_ids == ids(tok, SHORT) + [EOS]
    # a short prompt leaves more room: prompt 5 <= 6, responses get 7 - 5 = 2
    p = prepare_preferences(DataConfig(source=src, use_cache=False, max_prompt_length=6, max_length=7), tok)
    assert p.train[0].prompt_ids == ids(tok, PROMPT) and len(p.train[0].chosen_ids) == 2


def test_overlong_rows_dropped_when_configured(tok, src):
    p = prepare_preferences(DataConfig(source=src, use_cache=False, max_prompt_length=3, on_overlong="drop"), tok)
    assert p.train == [] and p.stats.dropped_overlong == 1 and p.stats.truncated_prompts == 0


def test_prompt_loads_truncate_the_same_way(tok, src):
    p = prepare_prompts(DataConfig(source=src, use_cache=False, max_prompt_length=2, max_response_length=1), tok)
    ex = p.train[0]  # prompt from a preference row: reference = chosen
    assert ex.prompt_ids == ids(tok, PROMPT)[-2:] and ex.reference_ids == ids(tok, LONG)[:1]
    assert (p.stats.truncated_prompts, p.stats.truncated_responses) == (1, 1)


def test_add_bos(tok, src):
    with pytest.raises(DataError, match="add_bos is set but the tokenizer has no BOS"):
        prepare_preferences(DataConfig(source=src, use_cache=False, add_bos=True), tok)
    tok2 = load_tokenizer(str(SHARED / "tokenizers" / "pythia" / "tokenizer.json"))
    tok2.bos_token = "<|endoftext|>"
    p = prepare_preferences(DataConfig(source=src, use_cache=False, add_bos=True, max_prompt_length=3), tok2)
    # left-truncation keeps the BOS in front of the prompt's last 2 tokens
    assert p.train[0].prompt_ids == [tok2.bos_token_id] + ids(tok, PROMPT)[-2:]
    p = prepare_preferences(DataConfig(source=src, use_cache=False, add_bos=True), tok2)
    assert p.train[0].prompt_ids == [tok2.bos_token_id] + ids(tok, PROMPT)


def test_a_chat_response_ends_at_its_first_eos_like_a_sample():
    """ChatML (SmolLM2, Qwen) ends a turn with "<|im_end|>\\n", EOS = <|im_end|>: the response keeps
    the EOS and drops the newline after it (a sample stops at the EOS and never writes it), and
    gets no second EOS; a plain response gets EOS appended."""
    from hybridpo.data import DataConfig, DataStats
    from hybridpo.data.tokenize import Fitter

    class Tok:
        eos_token_id, bos_token_id = 2, None

    fit = Fitter(DataConfig(source="x"), Tok(), DataStats())
    assert fit.response([30, 2, 198], prompt_len=5) == ([30, 2], False)  # "." <|im_end|> "\n"
    assert fit.response([30, 31], prompt_len=5) == ([30, 31, 2], False)
    assert fit.response([30, 2, 198, 2], prompt_len=5) == ([30, 2], False)  # only the first EOS ends it
