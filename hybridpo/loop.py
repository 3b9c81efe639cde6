"""The one training loop: every method (offline or online) runs through `train`.

Read top to bottom: build (tokenizer, data, model, reference, optimizer, schedule) -> resume ->
for each optimizer step: micro-batches -> method.loss -> backward -> all-reduce -> clip -> step ->
metrics -> eval / checkpoint -> final save. The loop knows nothing about a method beyond the
`Method` interface (hybridpo/methods/base.py).

Distributed: under `accelerate launch` every process holds the model; gradients are averaged
with an all-reduce after accumulation (no DDP wrapper, so the packed log-prob path, which calls
the decoder directly, stays correct). Each process takes its own slice of the global batch.

Data order: example i of the stream (i counts over epochs) is permutation_{epoch}(i mod n), each
epoch's permutation seeded by (seed, epoch). The data position is just the number of examples
consumed, so a resumed run sees exactly the batches the killed run would have seen.
"""

from __future__ import annotations

import json
import math
import signal
import sys
import time
from contextlib import contextmanager
from functools import lru_cache
from pathlib import Path

import torch
from accelerate import Accelerator
from accelerate.utils import set_seed

from hybridpo.checkpoint import latest_checkpoint, load_checkpoint, save_checkpoint, save_process_rng
from hybridpo.config import TrainConfig, save_config
from hybridpo.data import load_preferences, load_prompts, load_tokenizer
from hybridpo.logprobs import response_logps
from hybridpo.methods import MethodContext, get_method
from hybridpo.models import build_reference, load_policy, load_reward_model, trainable_parameters
from hybridpo.rewards import reward_scores

_SCHEDULES = {"cosine": "cosine", "linear": "linear", "constant": "constant_with_warmup"}


class NonFiniteLoss(RuntimeError):
    """The loss or gradient norm became inf/nan; the message gives the step and last checkpoint."""


class TrainResult:
    def __init__(self, run_dir: Path, step: int, interrupted: int | None):
        self.run_dir = run_dir  # the run folder
        self.step = step  # optimizer steps done
        self.interrupted = interrupted  # the signal number that stopped the run early, or None


def train(cfg: TrainConfig, *, resume: bool = False) -> TrainResult:
    run_dir = Path(cfg.run.out_dir)
    if not resume and latest_checkpoint(run_dir) is not None:
        raise FileExistsError(f"{run_dir} already holds a run; continue it with --resume {run_dir} or choose a new run.out_dir")
    accelerator = Accelerator(mixed_precision=cfg.run.mixed_precision)
    main = accelerator.is_main_process
    set_seed(cfg.run.seed)
    method = get_method(cfg.method)(cfg.method_args)

    # -- data ----------------------------------------------------------------------------------
    tokenizer = load_tokenizer(cfg.model.tokenizer or cfg.model.name_or_path)
    load = load_preferences if method.data_kind == "preferences" else load_prompts
    train_set, eval_set = load(cfg.data, tokenizer)
    if not train_set:
        raise ValueError(f"data.source={cfg.data.source!r} gave no training examples")
    world, rank = accelerator.num_processes, accelerator.process_index
    global_batch = cfg.optim.batch_size * cfg.optim.grad_accum * world
    total_steps = cfg.optim.max_steps or math.ceil(cfg.optim.epochs * len(train_set) / global_batch)

    # -- models, optimizer, schedule -------------------------------------------------------------
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
    optimizer = torch.optim.AdamW(
        params, lr=cfg.optim.lr, betas=tuple(cfg.optim.adam_betas), eps=cfg.optim.adam_eps, weight_decay=cfg.optim.weight_decay
    )
    from transformers import get_scheduler

    warmup = cfg.optim.warmup_steps or round(cfg.optim.warmup_ratio * total_steps)
    scheduler = get_scheduler(_SCHEDULES[cfg.optim.schedule], optimizer, num_warmup_steps=warmup, num_training_steps=total_steps)
    optimizer = accelerator.prepare_optimizer(optimizer)  # grad scaling under fp16; the model stays unwrapped

    # -- what the method sees ----------------------------------------------------------------------
    generator = torch.Generator(device=accelerator.device).manual_seed(cfg.run.seed + rank)
    sample_clock = [0.0]  # seconds spent in ctx.sample during the current step
    ctx = _context(cfg, model, reference, reward_model, tokenizer, generator, accelerator, sample_clock)

    # -- resume --------------------------------------------------------------------------------
    step, position = 0, 0
    if resume:
        ckpt = latest_checkpoint(run_dir)
        if ckpt is None:
            raise FileNotFoundError(f"{run_dir}: no checkpoint to resume from")
        state, method_state = load_checkpoint(ckpt, model=model, optimizer=optimizer, scheduler=scheduler, generator=generator, rank=rank)
        step, position = state["step"], state["position"]
        method.load_state_dict(method_state)
        if main:
            _truncate_metrics(run_dir / "metrics.jsonl", step)
            print(f"resuming {run_dir} from {ckpt.name} (step {step})", file=sys.stderr)
    elif main:
        run_dir.mkdir(parents=True, exist_ok=True)
        save_config(cfg, run_dir / "config.yaml")
    rng_after_setup = _snapshot_rng(generator)  # prepare() must not shift the training RNG streams
    method.prepare(train_set, ctx)
    _restore_rng(rng_after_setup, generator)

    log = _MetricsLog(run_dir, main, cfg.run.tensorboard)
    order = _Order(len(train_set), cfg.run.seed)
    bar = _progress(cfg, main, total_steps, step)
    stop = _StopFlag()

    def checkpoint():
        if main:
            save_checkpoint(
                run_dir, step=step, position=position, model=model, optimizer=optimizer, scheduler=scheduler,
                method_state=method.state_dict(), generator=generator, keep=cfg.run.keep_checkpoints,
            )
        accelerator.wait_for_everyone()
        if not main:
            save_process_rng(run_dir, step, rank, generator)

    model.train()
    with stop.installed():
        while step < total_steps and stop.signum is None:
            t0 = time.perf_counter()
            sample_clock[0] = 0.0
            ctx.step = step
            sums, n_micro, tokens = {}, 0, 0
            for m in range(cfg.optim.grad_accum):
                start = position + (m * world + rank) * cfg.optim.batch_size
                batch = [train_set[i] for i in order.indices(start, cfg.optim.batch_size)]
                with accelerator.autocast():
                    loss, metrics = method.loss(batch, ctx)
                if not torch.isfinite(loss):
                    raise NonFiniteLoss(_nonfinite_message("loss", loss.item(), step + 1, run_dir))
                accelerator.backward(loss / cfg.optim.grad_accum)
                tokens += int(metrics.pop("num_tokens", _count_tokens(batch)))
                for k, v in metrics.items():
                    sums[k] = sums.get(k, 0.0) + float(v)
                n_micro += 1
            _all_reduce_grads(params, accelerator)
            clip = cfg.optim.max_grad_norm if cfg.optim.max_grad_norm > 0 else float("inf")
            grad_norm = float(accelerator.clip_grad_norm_(params, clip))
            if not math.isfinite(grad_norm):
                raise NonFiniteLoss(_nonfinite_message("gradient norm", grad_norm, step + 1, run_dir))
            lr = scheduler.get_last_lr()[0]
            optimizer.step()
            scheduler.step()
            optimizer.zero_grad(set_to_none=True)
            step += 1
            position += global_batch

            row = {k: v / n_micro for k, v in sums.items()}
            row = _mean_across(row, accelerator)
            elapsed = time.perf_counter() - t0
            total_tokens = _sum_across(tokens, accelerator)
            row.update(grad_norm=grad_norm, lr=lr, tokens_per_s=total_tokens / elapsed, step_time_s=elapsed, epoch=position / len(train_set))
            if sample_clock[0] > 0:
                row["sample_time_share"] = sample_clock[0] / elapsed
            if step % cfg.run.log_every == 0 or step == total_steps:
                log.write(step, row)
            bar.update(1)
            bar.set_postfix(loss=f"{row.get('loss', float('nan')):.4f}", tok_s=f"{row['tokens_per_s']:.0f}")
            if eval_set and cfg.run.eval_every and step % cfg.run.eval_every == 0 and step < total_steps:
                log.write(step, _evaluate(method, eval_set, ctx, cfg, accelerator, model))
            if cfg.run.save_every and step % cfg.run.save_every == 0 and step < total_steps:
                checkpoint()
            stop.poll(accelerator)
    bar.close()
    checkpoint()
    if stop.signum is not None:
        if main:
            print(f"stopped by signal {stop.signum} at step {step}; checkpoint saved; "
                  f"continue with: hybridpo train --resume {run_dir}", file=sys.stderr)
        log.close()
        return TrainResult(run_dir, step, stop.signum)
    if eval_set:
        log.write(step, _evaluate(method, eval_set, ctx, cfg, accelerator, model))
    if main:
        _save_final(model, tokenizer, run_dir / "final", merge=cfg.model.finetune == "lora" and cfg.model.lora.save_merged)
    log.close()
    return TrainResult(run_dir, step, None)


# ------------------------------------------------------------------------------------------------


def _context(cfg, model, reference, reward_model, tokenizer, generator, accelerator, sample_clock) -> MethodContext:
    layout, pad_id = cfg.run.logprob_layout, tokenizer.pad_token_id

    def policy_logps(prompts, responses, temperature=1.0):
        return response_logps(model, prompts, responses, pad_id=pad_id, temperature=temperature, layout=layout)

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
        reward=reward if reward_model is not None else None,
        tokenizer=tokenizer,
        pad_id=pad_id,
        eos_id=tokenizer.eos_token_id,
        generator=generator,
        device=accelerator.device,
    )


@torch.no_grad()
def _evaluate(method, eval_set, ctx, cfg, accelerator, model) -> dict:
    """Held-out metrics over the first `run.eval_examples` examples, weighted by batch size."""
    n = len(eval_set) if cfg.run.eval_examples == 0 else min(cfg.run.eval_examples, len(eval_set))
    mine = list(range(accelerator.process_index, n, accelerator.num_processes))
    model.eval()
    sums, count = {}, 0
    for s in range(0, len(mine), cfg.optim.batch_size):
        batch = [eval_set[i] for i in mine[s : s + cfg.optim.batch_size]]
        with accelerator.autocast():
            metrics = method.evaluate(batch, ctx)
        metrics.pop("num_tokens", None)
        for k, v in metrics.items():
            sums[k] = sums.get(k, 0.0) + float(v) * len(batch)
        count += len(batch)
    model.train()
    row = _mean_across({k: v / max(count, 1) for k, v in sums.items()}, accelerator)
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


class _StopFlag:
    """SIGTERM / Ctrl-C set a flag; the loop finishes the step, checkpoints and returns."""

    def __init__(self):
        self.signum: int | None = None

    def _handler(self, signum, frame):
        if self.signum is not None:  # a second Ctrl-C: stop now
            raise KeyboardInterrupt
        self.signum = signum

    @contextmanager
    def installed(self):
        previous = {s: signal.signal(s, self._handler) for s in (signal.SIGTERM, signal.SIGINT)}
        try:
            yield self
        finally:
            for s, h in previous.items():
                signal.signal(s, h)

    def poll(self, accelerator) -> None:
        """Make every process agree: any process signalled -> all stop after this step."""
        if accelerator.num_processes > 1:
            flag = torch.tensor([self.signum or 0], device=accelerator.device)
            flag = accelerator.reduce(flag, reduction="sum")
            if int(flag) and self.signum is None:
                self.signum = signal.SIGTERM


class _MetricsLog:
    """metrics.jsonl rows {"step": s, ...} (main process), mirrored to TensorBoard when asked."""

    def __init__(self, run_dir: Path, main: bool, tensorboard: bool):
        self.main = main
        self.path = run_dir / "metrics.jsonl"
        self.tb = None
        if main and tensorboard:
            try:
                from torch.utils.tensorboard import SummaryWriter
            except ImportError:
                raise ImportError("run.tensorboard=true needs the tensorboard package: pip install tensorboard") from None
            self.tb = SummaryWriter(str(run_dir / "tensorboard"))

    def write(self, step: int, row: dict) -> None:
        if not self.main:
            return
        with self.path.open("a") as f:
            f.write(json.dumps({"step": step, **row}) + "\n")
        if self.tb is not None:
            for k, v in row.items():
                self.tb.add_scalar(k, v, step)

    def close(self) -> None:
        if self.tb is not None:
            self.tb.close()


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


def _truncate_metrics(path: Path, step: int) -> None:
    """Drop rows a killed run logged after its last checkpoint (the resumed run logs them again)."""
    if not path.exists():
        return
    rows = [line for line in path.read_text().splitlines() if line.strip() and json.loads(line)["step"] <= step]
    path.write_text("".join(r + "\n" for r in rows))


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
