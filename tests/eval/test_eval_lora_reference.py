"""`hybridpo eval` of a LoRA run: π_ref as the policy with its adapter disabled, one model loaded.

A tiny LoRA DPO run (final/ saved merged, the adapter in its last checkpoint) is evaluated twice:
without --ref (π_ref = the policy with its adapter off, one `from_pretrained`) and with --ref
pointing at the base (π_ref a separate model, the policy the merged final/: two loads).

The two evaluations sample through different numerical paths (the LoRA-wrapped forward; the
GPT-NeoX decoder on the merged weights), and float rounding that differs by CPU may change which
tokens are drawn. So quantities on fixed token ids (`logps/*`, `ref_logps/*`,
`forward_kl/reference`) must agree to 1e-4, sampled ones (`kl`, `logratio/generations`) within 4
standard errors of their difference (each eval.json's `*_stderr`), and the exact agreement of the
two references on sampled responses is checked on ONE set of samples, scored both ways.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

from hybridpo.cli import main

TOKENIZER = Path(__file__).resolve().parents[3] / "shared" / "tokenizers" / "pythia" / "tokenizer.json"
PAIRS = [{"prompt": f"Say {w}.", "chosen": f" {w} {w}.", "rejected": " something else entirely"}
         for w in ("red", "green", "blue", "cyan", "pink", "gold", "grey", "teal")]
PROMPTS = [{"prompt": f"Say {w}.", "completion": f" {w} {w}."} for w in (
    "red", "green", "blue", "cyan", "pink", "gold", "grey", "teal", "navy", "rose", "lime", "plum", "sand", "jade",
    "ruby", "snow", "mint", "wine", "rust", "sage", "coal", "milk", "sky", "fern", "moss", "clay", "iron", "salt",
    "pine", "ash", "ink", "tan")]  # 32 evaluation prompts (8 of them trained on)
ON_FIXED_IDS = ("forward_kl/reference", "logps/chosen", "logps/rejected", "ref_logps/chosen", "ref_logps/rejected")
SAMPLED = ("kl", "logratio/generations")  # each with its "<key>_stderr" in eval.json


@pytest.fixture(scope="module")
def lora_run(tmp_path_factory):
    """(run folder, base model folder, pairs file): 4 DPO steps of a rank-8 LoRA at lr 1e-2."""
    from hybridpo.zoo import init_model

    root = tmp_path_factory.mktemp("lora_eval")
    base = init_model("gpt-neox", "tiny", str(TOKENIZER), root / "base")
    pairs = root / "pairs.jsonl"
    pairs.write_text("".join(json.dumps(r) + "\n" for r in PAIRS))
    (root / "prompts.jsonl").write_text("".join(json.dumps(r) + "\n" for r in PROMPTS))
    config = root / "lora.yaml"
    config.write_text(f"""
method: dpo
method_args: {{beta: 0.1}}
model: {{name_or_path: {base}, finetune: lora, lora: {{r: 8, alpha: 16}}}}
data: {{source: {pairs}, use_cache: false}}
optim: {{lr: 1.0e-2, batch_size: 4, max_steps: 4}}
run: {{out_dir: {root / 'run'}, progress: false, eval_every: 0}}
""")
    assert main(["train", "--config", str(config)]) == 0
    return root / "run", base, pairs


def count_loads(monkeypatch) -> list[str]:
    """Patch PreTrainedModel.from_pretrained (every model load, peft's base included) to log the class."""
    from transformers import PreTrainedModel

    loads: list[str] = []
    original = PreTrainedModel.from_pretrained.__func__

    def counting(cls, *args, **kwargs):
        loads.append(cls.__name__)
        return original(cls, *args, **kwargs)

    monkeypatch.setattr(PreTrainedModel, "from_pretrained", classmethod(counting))
    return loads


def evaluate(run: Path, pairs: Path, out: Path, *extra: str) -> dict:
    args = ["eval", str(run), "--data", str(pairs.parent / "prompts.jsonl"), "--pairs", str(pairs),
            "--max-new-tokens", "8", "--kl-samples", "8", "--out", str(out), *extra]
    assert main(args) == 0
    return json.loads((out / run.name / "eval.json").read_text())


def test_lora_run_reference_is_the_disabled_adapter(lora_run, tmp_path, monkeypatch):
    run, base, pairs = lora_run
    assert not (run / "final" / "adapter_config.json").exists()  # save_merged: final/ is a plain model

    loads = count_loads(monkeypatch)
    adapter = evaluate(run, pairs, tmp_path / "adapter")
    assert loads == ["GPTNeoXForCausalLM"]  # the base, once: π and π_ref share its weights
    assert adapter["reference_kind"] == "disabled_adapter" and adapter["reference"] == str(base)
    assert Path(adapter["model"]).parent.parent.name == "checkpoints"  # the last checkpoint's adapter

    loads.clear()
    separate = evaluate(run, pairs, tmp_path / "separate", "--ref", str(base))
    assert loads == ["GPTNeoXForCausalLM", "GPTNeoXForCausalLM"]  # π_ref, then the merged final/
    assert separate["reference_kind"] == "separate" and separate["model"] == str(run / "final")

    # the adapter moved π away from π_ref, so the comparison is not between two zeros
    assert separate["kl"] > 1e-3 and separate["logps/chosen"] - separate["ref_logps/chosen"] > 1e-3
    for key in ON_FIXED_IDS:  # the same ids through both models: float rounding only
        assert adapter[key] == pytest.approx(separate[key], abs=1e-4), key
    for key in SAMPLED:  # possibly different samples: two estimates of one quantity
        se = math.hypot(adapter[f"{key}_stderr"], separate[f"{key}_stderr"])
        assert abs(adapter[key] - separate[key]) <= 4 * se, (key, adapter[key], separate[key], se)


def test_the_disabled_adapter_and_the_base_score_the_same_samples_alike(lora_run):
    """One set of samples of π (drawn from the merged final/), scored by (the peft policy, its
    adapter off) and by (the merged final/, the base): the per-sample log π and log π_ref agree to
    1e-4, so π_ref of a LoRA run is its base and π its merged weights, on sampled responses too."""
    import torch
    from peft import AutoPeftModelForCausalLM
    from transformers import AutoModelForCausalLM

    from hybridpo.checkpoint import latest_checkpoint
    from hybridpo.data import load_tokenizer
    from hybridpo.evaluate import logratios
    from hybridpo.models import Reference
    from hybridpo.rollout import sample

    run, base, _ = lora_run
    tok = load_tokenizer(str(run / "final"))
    merged = AutoModelForCausalLM.from_pretrained(run / "final").eval()
    base_model = AutoModelForCausalLM.from_pretrained(base).eval()
    peft_policy = AutoPeftModelForCausalLM.from_pretrained(str(latest_checkpoint(run) / "model")).eval()
    prompts = [tok(r["prompt"], add_special_tokens=False)["input_ids"] for r in PROMPTS[:8]]
    roll = sample(merged, prompts, 4, max_new_tokens=8, eos_id=tok.eos_token_id, pad_id=tok.pad_token_id,
                  generator=torch.Generator().manual_seed(0))
    pol_a, ref_a = logratios(peft_policy, Reference("disabled_adapter", peft_policy, disable_adapter_of=peft_policy),
                             prompts, roll.responses, pad_id=tok.pad_token_id)
    pol_b, ref_b = logratios(merged, base_model, prompts, roll.responses, pad_id=tok.pad_token_id)
    assert torch.allclose(pol_a, pol_b, atol=1e-4) and torch.allclose(ref_a, ref_b, atol=1e-4)
    assert (pol_b - ref_b).abs().max() > 1e-2  # π and π_ref differ on these samples


def test_a_peft_folder_is_evaluated_against_its_base_with_the_adapter_off(lora_run, tmp_path):
    """A peft folder given directly: no --ref -> its base via the disabled adapter."""
    from hybridpo.checkpoint import latest_checkpoint

    run, base, pairs = lora_run
    adapter_dir = latest_checkpoint(run) / "model"
    args = ["eval", str(adapter_dir), "--tokenizer", str(base), "--data", str(pairs), "--max-new-tokens", "4",
            "--kl-samples", "0", "--out", str(tmp_path / "peft")]
    assert main(args) == 0
    metrics = json.loads((tmp_path / "peft" / "model" / "eval.json").read_text())
    assert metrics["reference_kind"] == "disabled_adapter" and metrics["reference"] == str(base)
