"""Each row format, read through the public API with the real Pythia tokenizer.

Expected ids are derived from the tokenizer itself on the texts the format must produce:
prompt_ids == tok(expected prompt text), response ids == tok(expected response text) + [EOS=0].
"""

import json
from pathlib import Path

import pytest

from hybridpo.data import DataConfig, DataError, load_preferences, load_prompts, load_tokenizer

SHARED = Path(__file__).resolve().parents[3] / "shared"
EOS = 0  # Pythia "<|endoftext|>"


def ids(tok, text):
    return tok(text, add_special_tokens=False)["input_ids"]


def write_jsonl(path: Path, rows: list) -> str:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return str(path)


def cfg(source, **kw):
    return DataConfig(source=source, use_cache=False, **kw)


def test_standard_rows_ids_are_prompt_then_response_plus_eos(tok, tmp_path):
    src = write_jsonl(tmp_path / "p.jsonl", [{"prompt": "The sky is", "chosen": " blue.", "rejected": " green."}])
    (ex,), eval_ = load_preferences(cfg(src), tok)
    assert eval_ == []
    assert (ex.prompt, ex.chosen, ex.rejected) == ("The sky is", " blue.", " green.")
    assert ex.prompt_ids == ids(tok, "The sky is")
    assert ex.chosen_ids == ids(tok, " blue.") + [EOS]
    assert ex.rejected_ids == ids(tok, " green.") + [EOS]
    # the boundary is the natural BPE split: the joined text tokenises to the same ids
    assert ex.prompt_ids + ex.chosen_ids[:-1] == ids(tok, "The sky is blue.")
    assert ex.group == "The sky is"  # split key defaults to the raw prompt


def test_implicit_prompt_hh_dialogue_pair(tok, tmp_path):
    shared = "\n\nHuman: What is 2+2?\n\nAssistant: 4.\n\nHuman: And 3+3?\n\nAssistant:"
    # both replies start with " S": the shared prefix runs past the last marker, the prompt must not
    row = {"chosen": shared + " Six.", "rejected": shared + " Seven, I think."}
    (ex,), _ = load_preferences(cfg(write_jsonl(tmp_path / "hh.jsonl", [row])), tok)
    assert ex.prompt == shared  # up to and including the LAST "\n\nAssistant:"
    assert (ex.chosen, ex.rejected) == (" Six.", " Seven, I think.")
    assert ex.prompt_ids == ids(tok, shared)
    assert ex.chosen_ids == ids(tok, " Six.") + [EOS]


def test_implicit_prompt_without_shared_marker_names_row_and_fields(tok, tmp_path):
    rows = [{"chosen": "\n\nHuman: a\n\nAssistant: b", "rejected": "\n\nHuman: a\n\nAssistant: c"},
            {"chosen": "Yes", "rejected": "No"}]
    with pytest.raises(DataError, match=r"x\.jsonl: line 2: fields 'chosen' and 'rejected' share no '\\n\\nAssistant:'"):
        load_preferences(cfg(write_jsonl(tmp_path / "x.jsonl", rows)), tok)


def test_implicit_prompt_message_lists_shared_prefix(tok, tmp_path):
    user1, bot1, user2 = ({"role": "user", "content": "hi"}, {"role": "assistant", "content": "hello"},
                          {"role": "user", "content": "name a colour"})
    row = {"chosen": [user1, bot1, user2, {"role": "assistant", "content": "red"}],
           "rejected": [user1, bot1, user2, {"role": "assistant", "content": "no"}]}
    (ex,), _ = load_preferences(cfg(write_jsonl(tmp_path / "m.jsonl", [row]), chat_template="builtin"), tok)
    # builtin template: "\n\nHuman: " / "\n\nAssistant: " turns, generation prompt "\n\nAssistant:"
    assert ex.prompt == "\n\nHuman: hi\n\nAssistant: hello\n\nHuman: name a colour\n\nAssistant:"
    assert (ex.chosen, ex.rejected) == (" red", " no")


def test_conversational_rows_use_the_chat_template(tok, tmp_path):
    row = {"prompt": [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "2+2?"}],
           "chosen": [{"role": "assistant", "content": "4"}], "rejected": [{"role": "assistant", "content": "5"}]}
    src = write_jsonl(tmp_path / "c.jsonl", [row])
    (ex,), _ = load_preferences(cfg(src, chat_template="builtin"), tok)
    assert ex.prompt == "Be brief.\n\nHuman: 2+2?\n\nAssistant:"
    assert ex.chosen == " 4" and ex.chosen_ids == ids(tok, " 4") + [EOS]
    # a Jinja template given in the config is used as is
    jinja = "{% for m in messages %}<{{ m['role'] }}>{{ m['content'] }}{% endfor %}{% if add_generation_prompt %}<assistant>{% endif %}"
    (ex,), _ = load_preferences(cfg(src, chat_template=jinja), tok)
    assert (ex.prompt, ex.chosen) == ("<system>Be brief.<user>2+2?<assistant>", "4")


def test_conversational_without_chat_template_is_a_clear_error(tok, tmp_path):
    row = {"prompt": [{"role": "user", "content": "hi"}], "chosen": [{"role": "assistant", "content": "a"}],
           "rejected": [{"role": "assistant", "content": "b"}]}
    with pytest.raises(DataError, match="has no chat template.*'builtin'"):
        load_preferences(cfg(write_jsonl(tmp_path / "c.jsonl", [row])), tok)


def test_template_whose_prompt_is_not_a_prefix_is_rejected(tok, tmp_path):
    # this template renders the generation prompt differently from the conversation
    bad = "{% for m in messages %}{{ m['content'] }}{% endfor %}{% if add_generation_prompt %}>>{% endif %}"
    row = {"prompt": "hi", "chosen": "a", "rejected": "b"}
    with pytest.raises(DataError, match=r"line 1: the chat template does not render the prompt as a prefix"):
        load_preferences(cfg(write_jsonl(tmp_path / "s.jsonl", [row]), as_chat=True, chat_template=bad), tok)


def test_chat_template_ending_turns_with_eos_gets_no_second_eos(tok, tmp_path):
    tok2 = load_tokenizer(str(SHARED / "tokenizers" / "pythia" / "tokenizer.json"))
    tok2.chat_template = ("{% for m in messages %}{{ m['role'] + ': ' + m['content'] }}"
                          "{% if m['role'] == 'assistant' %}<|endoftext|>{% else %}{{ '\n' }}{% endif %}{% endfor %}"
                          "{% if add_generation_prompt %}assistant:{% endif %}")
    row = {"prompt": "hi", "chosen": "yo", "rejected": "no"}
    (ex,), _ = load_preferences(cfg(write_jsonl(tmp_path / "s.jsonl", [row]), as_chat=True), tok2)
    assert ex.prompt == "user: hi\nassistant:"
    assert ex.chosen == " yo<|endoftext|>"
    assert ex.chosen_ids == ids(tok2, " yo") + [EOS]  # the template's EOS, not a second one


def test_prompt_only_and_sft_rows(tok, tmp_path):
    src = write_jsonl(tmp_path / "p.jsonl", [{"prompt": "Write a haiku."}, {"prompt": "Count to 3."}])
    train, _ = load_prompts(cfg(src), tok)
    assert [(e.prompt, e.reference, e.reference_ids) for e in train] == [("Write a haiku.", None, None),
                                                                          ("Count to 3.", None, None)]
    assert train[1].prompt_ids == ids(tok, "Count to 3.")
    src = write_jsonl(tmp_path / "s.jsonl", [{"prompt": "Count to 3.", "completion": " 1 2 3"}])
    (ex,), _ = load_prompts(cfg(src), tok)
    assert ex.reference == " 1 2 3" and ex.reference_ids == ids(tok, " 1 2 3") + [EOS]
    src = write_jsonl(tmp_path / "t.jsonl", [{"prompt": "Count to 3.", "target": " 1 2 3"}])
    (ex,), _ = load_prompts(cfg(src, format="sft", response_field="target"), tok)
    assert ex.reference == " 1 2 3"


def test_prompts_from_preference_rows_use_chosen_as_reference(tok, tmp_path):
    rows = [{"prompt": "Q1", "chosen": " a", "rejected": " b"}, {"prompt": "Q1", "chosen": " a", "rejected": " c"},
            {"prompt": "Q1", "chosen": " d", "rejected": " a"}]
    src = write_jsonl(tmp_path / "p.jsonl", rows)
    from hybridpo.data import prepare_prompts

    p = prepare_prompts(cfg(src), tok)
    assert [(e.prompt, e.reference) for e in p.train] == [("Q1", " a"), ("Q1", " d")]
    assert p.stats.dropped_duplicates == 1  # row 2 repeats (Q1, " a")
    p = prepare_prompts(cfg(src, unique_prompts=True), tok)
    assert [(e.prompt, e.reference) for e in p.train] == [("Q1", " a")] and p.stats.dropped_duplicates == 2


def test_preference_load_of_prompt_rows_is_an_error(tok, tmp_path):
    src = write_jsonl(tmp_path / "p.jsonl", [{"prompt": "hi"}])
    with pytest.raises(DataError, match="'prompt_only' format.*needs chosen and rejected"):
        load_preferences(cfg(src), tok)


def test_format_detection_error_lists_the_fields_found(tok, tmp_path):
    src = write_jsonl(tmp_path / "q.jsonl", [{"question": "hi", "answer": "yo"}])
    with pytest.raises(DataError, match=r"q\.jsonl: line 1: cannot detect the data format from the fields found \['answer', 'question'\]"):
        load_prompts(cfg(src), tok)


def test_named_fields_and_prompt_template(tok, tmp_path):
    src = write_jsonl(tmp_path / "n.jsonl", [{"q": "post text", "good": "TL;DR:  short", "bad": "TL;DR: long one "}])
    c = cfg(src, prompt_field="q", chosen_field="good", rejected_field="bad", prompt_template="{prompt}\nTL;DR:",
            response_prefix="TL;DR:", normalize_response_space=True)
    (ex,), _ = load_preferences(c, tok)
    assert (ex.prompt, ex.chosen, ex.rejected) == ("post text\nTL;DR:", " short", " long one")


def test_conversational_prompt_only_and_sft_rows(tok, tmp_path):
    user = [{"role": "user", "content": "Count to 3."}]
    rows = [{"prompt": user, "completion": [{"role": "assistant", "content": "1 2 3"}]}]
    (ex,), _ = load_prompts(cfg(write_jsonl(tmp_path / "s.jsonl", rows), chat_template="builtin"), tok)
    assert (ex.prompt, ex.reference) == ("\n\nHuman: Count to 3.\n\nAssistant:", " 1 2 3")
    assert ex.reference_ids == ids(tok, " 1 2 3") + [EOS]
    (ex,), _ = load_prompts(cfg(write_jsonl(tmp_path / "p.jsonl", [{"prompt": user}]), chat_template="builtin"), tok)
    assert (ex.prompt, ex.reference, ex.group) == ("\n\nHuman: Count to 3.\n\nAssistant:", None, ex.prompt)


def test_as_chat_renders_string_rows_as_one_exchange(tok, tmp_path):
    src = write_jsonl(tmp_path / "s.jsonl", [{"prompt": "hi", "chosen": "hello", "rejected": "go away"}])
    (ex,), _ = load_preferences(cfg(src, as_chat=True, chat_template="builtin"), tok)
    assert (ex.prompt, ex.chosen, ex.rejected) == ("\n\nHuman: hi\n\nAssistant:", " hello", " go away")
    assert ex.group == "hi"  # the raw prompt string stays the split key
