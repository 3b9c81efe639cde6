"""hybridpo's side of the benchmark: the same workloads through hybridpo's own code.

One step of DPO is what the library runs: `logprobs.response_logps` (packed shared-prompt layout
unless asked for "padded") for the policy with grad and for the frozen reference copy without,
`losses.dpo_loss` averaged over pairs, then AdamW with TRL's defaults (so the loss after the first
update can be compared with TRL's to 1e-5), gradient clipping at 1.0, linear decay.
HyPO adds `rollout.sample` of k responses per prompt, packs them with the pair so the prompt runs
once for all k + 2 responses, and adds `losses.hypo_kl_loss` (paper Alg. 1 line 5).
"""

from __future__ import annotations

import copy
import time

import torch

from hybridpo.bench.flops import ModelShape, dpo_step_flops, online_step_flops
from hybridpo.bench.record import RunRecord, Unavailable
from hybridpo.bench.workloads import EOS_ID, PAD_ID, Workload, batches, build_model, build_pairs, load_tokenizer
from hybridpo.losses import dpo_loss, hypo_kl_loss
from hybridpo.logprobs import response_logps
from hybridpo.rollout import sample

HYPO_KL_COEF = 1.0  # λ of the KL term; the step's cost does not depend on its value


def _optimizer(policy, w: Workload):
    """AdamW + linear decay to 0 over the run, TRL's defaults (betas, eps, no weight decay)."""
    opt = torch.optim.AdamW(policy.parameters(), lr=w.lr, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.0)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda step: max(0.0, 1.0 - step / w.steps))
    return opt, sched


def _update(policy, opt, sched, loss) -> None:
    loss.backward()
    torch.nn.utils.clip_grad_norm_(policy.parameters(), 1.0)
    opt.step()
    sched.step()
    opt.zero_grad(set_to_none=True)


def _setup(w: Workload):
    tokenizer = load_tokenizer(w)
    pairs = build_pairs(w, tokenizer)
    policy = build_model(w).train()
    ref = copy.deepcopy(policy).eval().requires_grad_(False)
    return pairs, policy, ref


def run_dpo(w: Workload, layout: str = "packed") -> RunRecord:
    name = "hybridpo dpo" if layout == "packed" else f"hybridpo dpo {layout}"
    record = RunRecord(name, w.name, pairs_per_step=w.batch_pairs)
    pairs, policy, ref = _setup(w)
    shape = ModelShape.from_config(policy.config)
    opt, sched = _optimizer(policy, w)
    for batch in batches(w, pairs):
        prompts = [p.prompt_ids for p in batch]
        responses = [[p.chosen_ids, p.rejected_ids] for p in batch]
        start = time.perf_counter()
        policy_logps = response_logps(policy, prompts, responses, pad_id=PAD_ID, layout=layout).by_prompt()  # (B, 2)
        with torch.no_grad():
            ref_logps = response_logps(ref, prompts, responses, pad_id=PAD_ID, layout=layout).by_prompt()  # (B, 2)
        loss = dpo_loss(policy_logps[:, 0], policy_logps[:, 1], ref_logps[:, 0], ref_logps[:, 1], w.beta).mean()
        _update(policy, opt, sched, loss)
        record.step_s.append(time.perf_counter() - start)
        record.losses.append(float(loss.detach()))
        record.logps_chosen.append(float(policy_logps[:, 0].detach().mean()))
        groups = [(len(p), [len(r) for r in rs]) for p, rs in zip(prompts, responses)]
        record.tokens.append(sum(p + sum(lens) for p, lens in groups))
        record.flops.append(dpo_step_flops(shape, groups))
    record.note = f"logprobs.response_logps(layout={layout!r}) + losses.dpo_loss + AdamW"
    return record


def run_hypo(w: Workload) -> RunRecord:
    """HyPO: the offline DPO pair plus k on-policy samples per prompt, packed behind one prompt."""
    record = RunRecord("hybridpo hypo", w.name, pairs_per_step=w.batch_pairs, completions_per_step=w.batch_pairs * w.hypo_k)
    pairs, policy, ref = _setup(w)
    shape = ModelShape.from_config(policy.config)
    opt, sched = _optimizer(policy, w)
    generator = torch.Generator().manual_seed(w.seed)
    k = w.hypo_k
    for batch in batches(w, pairs):
        prompts = [p.prompt_ids for p in batch]
        start = time.perf_counter()
        rollout = sample(policy, prompts, k, max_new_tokens=w.hypo_new_tokens, eos_id=EOS_ID, pad_id=PAD_ID,
                         generator=generator)
        responses = [[p.chosen_ids, p.rejected_ids, *s] for p, s in zip(batch, rollout.responses)]
        policy_logps = response_logps(policy, prompts, responses, pad_id=PAD_ID).by_prompt()  # (B, 2 + k)
        with torch.no_grad():
            ref_logps = response_logps(ref, prompts, responses, pad_id=PAD_ID).by_prompt()  # (B, 2 + k)
        offline = dpo_loss(policy_logps[:, 0], policy_logps[:, 1], ref_logps[:, 0], ref_logps[:, 1], w.beta)
        online = hypo_kl_loss(policy_logps[:, 2:], ref_logps[:, 2:])  # (B,) HyPO Alg. 1 line 5
        loss = (offline + HYPO_KL_COEF * online).mean()
        _update(policy, opt, sched, loss)
        record.step_s.append(time.perf_counter() - start)
        record.losses.append(float(loss.detach()))
        record.logps_chosen.append(float(policy_logps[:, 0].detach().mean()))
        groups = [(len(p), [len(r) for r in rs]) for p, rs in zip(prompts, responses)]
        samples = [[len(s) for s in ss] for ss in rollout.responses]
        record.tokens.append(sum(p + sum(lens) for p, lens in groups))
        record.flops.append(online_step_flops(shape, groups, samples))
    record.note = f"rollout.sample(k={k}, max {w.hypo_new_tokens} tokens) + packed response_logps + dpo_loss + hypo_kl_loss"
    return record


def run_rlhf(w: Workload) -> RunRecord:
    """RLHF with RLOO through the public method registry (the `rlhf` method)."""
    try:
        from hybridpo.methods import METHODS
    except ImportError as err:
        raise Unavailable(f"hybridpo.methods is not available yet ({err})") from err
    if "rlhf" not in METHODS:
        raise Unavailable(f"no 'rlhf' method in hybridpo.methods.METHODS ({sorted(METHODS)})")
    raise Unavailable("the rlhf method exists but the benchmark does not drive it yet")
