"""The TL;DR experiment (hybridpo.experiments.tldr): r* by hand, the split, the shared-trunk
reference and the implicit reward, and the whole pipeline, both settings and every method, on a
random 4-layer Llama with the real Pythia tokenizer and the real TL;DR posts (a CI-sized run of
configs/experiments/tldr_{human,gold}.yaml: the same stages, a few steps each).
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch

from hybridpo.experiments.tldr.data import ranked, round_robin, summary
from hybridpo.experiments.tldr.gold import content_words, salient_words, score

SHARED = Path(__file__).resolve().parents[2].parent / "shared"
TOKENIZER = SHARED / "tokenizers" / "pythia" / "tokenizer.json"
POST = ("SUBREDDIT: r/dogs TITLE: My puppy chews shoes POST: The puppy chews every shoe. "
        "I bought toys, but the puppy ignores the toys and chews my shoes anyway. Help!\nTL;DR:")


def test_salient_words_count_the_title_twice_and_drop_stop_words_and_plurals():
    # title: puppy chew(s) shoe(s) -> x2; body: puppy x2, chew(s) x2, shoe x2, toy(s) x2, bought, ignore(s), anyway, help
    assert content_words("The puppies' Shoes ignored") == ["puppie", "shoe", "ignored"]  # crude stem, no lemmatiser
    sal = salient_words(POST, k=4)
    assert sal == {"puppy": 4, "chew": 4, "shoe": 4, "toy": 2}  # ties in order of first appearance


def test_gold_reward_by_hand():
    sal = salient_words(POST)  # 8 words; total count 4+4+4+2+1+1+1+1 = 18
    assert sum(sal.values()) == 18
    # "puppy chews shoes ignoring toys" names puppy, chew, shoe, toy: 14/18; 5 words < min 8: 3 x 0.05
    s = score(POST, "puppy chews shoes ignoring toys")
    assert s.coverage == pytest.approx(14 / 18)
    assert s.words == 5 and s.repeats == 0.0
    assert s.reward == pytest.approx(14 / 18 - 3 * 0.05)
    # a repeated bigram: "my puppy chews shoes my puppy chews shoes" has 7 bigrams, 3 distinct repeats
    r = score(POST, "my puppy chews shoes my puppy chews shoes")
    assert r.repeats == pytest.approx(3 / 7)
    assert r.reward == pytest.approx(12 / 18 - 1.0 * 3 / 7)  # 8 words: no length cost
    long = score(POST, " ".join(["puppy"] + ["word"] * 44))  # 45 words: 5 over 40; 44 bigrams, 2 distinct
    assert long.reward == pytest.approx(4 / 18 - 0.02 * 5 - 42 / 44)
    assert score(POST.replace("\nTL;DR:", ""), "puppy").reward == score(POST, "puppy").reward  # the cue is not content


def test_round_robin_and_ranking():
    assert round_robin([[1, 2, 3], [4], [5, 6]], 5) == [1, 4, 5, 2, 6]
    assert round_robin([[1], [2]], 10) == [1, 2]
    rows = [{"chosen": "TL;DR:  a", "rejected": "TL;DR: b"}, {"chosen": "TL;DR: c", "rejected": "TL;DR: a"},
            {"chosen": "TL;DR: c", "rejected": "TL;DR: b"}]
    assert summary(rows[0]["chosen"]) == "a"
    assert ranked(rows) == ["c", "a"]  # c: +2, a: 0, b: -2 (never chosen, so never a reference)


@pytest.fixture(scope="module")
def tok():
    from hybridpo.data import load_tokenizer

    return load_tokenizer(str(TOKENIZER))


def test_split_is_by_post_and_references_are_the_best_summaries(tok, tmp_path):
    from hybridpo.experiments.tldr.data import write_split

    d = write_split(tmp_path, tok, source=str(SHARED / "data" / "tldr" / "tldr_comparisons_10k.parquet"),
                    max_prompt_length=256, max_response_length=64, n_eval=8, n_judge_posts=8, n_judge_pairs=20,
                    n_sft=40, n_train=24)
    read = lambda name: [json.loads(x) for x in (d / f"{name}.jsonl").read_text().splitlines()]  # noqa: E731
    posts = {name: {r["prompt"] for r in read(name)} for name in ("prompts_eval", "pairs_judge", "pairs_train", "sft_train")}
    assert len(posts["prompts_eval"]) == 8 and len(read("pairs_train")) == 24 and len(read("pairs_judge")) == 20
    assert not posts["prompts_eval"] & (posts["pairs_judge"] | posts["pairs_train"] | posts["sft_train"])
    assert not posts["pairs_judge"] & (posts["pairs_train"] | posts["sft_train"])
    assert {r["prompt"] for r in read("prompts_train")} == posts["pairs_train"]
    assert len(posts["pairs_train"]) == 24  # one pair per post while there are posts
    for r in read("prompts_eval") + read("sft_train"):
        assert len(tok.encode(r["prompt"] + "\nTL;DR:")) <= 256
    split = json.loads((d / "split.json").read_text())
    assert split["posts_total"] == 1653 and split["posts"]["eval"] == 8


def _llama(tok, out: Path, seed: int = 0) -> Path:
    from hybridpo.zoo import init_model

    return init_model("llama", "small", tok, out, seed=seed)


def test_shared_trunk_reference_and_implicit_reward(tok, tmp_path):
    """π_ref rebuilt from π_SFT's tail on a policy's trunk gives π_SFT's log-probs; the implicit
    reward of π_ref itself is exactly 0 and of a changed policy β times its log-ratio; a policy
    whose trunk moved is refused."""
    from transformers import AutoModelForCausalLM

    from hybridpo.evaluate import logratios
    from hybridpo.experiments.tldr.run import sft_reference
    from hybridpo.models import ImplicitReward

    path = _llama(tok, tmp_path / "m")
    sft = AutoModelForCausalLM.from_pretrained(path).eval()
    policy = AutoModelForCausalLM.from_pretrained(path).eval()
    with torch.no_grad():
        for p in policy.model.layers[-2:].parameters():
            p.add_(0.05 * torch.randn_like(p))
    prompts = [tok.encode("a post about cats"), tok.encode("another post")]
    responses = [[tok.encode(" cats") + [0], tok.encode(" dogs and cats") + [0]], [tok.encode(" nothing") + [0]]]
    ref = sft_reference(policy, sft, 2, tok.pad_token_id)
    got = ref.logps(prompts, responses).logps
    from hybridpo.forward import response_logps

    want = response_logps(sft, prompts, responses, pad_id=tok.pad_token_id).logps
    assert torch.allclose(got, want, atol=1e-4)
    same = ImplicitReward(sft, sft_reference(sft, AutoModelForCausalLM.from_pretrained(path).eval(), 2, 1), 0.1, 1)
    assert same.score(prompts, responses).abs().max().item() == 0.0
    pol, rlp = logratios(policy, sft, prompts, responses, pad_id=tok.pad_token_id)
    r = ImplicitReward(policy, ref, beta=0.1, pad_id=tok.pad_token_id).score(prompts, responses)
    assert torch.allclose(r, 0.1 * (pol - rlp), atol=1e-5)
    assert r.abs().max() > 1e-3  # the policy did change
    with torch.no_grad():
        policy.model.layers[0].mlp.up_proj.weight.add_(1.0)
    with pytest.raises(ValueError, match="trunk differs"):
        sft_reference(policy, sft, 2, tok.pad_token_id)


METHODS = {
    "human": """
      dpo: {method: dpo, args: {beta: 0.1}}
      ipo: {method: ipo, args: {beta: 0.1}}
      hypo: {method: hypo, args: {beta: 0.1, lam: 0.05, k: 2, max_new_tokens: 6}}
      hypo_budget: {method: hypo, args: {beta: 0.1, lam: 0.05, kl_budget: 1.0, k: 2, max_new_tokens: 6}}
      online_dpo: {method: online_dpo, reward: rm, args: {beta: 0.1, k: 2, max_new_tokens: 6}}
      rlhf: {method: rlhf, reward: rm, args: {beta: 0.1, k: 2, max_new_tokens: 6, reward_clip: 5.0}}
""",
    "gold": """
      dpo: {method: dpo, args: {beta: 0.1}}
      hypo: {method: hypo, args: {beta: 0.1, lam: 0.05, k: 2, max_new_tokens: 6}}
      online_dpo: {method: online_dpo, reward: rm, args: {beta: 0.1, k: 2, max_new_tokens: 6}}
      online_dpo_implicit: {method: online_dpo, args: {beta: 0.1, k: 2, max_new_tokens: 6}}
      rlhf: {method: rlhf, reward: rm, args: {beta: 0.1, k: 2, max_new_tokens: 6}}
      online_dpo_gold: {method: online_dpo, reward: gold, args: {beta: 0.1, k: 2, max_new_tokens: 6}}
""",
}


@pytest.fixture(scope="module")
def pipeline(tok, tmp_path_factory):
    """Both settings of the experiment, every method, 2 steps each, sharing the split and π_SFT."""
    from hybridpo.experiments.common import load_config
    from hybridpo.experiments.tldr import Config
    from hybridpo.experiments.tldr.run import run

    root = tmp_path_factory.mktemp("tldr")
    model = _llama(tok, root / "init")
    outs = {}
    for setting in ("human", "gold"):
        yaml = root / f"{setting}.yaml"
        yaml.write_text(f"""
out: {root / setting}
shared: {root / 'shared'}
setting: {setting}
model: {model}
seeds: 2
seeds_by_method: {{ipo: 1, hypo_budget: 1, rlhf: 1, online_dpo_gold: 1, online_dpo_implicit: 1}}
n_eval: 4
n_judge_posts: 4
n_judge_pairs: 8
n_sft: 8
n_train: 8
last_n_layers: 2
batch_size: 4
epochs: 1.0
sft_lr: 1.0e-3
lr: 1.0e-3
rm_lr: 1.0e-3
evals: 2
eval_prompts: 2
max_new_tokens: 6
kl_samples: 2
best_of_n: 2
eval_batch_size: 4
side_by_side: 2
{'implicit: {online_dpo_implicit: dpo}' if setting == 'gold' else ''}
methods:{METHODS[setting]}""")
        outs[setting] = (load_config(Config, yaml), run(load_config(Config, yaml)))
    return root, outs


@pytest.mark.parametrize("setting", ["human", "gold"])
def test_every_method_trains_and_is_evaluated(pipeline, setting):
    root, outs = pipeline
    cfg, tables = outs[setting]
    out = root / setting
    for name in cfg.methods:
        assert f"| {name} |" in tables, name
        for seed in range(cfg.seeds_by_method.get(name, cfg.seeds)):
            m = json.loads((out / "eval" / f"{name}-seed{seed}" / "eval.json").read_text())
            assert math.isfinite(m["kl"]) and 0.0 <= m["win_rate"] <= 1.0
            assert m["coverage/samples"] == cfg.n_eval * cfg.kl_samples
            assert 0.0 <= m["coverage/outside_data_q05"] <= 1.0
    for f in ("table.md", "coverage.md", "generations.md", "claims.md", "claims.json", "plots/validation_kl.png"):
        assert (out / f).exists(), f
    claims = json.loads((out / "claims.json").read_text())
    assert {c["verdict"] for c in claims} <= {"reproduced", "within noise", "not reproduced", "not run"}
    rows = [json.loads(x) for x in (out / "dpo-seed0" / "validation_kl.jsonl").read_text().splitlines()]
    assert rows[0]["eval/kl"] == 0.0 and len(rows) == 1 + cfg.evals  # step 0 and each evaluation
    assert not (out / "dpo-seed0" / "checkpoints").exists()  # a finished run keeps final/ only


@pytest.mark.parametrize("setting", ["human", "gold"])
def test_the_reference_policy_has_kl_exactly_zero(pipeline, setting):
    root, _ = pipeline
    m = json.loads((root / setting / "eval" / "sft" / "eval.json").read_text())
    assert m["kl"] == 0.0 and m["logratio/generations"] == 0.0 and m["forward_kl/reference"] == 0.0
    assert m["coverage/logratio_max"] == 0.0 and m["coverage/share_above_log10"] == 0.0
    assert m["rewards/accuracies"] == 0.5  # π_ref's implicit reward ties every pair


def test_gold_pairs_are_labelled_by_r_star_and_the_evaluator_is_r_star(pipeline):
    from hybridpo.experiments.gold.pairs import bt_probability
    from hybridpo.experiments.tldr.gold import gold_reward

    root, outs = pipeline
    rows = [json.loads(x) for x in (root / "gold" / "pairs" / "pairs_train.jsonl").read_text().splitlines()]
    assert rows
    for r in rows:
        assert r["chosen_reward"] == pytest.approx(gold_reward(r["prompt"], r["chosen"]))
        assert bt_probability(r["chosen_reward"], r["rejected_reward"], 10.0) >= 0.0
    m = json.loads((root / "gold" / "eval" / "dpo-seed0" / "eval.json").read_text())
    g = [json.loads(x) for x in (root / "gold" / "eval" / "dpo-seed0" / "generations.jsonl").read_text().splitlines()]
    assert m["judge"] == "gold"
    wins = sum((r["scores"]["gold"] > r["scores"]["gold/reference"]) + 0.5 * (r["scores"]["gold"] == r["scores"]["gold/reference"])
               for r in g) / len(g)
    assert m["win_rate"] == pytest.approx(wins)  # the win rate is r*'s verdict against the human reference
    assert m["gold"] == pytest.approx(sum(gold_reward(r["instruction"], r["output"]) for r in g) / len(g))


def test_an_interrupted_experiment_continues_without_retraining(pipeline):
    """Running the finished experiment again reads every stage back (no training, same table)."""
    from hybridpo.experiments.tldr.run import run

    root, outs = pipeline
    cfg, table = outs["gold"]
    before = (root / "gold" / "dpo-seed0" / "final" / "model.safetensors").stat().st_mtime
    assert run(cfg) == table
    assert (root / "gold" / "dpo-seed0" / "final" / "model.safetensors").stat().st_mtime == before


def test_run_order_is_seed_major_with_late_methods_last():
    from hybridpo.experiments.common import MethodSpec
    from hybridpo.experiments.tldr import Config
    from hybridpo.experiments.tldr.run import run_order

    cfg = Config(methods={n: MethodSpec() for n in ("dpo", "hypo", "sweep", "rlhf")}, seeds=3,
                 seeds_by_method={"rlhf": 2, "sweep": 2}, late=["sweep"])
    assert run_order(cfg) == [(0, "dpo"), (0, "hypo"), (0, "rlhf"), (1, "dpo"), (1, "hypo"), (1, "rlhf"),
                              (2, "dpo"), (2, "hypo"), (0, "sweep"), (1, "sweep")]
