"""The one training loop: every method (offline or online) runs through `train`.

Read top to bottom: build (tokenizer, data, model, reference, optimizer, schedule) -> resume ->
for each optimizer step: micro-batches -> method.loss -> backward -> all-reduce -> clip -> step ->
metrics -> eval / checkpoint -> final save. The loop knows nothing about a method beyond the
`Method` interface (hybridpo/methods/base.py).

Distributed: under `accelerate launch` every process holds the model; gradients are averaged
with an all-reduce after accumulation (no DDP wrapper, so a method or the log-prob module may call
the model's submodules directly). Each process takes its own slice of the global batch.

Data order: example i of the stream (i counts over epochs) is permutation_{epoch}(i mod n), each
epoch's permutation seeded by (seed, epoch). The data position is just the number of examples
consumed, so a resumed run sees exactly the batches the killed run would have seen.
"""

from __future__ import annotations

import json
import math
import sys
import time
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any

import torch
from accelerate import Accelerator
from accelerate.utils import set_seed
from transformers import get_scheduler

from hybridpo.checkpoint import atomic_write, latest_checkpoint, load_checkpoint, save_checkpoint, save_process_rng
from hybridpo.config import TrainConfig, save_config
from hybridpo.cpu_memory import keep_freed_memory
from hybridpo.data import DataStats, load_tokenizer, prepare_preferences, prepare_prompts, split_stats
from hybridpo.logprobs import response_logps
from hybridpo.prompt_cache import prompt_pass, prompt_pass_unsupported_reason
from hybridpo.methods import Method, MethodContext, get_method
from hybridpo.models import build_reference, load_policy, load_reward_model, trainable_parameters
from hybridpo.rewards import reward_scores
from hybridpo.run_io import MetricsLog, StopFlag, truncate_metrics

_SCHEDULES = {"cosine": "cosine", "linear": "linear", "constant": "constant_with_warmup"}


class NonFiniteLoss(RuntimeError):
    """The loss or gradient norm became inf/nan; the message gives the step and last checkpoint."""


class TrainResult:
    def __init__(self, run_dir: Path, step: int, interrupted: int | None):
        self.run_dir = run_dir  # the run folder
        self.step = step  # optimizer steps done
        self.interrupted = interrupted  # the signal number that stopped the run early, or None


@dataclass
class _Run:
    """Everything one training run holds; built once by `_build`, advanced by `_optimizer_step`."""

    cfg: TrainConfig
    run_dir: Path  # the run folder
    accelerator: Accelerator
    method: Method
    tokenizer: Any
    train_set: list  # training examples (PreferenceExample or PromptExample)
    eval_set: list  # held-out examples, maybe empty
    data_stats: DataStats  # what the data load read, dropped and cut (written to data_stats.json)
    model: torch.nn.Module  # the trained model (unwrapped)
    params: list  # its trainable parameters
    optimizer: Any  # AdamW wrapped by accelerate (fp16 grad scaling)
    scheduler: Any  # learning-rate schedule, stepped once per optimizer step
    generator: torch.Generator  # sampling RNG handed to the method; checkpointed
    ctx: MethodContext  # what the method sees
    sample_clock: list  # [seconds spent in ctx.sample during the current step]
    total_steps: int  # optimizer steps of the whole run
    global_batch: int  # examples per optimizer step over all processes
    order: "_Order"  # the data order
    step: int = 0  # optimizer steps done
    position: int = 0  # examples consumed (the data position)



_FUSED_DTYPES = (torch.float16, torch.bfloat16, torch.float32, torch.float64)


def adamw(params, *, lr: float, betas=(0.9, 0.999), eps: float = 1e-8, weight_decay: float = 0.0) -> torch.optim.AdamW:
    """The loop's optimizer: AdamW, fused (one kernel over all tensors) wherever torch has the kernel.

    Same update as the per-tensor default up to float rounding; on CPU a Pythia-70m step takes
    0.05 s fused against 0.25 s (2 threads), which was 13-15% of a TL;DR DPO step (issue 7).
    """
    params = list(params)
    fused = all(p.device.type in ("cpu", "cuda") and p.dtype in _FUSED_DTYPES for p in params)
    return torch.optim.AdamW(params, lr=lr, betas=betas, eps=eps, weight_decay=weight_decay, fused=fused or None)

def train(cfg: TrainConfig, *, resume: bool = False) -> TrainResult:
    run_dir = Path(cfg.run.out_dir)
    if not resume and latest_checkpoint(run_dir) is not None:
        raise FileExistsError(f"{run_dir} already holds a run; continue it with --resume {run_dir} or choose a new run.out_dir")
    run = _build(cfg, run_dir)
    main = run.accelerator.is_main_process
    if resume:
        _resume(run)
    elif main:
        run_dir.mkdir(parents=True, exist_ok=True)
        save_config(cfg, run_dir / "config.yaml")
    if main:
        _write_data_stats(run)
    rng_after_setup = _snapshot_rng(run.generator)  # prepare() must not shift the training RNG streams
    run.method.prepare(run.train_set, run.ctx)
    _restore_rng(rng_after_setup, run.generator)

    log = MetricsLog(run_dir, main, cfg.run.tensorboard)
    bar = _progress(cfg, main, run.total_steps, run.step)
    stop = StopFlag()
    run.model.train()
    with stop.installed():
        while run.step < run.total_steps and stop.signum is None:
            row = _optimizer_step(run)
            step, last = run.step, run.step == run.total_steps
            if step % cfg.run.log_every == 0 or last:
                log.write(step, row)
            bar.update(1)
            bar.set_postfix(loss=f"{row.get('loss', float('nan')):.4f}", tok_s=f"{row['tokens_per_s']:.0f}")
            if run.eval_set and cfg.run.eval_every and step % cfg.run.eval_every == 0 and not last:
                log.write(step, _evaluate(run))
            if cfg.run.save_every and step % cfg.run.save_every == 0 and not last:
                _checkpoint(run)
            stop.poll(run.accelerator)
    bar.close()
    _checkpoint(run)
    if stop.signum is not None:
        if main:
            print(f"stopped by signal {stop.signum} at step {run.step}; checkpoint saved; "
                  f"continue with: hybridpo train --resume {run_dir}", file=sys.stderr)
        log.close()
        return TrainResult(run_dir, run.step, stop.signum)
    if run.eval_set:
        log.write(run.step, _evaluate(run))
    if main:
        _save_final(run.model, run.tokenizer, run_dir / "final", merge=cfg.model.finetune == "lora" and cfg.model.lora.save_merged)
    log.close()
    return TrainResult(run_dir, run.step, None)


def _build(cfg: TrainConfig, run_dir: Path) -> _Run:
    """Data, model (+ reference, reward model), optimizer, schedule and the method's context."""
    if cfg.run.keep_freed_memory:
        keep_freed_memory()
    accelerator = Accelerator(mixed_precision=cfg.run.mixed_precision)
    set_seed(cfg.run.seed)
    method = get_method(cfg.method)(cfg.method_args)

    tokenizer = load_tokenizer(cfg.model.tokenizer or cfg.model.name_or_path)
    prepare = prepare_preferences if method.data_kind == "preferences" else prepare_prompts
    data = prepare(cfg.data, tokenizer)
    train_set, eval_set = data.train, data.eval
    if not train_set:
        raise ValueError(f"data.source={cfg.data.source!r} gave no training examples")
    global_batch = cfg.optim.batch_size * cfg.optim.grad_accum * accelerator.num_processes
    total_steps = cfg.optim.max_steps or math.ceil(cfg.optim.epochs * len(train_set) / global_batch)

    model = load_policy(cfg.model, head=method.model_head).to(accelerator.device)
    reference = build_reference(model, cfg.model) if method.needs_reference else None
    if reference is not None:
        reference.model.to(accelerator.device)
    reward_model = None
    if method.needs_reward_model:
        if not cfg.model.reward_model:
            raise ValueError(f"method={cfg.method!r} needs model.reward_model (a folder saved by method=rm)")
        reward_model = load_reward_model(cfg.model.reward_model, cfg.model).to(accelerator.device)
    params = trainable_parameters(model)
    optimizer = adamw(
        params, lr=cfg.optim.lr, betas=tuple(cfg.optim.adam_betas), eps=cfg.optim.adam_eps, weight_decay=cfg.optim.weight_decay
    )
    warmup = cfg.optim.warmup_steps or round(cfg.optim.warmup_ratio * total_steps)
    scheduler = get_scheduler(_SCHEDULES[cfg.optim.schedule], optimizer, num_warmup_steps=warmup, num_training_steps=total_steps)
    optimizer = accelerator.prepare_optimizer(optimizer)  # grad scaling under fp16; the model stays unwrapped

    generator = torch.Generator(device=accelerator.device).manual_seed(cfg.run.seed + accelerator.process_index)
    sample_clock = [0.0]
    ctx = _context(cfg, model, reference, reward_model, tokenizer, generator, accelerator, sample_clock)
    return _Run(
        cfg=cfg, run_dir=run_dir, accelerator=accelerator, method=method, tokenizer=tokenizer, train_set=train_set,
        eval_set=eval_set, data_stats=data.stats, model=model, params=params, optimizer=optimizer, scheduler=scheduler,
        generator=generator, ctx=ctx, sample_clock=sample_clock, total_steps=total_steps, global_batch=global_batch,
        order=_Order(len(train_set), cfg.run.seed),
    )


def _write_data_stats(run: _Run) -> None:
    """RUN/data_stats.json (atomic) and a one-line summary on stderr: what the data load kept.

    "counts" are DataStats over all sources together (drops happen before the train/eval split);
    "train" / "eval" (the latter only when there is held-out data) give each split's size and
    token lengths. A resumed run rewrites the file from its own load.
    """
    stats = {"source": run.cfg.data.source, "eval_source": run.cfg.data.eval_source, "counts": run.data_stats.to_dict(),
             "train": split_stats(run.train_set)}
    if run.eval_set:
        stats["eval"] = split_stats(run.eval_set)
    atomic_write(run.run_dir / "data_stats.json", json.dumps(stats, indent=2) + "\n")
    print(f"data: {run.data_stats.summary()} (data_stats.json)", file=sys.stderr)


def _resume(run: _Run) -> None:
    ckpt = latest_checkpoint(run.run_dir)
    if ckpt is None:
        raise FileNotFoundError(f"{run.run_dir}: no checkpoint to resume from")
    state, method_state = load_checkpoint(
        ckpt, model=run.model, optimizer=run.optimizer, scheduler=run.scheduler, generator=run.generator,
        rank=run.accelerator.process_index,
    )
    run.step, run.position = state["step"], state["position"]
    run.method.load_state_dict(method_state)
    if run.accelerator.is_main_process:
        truncate_metrics(run.run_dir / "metrics.jsonl", run.step)
        print(f"resuming {run.run_dir} from {ckpt.name} (step {run.step})", file=sys.stderr)


def _optimizer_step(run: _Run) -> dict:
    """grad_accum micro-batches -> backward -> all-reduce -> clip -> AdamW step; returns the metrics row."""
    cfg, acc = run.cfg, run.accelerator
    t0 = time.perf_counter()
    run.sample_clock[0] = 0.0
    run.ctx.step = run.step
    sums, tokens = {}, 0
    for m in range(cfg.optim.grad_accum):
        # this process's slice of the global batch: micro-batch m, rank r
        start = run.position + (m * acc.num_processes + acc.process_index) * cfg.optim.batch_size
        batch = [run.train_set[i] for i in run.order.indices(start, cfg.optim.batch_size)]
        with acc.autocast():
            loss, metrics = run.method.loss(batch, run.ctx)
        if not torch.isfinite(loss):
            raise NonFiniteLoss(_nonfinite_message("loss", loss.item(), run.step + 1, run.run_dir))
        acc.backward(loss / cfg.optim.grad_accum)
        tokens += int(metrics.pop("num_tokens", _count_tokens(batch)))
        for k, v in metrics.items():
            sums[k] = sums.get(k, 0.0) + float(v)
    _all_reduce_grads(run.params, acc)
    clip = cfg.optim.max_grad_norm if cfg.optim.max_grad_norm > 0 else float("inf")
    grad_norm = float(acc.clip_grad_norm_(run.params, clip))
    if not math.isfinite(grad_norm):
        raise NonFiniteLoss(_nonfinite_message("gradient norm", grad_norm, run.step + 1, run.run_dir))
    lr = run.scheduler.get_last_lr()[0]  # the rate this update uses
    run.optimizer.step()
    run.scheduler.step()
    run.optimizer.zero_grad(set_to_none=True)
    run.step += 1
    run.position += run.global_batch

    row = _mean_across({k: v / cfg.optim.grad_accum for k, v in sums.items()}, acc)
    elapsed = time.perf_counter() - t0
    row.update(
        grad_norm=grad_norm, lr=lr, tokens_per_s=_sum_across(tokens, acc) / elapsed, step_time_s=elapsed,
        epoch=run.position / len(run.train_set),
    )
    if run.sample_clock[0] > 0:
        row["sample_time_share"] = run.sample_clock[0] / elapsed
    return row


def _checkpoint(run: _Run) -> None:
    acc = run.accelerator
    if acc.is_main_process:
        save_checkpoint(
            run.run_dir, step=run.step, position=run.position, model=run.model, optimizer=run.optimizer,
            scheduler=run.scheduler, method_state=run.method.state_dict(), generator=run.generator,
            keep=run.cfg.run.keep_checkpoints,
        )
    acc.wait_for_everyone()
    if not acc.is_main_process:
        save_process_rng(run.run_dir, run.step, acc.process_index, run.generator)


# ------------------------------------------------------------------------------------------------


def _context(cfg, model, reference, reward_model, tokenizer, generator, accelerator, sample_clock) -> MethodContext:
    layout, pad_id = cfg.run.logprob_layout, tokenizer.pad_token_id

    def policy_logps(prompts, responses, temperature=1.0, prompt_pass=None):
        return response_logps(model, prompts, responses, pad_id=pad_id, temperature=temperature, layout=layout,
                              prompt_pass=prompt_pass)

    def shared_prompt_pass(prompts):  # the packed layout's extension; None where it would change the numbers
        if layout != "packed" or prompt_pass_unsupported_reason(model) is not None:
            return None
        return prompt_pass(model, prompts, pad_id=pad_id)

    def ref_logps(prompts, responses, temperature=1.0):
        with torch.no_grad(), reference.scope():
            return response_logps(reference.model, prompts, responses, pad_id=pad_id, temperature=temperature, layout=layout)

    def sample(prompts, k, **kwargs):
        from hybridpo.rollout import sample as draw

        was_training = model.training
        model.eval()
        t0 = time.perf_counter()
        try:
            kwargs.setdefault("tokenizer", tokenizer)
            kwargs.setdefault("generator", generator)
            return draw(model, prompts, k, eos_id=tokenizer.eos_token_id, pad_id=pad_id, **kwargs)
        finally:
            model.train(was_training)
            sample_clock[0] += time.perf_counter() - t0  # the loop logs sample_time_share from it

    def reward(prompts, responses):
        with torch.no_grad():
            return reward_scores(reward_model, prompts, responses, pad_id=pad_id)

    return MethodContext(
        policy=model,
        logps=policy_logps,
        ref_logps=ref_logps if reference is not None else None,
        sample=sample,
        prompt_pass=shared_prompt_pass,
        reward=reward if reward_model is not None else None,
        tokenizer=tokenizer,
        pad_id=pad_id,
        eos_id=tokenizer.eos_token_id,
        generator=generator,
        device=accelerator.device,
    )


@torch.no_grad()
def _evaluate(run: _Run) -> dict:
    """Held-out metrics over the first `run.eval_examples` examples, weighted by batch size."""
    cfg, acc = run.cfg, run.accelerator
    n = len(run.eval_set) if cfg.run.eval_examples == 0 else min(cfg.run.eval_examples, len(run.eval_set))
    mine = list(range(acc.process_index, n, acc.num_processes))
    run.model.eval()
    sums, count = {}, 0
    for s in range(0, len(mine), cfg.optim.batch_size):
        batch = [run.eval_set[i] for i in mine[s : s + cfg.optim.batch_size]]
        with acc.autocast():
            metrics = run.method.evaluate(batch, run.ctx)
        metrics.pop("num_tokens", None)
        for k, v in metrics.items():
            sums[k] = sums.get(k, 0.0) + float(v) * len(batch)
        count += len(batch)
    run.model.train()
    row = _mean_across({k: v / max(count, 1) for k, v in sums.items()}, acc)
    return {f"eval/{k}": v for k, v in row.items()}


def _save_final(model, tokenizer, out: Path, merge: bool) -> None:
    if merge:
        model = model.merge_and_unload()  # in place: the run is over
    model.save_pretrained(out, safe_serialization=True)
    tokenizer.save_pretrained(out)


class _Order:
    """Seeded per-epoch permutations over n examples; indices(start, size) for stream positions."""

    def __init__(self, n: int, seed: int):
        self.n, self.seed = n, seed

    @lru_cache(maxsize=4)
    def _perm(self, epoch: int) -> list[int]:
        g = torch.Generator().manual_seed(self.seed * 1_000_003 + epoch)
        return torch.randperm(self.n, generator=g).tolist()

    def indices(self, start: int, size: int) -> list[int]:
        return [self._perm(i // self.n)[i % self.n] for i in range(start, start + size)]


def _progress(cfg, main, total, initial):
    from tqdm.auto import tqdm

    return tqdm(total=total, initial=initial, disable=not (main and cfg.run.progress), desc=cfg.method, unit="step")


def _all_reduce_grads(params, accelerator) -> None:
    if accelerator.num_processes == 1:
        return
    for p in params:
        if p.grad is None:
            p.grad = torch.zeros_like(p)
        p.grad.copy_(accelerator.reduce(p.grad, reduction="mean"))


def _mean_across(row: dict, accelerator) -> dict:
    if accelerator.num_processes == 1 or not row:
        return row
    keys = sorted(row)
    values = accelerator.reduce(torch.tensor([row[k] for k in keys], device=accelerator.device), reduction="mean")
    return dict(zip(keys, values.tolist()))


def _sum_across(value: float, accelerator) -> float:
    if accelerator.num_processes == 1:
        return value
    return float(accelerator.reduce(torch.tensor(float(value), device=accelerator.device), reduction="sum"))


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
