"""The benchmark times the training loop's own step for the online methods: the workload's k and
sample length reach the method, and the samples it drew are counted (completions and FLOPs)."""

import math
from dataclasses import replace

import torch

from hybridpo.bench import hybridpo_runner
from hybridpo.bench.flops import ModelShape, dpo_step_flops, online_step_flops
from hybridpo.bench.workloads import build_pairs, get_workload


def test_hypo_gets_the_workload_knobs_and_its_samples_are_counted():
    torch.set_num_threads(1)
    w = replace(get_workload("tiny"), steps=2, batch_pairs=2, hypo_new_tokens=3)
    record = hybridpo_runner.run_hypo(w)
    assert "methods['hypo']" in record.note and "'k': 2" in record.note and "'max_new_tokens': 3" in record.note
    assert record.completions_per_step == 4  # 2 prompts x k = 2
    assert set(record.phase_s[0]) >= {"sampling", "policy forward", "reference forward", "backward"}
    assert len(record.losses) == 2 and all(math.isfinite(x) for x in record.losses)
    # each sample is at most 3 tokens, so a step needs more than the pair alone but at most the
    # pair plus two full 3-token samples per prompt
    pairs = build_pairs(w)[:2]
    shape = ModelShape(w.layers, w.hidden, w.intermediate, w.vocab)
    pair_only = dpo_step_flops(shape, [(len(p.prompt_ids), [len(p.chosen_ids), len(p.rejected_ids)]) for p in pairs])
    most = online_step_flops(
        shape, [(len(p.prompt_ids), [len(p.chosen_ids), len(p.rejected_ids), 3, 3]) for p in pairs], [[3, 3]] * 2
    )
    assert pair_only < record.flops[0] <= most


def test_rlhf_samples_full_length_and_uses_the_programmatic_reward():
    torch.set_num_threads(1)
    w = replace(get_workload("tiny"), steps=2, batch_pairs=2, rloo_new_tokens=4)
    record = hybridpo_runner.run_rlhf(w)
    assert record.completions_per_step == 4 and "no EOS stop" in record.note
    assert "reward" in record.phase_s[0] and "sampling" in record.phase_s[0]
    pairs = build_pairs(w)[:2]
    shape = ModelShape(w.layers, w.hidden, w.intermediate, w.vocab)
    expected = online_step_flops(shape, [(len(p.prompt_ids), [4, 4]) for p in pairs], [[4, 4]] * 2)
    assert record.flops[0] == expected  # no EOS stop: every sample has exactly 4 tokens


def test_the_variant_is_a_train_config_with_the_workload_settings(tmp_path):
    w = get_workload("tiny")
    cfg = hybridpo_runner.workload_config(w, "hypo", {"k": 3}, {"share_prompt": "off"}, str(tmp_path))
    assert cfg.method_args.k == 3 and cfg.speed.share_prompt == "off" and not cfg.run.shuffle
    assert (cfg.optim.lr, cfg.optim.schedule, cfg.optim.max_steps, cfg.optim.batch_size) == (w.lr, "linear", w.steps, w.batch_pairs)
