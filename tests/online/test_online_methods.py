"""The online methods' arithmetic on a small-vocabulary model, with the model roles the loop builds.

Every expected number is recomputed independently: the samples are replayed from the same seed,
log-probs come from the plain padded layout (the methods use the packed one), and the losses from
hybridpo.losses called by hand.
"""

from __future__ import annotations

import copy

import pytest
import torch
from transformers import GPTNeoXConfig, GPTNeoXForCausalLM

from hybridpo.data.examples import PreferenceExample, PromptExample
from hybridpo.forward import response_logps
from hybridpo.losses import dpo_loss, hypo_kl_loss, rloo_policy_loss, sequence_kl
from hybridpo.methods import MethodContext, get_method
from hybridpo.models import Policy, Reference, TextReward, load_scorer
from hybridpo.methods.hypo import HyPOConfig
from hybridpo.methods.online_dpo import OnlineDPOConfig
from hybridpo.methods.rlhf import RLHFConfig
from hybridpo.rollout import sample

EOS, PAD, SEED = 0, 1, 123
PROMPTS = [[5, 6, 7], [8, 9], [10, 11, 12, 13]]


class Tok:
    """Decodes ids as space-separated numbers (enough for a text scorer)."""

    def decode(self, ids, skip_special_tokens=True):
        return " ".join(str(i) for i in ids)


def model(seed: int) -> GPTNeoXForCausalLM:
    torch.manual_seed(seed)
    cfg = GPTNeoXConfig(vocab_size=24, hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=64,
                        rotary_pct=0.25, max_position_embeddings=64, tie_word_embeddings=False, initializer_range=0.3)
    return GPTNeoXForCausalLM(cfg)


class CountingPolicy(Policy):
    """The policy role, counting its sample calls."""

    def __init__(self, *args, calls: list | None = None, **kwargs):
        super().__init__(*args, **kwargs)
        self.calls = calls

    def sample(self, prompts, k, **kwargs):
        if self.calls is not None:
            self.calls.append(len(prompts))
        return super().sample(prompts, k, **kwargs)


class FnReward:
    """A reward role from a function of the token ids (a stand-in reward model)."""

    def __init__(self, fn):
        self.fn = fn

    def score(self, prompts, responses):
        return self.fn(prompts, responses)


def context(policy, reference, reward=None, calls=None) -> MethodContext:
    """The roles as the loop builds them; the prompt pass off, so the replay below takes the
    sampler's own code path and draws the very same tokens."""
    gen = torch.Generator().manual_seed(SEED)
    role = CountingPolicy(policy, PAD, EOS, tokenizer=Tok(), share_prompt="off", generator=gen, calls=calls)
    return MethodContext(policy=role, reference=Reference("copy", reference, pad_id=PAD), reward=reward,
                         tokenizer=Tok(), pad_id=PAD, eos_id=EOS)


def replay(policy, k, max_new_tokens, temperature=1.0, stop_strings=None):
    """The rollout the method drew: same model, same seed, same call."""
    return sample(policy, PROMPTS, k, max_new_tokens=max_new_tokens, eos_id=EOS, pad_id=PAD, tokenizer=Tok(),
                  generator=torch.Generator().manual_seed(SEED), temperature=temperature, top_p=1.0, top_k=0,
                  stop_strings=stop_strings)


def padded(m, prompts, responses, temperature=1.0):
    with torch.no_grad():
        return response_logps(m, prompts, responses, pad_id=PAD, layout="padded", temperature=temperature)


@pytest.fixture
def pair_batch():
    return [PreferenceExample(p, [3, 4, EOS], [14, EOS], "", "", "", None) for p in PROMPTS]


@pytest.fixture
def models():
    reference = model(0)
    policy = copy.deepcopy(reference)
    with torch.no_grad():  # move π away from π_ref so the KL is positive
        for p in policy.parameters():
            p.add_(0.2 * torch.randn_like(p))
    return policy, reference


def layout_rtol(models, responses, temperature=1.0) -> float:
    """How far the packed layout's sequence log-probs (the method's) sit from the padded ones (the
    test's), relative to their size, on these very responses: the largest over both models, at
    least 2 fp32 ulps."""
    worst = 2 * torch.finfo(torch.float32).eps
    for m in models:
        with torch.no_grad():
            packed = response_logps(m, PROMPTS, responses, pad_id=PAD, temperature=temperature).logps
        plain = padded(m, PROMPTS, responses, temperature).logps
        worst = max(worst, float(((packed - plain).abs() / plain.abs().clamp_min(1.0)).max()))
    return worst


def propagated_error(pi_pairs, rf_pairs, pi_s, rf_s, beta: float, lam: float, rtol: float) -> float:
    """First-order bound on HyPO's loss error when every log-prob x is off by rtol |x|: the DPO
    term's slope in each log-prob is at most β, and ℓ_kl = Σ_i A_i log π(y_i) moves by
    |δA_i| |log π(y_i)| + |A_i| δlog π(y_i), with |δA_i| <= δc_i + max_j δc_j for the costs c."""
    dpo = beta * rtol * (pi_pairs.abs() + rf_pairs.abs()).sum(-1).mean()
    cost_error = rtol * (pi_s.abs() + rf_s.abs())
    advantage_error = cost_error + cost_error.amax(-1, keepdim=True)
    cost = pi_s - rf_s
    advantages = cost - (cost.sum(-1, keepdim=True) - cost) / (cost.shape[-1] - 1)
    kl = (advantage_error * pi_s.abs() + advantages.abs() * rtol * pi_s.abs()).sum(-1).mean()
    return float(dpo + lam * kl) + 1e-6  # + the final sums' own rounding


@pytest.mark.parametrize("tau", [1.0, 0.7])
def test_hypo_loss_is_dpo_plus_lambda_times_kl_surrogate(models, pair_batch, tau):
    """τ = 1: one packed forward holds pairs and samples; τ ≠ 1: pairs at τ = 1, samples at τ."""
    policy, reference = models
    cfg = HyPOConfig(k=3, max_new_tokens=5, beta=0.1, lam=0.7, alpha=0.01, temperature=tau)
    loss, m = get_method("hypo")(cfg).loss(pair_batch, context(policy, reference))

    r = replay(policy, 3, 5, temperature=tau)
    pairs = [[ex.chosen_ids, ex.rejected_ids] for ex in pair_batch]
    pi_pairs, rf_pairs = padded(policy, PROMPTS, pairs).logps.view(3, 2), padded(reference, PROMPTS, pairs).logps.view(3, 2)
    pol_s = padded(policy, PROMPTS, r.responses, temperature=tau)
    pi_s, rf_s = pol_s.logps.view(3, 3), padded(reference, PROMPTS, r.responses, temperature=tau).logps.view(3, 3)
    offline = dpo_loss(pi_pairs[:, 0], pi_pairs[:, 1], rf_pairs[:, 0], rf_pairs[:, 1], 0.1).mean()
    # Alg. 1 line 5: ℓ_kl summed over the k = 3 samples of each prompt, then averaged over prompts
    online = hypo_kl_loss(pi_s, rf_s, pol_s.lengths.view(3, 3), alpha=0.01, reduction="sum").mean()
    rtol = max(layout_rtol(models, pairs), layout_rtol(models, r.responses, tau))
    tolerance = propagated_error(pi_pairs, rf_pairs, pi_s, rf_s, beta=0.1, lam=0.7, rtol=rtol)
    assert loss.item() == pytest.approx((offline + 0.7 * online).item(), abs=tolerance)
    mean_form = get_method("hypo")(HyPOConfig(k=3, max_new_tokens=5, beta=0.1, lam=0.7, alpha=0.01, temperature=tau,
                                              kl_reduction="mean")).loss(pair_batch, context(policy, reference))[1]
    assert mean_form["loss/kl_surrogate"] == pytest.approx(m["loss/kl_surrogate"] / 3, abs=1e-6)
    assert m["loss/dpo"] == pytest.approx(offline.item(), abs=1e-5)
    assert m["kl"] == pytest.approx(sequence_kl(pi_s, rf_s).mean().item(), abs=1e-4)
    assert m["kl"] > 0.05  # π was moved away from π_ref
    assert m["lam"] == 0.7
    assert m["response_length"] == pytest.approx(r.lengths.float().mean().item())
    assert m["eos_rate"] == pytest.approx(r.eos.float().mean().item())
    # entropy estimate: mean -log π of the sampled tokens
    assert m["entropy"] == pytest.approx((-r.tok_logps.sum() / r.lengths.sum()).item(), rel=1e-5)


def test_hypo_dual_ascent_moves_lambda_once_per_step_by_the_constraint_violation(models, pair_batch):
    policy, reference = models
    method = get_method("hypo")(HyPOConfig(k=2, max_new_tokens=4, lam=0.2, kl_budget=0.5, lambda_lr=0.1))
    _, m = method.loss(pair_batch, context(policy, reference))
    _, m2 = method.loss(pair_batch, context(policy, reference))  # a second micro-batch of the same step
    assert m["lam"] == m2["lam"] == 0.2 and method.lam == 0.2  # λ moves between optimizer steps, not micro-batches
    step_kl = (m["kl"] + m2["kl"]) / 2  # what the loop hands after_step: the step's mean over micro-batches
    method.after_step({**m, "kl": step_kl})
    assert method.lam == pytest.approx(max(0.0, 0.2 + 0.1 * (step_kl - 0.5)), abs=1e-7)  # λ ← max(0, λ + η(KL - target))
    lam_after = method.lam
    method.evaluate(pair_batch, context(policy, reference))
    assert method.lam == lam_after  # held-out evaluation never moves λ
    fresh = get_method("hypo")(HyPOConfig(lam=0.2, kl_budget=0.5))
    fresh.load_state_dict(method.state_dict())
    assert fresh.lam == lam_after  # λ travels through checkpoints


def test_hypo_on_the_reference_has_zero_kl_and_lambda_falls_to_zero(pair_batch):
    reference = model(0)
    policy = copy.deepcopy(reference)
    method = get_method("hypo")(HyPOConfig(k=2, max_new_tokens=4, lam=0.03, kl_budget=0.5, lambda_lr=0.1))
    _, m = method.loss(pair_batch, context(policy, reference))
    assert m["kl"] == pytest.approx(0.0, abs=1e-5)  # π = π_ref: log π/π_ref = 0 on every sample
    assert m["loss/kl_surrogate"] == pytest.approx(0.0, abs=1e-5)
    method.after_step(m)
    assert method.lam == 0.0  # 0.03 + 0.1 (0 - 0.5) < 0 -> clipped at 0


def test_online_dpo_trains_on_best_vs_worst_and_skips_ties(models):
    policy, reference = models
    batch = [PromptExample(p, "", None, None, None) for p in PROMPTS]
    scorer = lambda prompt, response: float(sum(int(t) for t in response.split()))  # noqa: E731  sum of the ids
    method = get_method("online_dpo")(OnlineDPOConfig(k=4, max_new_tokens=6, beta=0.2))
    loss, m = method.loss(batch, context(policy, reference, reward=TextReward(scorer, Tok())))

    r = replay(policy, 4, 6)
    scores = (r.tokens * r.mask).sum(-1).float()  # (3, 4): the scorer's values, from the replayed ids
    best, worst = scores.argmax(1), scores.argmin(1)
    valid = scores.max(1).values > scores.min(1).values
    pairs = [[s[b], s[w]] for s, b, w in zip(r.responses, best.tolist(), worst.tolist())]
    pi, rf = padded(policy, PROMPTS, pairs).logps.view(3, 2), padded(reference, PROMPTS, pairs).logps.view(3, 2)
    expected = dpo_loss(pi[:, 0], pi[:, 1], rf[:, 0], rf[:, 1], 0.2)[valid].mean()
    assert valid.any()
    assert loss.item() == pytest.approx(expected.item(), abs=1e-5)
    assert m["reward/best"] == pytest.approx(scores.max(1).values.mean().item())
    assert m["pairs/ties"] == pytest.approx(1 - valid.float().mean().item())

    tie = get_method("online_dpo")(OnlineDPOConfig(k=2, max_new_tokens=3))
    loss, m = tie.loss(batch, context(policy, reference, reward=TextReward(lambda p, r: 1.0, Tok())))
    assert m["pairs/ties"] == 1.0 and loss.item() == 0.0  # no pair carries information


def test_scorer_specs_are_loaded_or_refused_with_the_reason():
    assert load_scorer("hybridpo.losses:dpo_loss") is dpo_loss
    with pytest.raises(ValueError, match="package.module:function"):
        load_scorer("gold_reward")
    with pytest.raises(ValueError, match="cannot load it"):
        load_scorer("hybridpo.losses:no_such_function")
    assert get_method("online_dpo").needs_reward and get_method("rlhf").needs_reward
    assert not get_method("hypo").needs_reward  # HyPO's samples are unlabeled


def test_rlhf_rewards_are_bounded():
    method = get_method("rlhf")(RLHFConfig(reward_clip=10.0, missing_eos_reward=-1.0))
    raw = torch.tensor([[3.0, -20.0], [0.5, 12.0]])
    finished = torch.tensor([[True, True], [False, True]])
    assert method.bound(raw, finished).tolist() == [[3.0, -10.0], [-1.0, 10.0]]  # clip to ±10, then the unfinished score
    whiten = get_method("rlhf")(RLHFConfig(reward_whiten=True, reward_clip=1.0))
    # mean -1.125, sample std 13.518: z = [0.305, -1.396, 0.120, 0.971]; only -20's z passes the clip at 1
    expected = torch.tensor([[0.30515, -1.0], [0.12021, 0.97095]])
    torch.testing.assert_close(whiten.bound(raw, finished), expected, atol=1e-4, rtol=0)


def test_rlhf_missing_eos_score_spares_samples_that_ended_on_a_stop_string(models):
    """A sample ended by a stop string has finished: only samples that ran out of tokens get the
    fixed score. Every raw reward is 3, so the bounded mean is 3 on finished samples, -1 elsewhere."""
    policy, reference = models
    batch = [PromptExample(p, "", None, None, None) for p in PROMPTS]
    cfg = RLHFConfig(k=4, max_new_tokens=6, missing_eos_reward=-1.0, stop_strings=["1"])  # any id with a digit 1
    const = FnReward(lambda prompts, responses: torch.full((sum(map(len, responses)),), 3.0))
    _, m = get_method("rlhf")(cfg).loss(batch, context(policy, reference, reward=const))

    r = replay(policy, 4, 6, stop_strings=["1"])
    assert (r.finished & ~r.eos).any() and (~r.finished).any()  # both kinds occur, so the test can tell them apart
    expected = torch.where(r.finished, torch.tensor(3.0), torch.tensor(-1.0)).mean().item()
    assert m["reward/bounded"] == pytest.approx(expected)


def test_rlhf_loss_is_rloo_on_bounded_rewards(models):
    policy, reference = models
    batch = [PromptExample(p, "", None, None, None) for p in PROMPTS]

    reward = FnReward(lambda prompts, responses: torch.tensor([2.0 * len(s) for rs in responses for s in rs]))  # clipping at 5 binds

    method = get_method("rlhf")(RLHFConfig(k=3, max_new_tokens=5, beta=0.05, reward_clip=5.0))
    loss, m = method.loss(batch, context(policy, reference, reward=reward))

    r = replay(policy, 3, 5)
    raw = 2.0 * r.lengths.float()
    pi = padded(policy, PROMPTS, r.responses).logps.view(3, 3)
    rf = padded(reference, PROMPTS, r.responses).logps.view(3, 3)
    expected = rloo_policy_loss(pi, rf, raw.clamp(-5, 5), 0.05).mean()
    assert loss.item() == pytest.approx(expected.item(), abs=1e-5)
    assert m["reward"] == pytest.approx(raw.mean().item())
    assert m["reward/bounded"] == pytest.approx(raw.clamp(-5, 5).mean().item())
    assert m["kl"] == pytest.approx((pi - rf).mean().item(), abs=1e-4)


def test_rlhf_reuses_samples_for_updates_per_sample_steps(models):
    policy, reference = models
    batch = [PromptExample(p, "", None, None, None) for p in PROMPTS]
    calls = []
    ctx = context(policy, reference, reward=FnReward(lambda p, rs: torch.tensor([float(len(s)) for r in rs for s in r])),
                  calls=calls)
    method = get_method("rlhf")(RLHFConfig(k=2, max_new_tokens=4, updates_per_sample=3, ratio_clip=0.2))
    drawn = []
    for step in range(4):
        ctx.step = step
        for _ in range(2):  # two micro-batches per step (grad accumulation)
            _, m = method.loss(batch, ctx)
            drawn.append(len(calls))
            assert m["ratio/mean"] == pytest.approx(1.0, abs=1e-4)  # π has not moved: π/π_old = 1
    # step 0 samples for both micro-batches, steps 1-2 reuse them, step 3 starts a new cycle
    assert drawn == [1, 2, 2, 2, 2, 2, 3, 4]
    resumed = get_method("rlhf")(RLHFConfig(k=2, max_new_tokens=4, updates_per_sample=3))
    resumed.load_state_dict(method.state_dict())
    ctx.step = 4
    resumed.loss(batch, ctx)
    assert len(calls) == 4  # a resumed run continues the cycle from the checkpoint's samples
