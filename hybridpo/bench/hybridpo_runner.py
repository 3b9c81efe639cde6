"""hybridpo's side of the benchmark: the same workloads through hybridpo's own code.

A step is what `hybridpo train` runs: the method from the public registry
(`hybridpo.methods.get_method`) computes the loss from a `MethodContext` built the way the loop
builds it (`logprobs.response_logps` in the configured layout for the policy with grad, for the
frozen reference copy (`models.build_reference`) without), then backward, gradient clipping at
1.0, AdamW with TRL's defaults and a linear decay (so the loss after the first update can be
compared with TRL's to 1e-5). Freed CPU memory is kept for reuse, as the loop does by default
(`hybridpo.cpu_memory`; TRL's runs keep glibc's default). The loop's own extras (checkpoints,
metric files, signal handling) are left out: they are not per-step work. `method.prepare` (the
reference precompute, when configured) is timed apart and counted end to end.
"""

from __future__ import annotations

import dataclasses
import time
from contextlib import contextmanager

import torch

from hybridpo.bench.flops import ModelShape, dpo_step_flops, online_step_flops
from hybridpo.bench.record import RunRecord, Unavailable
from hybridpo.bench.workloads import (
    EOS_ID, PAD_ID, Pair, Workload, batches, build_model, build_pairs, load_tokenizer, low_id_reward,
)
from hybridpo.config import ModelConfig
from hybridpo.cpu_memory import keep_freed_memory
from hybridpo.data.examples import PreferenceExample, PromptExample
from hybridpo.logprobs import response_logps
from hybridpo.prompt_cache import prompt_pass, prompt_pass_unsupported_reason
from hybridpo.methods import METHODS, MethodContext
from hybridpo.models import build_reference
from hybridpo.rollout import sample

def _optimizer(policy, w: Workload):
    """AdamW + linear decay to 0 over the run: the loop's optimizer with TRL's default settings."""
    from transformers import get_scheduler

    from hybridpo.loop import adamw

    opt = adamw(policy.parameters(), lr=w.lr, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.0)
    return opt, get_scheduler("linear", opt, num_warmup_steps=0, num_training_steps=w.steps)


class _Phases:
    """Wall time per phase of the current step (sampling, policy forward, reference forward, ...)."""

    def __init__(self):
        self.current: dict[str, float] = {}
        self.sample_lens: list[list[int]] = []  # per prompt: lengths of the samples drawn this step

    @contextmanager
    def time(self, name: str):
        start = time.perf_counter()
        try:
            yield
        finally:
            self.current[name] = self.current.get(name, 0.0) + time.perf_counter() - start


def _context(w: Workload, policy, tokenizer, layout: str, phases: _Phases, stop_at_eos: bool = True,
             share_prompt: bool = True) -> MethodContext:
    """A MethodContext wired like `hybridpo.loop._context` (reference: a frozen copy), phases timed.

    `stop_at_eos=False` samples every response to its full length (TRL's RLOO side runs with
    min_new_tokens = max_new_tokens, so both sides do the same work); the reward is the
    workload's programmatic `low_id_reward`.
    """
    reference = build_reference(policy, ModelConfig(reference="copy"))
    generator = torch.Generator().manual_seed(w.seed)

    def policy_logps(prompts, responses, temperature=1.0, prompt_pass=None):
        with phases.time("policy forward"):
            return response_logps(policy, prompts, responses, pad_id=PAD_ID, temperature=temperature, layout=layout,
                                  prompt_pass=prompt_pass)

    def shared_prompt_pass(prompts):  # as the loop's; timed as policy forward (it is one, with grad)
        if not share_prompt or layout != "packed" or prompt_pass_unsupported_reason(policy) is not None:
            return None
        with phases.time("policy forward"):
            return prompt_pass(policy, prompts, pad_id=PAD_ID)

    def ref_logps(prompts, responses, temperature=1.0):
        with phases.time("reference forward"), torch.no_grad(), reference.scope():
            return response_logps(reference.model, prompts, responses, pad_id=PAD_ID, temperature=temperature,
                                  layout=layout)

    def draw(prompts, k, **kwargs):
        was_training = policy.training
        policy.eval()
        try:
            kwargs.setdefault("generator", generator)
            with phases.time("sampling"):
                rollout = sample(policy, prompts, k, eos_id=EOS_ID if stop_at_eos else -1, pad_id=PAD_ID, **kwargs)
            phases.sample_lens.extend([len(s) for s in samples] for samples in rollout.responses)
            return rollout
        finally:
            policy.train(was_training)

    def reward(prompts, responses):
        with phases.time("reward"):
            flat = [r for rs in responses for r in rs] if responses and isinstance(responses[0][0], list) else responses
            return torch.tensor(low_id_reward(flat, w.vocab))

    return MethodContext(policy=policy, logps=policy_logps, ref_logps=ref_logps, sample=draw, reward=reward,
                         prompt_pass=shared_prompt_pass,
                         tokenizer=tokenizer, pad_id=PAD_ID, eos_id=EOS_ID, generator=generator,
                         device=torch.device("cpu"))


def _example(p: Pair) -> PreferenceExample:
    return PreferenceExample(p.prompt_ids, p.chosen_ids, p.rejected_ids, p.prompt, p.chosen, p.rejected, group=None)


def _prompt_example(p: Pair) -> PromptExample:
    return PromptExample(p.prompt_ids, p.prompt, reference_ids=None, reference=None, group=None)


def _run(record: RunRecord, w: Workload, layout: str, loss_fn, prepare=None, stop_at_eos: bool = True,
         as_example=_example, share_prompt: bool = True) -> RunRecord:
    """The timed loop: `loss_fn(batch, ctx, phases) -> (loss, metrics, groups, samples)` per step.

    `groups` are (prompt length, lengths of every scored response) per prompt and `samples` the
    lengths of the online samples alone (None when offline), for the FLOP count.
    """
    keep_freed_memory()  # as `hybridpo train` does by default (RunConfig.keep_freed_memory)
    tokenizer = load_tokenizer(w)
    pairs = build_pairs(w, tokenizer)
    policy = build_model(w).train()
    shape = ModelShape.from_config(policy.config)
    phases = _Phases()
    ctx = _context(w, policy, tokenizer, layout, phases, stop_at_eos, share_prompt)
    opt, sched = _optimizer(policy, w)
    if prepare is not None:
        start = time.perf_counter()
        prepare([as_example(p) for p in pairs], ctx)
        record.precompute_s = time.perf_counter() - start
    for step, batch in enumerate(batches(w, pairs)):
        ctx.step = step
        phases.current, phases.sample_lens = {}, []
        start = time.perf_counter()
        loss, metrics, groups, samples = loss_fn([as_example(p) for p in batch], ctx, phases)
        with phases.time("backward"):
            loss.backward()
        with phases.time("clip + optimizer"):
            torch.nn.utils.clip_grad_norm_(policy.parameters(), 1.0)
            opt.step()
            sched.step()
            opt.zero_grad(set_to_none=True)
        record.step_s.append(time.perf_counter() - start)
        record.phase_s.append(dict(phases.current))
        record.losses.append(float(loss.detach()))
        record.logps_chosen.append(float(metrics.get("logps/chosen", float("nan"))))
        record.tokens.append(sum(p + sum(lens) for p, lens in groups))
        flops = online_step_flops(shape, groups, samples) if samples else dpo_step_flops(shape, groups)
        record.flops.append(flops)
    return record


def _pair_groups(batch) -> list[tuple[int, list[int]]]:
    return [(len(ex.prompt_ids), [len(ex.chosen_ids), len(ex.rejected_ids)]) for ex in batch]


def run_dpo(w: Workload, layout: str = "packed", precompute: bool = False) -> RunRecord:
    """The registry's `dpo` method, reference log-probs fresh each step or precomputed once."""
    name = "hybridpo dpo" + (f" {layout}" if layout != "packed" else "") + (" precompute-ref" if precompute else "")
    record = RunRecord(name, w.name, pairs_per_step=w.batch_pairs)
    method_cls = METHODS["dpo"]
    method = method_cls(method_cls.Config(beta=w.beta, precompute_ref_logps=precompute))

    def loss_fn(batch, ctx, phases):
        loss, metrics = method.loss(batch, ctx)
        return loss, metrics, _pair_groups(batch), None

    record.note = f"methods['dpo'] (precompute_ref_logps={precompute}), logprob layout {layout!r}"
    return _run(record, w, layout, loss_fn, prepare=method.prepare if precompute else None)


def run_hypo(w: Workload, share_prompt: bool = True) -> RunRecord:
    """HyPO through the registry: the offline DPO pair plus k on-policy samples per prompt; with
    `share_prompt=False` the sampler prefills the prompts itself instead of reusing the loss's pass."""
    if "hypo" not in METHODS:
        raise Unavailable(f"no 'hypo' method in hybridpo.methods.METHODS yet ({sorted(METHODS)})")
    name = "hybridpo hypo" + ("" if share_prompt else " separate-prompt")
    record = RunRecord(name, w.name, pairs_per_step=w.batch_pairs, completions_per_step=w.batch_pairs * w.hypo_k)
    return _run_method(record, w, "hypo", share_prompt)


# Config field names an online method may use for the workload's knobs (first match is set).
_KNOBS = {
    "beta": ("beta",),
    "k": ("k", "num_samples", "samples_per_prompt", "n_samples", "num_generations"),
    "max_new_tokens": ("max_new_tokens", "max_completion_length", "response_length"),
}


def _method_config(method_cls, values: dict):
    """The method's Config with the workload's beta / k / max_new_tokens under the method's own field names."""
    names = {f.name for f in dataclasses.fields(method_cls.Config)}
    chosen = {}
    for knob, value in values.items():
        hit = [n for n in _KNOBS[knob] if n in names]
        if not hit:
            raise Unavailable(f"methods[{method_cls.name!r}].Config has no field for {knob} "
                              f"(looked for {list(_KNOBS[knob])}; fields: {sorted(names)})")
        chosen[hit[0]] = value
    return method_cls.Config(**chosen), chosen


def _run_method(record: RunRecord, w: Workload, name: str, share_prompt: bool = True) -> RunRecord:
    """An online method from the registry; the samples it draws are counted through ctx.sample."""
    method_cls = METHODS[name]
    online_only = method_cls.data_kind == "prompts"  # rlhf: prompts in, k samples scored by the reward
    k, new_tokens = (w.rloo_k, w.rloo_new_tokens) if online_only else (w.hypo_k, w.hypo_new_tokens)
    cfg, chosen = _method_config(method_cls, {"beta": w.beta, "k": k, "max_new_tokens": new_tokens})
    method = method_cls(cfg)

    def loss_fn(batch, ctx, phases):
        loss, metrics = method.loss(batch, ctx)
        samples = phases.sample_lens
        if len(samples) != len(batch):
            raise RuntimeError(f"methods[{name!r}] sampled for {len(samples)} prompts, batch has {len(batch)}")
        offline = [] if online_only else [[len(ex.chosen_ids), len(ex.rejected_ids)] for ex in batch]
        groups = [(len(ex.prompt_ids), (offline[i] if offline else []) + s) for i, (ex, s) in enumerate(zip(batch, samples))]
        return loss, metrics, groups, samples

    record.note = (f"methods[{name!r}] with {chosen}" + (", samples run to full length (no EOS stop)" if online_only else "")
                   + ("" if share_prompt else ", the sampler runs its own prompt pass"))
    return _run(record, w, "packed", loss_fn, stop_at_eos=not online_only,
                as_example=_prompt_example if online_only else _example, share_prompt=share_prompt)


def run_rlhf(w: Workload) -> RunRecord:
    """RLHF with RLOO through the public method registry (the `rlhf` method)."""
    if "rlhf" not in METHODS:
        raise Unavailable(f"no 'rlhf' method in hybridpo.methods.METHODS yet ({sorted(METHODS)})")
    record = RunRecord("hybridpo rlhf", w.name, pairs_per_step=w.batch_pairs, completions_per_step=w.batch_pairs * w.rloo_k)
    return _run_method(record, w, "rlhf")
