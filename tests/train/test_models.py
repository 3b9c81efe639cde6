"""Model wiring: LoRA, last-N-layers, the three references, reward scoring, init-model shapes."""

from __future__ import annotations

import copy

import pytest
import torch

from hybridpo.config import LoraConfig, ModelConfig
from hybridpo.forward import response_logps
from hybridpo.models import (
    FrozenTrunkReference,
    apply_lora,
    build_reference,
    decoder_parts,
    train_last_n_layers,
)
from hybridpo.forward import reward_scores
from hybridpo.zoo import random_config

from pathlib import Path

PYTHIA_TOKENIZER = Path(__file__).resolve().parents[3] / "shared" / "tokenizers" / "pythia" / "tokenizer.json"

PROMPTS = [[5, 6, 7, 8], [9, 10, 11]]
RESPONSES = [[[12, 13, 0], [14, 0]], [[15, 16, 17, 0], [18, 19, 0]]]


def logps(model, layout="padded"):
    with torch.no_grad():
        return response_logps(model, PROMPTS, RESPONSES, pad_id=1, layout=layout).logps


def perturb(params, scale=0.5):
    g = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for p in params:
            p.add_(scale * torch.randn(p.shape, generator=g))


def test_paper_lora_config_trains_only_the_adapter(small_vocab_model):
    cfg = ModelConfig(name_or_path="x", finetune="lora", lora=LoraConfig(r=1024, alpha=2048, dropout=0.0))
    model = apply_lora(small_vocab_model, cfg, task_type="CAUSAL_LM")
    peft_cfg = model.peft_config["default"]
    assert (peft_cfg.r, peft_cfg.lora_alpha, peft_cfg.lora_dropout) == (1024, 2048, 0.0)
    trainable = [n for n, p in model.named_parameters() if p.requires_grad]
    assert trainable and all("lora_" in n for n in trainable)


def test_disabled_adapter_reference_is_the_base_model(small_vocab_model):
    base = logps(small_vocab_model)
    cfg = ModelConfig(name_or_path="x", finetune="lora", lora=LoraConfig(r=4, alpha=8))
    policy = apply_lora(small_vocab_model, cfg, task_type="CAUSAL_LM")
    ref = build_reference(policy, cfg)
    assert ref.kind == "disabled_adapter" and ref.model is policy  # no second copy
    perturb([p for p in policy.parameters() if p.requires_grad])  # B != 0: the adapter now matters
    assert not torch.allclose(logps(policy), base, atol=1e-4)
    with ref.scope():
        torch.testing.assert_close(logps(ref.model), base, rtol=0, atol=1e-5)
    assert not torch.allclose(logps(policy), base, atol=1e-4)  # the adapter is back on after the scope


def test_copy_reference_stays_at_the_start(small_vocab_model):
    base = logps(small_vocab_model)
    ref = build_reference(small_vocab_model, ModelConfig(name_or_path="x"))
    assert ref.kind == "copy" and not any(p.requires_grad for p in ref.model.parameters())
    perturb(small_vocab_model.parameters())
    torch.testing.assert_close(logps(ref.model), base, rtol=0, atol=0)


def trainable_names(model) -> set[str]:
    return {n for n, p in model.named_parameters() if p.requires_grad}


def names_under(model, *prefixes) -> set[str]:
    return {n for n, _ in model.named_parameters() if n.startswith(prefixes)}


def tiny_llama():
    """A 3-layer Llama with a tied head (named_parameters lists the shared matrix once, as the embedding)."""
    from hybridpo.zoo import random_model

    return random_model("llama", "tiny", 96, num_hidden_layers=3, eos_token_id=0, pad_token_id=1)


def test_last_n_layers_trains_only_the_last_blocks_untied_neox(small_vocab_model):
    model = small_vocab_model  # 3 blocks, untied head lm_head
    block = names_under(model, "gpt_neox.layers.2.")
    norm = names_under(model, "gpt_neox.final_layer_norm.")
    assert len(block) == 12 and norm == {"gpt_neox.final_layer_norm.weight", "gpt_neox.final_layer_norm.bias"}

    train_last_n_layers(model, 1)  # the paper's setting: blocks only
    assert trainable_names(model) == block
    train_last_n_layers(model, 1, train_final_norm=True)
    assert trainable_names(model) == block | norm
    train_last_n_layers(model, 1, train_head=True)
    assert trainable_names(model) == block | {"lm_head.weight"}
    train_last_n_layers(model, 2, train_final_norm=True, train_head=True)
    assert trainable_names(model) == names_under(model, "gpt_neox.layers.1.", "gpt_neox.layers.2.") | norm | {"lm_head.weight"}
    assert not model.gpt_neox.embed_in.weight.requires_grad
    with pytest.raises(ValueError, match="has 3 layers"):
        train_last_n_layers(model, 4)
    with pytest.raises(ValueError, match="has 3 layers"):
        train_last_n_layers(model, 0)


def test_last_n_layers_keeps_a_tied_head_frozen_llama():
    model = tiny_llama()
    assert model.lm_head.weight is model.model.embed_tokens.weight
    block = names_under(model, "model.layers.2.")
    assert len(block) == 9  # q, k, v, o, gate, up, down + two RMSNorm weights; no biases

    train_last_n_layers(model, 1)
    assert trainable_names(model) == block
    train_last_n_layers(model, 1, train_final_norm=True)
    assert trainable_names(model) == block | {"model.norm.weight"}
    assert not model.lm_head.weight.requires_grad  # the head is the (frozen) input embedding
    with pytest.raises(ValueError, match="tied to the input embedding"):
        train_last_n_layers(model, 1, train_head=True)


def test_last_n_layers_reward_model_trains_its_new_score_head(tiny_model_dir):
    from hybridpo.models import load_policy

    cfg = ModelConfig(name_or_path=str(tiny_model_dir), finetune="last_n_layers", last_n_layers=1)
    model = load_policy(cfg, head="reward")
    assert trainable_names(model) == names_under(model, "gpt_neox.layers.1.") | {"score.weight"}


@pytest.mark.parametrize("layout", ["padded", "packed"])
def test_frozen_trunk_reference_shares_the_trunk(small_vocab_model, layout):
    original = copy.deepcopy(small_vocab_model)
    policy = small_vocab_model
    train_last_n_layers(policy, 2)
    ref = build_reference(policy, ModelConfig(name_or_path="x", finetune="last_n_layers", last_n_layers=2))
    assert isinstance(ref.model, FrozenTrunkReference)
    # only the copied top is held by the reference: 2 blocks + final norm + head, not the trunk
    n_ref = sum(p.numel() for p in ref.model.parameters())
    parts = decoder_parts(policy)
    n_top = sum(p.numel() for m in [*parts.layers[1:], parts.final_norm, parts.head] for p in m.parameters())
    assert n_ref == n_top

    # at the start π_ref == π; a reference call right after a policy forward on the same inputs
    # reuses the trunk's hidden states (no trunk run of its own)
    start = logps(original, layout)
    torch.testing.assert_close(logps(policy, layout), start, rtol=0, atol=1e-5)
    torch.testing.assert_close(logps(ref.model, layout), start, rtol=0, atol=1e-5)
    assert ref.model.trunk_runs == 0

    # train the top: the policy moves, the reference does not
    perturb([p for p in policy.parameters() if p.requires_grad])
    assert not torch.allclose(logps(policy, layout), start, atol=1e-3)
    torch.testing.assert_close(logps(ref.model, layout), start, rtol=0, atol=1e-5)
    assert ref.model.trunk_runs == 0

    # inputs the policy has not just seen: the reference runs the trunk itself, once
    with torch.no_grad():
        alone = response_logps(ref.model, PROMPTS[:1], RESPONSES[:1], pad_id=1, layout=layout).logps
    expected = response_logps(original, PROMPTS[:1], RESPONSES[:1], pad_id=1, layout=layout).logps
    torch.testing.assert_close(alone, expected.detach(), rtol=0, atol=1e-5)
    assert ref.model.trunk_runs == 1


def reward_model():
    from transformers import GPTNeoXConfig, GPTNeoXForSequenceClassification

    torch.manual_seed(0)
    config = GPTNeoXConfig(vocab_size=96, hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
                           intermediate_size=64, rotary_pct=0.25, num_labels=1, pad_token_id=0, eos_token_id=0)
    return GPTNeoXForSequenceClassification(config).eval()


def test_reward_is_read_at_the_last_real_token_even_when_pad_is_eos():
    model = reward_model()
    with torch.no_grad():
        batch = reward_scores(model, PROMPTS, RESPONSES, pad_id=0)  # pad == EOS == 0
        assert batch.shape == (4,)
        # each sequence alone (no padding at all): score = head(hidden state of its last token)
        for i, seq in enumerate(p + r for p, rs in zip(PROMPTS, RESPONSES) for r in rs):
            hidden = model.gpt_neox(input_ids=torch.tensor([seq])).last_hidden_state[0, -1]
            torch.testing.assert_close(batch[i], model.score(hidden)[0], rtol=0, atol=1e-5)


def test_pythia_70m_shape_matches_eleutherai():
    from transformers import GPTNeoXForCausalLM

    from hybridpo.data import load_tokenizer

    config = random_config("gpt-neox", "pythia-70m", load_tokenizer(str(PYTHIA_TOKENIZER)))
    assert (config.num_hidden_layers, config.hidden_size, config.num_attention_heads, config.intermediate_size) == (6, 512, 8, 2048)
    assert config.vocab_size == 50304  # 50,277 tokenizer entries rounded up to a multiple of 128
    with torch.device("meta"):
        model = GPTNeoXForCausalLM(config)
    # EleutherAI/pythia-70m has 70,426,624 parameters: 2 x 50304 x 512 (untied embedding + head)
    # + 6 blocks x 3,152,384 (+ 1,024 for the final norm)
    assert sum(p.numel() for p in model.parameters()) == 70_426_624 == 2 * 50304 * 512 + 6 * 3_152_384 + 1024


def test_init_model_saves_a_loadable_model_and_tokenizer(tiny_model_dir):
    from transformers import AutoModelForCausalLM

    from hybridpo.data import load_tokenizer

    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir)
    tok = load_tokenizer(str(tiny_model_dir))
    assert tok("Hello world")["input_ids"] == [12092, 1533]  # the shared README's check
    assert model.config.vocab_size == 50304 and not model.config.tie_word_embeddings
    assert (tok.eos_token_id, tok.pad_token_id) == (0, 1) == (model.config.eos_token_id, model.config.pad_token_id)
