"""Atomic checkpoints, and a non-finite loss that stops the run keeping the last good checkpoint."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

import hybridpo.checkpoint as ckpt_mod
from hybridpo.checkpoint import latest_checkpoint, load_checkpoint, save_checkpoint
from hybridpo.cli import main

REPO = Path(__file__).resolve().parents[2]


def parts(model):
    opt = torch.optim.AdamW(model.parameters(), lr=0.1)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: 1.0)
    return opt, sched


def one_step(model, opt):
    loss = model(input_ids=torch.tensor([[2, 3, 4, 5]])).logits.pow(2).mean()
    loss.backward()
    opt.step()
    opt.zero_grad()


def test_a_crash_while_saving_leaves_the_previous_checkpoint_whole(small_vocab_model, tmp_path, monkeypatch):
    model = small_vocab_model
    opt, sched = parts(model)
    gen = torch.Generator().manual_seed(0)
    one_step(model, opt)
    save_checkpoint(tmp_path, step=1, position=8, model=model, optimizer=opt, scheduler=sched, method_state={"lam": 0.5}, generator=gen)
    saved = {k: v.clone() for k, v in model.state_dict().items()}
    one_step(model, opt)

    real_save = torch.save

    def dies_on_optimizer(obj, path, *a, **k):  # the process "dies" half-way through step 2's save
        if Path(path).name == "optimizer.pt":
            raise KeyboardInterrupt("killed while saving")
        return real_save(obj, path, *a, **k)

    monkeypatch.setattr(ckpt_mod.torch, "save", dies_on_optimizer)
    with pytest.raises(KeyboardInterrupt):
        save_checkpoint(tmp_path, step=2, position=16, model=model, optimizer=opt, scheduler=sched, method_state={}, generator=gen)
    monkeypatch.setattr(ckpt_mod.torch, "save", real_save)

    assert latest_checkpoint(tmp_path).name == "step-00000001"  # the half-written one is invisible
    assert not (tmp_path / "checkpoints" / "step-00000002").exists()
    state, method_state = load_checkpoint(latest_checkpoint(tmp_path), model=model, optimizer=opt, scheduler=sched, generator=gen)
    assert state == {"step": 1, "position": 8} and method_state == {"lam": 0.5}
    for k, v in model.state_dict().items():
        assert torch.equal(v, saved[k]), k

    # the next successful save removes the debris and keeps `keep` checkpoints
    for step in (3, 4):
        save_checkpoint(tmp_path, step=step, position=8 * step, model=model, optimizer=opt, scheduler=sched, method_state={}, generator=gen, keep=2)
    names = sorted(p.name for p in (tmp_path / "checkpoints").iterdir())
    assert names == ["latest", "step-00000003", "step-00000004"]


def test_non_finite_loss_stops_with_the_step_and_keeps_the_last_checkpoint(tiny_model_dir, tmp_path, capsys):
    # lr 1e30: AdamW's first update moves every weight by ~1e30, the logits overflow, the next
    # loss is nan; the checkpoint of step 1 (save_every=1) must survive untouched
    run = tmp_path / "nan"
    rc = main([
        "train", "--config", str(REPO / "configs" / "tiny" / "sft.yaml"), f"model.name_or_path={tiny_model_dir}",
        f"run.out_dir={run}", "run.progress=false", "run.save_every=1", "optim.lr=1e30", "optim.warmup_steps=0",
        "optim.max_grad_norm=0", "optim.max_steps=5", "optim.batch_size=2", "data.max_prompt_length=16", "data.max_response_length=8",
    ])
    err = capsys.readouterr().err
    assert rc == 1
    assert "non-finite loss (nan) at step 2: stopping; the last good checkpoint is" in err
    assert latest_checkpoint(run).name == "step-00000001"
    assert not (run / "final").exists()
