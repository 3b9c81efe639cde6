"""`hybridpo eval` end to end on a tiny saved model and gold-task files; the API judge through the CLI."""

from __future__ import annotations

import json
import random
from pathlib import Path

import pytest

from hybridpo.cli import main
from hybridpo.tasks import CoverageConfig, gold_reward, label_pairs, make_split, noisy_responses, sft_rows, write_jsonl

TOKENIZER = Path(__file__).resolve().parents[3] / "shared" / "tokenizers" / "pythia" / "tokenizer.json"


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    import torch
    from transformers import GPTNeoXConfig, GPTNeoXForCausalLM

    from hybridpo.data import load_tokenizer

    root = tmp_path_factory.mktemp("evalcmd")
    tok = load_tokenizer(str(TOKENIZER))
    torch.manual_seed(0)
    model = GPTNeoXForCausalLM(GPTNeoXConfig(vocab_size=len(tok), hidden_size=32, num_hidden_layers=2,
                                             num_attention_heads=2, intermediate_size=64, max_position_embeddings=128,
                                             eos_token_id=0, pad_token_id=1))
    model.save_pretrained(root / "policy-seed0")
    tok.save_pretrained(root / "policy-seed0")
    _, held_out = make_split(20, 6, seed=0)
    write_jsonl(root / "sft_eval.jsonl", sft_rows(held_out))
    rng = random.Random(0)
    rows, _ = label_pairs([e.prompt for e in held_out], [noisy_responses(e, 4, rng) for e in held_out], gold_reward,
                          CoverageConfig(), seed=0)
    write_jsonl(root / "pairs_eval.jsonl", rows)
    return root


def test_eval_of_a_model_against_itself(setup, capsys):
    root = setup
    m = str(root / "policy-seed0")
    out = root / "out"
    args = ["eval", m, "--ref", m, "--data", str(root / "sft_eval.jsonl"), "--pairs", str(root / "pairs_eval.jsonl"),
            "--task", "gold", "--judge", "gold", "--max-new-tokens", "6", "--kl-samples", "2", "--out", str(out)]
    assert main(args) == 0
    metrics = json.loads((out / "policy-seed0" / "eval.json").read_text())
    assert metrics["kl"] == 0.0 and metrics["forward_kl/reference"] == 0.0  # π = π_ref
    assert metrics["prompts"] == 6 and metrics["judged"] == 6 and metrics["win_rate"] <= 0.5
    assert metrics["logps/chosen"] == metrics["ref_logps/chosen"]
    assert metrics["eval_config"]["temperature"] == 0.01  # the paper's near-greedy default
    gens = [json.loads(line) for line in (out / "policy-seed0" / "generations.jsonl").read_text().splitlines()]
    assert len(gens) == 6 and gens[0]["generator"] == "policy-seed0" and "reference" in gens[0]
    table = (out / "eval.md").read_text()
    assert table.startswith("| run | seeds | win_rate | gold | gold/diff | kl |") and "| policy | 1 |" in table


def test_eval_with_the_api_judge_reads_the_key_from_the_environment(setup, monkeypatch, capsys):
    from test_judges_api import KEY, FakeJudgeServer

    root = setup
    m = str(root / "policy-seed0")
    monkeypatch.setenv("MY_JUDGE_KEY", KEY)
    with FakeJudgeServer() as server:
        args = ["eval", m, "--ref", m, "--data", str(root / "sft_eval.jsonl"), "--judge", "api", "--api-base-url",
                server.url, "--api-model", "judge-1", "--api-key-env", "MY_JUDGE_KEY", "--max-new-tokens", "4",
                "--kl-samples", "0", "--max-prompts", "3", "--out", str(root / "api")]
        assert main(args) == 0
        assert len(server.requests) == 3 and all(r["auth"] == f"Bearer {KEY}" for r in server.requests)
        assert main(args) == 0  # the rerun is answered from the verdict cache
        assert len(server.requests) == 3
    metrics = json.loads((root / "api" / "policy-seed0" / "eval.json").read_text())
    assert metrics["judge"] == "api:judge-1" and metrics["judged"] == 3 and metrics["errors"] == 0
    written = "".join(p.read_text() for p in (root / "api").rglob("*") if p.is_file())
    assert KEY not in written and KEY not in capsys.readouterr().out  # never written or printed
