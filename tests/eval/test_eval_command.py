"""`hybridpo eval` end to end on a tiny saved model and gold-task files; the API judge through the CLI."""

from __future__ import annotations

import json
import random
from pathlib import Path

import pytest

from hybridpo.cli import main
from hybridpo.experiments.gold.pairs import CoverageConfig, label_pairs, sft_rows, write_jsonl
from hybridpo.experiments.gold.task import gold_reward, make_split, noisy_responses

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


def test_reward_model_scores_the_ids_the_policy_was_fed_and_wrote(setup, tmp_path, monkeypatch, capsys):
    """The rm score is read on the rendered, truncated prompt ids (here cut to their last 5) and on
    the generated ids as sampled: ending with EOS only where the sample emitted one. The policy's EOS
    logit is raised to about 9.8 (a bias through the final norm; the other 50,276 logits stay near
    0), so P(EOS) = e^9.8 / (e^9.8 + 50276) = 0.26 per step and about half of the 24 samples stop
    within 2 new tokens drawn at temperature 1: both kinds are present unless 24 fair-ish coins
    agree. π_ref = π."""
    import torch
    from transformers import AutoModelForCausalLM, GPTNeoXConfig, GPTNeoXForSequenceClassification

    import hybridpo.evaluate as ev
    from hybridpo.data import load_tokenizer

    root = setup
    tok = load_tokenizer(str(root / "policy-seed0"))
    policy = AutoModelForCausalLM.from_pretrained(root / "policy-seed0")
    with torch.no_grad():
        u = torch.randn(policy.config.hidden_size, generator=torch.Generator().manual_seed(0))
        u = u / u.norm()  # a unit direction
        policy.gpt_neox.final_layer_norm.bias.copy_(9.8 * u)  # EOS logit = u . h = 9.8 + u . norm(x)
        policy.get_output_embeddings().weight[tok.eos_token_id] = u
    policy.save_pretrained(tmp_path / "stopper")
    tok.save_pretrained(tmp_path / "stopper")
    torch.manual_seed(1)
    rm = GPTNeoXForSequenceClassification(GPTNeoXConfig(
        vocab_size=len(tok), hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64,
        max_position_embeddings=128, eos_token_id=0, pad_token_id=1, num_labels=1))
    rm.save_pretrained(tmp_path / "rm" / "final")  # a reward-model run whose data kept 7 prompt tokens
    (tmp_path / "rm" / "config.yaml").write_text("method: rm\ndata: {source: pairs.jsonl, max_prompt_length: 7}\n")
    write_jsonl(tmp_path / "sft.jsonl", sft_rows(make_split(24, 24, seed=3)[1]))

    drawn, scored = [], []
    sample, reward_scores = ev.sample, ev.reward_scores

    def recording_sample(model, prompts, k, **kw):
        roll = sample(model, prompts, k, **kw)
        drawn.extend(zip(prompts, (r[0] for r in roll.responses), roll.finished[:, 0].tolist()))
        return roll

    def recording_scores(model, prompts, responses, **kw):
        scored.extend((p, r) for p, rs in zip(prompts, responses) for r in rs)
        return reward_scores(model, prompts, responses, **kw)

    monkeypatch.setattr(ev, "sample", recording_sample)
    monkeypatch.setattr(ev, "reward_scores", recording_scores)
    m = str(tmp_path / "stopper")
    args = ["eval", m, "--ref", m, "--data", str(tmp_path / "sft.jsonl"), "--reward-model", str(tmp_path / "rm" / "final"),
            "--judge", "rm", "--max-prompt-length", "5", "--max-new-tokens", "2", "--temperature", "1", "--kl-samples", "0",
            "--out", str(tmp_path / "out")]
    assert main(args) == 0
    assert "note: the reward model's run" in capsys.readouterr().err  # it was trained on 7-token prompts, here 5
    n = 24
    assert len(drawn) == n and all(len(p) == 5 for p, _, _ in drawn)  # each prompt cut to its last 5 ids
    ended = [r[-1] == tok.eos_token_id for _, r, _ in drawn]
    assert ended == [f for _, _, f in drawn] and 0 < sum(ended) < n  # both kinds of sample are present
    assert any(len(r) == 2 and not e for (_, r, _), e in zip(drawn, ended))  # cut at the limit, no EOS
    assert scored[:n] == [(p, r) for p, r, _ in drawn]  # generations: exactly the sampled ids, no EOS added
    references = _reference_ids(tmp_path / "sft.jsonl", tok)
    assert scored[n:] == [(p, ref) for (p, _, _), ref in zip(drawn, references)]  # references: the data layer's ids
    metrics = json.loads((tmp_path / "out" / "stopper" / "eval.json").read_text())
    gens = [json.loads(line) for line in (tmp_path / "out" / "stopper" / "generations.jsonl").read_text().splitlines()]
    # the rm judge compares the scores the rm gave: a win where the generation outscored its reference
    assert metrics["judge"] == "reward_model" and metrics["judged"] == n
    assert metrics["wins"] == sum(g["scores"]["rm"] > g["scores"]["rm/reference"] for g in gens)
    assert metrics["rm"] == pytest.approx(sum(g["scores"]["rm"] for g in gens) / n)


def _reference_ids(path: Path, tok) -> list[list[int]]:
    """Reference ids of SFT rows as the data layer builds them: the completion's ids + EOS."""
    rows = [json.loads(line) for line in path.read_text().splitlines()]
    return [tok(r["completion"], add_special_tokens=False)["input_ids"] + [tok.eos_token_id] for r in rows]
