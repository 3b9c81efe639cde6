"""What FSDP2 and DeepSpeed ZeRO-2 / ZeRO-3 do to the pieces hybridpo's training loop relies on.

Run by scripts/gpu_checks.sh under each accelerate config (one process per GPU; one GPU is
enough to see whether a piece works under the wrapper). For the tiny GPT-NeoX it prepares the model
and an AdamW with accelerate, then records, each check on its own (an error is a result):

    logps/packed, logps/padded   response_logps through the prepared model vs a plain copy (max |diff|)
    prompt_pass                  prompt_pass_unsupported_reason(prepared), and if None the pass's log-probs
    sample/<decoder>             rollout.sample through the prepared model (builtin transformers / neox
                                 decoders, the generate sampler): runs, and its log-probs vs the plain copy's
    step                         one backward + clip + AdamW step through accelerate (seconds)
    save_load                    accelerator.save_state, a perturbation, load_state: the weights come back
    state_dict                   accelerator.get_state_dict: a full state dict on the main process

    accelerate launch --config_file configs/accelerate/fsdp2.yaml --num_processes 1 \
        scripts/gpu_checks.py --model MODEL_DIR --out OUT/fsdp2.json

On CPU (a dry run of this script) accelerate turns FSDP into MULTI_CPU data parallel and DeepSpeed
does not start; the JSON records the distributed type it got.
"""

from __future__ import annotations

import argparse
import copy
import json
import tempfile
import time
import traceback
from pathlib import Path

import torch

EOS, PAD = 0, 1
PROMPTS = [[5, 17, 42, 8, 9], [71, 3], [3, 60, 22, 22, 14, 90, 33, 2, 40]]
RESPONSES = [[[11, 12, 0], [13]], [[14, 15, 16], [17, 18]], [[19], [20, 21, 22, 0]]]


def check(report: dict, name: str, fn) -> None:
    try:
        report[name] = fn()
    except Exception as e:  # noqa: BLE001 - every failure is a finding
        report[name] = {"error": f"{type(e).__name__}: {e}", "where": traceback.format_exc(limit=-3)}


def main() -> None:
    from accelerate import Accelerator
    from transformers import AutoModelForCausalLM

    from hybridpo.forward import prompt_pass, prompt_pass_unsupported_reason, response_logps
    from hybridpo.loop import adamw
    from hybridpo.rollout import sample
    from hybridpo.sampling import GenerateSampler

    ap = argparse.ArgumentParser()
    ap.add_argument("--model", required=True, help="a tiny model folder (hybridpo.zoo.init_model)")
    ap.add_argument("--out", required=True, help="the JSON report")
    args = ap.parse_args()

    acc = Accelerator()
    report: dict = {"distributed_type": acc.distributed_type.value, "mixed_precision": acc.mixed_precision,
                    "processes": acc.num_processes, "device": str(acc.device), "torch": torch.__version__}
    model = AutoModelForCausalLM.from_pretrained(args.model, dtype=torch.float32)
    plain = copy.deepcopy(model).to(acc.device).eval()
    optimizer = adamw(model.parameters(), lr=1e-4)
    model, optimizer = acc.prepare(model, optimizer)
    report["wrapper"] = type(model).__name__
    model.eval()

    def logps(m, **kw):
        with torch.no_grad(), acc.autocast():
            return response_logps(m, PROMPTS, RESPONSES, pad_id=PAD, **kw).logps.float()

    for layout in ("packed", "padded"):
        check(report, f"logps/{layout}",
              lambda: {"max_abs_diff": float((logps(model, layout=layout) - logps(plain, layout=layout)).abs().max())})

    def shared_prompt():
        reason = prompt_pass_unsupported_reason(model)
        if reason is not None:
            return {"unsupported": reason}
        with torch.no_grad(), acc.autocast():
            pp = prompt_pass(model, PROMPTS, pad_id=PAD)
        return {"max_abs_diff": float((logps(model, prompt_pass=pp) - logps(plain)).abs().max())}

    check(report, "prompt_pass", shared_prompt)

    def sampled(sampler):
        start = time.perf_counter()
        with acc.autocast():
            r = sampler(torch.Generator(device=acc.device).manual_seed(0))
        seconds = time.perf_counter() - start
        with torch.no_grad(), acc.autocast():
            rescored = response_logps(plain, PROMPTS, r.responses, pad_id=PAD).by_prompt().float()
        return {"seconds": seconds, "tokens": int(r.lengths.sum()),
                "logps_vs_plain_max_abs_diff": float((rescored - r.logps.to(rescored.device)).abs().max())}

    opts = dict(max_new_tokens=16, eos_id=EOS, pad_id=PAD)
    for decoder in ("transformers", "neox"):
        check(report, f"sample/{decoder}",
              lambda: sampled(lambda g: sample(model, PROMPTS, 4, generator=g, decoder=decoder, **opts)))
    check(report, "sample/generate",
          lambda: sampled(lambda g: GenerateSampler()(model, PROMPTS, 4, generator=g, seeds=[1, 2, 3], **opts)))

    def step():
        model.train()
        start = time.perf_counter()
        with acc.autocast():
            loss = -response_logps(model, PROMPTS, RESPONSES, pad_id=PAD).logps.float().mean()
        acc.backward(loss)
        norm = float(acc.clip_grad_norm_(model.parameters(), 1.0))
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        model.eval()
        return {"seconds": time.perf_counter() - start, "loss": loss.item(), "grad_norm": norm}

    check(report, "step", step)

    def save_load():
        before = logps(model)
        with tempfile.TemporaryDirectory() as tmp:
            acc.save_state(tmp)
            files = sorted(p.name for p in Path(tmp).rglob("*") if p.is_file())
            with torch.no_grad():
                for p in model.parameters():
                    p.add_(0.01)
            acc.load_state(tmp)
        return {"files": files[:20], "max_abs_diff_after_load": float((logps(model) - before).abs().max())}

    check(report, "save_load", save_load)
    check(report, "state_dict", lambda: {"tensors": len(acc.get_state_dict(model))})
    if acc.is_main_process:
        Path(args.out).write_text(json.dumps(report, indent=2) + "\n")
        print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
