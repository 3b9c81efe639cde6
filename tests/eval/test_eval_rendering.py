"""`hybridpo eval` renders prompts as the run was trained on them.

Two tiny DPO runs on a random GPT-NeoX whose tokenizer carries a ChatML chat template: a chat run
(string rows rendered as one user turn + one assistant turn, `chat_template: tokenizer`, prompts
and responses truncated) and a TL;DR run (the recipe's "{prompt}\\nTL;DR:" template, its "TL;DR:"
prefix and space normalisation, prompts truncated). Training's prompt ids are recorded from the
batches the method received; eval's from the calls it makes to the sampler and to the log-prob
function (the prompts it feeds the policy). With no rendering flags they are the same ids; the
chat run's --data / --pairs are conversational rows (lists of messages) holding the same
exchanges, so the check also shows messages render as training's strings did.
"""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest

from hybridpo.cli import main

SHARED = Path(__file__).resolve().parents[3] / "shared"
TOKENIZER = SHARED / "tokenizers" / "pythia" / "tokenizer.json"
CHATML = ("{% for m in messages %}{{ '<|im_start|>' + m['role'] + '\n' + m['content'] + '<|im_end|>\n' }}{% endfor %}"
          "{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}")
WORDS = ("red", "green", "blue", "cyan", "pink", "gold", "grey", "teal")
CHAT_ROWS = [{"prompt": f"Please name a thing that is {w}" + " and small" * (i % 3), "chosen": f"A {w} {w} thing.",
              "rejected": "Something else entirely, and at some length too."} for i, w in enumerate(WORDS)]
CHAT_DATA = "as_chat: true, chat_template: tokenizer, max_prompt_length: 32, max_length: 40"
TLDR_DATA = "recipe: tldr, eval_fraction: 0, max_prompt_length: 64, max_response_length: 16"


def test_every_rendering_setting_has_its_flag():
    from dataclasses import fields

    from hybridpo.commands.eval import RENDER_FLAGS
    from hybridpo.data import RENDERING_FIELDS, DataConfig

    assert list(RENDER_FLAGS) == list(RENDERING_FIELDS)
    assert set(RENDERING_FIELDS) <= {f.name for f in fields(DataConfig)}


def write_jsonl(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def conversational(rows: list[dict]) -> tuple[list[dict], list[dict]]:
    """The string rows as message lists: SFT rows (reference = chosen) and preference rows."""
    user = lambda r: [{"role": "user", "content": r["prompt"]}]  # noqa: E731
    reply = lambda text: [{"role": "assistant", "content": text}]  # noqa: E731
    sft = [{"prompt": user(r), "completion": reply(r["chosen"])} for r in rows]
    pairs = [{"prompt": user(r), "chosen": reply(r["chosen"]), "rejected": reply(r["rejected"])} for r in rows]
    return sft, pairs


def train_run(root: Path, base: Path, name: str, pairs: Path, data: str, monkeypatch) -> tuple[Path, list]:
    """A 2-step DPO run over all 8 pairs; returns the run folder and the examples the method was fed."""
    from hybridpo.methods.dpo import DPO

    fed = []
    original = DPO.loss

    def recording(self, batch, ctx):
        fed.extend(batch)
        return original(self, batch, ctx)

    monkeypatch.setattr(DPO, "loss", recording)
    config = root / f"{name}.yaml"
    config.write_text(f"""
method: dpo
model: {{name_or_path: {base}}}
data: {{source: {pairs}, use_cache: false, {data}}}
optim: {{lr: 1.0e-3, batch_size: 4, max_steps: 2}}
run: {{out_dir: {root / name}, progress: false, eval_every: 0}}
""")
    assert main(["train", "--config", str(config)]) == 0
    monkeypatch.undo()
    return root / name, fed


class Recorder:
    """Wraps hybridpo.evaluate's sampler and log-prob function to record the ids eval feeds the policy."""

    def __init__(self, monkeypatch):
        import hybridpo.evaluate as ev

        self.sampled: set[tuple] = set()  # prompt ids given to the sampler (generations, KL samples)
        self.scored: list[tuple] = []  # (prompt ids, (response ids, ...)) given to the log-prob function
        sample, response_logps = ev.sample, ev.response_logps

        def recording_sample(model, prompts, k, **kw):
            self.sampled |= {tuple(p) for p in prompts}
            return sample(model, prompts, k, **kw)

        def recording_logps(model, prompts, responses, **kw):
            self.scored += [(tuple(p), tuple(tuple(r) for r in rs)) for p, rs in zip(prompts, responses)]
            return response_logps(model, prompts, responses, **kw)

        monkeypatch.setattr(ev, "sample", recording_sample)
        monkeypatch.setattr(ev, "response_logps", recording_logps)

    def pairs(self) -> set[tuple]:
        return {(p, rs[0], rs[1]) for p, rs in self.scored if len(rs) == 2}

    def singles(self) -> set[tuple]:
        return {(p, rs[0]) for p, rs in self.scored if len(rs) == 1}


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """(root, base model, {"chat": (run, fed examples, sft file, pairs file), "tldr": ...})."""
    from hybridpo.data import load_tokenizer
    from hybridpo.zoo import init_model

    mp = pytest.MonkeyPatch()
    root = tmp_path_factory.mktemp("render")
    base = init_model("gpt-neox", "tiny", str(TOKENIZER), root / "base")
    tok = load_tokenizer(str(base))
    tok.chat_template = CHATML
    tok.save_pretrained(base)  # the base folder's tokenizer now carries the template; final/ keeps it
    chat_run, chat_fed = train_run(root, base, "chat", write_jsonl(root / "chat.jsonl", CHAT_ROWS), CHAT_DATA, mp)
    sft, pairs = conversational(CHAT_ROWS)
    chat_files = write_jsonl(root / "chat_sft.jsonl", sft), write_jsonl(root / "chat_pairs.jsonl", pairs)

    frame = pd.read_parquet(SHARED / "data" / "tldr" / "tldr_comparisons_10k.parquet")
    rows = frame.drop_duplicates("prompt").head(8)[["prompt", "chosen", "rejected"]].to_dict("records")
    tldr_pairs = write_jsonl(root / "tldr.jsonl", rows)  # raw rows: "TL;DR:  summary" responses, posts without "TL;DR:"
    tldr_run, tldr_fed = train_run(root, base, "tldr", tldr_pairs, TLDR_DATA, mp)
    mp.undo()
    return root, base, {"chat": (chat_run, chat_fed, *chat_files), "tldr": (tldr_run, tldr_fed, tldr_pairs, tldr_pairs)}


def evaluate(model: Path, data: Path, pairs: Path, out: Path, *extra: str) -> dict:
    args = ["eval", str(model), "--data", str(data), "--pairs", str(pairs), "--max-new-tokens", "3",
            "--kl-samples", "1", "--out", str(out), *extra]
    assert main(args) == 0
    return json.loads((out / model.name / "eval.json").read_text())


@pytest.mark.parametrize("kind", ["chat", "tldr"])
def test_eval_feeds_the_policy_the_prompt_ids_training_fed_it(runs, kind, tmp_path, monkeypatch):
    root, base, by_kind = runs
    run, fed, data, pairs = by_kind[kind]
    trained_prompts = {tuple(e.prompt_ids) for e in fed}
    assert len(trained_prompts) == 8  # both steps together saw every pair once
    assert sum(len(e.prompt_ids) == (32 if kind == "chat" else 64) for e in fed) >= 2  # truncation is exercised

    rec = Recorder(monkeypatch)
    metrics = evaluate(run, data, pairs, tmp_path / "out")
    assert rec.sampled == trained_prompts  # generations and KL samples start from training's prompt ids
    assert rec.pairs() == {(tuple(e.prompt_ids), tuple(e.chosen_ids), tuple(e.rejected_ids)) for e in fed}
    # the references (chosen, from --data) are scored on training's chosen ids, truncation included
    assert {(tuple(e.prompt_ids), tuple(e.chosen_ids)) for e in fed} <= rec.singles()
    assert metrics["prompts"] == 8 and metrics["pairs"] == 8

    from hybridpo.data import DataConfig

    trained = DataConfig.from_dict(_yaml(run / "config.yaml")["data"])
    assert metrics["rendering"] == trained.rendering()
    assert metrics["rendering_from"] == str((run / "config.yaml").resolve()) and metrics["rendering_flags"] == []
    assert metrics["data_stats"]["prompts"]["truncated_prompts"] >= 2


def _yaml(path: Path) -> dict:
    import yaml

    return yaml.safe_load(path.read_text())


def test_chat_prompts_end_with_the_assistant_turn_marker(runs, tmp_path, monkeypatch):
    from hybridpo.data import load_tokenizer

    root, base, by_kind = runs
    run, fed, data, pairs = by_kind["chat"]
    tok = load_tokenizer(str(run / "final"))
    assert tok.chat_template == CHATML  # saved with the run
    rec = Recorder(monkeypatch)
    evaluate(run, data, pairs, tmp_path / "out")
    assert rec.sampled and all(tok.decode(list(p)).endswith("<|im_end|>\n<|im_start|>assistant\n") for p in rec.sampled)
    gens = [json.loads(line) for line in (tmp_path / "out" / "chat" / "generations.jsonl").read_text().splitlines()]
    assert all(g["instruction"].startswith("<|im_start|>user\n") for g in gens)


def test_rendering_flags_override_the_run_and_defaults_ignore_it(runs, tmp_path, monkeypatch):
    root, base, by_kind = runs
    run, fed, data, pairs = by_kind["chat"]
    trained_prompts = {tuple(e.prompt_ids) for e in fed}

    rec = Recorder(monkeypatch)
    metrics = evaluate(run, data, pairs, tmp_path / "short", "--max-prompt-length", "20")
    assert rec.sampled == {p[-20:] for p in trained_prompts}  # the run's rendering, prompts cut to their last 20 ids
    assert metrics["rendering_flags"] == ["max_prompt_length"] and metrics["rendering"]["max_prompt_length"] == 20
    assert metrics["rendering"]["as_chat"] is True and metrics["rendering"]["max_length"] == 40

    # the chat run's string rows with DataConfig's defaults: the raw text training never showed the policy
    rec = Recorder(monkeypatch)
    strings = write_jsonl(tmp_path / "strings.jsonl", CHAT_ROWS)
    metrics = evaluate(run, strings, strings, tmp_path / "raw", "--rendering", "defaults")
    assert rec.sampled and not rec.sampled & trained_prompts
    assert metrics["rendering_from"] is None and metrics["rendering"]["as_chat"] is False


def test_a_model_outside_a_run_takes_the_flags(runs, tmp_path, monkeypatch, capsys):
    root, base, by_kind = runs
    run, fed, data, pairs = by_kind["chat"]
    strings = write_jsonl(tmp_path / "strings.jsonl", CHAT_ROWS)
    rec = Recorder(monkeypatch)
    metrics = evaluate(base, strings, strings, tmp_path / "plain", "--ref", str(base))
    assert metrics["rendering_from"] is None and metrics["rendering"]["prompt_template"] == "{prompt}"
    assert "its tokenizer has a chat template: --as-chat" in capsys.readouterr().err  # said, not silently raw
    assert rec.sampled == {tuple(ids) for ids in _raw_ids(base, CHAT_ROWS)}

    rec = Recorder(monkeypatch)  # the chat run's settings given as flags: the chat run's ids
    metrics = evaluate(base, strings, strings, tmp_path / "flags", "--ref", str(base), "--as-chat",
                       "--max-prompt-length", "32", "--max-length", "40")
    assert rec.sampled == {tuple(e.prompt_ids) for e in fed}
    assert metrics["rendering_flags"] == ["as_chat", "max_length", "max_prompt_length"]


def _raw_ids(model: Path, rows: list[dict]) -> list[list[int]]:
    from hybridpo.data import load_tokenizer

    tok = load_tokenizer(str(model))
    return [tok(r["prompt"], add_special_tokens=False)["input_ids"] for r in rows]


def test_bad_data_and_bad_rendering_are_one_error_line(runs, tmp_path, capsys):
    root, base, by_kind = runs
    run, fed, data, pairs = by_kind["chat"]
    latin1 = tmp_path / "latin1.jsonl"
    latin1.write_bytes(b'{"prompt": "caf\xe9", "completion": " x"}\n')
    column = len('{"prompt": "caf') + 1  # the 0xe9 byte's column
    args = ["eval", str(run), "--data", str(latin1), "--out", str(tmp_path / "o")]
    assert main(args) == 1
    err = capsys.readouterr().err
    assert f"error: {latin1}: line 1: not UTF-8 text (byte 0xe9 at column {column}); save the file as UTF-8" in err.splitlines()
    assert "Traceback" not in err
    # the run keeps 32 prompt tokens: a 10-token total cannot hold them
    assert main(["eval", str(run), "--data", str(data), "--max-length", "10", "--out", str(tmp_path / "o")]) == 1
    (line,) = [x for x in capsys.readouterr().err.splitlines() if x.startswith("error:")]
    assert "rendering of chat" in line and "max_length=10 needs max_prompt_length < max_length (got 32)" in line
