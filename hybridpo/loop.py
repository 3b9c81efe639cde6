"""The one training loop: every method (offline or online) runs through `train`.

Read top to bottom: `Run.build` (tokenizer, data, model and its roles: policy, reference, reward;
optimizer, schedule) -> resume -> for each optimizer step, `Run.step`: micro-batches ->
method.loss -> backward -> all-reduce -> clip -> step -> the sampler's `weights_updated` (an
engine with its own copy of the weights) -> method.after_step -> metrics; then eval / checkpoint
-> final save. The loop knows nothing about a method beyond the `Method` interface
(hybridpo/methods/base.py). `hybridpo bench speed` times `Run.step` itself.

Distributed (docs/scaling.md): under `accelerate launch` (DDP) every process holds the model;
gradients are averaged with an all-reduce after accumulation (no DDP wrapper, so a method or the
log-prob module may call the model's submodules directly). The process count changes the
arithmetic, never the data:
- Data order: example i of the stream (i counts over epochs) is permutation_{epoch}(i mod n), each
  epoch's permutation seeded by (seed, epoch) (`run.shuffle: false`: file order), the same on every
  process. Optimizer step t trains on stream positions [t·G, (t+1)·G), G the global batch
  (batch_size × grad_accum × processes); micro-batch m of process r holds positions
  t·G + (m·processes + r)·batch_size + [0, batch_size). The data position is the number of
  examples consumed, so a resumed run sees exactly the batches the killed run would have seen.
- Online samples are seeded per example: the prompt at stream position i draws with seed
  mix(run.seed, TRAIN, i) (hybridpo.sampling.seeds), so it gets the same samples whatever process
  or micro-batch holds it, and again after --resume.
- The loss of a micro-batch is its examples' mean, the gradient is divided by grad_accum and
  averaged over processes: every example weighs 1/G. Metrics are averaged over micro-batches and
  processes (for a per-example mean such as loss or kl: the global batch's mean); `after_step` sees
  those averages, the same on every rank. Held-out metrics are summed and counted across processes.
What stays per process: dropout's random stream (torch's, seeded run.seed on every rank), which
changes with the split where the model has dropout. FSDP and DeepSpeed configs are refused (the
loop does not shard the model yet; docs/scaling.md says what was tried and what a GPU must show).
"""

from __future__ import annotations

import contextlib
import json
import math
import sys
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any

import torch
from accelerate import Accelerator
from accelerate.utils import DistributedType, set_seed
from transformers import get_scheduler

from hybridpo.checkpoint import atomic_write, latest_checkpoint, load_checkpoint, save_checkpoint
from hybridpo.config import ConfigError, TrainConfig, save_config
from hybridpo.data import DataStats, load_tokenizer, prepare_preferences, prepare_prompts, split_stats
from hybridpo.methods import Method, MethodContext, get_method
from hybridpo.models import (
    BuiltinSampler, Policy, RewardModel, StepClock, TextReward, build_reference, load_policy, load_reward_model,
    load_scorer, trainable_parameters,
)
from hybridpo.processes import all_reduce_grads, reduce_across, sum_across
from hybridpo.run_io import MetricsLog, StopFlag, truncate_metrics
from hybridpo.sampling import EVAL, TRAIN, GenerateSampler, example_seeds

_SCHEDULES = {"cosine": "cosine", "linear": "linear", "constant": "constant_with_warmup"}
SAMPLERS = {  # speed.sampler -> what draws the online samples (hybridpo.models.policy.Sampler)
    "builtin": lambda speed: BuiltinSampler(decoder=speed.decoder, kv_cache=speed.kv_cache,
                                            decode_gemm=speed.decode_gemm),
    "generate": lambda speed: GenerateSampler(),
}
_FUSED_DTYPES = (torch.float16, torch.bfloat16, torch.float32, torch.float64)


class NonFiniteLoss(RuntimeError):
    """The loss or gradient norm became inf/nan; the message gives the step and last checkpoint."""


@dataclass
class TrainResult:
    run_dir: Path  # the run folder
    step: int  # optimizer steps done
    interrupted: int | None  # the signal number that stopped the run early, or None


@dataclass
class Data:
    """What a run trains and evaluates on (hybridpo.data's examples)."""

    train: list  # training examples (PreferenceExample or PromptExample)
    eval: list = field(default_factory=list)  # held-out examples, maybe empty
    stats: DataStats = field(default_factory=DataStats)  # what the data load read, dropped and cut


def adamw(params, *, lr: float, betas=(0.9, 0.999), eps: float = 1e-8, weight_decay: float = 0.0) -> torch.optim.AdamW:
    """The loop's optimizer: AdamW, fused (one kernel over all tensors) wherever torch has the kernel.

    Same update as the per-tensor default up to float rounding; on CPU a Pythia-70m step takes
    0.05 s fused against 0.25 s (2 threads), which was 13-15% of a TL;DR DPO step.
    """
    params = list(params)
    fused = all(p.device.type in ("cpu", "cuda") and p.dtype in _FUSED_DTYPES for p in params)
    return torch.optim.AdamW(params, lr=lr, betas=betas, eps=eps, weight_decay=weight_decay, fused=fused or None)


def train(cfg: TrainConfig, *, resume: bool = False, reward=None) -> TrainResult:
    """Train `cfg` into cfg.run.out_dir (see the module docstring). `reward`: a role with
    `score(prompts, responses)` that scores the online samples instead of the one the config
    names (an experiment's verifier that no config field can name, e.g. models.ImplicitReward)."""
    run_dir = Path(cfg.run.out_dir)
    if not resume and latest_checkpoint(run_dir) is not None:
        raise FileExistsError(f"{run_dir} already holds a run; continue it with --resume {run_dir} or choose a new run.out_dir")
    run = Run.build(cfg, reward=reward)
    main = run.accelerator.is_main_process
    if resume:
        run.resume()
    elif main:
        run_dir.mkdir(parents=True, exist_ok=True)
        save_config(cfg, run_dir / "config.yaml")
    if main:
        _write_data_stats(run)
        acc, o = run.accelerator, cfg.optim
        print(f"processes: {acc.num_processes} ({acc.distributed_type.value}); global batch {run.global_batch} = "
              f"batch_size {o.batch_size} x grad_accum {o.grad_accum} x {acc.num_processes}", file=sys.stderr)
    run.prepare()

    log = MetricsLog(run_dir, main, cfg.run.tensorboard)
    bar = _progress(cfg, main, run.total_steps, run.step)
    stop = StopFlag()
    run.model.train()
    with stop.installed():
        while run.step < run.total_steps and stop.signum is None:
            row = run.step_once()
            step, last = run.step, run.step == run.total_steps
            if step % cfg.run.log_every == 0 or last:
                log.write(step, row)
            bar.update(1)
            bar.set_postfix(loss=f"{row.get('loss', float('nan')):.4f}", tok_s=f"{row['tokens_per_s']:.0f}")
            if run.data.eval and cfg.run.eval_every and step % cfg.run.eval_every == 0 and not last:
                log.write(step, run.evaluate())
            if cfg.run.save_every and step % cfg.run.save_every == 0 and not last:
                run.checkpoint()
            stop.poll(run.accelerator)
    bar.close()
    run.checkpoint()
    if stop.signum is not None:
        if main:
            print(f"stopped by signal {stop.signum} at step {run.step}; checkpoint saved; "
                  f"continue with: hybridpo train --resume {run_dir}", file=sys.stderr)
        log.close()
        return TrainResult(run_dir, run.step, stop.signum)
    if run.data.eval:
        log.write(run.step, run.evaluate())
    if main:
        run.save_final(run_dir / "final")
    log.close()
    return TrainResult(run_dir, run.step, None)


@dataclass
class Run:
    """Everything one training run holds; built once by `Run.build`, advanced by `step_once`."""

    cfg: TrainConfig
    run_dir: Path  # the run folder
    accelerator: Accelerator
    method: Method
    tokenizer: Any
    data: Data  # training and held-out examples
    model: torch.nn.Module  # the trained model (unwrapped)
    params: list  # its trainable parameters
    optimizer: Any  # AdamW wrapped by accelerate (fp16 grad scaling)
    scheduler: Any  # learning-rate schedule, stepped once per optimizer step
    generator: torch.Generator  # sampling RNG of the policy; checkpointed
    ctx: MethodContext  # the model roles the method calls
    clock: StepClock  # wall time per phase of the current step (shared by the roles)
    total_steps: int  # optimizer steps of the whole run
    global_batch: int  # examples per optimizer step over all processes
    order: "_Order"  # the data order
    step: int = 0  # optimizer steps done
    position: int = 0  # examples consumed (the data position)

    @classmethod
    def build(cls, cfg: TrainConfig, *, model: torch.nn.Module | None = None, tokenizer=None, data: Data | None = None,
              reward=None) -> "Run":
        """Data, model and its roles, optimizer, schedule. `model`, `tokenizer`, `data` and
        `reward` (a role with `score`) replace what the config would load: the benchmark and the
        tests build a run around objects they made, through the same construction as training."""
        # torchrun / `accelerate launch --multi_gpu` on a machine without GPUs: processes on CPU (gloo)
        cpu = torch.distributed.is_torchelastic_launched() and not torch.cuda.is_available()
        accelerator = Accelerator(mixed_precision=cfg.run.mixed_precision, cpu=cpu)
        _refuse_sharding(accelerator)
        set_seed(cfg.run.seed)
        method = get_method(cfg.method)(cfg.method_args)
        tokenizer = tokenizer or load_tokenizer(cfg.model.tokenizer or cfg.model.name_or_path)
        if data is None:
            prepare = prepare_preferences if method.data_kind == "preferences" else prepare_prompts
            loaded = prepare(cfg.data, tokenizer)
            data = Data(loaded.train, loaded.eval, loaded.stats)
        if not data.train:
            raise ConfigError(f"data.source={cfg.data.source!r} gave no training examples")
        global_batch = cfg.optim.batch_size * cfg.optim.grad_accum * accelerator.num_processes
        total_steps = cfg.optim.max_steps or math.ceil(cfg.optim.epochs * len(data.train) / global_batch)

        if model is None:
            model = load_policy(cfg.model, head=method.model_head)
        model = model.to(accelerator.device)
        params = trainable_parameters(model)
        optimizer = adamw(params, lr=cfg.optim.lr, betas=tuple(cfg.optim.adam_betas), eps=cfg.optim.adam_eps,
                          weight_decay=cfg.optim.weight_decay)
        warmup = cfg.optim.warmup_steps or round(cfg.optim.warmup_ratio * total_steps)
        scheduler = get_scheduler(_SCHEDULES[cfg.optim.schedule], optimizer, num_warmup_steps=warmup,
                                  num_training_steps=total_steps)
        optimizer = accelerator.prepare_optimizer(optimizer)  # grad scaling under fp16; the model stays unwrapped

        generator = torch.Generator(device=accelerator.device).manual_seed(cfg.run.seed + accelerator.process_index)
        clock = StepClock()
        ctx = _roles(cfg, method, model, tokenizer, generator, clock, accelerator.device, reward)
        return cls(
            cfg=cfg, run_dir=Path(cfg.run.out_dir), accelerator=accelerator, method=method, tokenizer=tokenizer,
            data=data, model=model, params=params, optimizer=optimizer, scheduler=scheduler, generator=generator,
            ctx=ctx, clock=clock, total_steps=total_steps, global_batch=global_batch,
            order=_Order(len(data.train), cfg.run.seed, cfg.run.shuffle),
        )

    def prepare(self) -> None:
        """The method's one-off work before step 1; it must not shift the training RNG streams."""
        rng_after_setup = _snapshot_rng(self.generator)
        self.method.prepare(self.data.train, self.ctx)
        _restore_rng(rng_after_setup, self.generator)

    def step_once(self) -> dict:
        """grad_accum micro-batches -> backward -> all-reduce -> clip -> AdamW step -> the method's
        after_step; returns the metrics row (averaged over micro-batches and processes)."""
        cfg, acc, clock = self.cfg, self.accelerator, self.clock
        clock.reset()
        self.ctx.step = self.step
        sums, tokens = {}, 0
        with clock.time("step"):
            for m in range(cfg.optim.grad_accum):
                # this process's slice of the global batch: micro-batch m, rank r (module docstring)
                start = self.position + (m * acc.num_processes + acc.process_index) * cfg.optim.batch_size
                batch = [self.data.train[i] for i in self.order.indices(start, cfg.optim.batch_size)]
                # per-example sampling seeds: the stream positions start .. start + batch_size - 1
                seeds = example_seeds(cfg.run.seed, TRAIN, indices=list(range(start, start + cfg.optim.batch_size)))
                with acc.autocast(), _seeded(self.ctx.policy, seeds):
                    loss, metrics = self.method.loss(batch, self.ctx)
                if not torch.isfinite(loss):
                    raise NonFiniteLoss(_nonfinite_message("loss", loss.item(), self.step + 1, self.run_dir))
                with clock.time("backward"):
                    acc.backward(loss / cfg.optim.grad_accum)
                tokens += int(metrics.pop("num_tokens", _count_tokens(batch)))
                for k, v in metrics.items():
                    sums[k] = sums.get(k, 0.0) + float(v)
            with clock.time("clip + optimizer"):
                all_reduce_grads(self.params, acc)
                clip = cfg.optim.max_grad_norm if cfg.optim.max_grad_norm > 0 else float("inf")
                grad_norm = float(acc.clip_grad_norm_(self.params, clip))
                if not math.isfinite(grad_norm):
                    raise NonFiniteLoss(_nonfinite_message("gradient norm", grad_norm, self.step + 1, self.run_dir))
                lr = self.scheduler.get_last_lr()[0]  # the rate this update uses
                self.optimizer.step()
                self.scheduler.step()
                self.optimizer.zero_grad(set_to_none=True)
            _push_weights(self.ctx.policy, self.model, self.step + 1)
            self.step += 1
            self.position += self.global_batch
            row = reduce_across({k: v / cfg.optim.grad_accum for k, v in sums.items()}, acc, "mean")
            self.method.after_step(row)
        elapsed = clock.phases["step"]
        row.update(grad_norm=grad_norm, lr=lr, tokens_per_s=sum_across(tokens, acc) / elapsed, step_time_s=elapsed,
                   epoch=self.position / len(self.data.train))
        if clock.phases.get("sampling", 0.0) > 0:
            row["sample_time_share"] = clock.phases["sampling"] / elapsed
        return row

    @torch.no_grad()
    def evaluate(self) -> dict:
        """Held-out metrics over the first `run.eval_examples` examples, weighted by batch size.
        The training RNG streams are left as they were: how often a run evaluates never changes
        what it trains on (an online method's held-out samples draw from the policy's generator)."""
        rng = _snapshot_rng(self.generator)
        try:
            return self._evaluate()
        finally:
            _restore_rng(rng, self.generator)

    def _evaluate(self) -> dict:
        cfg, acc = self.cfg, self.accelerator
        n = len(self.data.eval) if cfg.run.eval_examples == 0 else min(cfg.run.eval_examples, len(self.data.eval))
        mine = list(range(acc.process_index, n, acc.num_processes))
        self.model.eval()
        sums, count = {}, 0
        for s in range(0, len(mine), cfg.optim.batch_size):
            indices = mine[s : s + cfg.optim.batch_size]
            batch = [self.data.eval[i] for i in indices]
            seeds = example_seeds(cfg.run.seed, EVAL, self.step, indices=indices)  # held-out example i at this step
            with acc.autocast(), _seeded(self.ctx.policy, seeds):
                metrics = self.method.evaluate(batch, self.ctx)
            metrics.pop("num_tokens", None)
            for k, v in metrics.items():
                sums[k] = sums.get(k, 0.0) + float(v) * len(batch)
            count += len(batch)
        if cfg.run.eval_kl_samples and self.ctx.reference is not None and self.method.model_head == "causal_lm":
            for k, v in self._held_out_kl([self.data.eval[i] for i in mine]).items():
                sums[k] = v * max(count, 1)  # already a mean over this process's prompts
        self.model.train()
        if acc.num_processes > 1:  # a process with no held-out example still adds zeros under every key
            from accelerate.utils import broadcast_object_list

            sums = {k: sums.get(k, 0.0) for k in broadcast_object_list([sorted(sums)])[0]}
        sums, count = reduce_across(sums, acc, "sum"), sum_across(count, acc)  # weighted by batch size, over all processes
        return {f"eval/{k}": v / max(count, 1) for k, v in sums.items()}

    def _held_out_kl(self, examples: list) -> dict:
        """KL(π‖π_ref) on the held-out prompts (hybridpo.evaluate.reverse_kl: the summed log-ratio
        over fresh samples at temperature 1, the training estimator), as `kl` and `kl_stderr`."""
        from hybridpo.evaluate import EvalConfig, reverse_kl

        cfg = self.cfg
        prompts = list({tuple(ex.prompt_ids): ex.prompt_ids for ex in examples}.values())  # each prompt once
        if not prompts:
            return {}
        ecfg = EvalConfig(kl_samples=cfg.run.eval_kl_samples, max_new_tokens=cfg.run.eval_max_new_tokens,
                          batch_size=cfg.optim.batch_size, seed=cfg.run.seed, layout=cfg.speed.logprob_layout)
        return reverse_kl(self.model, self.ctx.reference, prompts, pad_id=self.ctx.pad_id, eos_id=self.ctx.eos_id, cfg=ecfg)

    def checkpoint(self) -> None:
        """Every process writes its own state (RNG, the method's) into one staging folder; the main
        process writes the model, optimizer and schedule once, then makes the folder visible."""
        acc = self.accelerator
        save_checkpoint(
            self.run_dir, step=self.step, position=self.position, model=self.model, optimizer=self.optimizer,
            scheduler=self.scheduler, method_state=self.method.state_dict(), generator=self.generator,
            keep=self.cfg.run.keep_checkpoints, rank=acc.process_index, barrier=acc.wait_for_everyone,
        )

    def resume(self) -> None:
        ckpt = latest_checkpoint(self.run_dir)
        if ckpt is None:
            raise FileNotFoundError(f"{self.run_dir}: no checkpoint to resume from")
        state, method_state = load_checkpoint(
            ckpt, model=self.model, optimizer=self.optimizer, scheduler=self.scheduler, generator=self.generator,
            rank=self.accelerator.process_index,
        )
        self.step, self.position = state["step"], state["position"]
        self.method.load_state_dict(method_state)
        if self.accelerator.is_main_process:
            truncate_metrics(self.run_dir / "metrics.jsonl", self.step)
            print(f"resuming {self.run_dir} from {ckpt.name} (step {self.step})", file=sys.stderr)

    def save_final(self, out: Path) -> None:
        model = self.model
        if self.cfg.model.finetune == "lora" and self.cfg.model.lora.save_merged:
            model = model.merge_and_unload()  # in place: the run is over
        model.save_pretrained(out, safe_serialization=True)
        self.tokenizer.save_pretrained(out)


def _roles(cfg: TrainConfig, method: Method, model, tokenizer, generator, clock, device, reward) -> MethodContext:
    """The model roles the method calls: the policy (or the reward model being trained), π_ref,
    and what scores samples. One construction for training, the benchmark and the tests."""
    pad_id, eos_id, speed = tokenizer.pad_token_id, tokenizer.eos_token_id, cfg.speed
    if method.model_head == "reward":
        policy = RewardModel(model, pad_id, trainable=True, clock=clock)
    else:
        policy = Policy(model, pad_id, eos_id, tokenizer=tokenizer, layout=speed.logprob_layout, elementwise=speed.elementwise,
                        span_kernel=speed.span_kernel, train_gemm=speed.train_gemm, share_prompt=speed.share_prompt, generator=generator, sampler=_sampler(speed), clock=clock)
    reference = None
    if method.needs_reference:
        reference = build_reference(model, cfg.model, pad_id=pad_id, layout=speed.logprob_layout,
                                    elementwise=speed.elementwise, span_kernel=speed.span_kernel,
                                    train_gemm=speed.train_gemm, clock=clock)
        reference.model.to(device)
    if method.needs_reward and reward is None:
        scorer = getattr(method.cfg, "scorer", "")
        if scorer:
            reward = TextReward(load_scorer(scorer), tokenizer, clock=clock)
        elif cfg.model.reward_model:
            reward = RewardModel(load_reward_model(cfg.model.reward_model, cfg.model).to(device), pad_id, clock=clock)
        else:
            raise ConfigError(f"method={cfg.method!r} needs model.reward_model (a folder saved by method=rm) "
                              "or method_args.scorer (a program on the text)")
    return MethodContext(policy=policy, reference=reference, reward=reward, tokenizer=tokenizer, pad_id=pad_id,
                         eos_id=eos_id)


def _refuse_sharding(accelerator) -> None:
    """FSDP and DeepSpeed need the model wrapped, which this loop does not do yet (docs/scaling.md).
    accelerate's launcher says it asked for them in its environment flags even where it then runs
    plain data parallel (on CPU, FSDP becomes MULTI_CPU): refuse rather than train unsharded."""
    from accelerate.utils import parse_flag_from_env

    asked = [name for name, flag in (("FSDP", "ACCELERATE_USE_FSDP"), ("DeepSpeed", "ACCELERATE_USE_DEEPSPEED"))
             if parse_flag_from_env(flag)]
    if accelerator.distributed_type in (DistributedType.FSDP, DistributedType.DEEPSPEED) or asked:
        what = asked[0] if asked else accelerator.distributed_type.value
        raise ConfigError(f"accelerate config asks for {what}: the training loop does not shard the model yet "
                          f"(accelerate runs it as {accelerator.distributed_type.value}); launch with "
                          "configs/accelerate/ddp.yaml. docs/scaling.md says what runs where")


def _sampler(speed):
    if speed.sampler not in SAMPLERS:
        raise ConfigError(f"speed.sampler={speed.sampler!r}; choose from {sorted(SAMPLERS)}")
    return SAMPLERS[speed.sampler](speed)


def _push_weights(policy, model, step: int) -> None:
    """After each optimizer step: a sampler that holds its own copy of the weights (an inference
    engine; docs/generation_engine.md) gets them through its optional `weights_updated(model, step)`."""
    push = getattr(getattr(policy, "sampler", None), "weights_updated", None)
    if push is not None:
        push(model, step)


def _seeded(policy, seeds: list[int]):
    """The per-example sampling seeds for the draws of one micro-batch (a reward model has none)."""
    return policy.seeded(seeds) if isinstance(policy, Policy) else contextlib.nullcontext()


def _write_data_stats(run: Run) -> None:
    """RUN/data_stats.json (atomic) and a one-line summary on stderr: what the data load kept.

    "counts" are DataStats over all sources together (drops happen before the train/eval split);
    "train" / "eval" (the latter only when there is held-out data) give each split's size and
    token lengths. A resumed run rewrites the file from its own load.
    """
    stats = {"source": run.cfg.data.source, "eval_source": run.cfg.data.eval_source, "counts": run.data.stats.to_dict(),
             "train": split_stats(run.data.train)}
    if run.data.eval:
        stats["eval"] = split_stats(run.data.eval)
    atomic_write(run.run_dir / "data_stats.json", json.dumps(stats, indent=2) + "\n")
    print(f"data: {run.data.stats.summary()} (data_stats.json)", file=sys.stderr)


class _Order:
    """Seeded per-epoch permutations over n examples (or file order); indices(start, size) for stream positions."""

    def __init__(self, n: int, seed: int, shuffle: bool = True):
        self.n, self.seed, self.shuffle = n, seed, shuffle

    @lru_cache(maxsize=4)
    def _perm(self, epoch: int) -> list[int]:
        if not self.shuffle:
            return list(range(self.n))
        g = torch.Generator().manual_seed(self.seed * 1_000_003 + epoch)
        return torch.randperm(self.n, generator=g).tolist()

    def indices(self, start: int, size: int) -> list[int]:
        return [self._perm(i // self.n)[i % self.n] for i in range(start, start + size)]


def _progress(cfg, main, total, initial):
    from tqdm.auto import tqdm

    return tqdm(total=total, initial=initial, disable=not (main and cfg.run.progress), desc=cfg.method, unit="step")


def _count_tokens(batch) -> int:
    """Prompt + response tokens of a batch of examples (each prompt counted once)."""
    total = 0
    for ex in batch:
        for name in ("prompt_ids", "chosen_ids", "rejected_ids", "reference_ids"):
            ids = getattr(ex, name, None)
            total += len(ids) if ids else 0
    return total


def _nonfinite_message(what: str, value: float, step: int, run_dir: Path) -> str:
    ckpt = latest_checkpoint(run_dir)
    kept = f"the last good checkpoint is {ckpt}" if ckpt else "no checkpoint was saved before it"
    return f"non-finite {what} ({value}) at step {step}: stopping; {kept}"


def _snapshot_rng(generator):
    import random

    import numpy as np

    return torch.get_rng_state(), np.random.get_state(), random.getstate(), generator.get_state()


def _restore_rng(state, generator) -> None:
    import random

    import numpy as np

    torch.set_rng_state(state[0])
    np.random.set_state(state[1])
    random.setstate(state[2])
    generator.set_state(state[3])
