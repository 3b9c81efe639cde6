"""The reduced gold-reward benchmark (configs/gold/ci.yaml): every method, tiny sizes, one seed.

Most checks are ones that hold whatever was learned:
  * π_SFT evaluated against itself: KL(π_SFT‖π_SFT) = 0 exactly (the same log-probs on both sides),
    and its gold win rate against its own near-greedy generations is 1/2 (same seed, same sampling:
    identical texts, every item a tie);
  * best-of-n of π_SFT under r* (a policy that uses the gold reward) beats an independent π_SFT
    sample: win rate > 1/2 and a higher mean r* (each best is the max of n draws of the same law);
  * rlhf_gold, a policy TRAINED on r*, beats π_SFT (sampled, by 2 standard errors over prompts);
  * every method (DPO, IPO, HyPO, online DPO and RLHF scored by the trained reward model, RLHF
    scored by r*) produced finite metrics, validation KL per epoch starting at 0, and a table row;
  * the reward model was trained and the RM-scored runs used it (not r*).
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

from hybridpo.config import ConfigError, config_from_dict
from hybridpo.experiments.common import load_config
from hybridpo.experiments.gold import GoldConfig
from hybridpo.experiments.gold.run import method_run, run

ROOT = Path(__file__).resolve().parents[2]
CI = ROOT / "configs" / "gold" / "ci.yaml"


@pytest.fixture(scope="module")
def bench(tmp_path_factory):
    out = tmp_path_factory.mktemp("gold") / "ci"
    cfg = load_config(GoldConfig, CI, [f"out={out}"])
    return cfg, out, run(cfg)


def test_ci_config_runs_every_method(bench):
    cfg, _, _ = bench
    assert set(cfg.methods) >= {"dpo", "ipo", "hypo", "online_dpo", "rlhf", "rlhf_gold"}


def test_sft_against_itself(bench):
    cfg, out, table = bench
    sft = json.loads((out / "eval" / "sft" / "eval.json").read_text())
    assert sft["kl"] == 0.0 and sft["forward_kl/reference"] == 0.0
    assert sft["win_rate"] == 0.5 and sft["ties"] == cfg.n_eval and sft["errors"] == 0
    assert "| sft | 1 |" in table


def test_every_method_finite(bench):
    cfg, out, table = bench
    for name in cfg.methods:
        m = json.loads((out / "eval" / f"{name}-seed0" / "eval.json").read_text())
        for key in ("win_rate", "gold", "kl", "logps/chosen", "logps/rejected"):
            assert math.isfinite(m[key]), (name, key, m[key])
        assert m["judged"] == cfg.n_eval and m["errors"] == 0
        rows = [json.loads(line) for line in (out / f"{name}-seed0" / "validation_kl.jsonl").read_text().splitlines()]
        assert [r["epoch"] for r in rows] == [float(e) for e in range(cfg.epochs + 1)]
        assert rows[0]["eval/kl"] == 0.0 and all(math.isfinite(r["eval/kl"]) for r in rows)
        assert f"| {name} | 1 |" in table
    for png in ("training_curves.png", "validation_kl.png"):
        assert (out / "plots" / png).read_bytes()[:4] == b"\x89PNG"


def test_best_of_n_under_gold_beats_sft(bench):
    _, out, table = bench
    bon = json.loads((out / "eval" / "best_of_n" / "eval.json").read_text())
    assert bon["win_rate"] > 0.5 and bon["gold"] > bon["gold/opponent"]
    assert bon["kl_bound"] == pytest.approx(math.log(4) - 3 / 4)
    assert "best-of-4" in table


def above_half_by_two_stderr(values: list[float], center: float) -> tuple[bool, float, float]:
    """mean(values) - center > 2 standard errors of the mean (a one-sided z-test at ~2.3%)."""
    mean = sum(values) / len(values)
    stderr = math.sqrt(sum((v - mean) ** 2 for v in values) / (len(values) - 1) / len(values))
    return mean - center > 2 * stderr > 0, mean, stderr


def test_policy_trained_on_gold_beats_sft(bench):
    """rlhf_gold, TRAINED on r*, beats π_SFT on the held-out prompts by more than chance.

    The comparison is of the two policies as laws (what RLHF maximises, E_{y~π}[r*]): per held-out
    prompt, `sampled` temperature-1 samples of each, the i-th judged against the i-th by r*. The
    prompts are the independent units: per prompt, the win rate over its pairs and the mean r*
    difference; over the cfg.n_eval prompts both means must exceed their null value (1/2, 0) by
    2 standard errors. Measured at method seeds 0-3 (Intel Xeon) with 16 samples per prompt: win
    rate 0.574-0.603, each 4.2-5.9 standard errors (≈ 0.018) above 1/2; r* difference 0.10-0.14,
    4.8-7.2 standard errors above 0. With 4 samples per prompt the standard error was 0.035 and a
    CI run on another CPU measured 0.568, 1.9 standard errors: too close to the line. NOT checked: the near-greedy mode, which at this budget
    drifts to the empty response (r* 0) and loses to π_SFT's short near-greedy answers (README).
    """
    cfg, out, table = bench
    assert cfg.sampled > 0 and "rlhf_gold" in cfg.methods
    m = json.loads((out / "eval" / "rlhf_gold-seed0" / "sampled.json").read_text())
    wins = m["sampled/win_rate_by_prompt"]
    diffs = m["sampled/gold_diff_by_prompt"]
    assert len(wins) == len(diffs) == cfg.n_eval
    ok, mean, stderr = above_half_by_two_stderr(wins, 0.5)
    assert ok and m["sampled/win_rate"] > 0.5, ("win rate", mean, stderr)
    ok, mean, stderr = above_half_by_two_stderr(diffs, 0.0)
    assert ok and m["sampled/gold"] > m["sampled/gold_sft"], ("r* difference", mean, stderr)
    assert "sampled/win_rate" in table


def test_two_stderr_rule_by_hand():
    # values 0, 1 (mean 1/2, sample std sqrt(1/2), stderr 1/2): 1/2 - 0 > 1 is false
    assert above_half_by_two_stderr([0.0, 1.0], 0.0)[0] is False
    # 0.6 +- 0.1 over 4 values: stderr = sqrt(4 * 0.01 / 3 / 4) = 0.0577; 0.1 < 0.115 -> False
    assert above_half_by_two_stderr([0.5, 0.7, 0.5, 0.7], 0.5) == (False, pytest.approx(0.6), pytest.approx(0.0577, abs=1e-4))
    assert above_half_by_two_stderr([0.7, 0.8, 0.7, 0.8], 0.5)[0] is True  # 0.25 > 2 * 0.0289


def test_reward_model_scores_the_online_methods(bench):
    cfg, out, _ = bench
    rm_rows = [json.loads(line) for line in (out / "rm" / "metrics.jsonl").read_text().splitlines()]
    assert any("eval/rewards/accuracies" in r for r in rm_rows)
    for name in ("online_dpo", "rlhf"):
        saved = (out / f"{name}-seed0" / "config.yaml").read_text()
        assert str(out / "rm" / "final") in saved and "gold_reward" not in saved
    assert "hybridpo.experiments.gold.task:gold_reward" in (out / "rlhf_gold-seed0" / "config.yaml").read_text()


@pytest.mark.parametrize("config", sorted((ROOT / "configs" / "gold").glob("*.yaml")), ids=lambda p: p.stem)
def test_method_runs_are_valid_training_configs(config, tmp_path):
    cfg = load_config(GoldConfig, config, [f"out={tmp_path}"])
    assert cfg.methods
    for name, spec in cfg.methods.items():
        raw = method_run(cfg, name, 1, tmp_path / "sft", tmp_path / "rm", tmp_path / "data", steps_per_epoch=2)
        tc = config_from_dict({**raw, "run": {**raw["run"], "out_dir": str(tmp_path / name)}}, where=name)
        assert tc.method == spec.method and tc.run.seed == 1 and tc.optim.max_steps == 2 * cfg.epochs
        assert tc.model.reward_model == (str(tmp_path / "rm") if spec.reward == "rm" else "")
        assert tc.method_args == spec.args or spec.reward == "gold"  # the method's own options, as read
        assert tc.run.eval_kl_samples == cfg.kl_samples and tc.run.eval_every == 2  # validation KL every epoch


def test_config_errors_name_the_file_and_the_key(tmp_path):
    bad = tmp_path / "bad.yaml"
    for text, where in [("methods: {x: {method: ppo}}\n", r"bad\.yaml: methods\.x\.method='ppo'"),
                        ("epochz: 3\n", r"bad\.yaml.*epochz"),
                        ("methods: {h: {method: hypo, args: {lam: -1}}}\n", r"bad\.yaml: methods\.h\.args\.lam=-1"),
                        ("methods: {h: {method: hypo, args: {lamb: 1}}}\n", r"bad\.yaml.*methods\.h\.args\.lamb"),
                        ("methods: {d: {method: dpo, reward: human}}\n", r"methods\.d\.reward='human'")]:
        bad.write_text(text)
        with pytest.raises(ConfigError, match=where):
            load_config(GoldConfig, bad)
