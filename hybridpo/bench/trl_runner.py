"""TRL 1.16's `DPOTrainer` and `RLOOTrainer` on the same workloads, configured to do the same work.

Only imported when a TRL variant runs; TRL comes with the optional extra `pip install 'hybridpo[bench]'`.

Same work as hybridpo's side: the same model weights (same config and seed), the same token ids
(checked after TRL tokenizes the text), the same batches in the same order (sequential sampler),
sigmoid DPO on sequence sums, β, AdamW(lr, betas (0.9, 0.999), eps 1e-8, no weight decay) with
linear decay, gradient-norm clipping at 1.0, fp32 on CPU, no dropout, no gradient checkpointing
(TRL turns it on by default; hybridpo does not use it), no truncation (`max_length` above every pair).
"""

from __future__ import annotations

import copy
import tempfile
import time

from hybridpo.bench.flops import ModelShape, dpo_step_flops, online_step_flops
from hybridpo.bench.record import RunRecord, Unavailable, current_rss
from hybridpo.bench.workloads import Workload, batches, build_model, build_pairs, load_tokenizer, low_id_reward


def _import_trl():
    try:
        import datasets
        import trl
    except ImportError as err:
        raise Unavailable(f"TRL is not installed ({err}); install the extra: pip install 'hybridpo[bench]'") from err
    if not trl.__version__.startswith("1.16."):
        raise Unavailable(f"TRL {trl.__version__} is installed; the comparison is pinned to trl==1.16.*")
    datasets.disable_progress_bars()  # TRL maps its dataset several times; the bars are noise here
    return trl


def _common_args(w: Workload, out_dir: str) -> dict:
    return dict(
        output_dir=out_dir,
        max_steps=w.steps,
        learning_rate=w.lr,
        lr_scheduler_type="linear",
        warmup_steps=0,
        weight_decay=0.0,
        adam_beta1=0.9,
        adam_beta2=0.999,
        adam_epsilon=1e-8,
        max_grad_norm=1.0,
        beta=w.beta,
        gradient_checkpointing=False,
        bf16=w.precision == "bf16",  # autocast over fp32 weights, as hybridpo's run.mixed_precision
        fp16=False,
        use_cpu=w.device == "cpu",
        disable_dropout=True,
        report_to="none",
        logging_steps=1,
        save_strategy="no",
        dataloader_num_workers=0,
        seed=w.seed,
        disable_tqdm=True,
    )


def _quiet(trainer) -> None:
    """Drop the console logger (every step's metrics dict); timing is taken by `_step_clock`."""
    from transformers.trainer_callback import PrinterCallback, ProgressCallback

    trainer.remove_callback(PrinterCallback)
    trainer.remove_callback(ProgressCallback)


def _step_clock(record: RunRecord):
    """A TrainerCallback appending each optimiser step's wall time to `record.step_s`."""
    from transformers import TrainerCallback

    class StepClock(TrainerCallback):
        def on_step_begin(self, args, state, control, **kwargs):
            self.start = time.perf_counter()

        def on_step_end(self, args, state, control, **kwargs):
            record.step_s.append(time.perf_counter() - self.start)
            record.rss_bytes.append(current_rss())

    return StepClock()


def run_dpo(w: Workload, precompute: bool, last_n: bool = False) -> RunRecord:
    """TRL DPOTrainer: with a reference model, or with `precompute_ref_log_probs` (timed apart);
    with `last_n`, every weight but the last `w.last_n_layers` blocks' has requires_grad off (TRL
    has no frozen-trunk reference: its reference is a full copy)."""
    _import_trl()
    from datasets import Dataset
    from trl import DPOConfig, DPOTrainer

    from hybridpo.models.load import train_last_n_layers

    variant = ("trl dpo precompute-ref" if precompute else "trl dpo ref-model") + (f" last-{w.last_n_layers}" if last_n else "")
    record = RunRecord(variant, w.name, pairs_per_step=w.batch_pairs)

    class BenchDPOTrainer(DPOTrainer):
        def _precompute_ref_logps(self, *args, **kwargs):  # runs inside __init__
            start = time.perf_counter()
            out = super()._precompute_ref_logps(*args, **kwargs)
            record.precompute_s += time.perf_counter() - start
            return out

        def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
            loss = super().compute_loss(model, inputs, return_outputs, num_items_in_batch)
            record.losses.append(float(loss.detach()))
            record.logps_chosen.append(self._metrics["train"]["logps/chosen"][-1])
            return loss

    tokenizer = load_tokenizer(w)
    pairs = build_pairs(w, tokenizer)
    data = Dataset.from_dict(
        {"prompt": [p.prompt for p in pairs], "chosen": [p.chosen for p in pairs], "rejected": [p.rejected for p in pairs]}
    )
    policy = build_model(w)
    shape = ModelShape.from_config(policy.config)
    ref = None if precompute else copy.deepcopy(policy)
    if last_n:
        train_last_n_layers(policy, w.last_n_layers)
    with tempfile.TemporaryDirectory() as out_dir:
        args = DPOConfig(
            **_common_args(w, out_dir),
            loss_type=["sigmoid"],
            max_length=w.max_length,
            precompute_ref_log_probs=precompute,
            precompute_ref_batch_size=w.batch_pairs,
            per_device_train_batch_size=w.batch_pairs,
            train_sampling_strategy="sequential",
        )
        trainer = BenchDPOTrainer(
            model=policy, ref_model=ref, args=args, train_dataset=data, processing_class=tokenizer
        )
        _check_same_ids(trainer.train_dataset, pairs)
        _quiet(trainer)
        trainer.add_callback(_step_clock(record))
        trainer.train()
    for batch in batches(w, pairs):
        groups = [(len(p.prompt_ids), [len(p.chosen_ids), len(p.rejected_ids)]) for p in batch]
        record.tokens.append(sum(p + sum(lens) for p, lens in groups))
        record.flops.append(dpo_step_flops(shape, groups, w.last_n_layers if last_n else None))
    record.note = (f"DPOTrainer, sigmoid loss, {'precomputed reference (time counted)' if precompute else 'reference model copy'}"
                   + (f", only the last {w.last_n_layers} blocks train" if last_n else ""))
    return record


def _check_same_ids(dataset, pairs) -> None:
    """TRL tokenizes text itself; fail loudly if its ids differ from the ones hybridpo trains on."""
    for row, pair in enumerate(pairs[: len(dataset)], start=1):
        got = dataset[row - 1]
        for field in ("prompt_ids", "chosen_ids", "rejected_ids"):
            if list(got[field]) != getattr(pair, field):
                raise RuntimeError(f"TRL tokenized row {row} field {field!r} differently from the workload's ids")


def run_rloo(w: Workload) -> RunRecord:
    """TRL RLOOTrainer: k completions of exactly `rloo_new_tokens` tokens per prompt, one update each."""
    _import_trl()
    from datasets import Dataset
    from trl import RLOOConfig, RLOOTrainer

    record = RunRecord("trl rloo", w.name, pairs_per_step=w.batch_pairs, completions_per_step=w.batch_pairs * w.rloo_k)
    tokenizer = load_tokenizer(w)
    pairs = build_pairs(w, tokenizer)
    data = Dataset.from_dict({"prompt": [p.prompt for p in pairs]})
    policy = build_model(w)
    shape = ModelShape.from_config(policy.config)
    model_dir = tempfile.TemporaryDirectory()
    policy.save_pretrained(model_dir.name)  # RLOOTrainer loads its reference from the policy's path

    def reward(completion_ids, **kwargs):
        return low_id_reward(completion_ids, w.vocab)

    class BenchRLOOTrainer(RLOOTrainer):
        def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
            loss = super().compute_loss(model, inputs, return_outputs, num_items_in_batch)
            record.losses.append(float(loss.detach()))
            return loss

    with tempfile.TemporaryDirectory() as out_dir:
        args = RLOOConfig(
            **_common_args(w, out_dir),
            per_device_train_batch_size=w.batch_pairs * w.rloo_k,  # counts completions
            num_generations=w.rloo_k,
            max_completion_length=w.rloo_new_tokens,
            generation_kwargs={"min_new_tokens": w.rloo_new_tokens},  # no early EOS: fixed work per step
            steps_per_generation=1,
            num_iterations=1,
            temperature=1.0,
            shuffle_dataset=False,
        )
        trainer = BenchRLOOTrainer(model=model_dir.name, reward_funcs=reward, args=args, train_dataset=data,
                                   processing_class=tokenizer)
        _quiet(trainer)
        trainer.add_callback(_step_clock(record))
        trainer.train()
    model_dir.cleanup()
    for batch in batches(w, pairs):
        lens = [[w.rloo_new_tokens] * w.rloo_k for _ in batch]
        groups = [(len(p.prompt_ids), s) for p, s in zip(batch, lens)]
        record.tokens.append(sum(p + sum(s) for p, s in groups))
        record.flops.append(online_step_flops(shape, groups, lens))
    record.note = f"RLOOTrainer, k={w.rloo_k}, {w.rloo_new_tokens} new tokens, beta={w.beta}"
    return record
