"""Config loading: YAML + dotted overrides, type checks, and errors that name the file and key."""

from __future__ import annotations

from pathlib import Path

import pytest

from hybridpo.config import ConfigError, TrainConfig, apply_override, load_config, save_config
from hybridpo.methods.dpo import DPOConfig, IPOConfig

BASE = """
method: dpo
model: {name_or_path: some/model}
data: {source: pairs.jsonl}
"""


def write(tmp_path, text=BASE):
    path = tmp_path / "c.yaml"
    path.write_text(text)
    return path


def test_defaults_overrides_and_method_args(tmp_path):
    cfg = load_config(write(tmp_path), ["optim.lr=3e-6", "method_args.beta=0.05", "model.lora.target_modules=[a, b]"])
    assert isinstance(cfg, TrainConfig)
    assert cfg.optim.lr == 3e-6  # YAML parses 3e-6 as a float
    assert cfg.method_args == DPOConfig(beta=0.05, precompute_ref_logps=False)
    assert cfg.model.lora.target_modules == ["a", "b"]
    assert cfg.optim.batch_size == 8  # untouched default


def test_paper_lora_is_one_override_away(tmp_path):
    cfg = load_config(write(tmp_path), ["model.finetune=lora", "model.lora.r=1024", "model.lora.alpha=2048"])
    assert (cfg.model.lora.r, cfg.model.lora.alpha, cfg.model.lora.dropout) == (1024, 2048.0, 0.0)


def test_resolved_config_round_trips(tmp_path):
    cfg = load_config(write(tmp_path, BASE.replace("dpo", "ipo")), ["method_args.ipo_average_logps=true", "data.max_rows=7"])
    save_config(cfg, tmp_path / "resolved.yaml")
    again = load_config(tmp_path / "resolved.yaml")
    assert again == cfg
    assert again.method_args == IPOConfig(beta=0.1, ipo_average_logps=True)
    assert again.data.max_rows == 7


@pytest.mark.parametrize(
    "override, message",
    [
        ("optim.lr=fast", "optim.lr must be float, got 'fast'"),
        ("optim.batch_size=2.5", "optim.batch_size must be int, got 2.5"),
        ("optim.batch_size=true", "optim.batch_size must be int, got True"),
        ("optim.lrr=1", "unknown setting(s) ['optim.lrr']"),
        ("method_args.gamma=1", "unknown setting(s) ['method_args.gamma']"),
        ("method_args.beta=high", "method_args.beta must be float, got 'high'"),
        ("method=ppo", "method='ppo'; choose from ['dpo', "),
        ("model.finetune=qlora", "model.finetune='qlora'; choose from ['full', 'lora', 'last_n_layers']"),
        ("model.reference=disabled_adapter", "model.reference='disabled_adapter' does not work with model.finetune='full'"),
        ("optim.batch_size=0", "optim.batch_size=0; must be > 0"),
        ("data.formatt=x", "unknown data settings ['formatt']"),
        ("data.recipe=imdb", "data.recipe='imdb'; choose from"),
        ("optim", "override 'optim' must look like key=value"),
        ("optim.lr.x=1", "optim.lr must be float, got {'x': 1}"),
        ("method_args.beta=-1", "method_args.beta=-1.0; must be > 0"),  # a method's own check, as a config error
        ("speed.decoder=fast", "speed.decoder='fast'; choose from ['auto', 'lean', 'neox', 'llama', 'transformers']"),
    ],
)
def test_errors_name_file_and_key(tmp_path, override, message):
    path = write(tmp_path)
    with pytest.raises(ConfigError) as e:
        load_config(path, [override])
    assert message in str(e.value)
    assert str(path) in str(e.value)


def test_missing_required_fields_and_bad_files(tmp_path):
    with pytest.raises(ConfigError, match="method is required"):
        load_config(write(tmp_path, "model: {name_or_path: m}\ndata: {source: x}\n"))
    with pytest.raises(ConfigError, match="model.name_or_path is required"):
        load_config(write(tmp_path, "method: sft\ndata: {source: x}\n"))
    with pytest.raises(ConfigError, match="no such config file"):
        load_config(tmp_path / "nope.yaml")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_config(write(tmp_path, "method: [dpo\n"))
    with pytest.raises(ConfigError, match="top level must be a mapping"):
        load_config(write(tmp_path, "- dpo\n"))


def test_unquoted_no_is_the_mixed_precision_setting_no(tmp_path):
    assert load_config(write(tmp_path), ["run.mixed_precision=no"]).run.mixed_precision == "no"  # YAML 1.1: no -> False
    with pytest.raises(ConfigError, match="run.mixed_precision='yes'; choose from"):
        load_config(write(tmp_path), ["run.mixed_precision=yes"])


def test_override_creates_sections():
    raw = {}
    apply_override(raw, "run.out_dir=runs/x")
    apply_override(raw, "model.lora.target_modules=null")
    assert raw == {"run": {"out_dir": "runs/x"}, "model": {"lora": {"target_modules": None}}}


def test_every_shipped_config_loads():
    repo = Path(__file__).resolve().parents[2]
    # `hybridpo train` configs: the tiny CPU ones and the paper's TL;DR ones (configs/ also holds
    # configs of other commands)
    paths = sorted([*(repo / "configs" / "tiny").glob("*.yaml"), *(repo / "configs" / "tldr").rglob("*.yaml"),
                    *(repo / "configs" / "chat").rglob("*.yaml")])
    assert len(paths) >= 23  # tiny (7) + TL;DR Pythia 1.4B and 2.8B (7 each) + chat (2)
    for path in paths:
        cfg = load_config(path)
        assert cfg.method and cfg.model.name_or_path
    paper = load_config(repo / "configs" / "tldr" / "pythia-1.4b" / "dpo.yaml")
    assert (paper.model.lora.r, paper.model.lora.alpha, paper.model.lora.dropout) == (1024, 2048.0, 0.0)
    assert paper.data.max_prompt_length == 512
    # the values the paper's tables state (Tables 4, 6 and 8)
    assert load_config(repo / "configs" / "tldr" / "pythia-1.4b" / "sft.yaml").model.finetune == "full"  # Table 4: no LoRA
    hypo = load_config(repo / "configs" / "tldr" / "pythia-2.8b" / "hypo.yaml")
    assert (hypo.optim.lr, hypo.optim.schedule, hypo.method_args.beta, hypo.method_args.lam, hypo.method_args.k) == (3e-6, "cosine", 0.05, 1e-4, 2)
    chat = load_config(repo / "configs" / "chat" / "llama-3-8b-instruct" / "hypo.yaml")
    args = chat.method_args
    assert (chat.optim.lr, chat.optim.schedule, args.beta, args.lam, args.k, args.alpha) == (3e-6, "linear", 0.05, 2e-4, 2, 0.02)
    assert chat.optim.batch_size * chat.optim.grad_accum == 8 and chat.model.last_n_layers == 4


def test_a_run_needs_no_config_file(tiny_model_dir, tmp_path, capsys):
    """`hybridpo train key=value ...` alone: the defaults plus the settings given; its errors name the key."""
    from hybridpo.cli import main

    pairs = tmp_path / "pairs.jsonl"
    pairs.write_text("".join(f'{{"prompt": "Say {w}.", "chosen": " {w}.", "rejected": " no."}}\n' for w in ("a", "b", "c", "d")))
    out = tmp_path / "run"
    assert main(["train", "method=dpo", f"model.name_or_path={tiny_model_dir}", f"data.source={pairs}",
                 "optim.batch_size=2", "optim.max_steps=2", f"run.out_dir={out}", "run.progress=false"]) == 0
    assert load_config(out / "config.yaml").method == "dpo" and (out / "final" / "config.json").exists()
    assert main(["train", "method=hypo", f"model.name_or_path={tiny_model_dir}", f"data.source={pairs}",
                 "method_args.lam=-1"]) == 1
    assert "overrides: method_args.lam=-1.0; must be >= 0" in capsys.readouterr().err
