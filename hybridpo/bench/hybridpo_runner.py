"""hybridpo's side of the benchmark: the training loop's own step on the fixed workloads.

Each variant is a `TrainConfig` (the method and its options, the optimizer with TRL's defaults and
a linear decay, sequential batches, the speed settings of the variant) and the step timed is
`hybridpo.loop.Run.step_once`, the one `hybridpo train` runs: the method from the registry calls
the model roles (policy, frozen-copy reference, reward) that `Run.build` constructs, then
backward, clipping at 1.0, AdamW. The run is built around the workload's model, tokenizer and
pairs (so both sides start from the same weights and ids); the loop's extras that are not
per-step work (checkpoints, metric files, signal handling) are left out. Freed CPU memory is kept
for reuse as `hybridpo train` does on CPU (speed.keep_freed_memory "auto"; TRL's runs keep glibc's
default). `method.prepare` (the reference precompute, when configured) is timed apart and counted
end to end. The phases of each step come from the run's step clock.
"""

from __future__ import annotations

import tempfile
import time
from dataclasses import dataclass, field

import torch

from hybridpo.bench.flops import ModelShape, dpo_step_flops, online_step_flops
from hybridpo.bench.record import RunRecord, current_rss
from hybridpo.bench.workloads import Pair, Workload, batches, build_model, build_pairs, load_tokenizer, low_id_reward
from hybridpo.config import config_from_dict
from hybridpo.data.examples import PreferenceExample, PromptExample
from hybridpo.models import StepClock

PHASES_LEFT_OUT = ("step",)  # the clock's whole-step total is the step time, not a phase


@dataclass
class LowIdReward:
    """The RLOO workload's programmatic reward as a reward role (TRL's side computes the same)."""

    vocab: int
    clock: StepClock = field(default_factory=StepClock)

    def score(self, prompts, responses) -> torch.Tensor:
        with self.clock.time("reward"):
            return torch.tensor(low_id_reward([r for rs in responses for r in rs], self.vocab))


def run_dpo(w: Workload, layout: str = "packed", precompute: bool = False, last_n: bool = False,
            elementwise: str = "auto", span_kernel: str = "auto", train_gemm: str = "auto") -> RunRecord:
    """The registry's `dpo`, reference log-probs fresh each step or precomputed once; with `last_n`
    only the last `w.last_n_layers` blocks train and π_ref shares the frozen trunk; `elementwise`,
    `span_kernel` and `train_gemm` are speed settings (hybridpo.fast.elementwise_for, span_kernel_for,
    train_gemm_for)."""
    suffix, note = _speed_variant(elementwise=elementwise, span_kernel=span_kernel, train_gemm=train_gemm)
    name = ("hybridpo dpo" + (f" {layout}" if layout != "packed" else "") + (" precompute-ref" if precompute else "")
            + (f" last-{w.last_n_layers}" if last_n else "") + suffix)
    record = RunRecord(name, w.name, pairs_per_step=w.batch_pairs)
    record.note = (f"methods['dpo'] (precompute_ref_logps={precompute}), logprob layout {layout!r}"
                   + (f", last {w.last_n_layers} blocks trained, frozen-trunk reference" if last_n else "") + note)
    return _run(record, w, "dpo", {"beta": w.beta, "precompute_ref_logps": precompute},
                {"logprob_layout": layout, "elementwise": elementwise, "span_kernel": span_kernel,
                 "train_gemm": train_gemm}, last_n=last_n)


def _speed_variant(**settings: str) -> tuple[str, str]:
    """A variant's name suffix and note for the speed settings not left at "auto"
    (elementwise="eager" -> " eager-elementwise", ", speed.elementwise 'eager'")."""
    changed = {k: v for k, v in settings.items() if v != "auto"}
    words = {"train_gemm": "train-gemm"}  # decode_gemm keeps "gemm", its older name
    suffix = "".join(f" {v}-{words.get(k, k.split('_')[-1])}" for k, v in changed.items())
    return suffix, "".join(f", speed.{k} {v!r}" for k, v in changed.items())


SHARE_NOTES = {"auto": "", "off": ", the sampler runs its own prompt pass",
               "on": ", one prompt pass shared by the sampler and the loss"}


def run_hypo(w: Workload, share_prompt: str = "auto", elementwise: str = "auto", decode_gemm: str = "auto",
             span_kernel: str = "auto", train_gemm: str = "auto") -> RunRecord:
    """HyPO: the offline DPO pair plus k on-policy samples per prompt. `share_prompt` is the speed
    setting: "auto" (hybridpo.fast.share_prompt_rule decides), "off" (the sampler prefills the
    prompts itself), "on" (the loss reuses the pass the sampler was seeded from); `elementwise`,
    `decode_gemm`, `span_kernel` and `train_gemm` too (hybridpo.fast.elementwise_for, decode_gemm_for,
    span_kernel_for, train_gemm_for)."""
    suffix, note = _speed_variant(elementwise=elementwise, decode_gemm=decode_gemm, span_kernel=span_kernel,
                                  train_gemm=train_gemm)
    name = "hybridpo hypo" + {"auto": "", "off": " separate-prompt", "on": " shared-prompt"}[share_prompt] + suffix
    record = RunRecord(name, w.name, pairs_per_step=w.batch_pairs, completions_per_step=w.batch_pairs * w.hypo_k)
    args = {"beta": w.beta, "k": w.hypo_k, "max_new_tokens": w.hypo_new_tokens}
    record.note = f"methods['hypo'] with {args}" + SHARE_NOTES[share_prompt] + note
    return _run(record, w, "hypo", args, {"share_prompt": share_prompt, "elementwise": elementwise,
                                          "decode_gemm": decode_gemm, "span_kernel": span_kernel, "train_gemm": train_gemm})


def run_rlhf(w: Workload) -> RunRecord:
    """RLHF with RLOO through the registry (the `rlhf` method), samples run to full length."""
    record = RunRecord("hybridpo rlhf", w.name, pairs_per_step=w.batch_pairs, completions_per_step=w.batch_pairs * w.rloo_k)
    args = {"beta": w.beta, "k": w.rloo_k, "max_new_tokens": w.rloo_new_tokens, "stop_at_eos": False}
    record.note = f"methods['rlhf'] with {args} (no EOS stop, as TRL's min_new_tokens)"
    return _run(record, w, "rlhf", args, {}, reward=LowIdReward(w.vocab))


def workload_config(w: Workload, method: str, method_args: dict, speed: dict, out_dir: str, last_n: bool = False):
    """The TrainConfig of a variant: TRL's AdamW defaults, linear decay over the workload's steps,
    clipping at 1.0, file-order batches of `batch_pairs`, fp32 (or bf16 autocast), the frozen-copy
    reference (the frozen-trunk one when only the last blocks train)."""
    model = ({"finetune": "last_n_layers", "last_n_layers": w.last_n_layers, "reference": "frozen_trunk"} if last_n
             else {"reference": "copy"})
    return config_from_dict({
        "method": method,
        "method_args": method_args,
        "model": {"name_or_path": f"<{w.name} workload model>", **model},
        "data": {"source": f"<{w.name} workload pairs>"},
        "optim": {"lr": w.lr, "schedule": "linear", "batch_size": w.batch_pairs, "max_steps": w.steps,
                  "max_grad_norm": 1.0, "weight_decay": 0.0, "adam_betas": [0.9, 0.999], "adam_eps": 1e-8},
        "run": {"out_dir": out_dir, "seed": w.seed, "shuffle": False, "progress": False,
                "mixed_precision": "bf16" if w.precision == "bf16" else "no"},
        "speed": speed,
    }, where=f"workload {w.name}")


def _run(record: RunRecord, w: Workload, method: str, method_args: dict, speed: dict, reward=None,
         last_n: bool = False) -> RunRecord:
    from hybridpo.fast.cpu_memory import configure
    from hybridpo.loop import Data, Run
    from hybridpo.models.load import train_last_n_layers

    with tempfile.TemporaryDirectory() as out_dir:
        cfg = workload_config(w, method, method_args, speed, out_dir, last_n)
        configure(cfg.speed.keep_freed_memory)  # what `hybridpo train` does at its command line
        tokenizer = load_tokenizer(w)
        pairs = build_pairs(w, tokenizer)
        online_only = method == "rlhf"  # prompts in, k samples scored by the reward
        examples = [_prompt_example(p) if online_only else _example(p) for p in pairs]
        model = build_model(w).train()
        if last_n:  # what load_policy does for model.finetune = last_n_layers
            train_last_n_layers(model, w.last_n_layers)
        run = Run.build(cfg, model=model, tokenizer=tokenizer, data=Data(examples), reward=reward)
        if reward is not None:
            reward.clock = run.clock
        shape = ModelShape.from_config(run.model.config)
        start = time.perf_counter()
        run.prepare()
        record.precompute_s = time.perf_counter() - start
        run.model.train()
        for batch in batches(w, pairs):
            row = run.step_once()
            phases = {k: v for k, v in run.clock.phases.items() if k not in PHASES_LEFT_OUT}
            record.step_s.append(run.clock.phases["step"])
            record.phase_s.append(phases)
            record.losses.append(float(row["loss"]))
            record.logps_chosen.append(float(row.get("logps/chosen", float("nan"))))
            samples = run.clock.sample_lengths or None
            offline = [] if online_only else [[len(p.chosen_ids), len(p.rejected_ids)] for p in batch]
            groups = [(len(p.prompt_ids), (offline[i] if offline else []) + (samples[i] if samples else []))
                      for i, p in enumerate(batch)]
            record.tokens.append(sum(n + sum(lens) for n, lens in groups))
            trained = w.last_n_layers if last_n else None
            record.flops.append(online_step_flops(shape, groups, samples) if samples else dpo_step_flops(shape, groups, trained))
            record.rss_bytes.append(current_rss())
    return record


def _example(p: Pair) -> PreferenceExample:
    return PreferenceExample(p.prompt_ids, p.chosen_ids, p.rejected_ids, p.prompt, p.chosen, p.rejected, group=None)


def _prompt_example(p: Pair) -> PromptExample:
    return PromptExample(p.prompt_ids, p.prompt, reference_ids=None, reference=None, group=None)
