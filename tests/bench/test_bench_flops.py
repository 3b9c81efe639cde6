"""The FLOP counter, derived by hand on a model small enough to count on paper."""

import torch
from transformers import GPTNeoXConfig, GPTNeoXForCausalLM

from hybridpo.bench.flops import (
    ModelShape,
    attention_keys,
    decode_flops,
    dpo_step_flops,
    forward_flops,
    matmul_peak,
    online_step_flops,
)

# 1 block, d = 2, f = 4, V = 3
TOY = ModelShape(layers=1, hidden=2, intermediate=4, vocab=3)


def test_per_token_and_head_flops_by_hand():
    # blocks: 2 * (4 d² + 2 d f) = 2 * (16 + 16) = 64 per token; head: 2 d V = 12 per position
    assert TOY.token_flops == 64
    assert TOY.head_flops == 12


def test_token_flops_match_the_real_models_matmul_weights():
    # 2 FLOPs per weight of every Linear inside the blocks (QKV, attention out, two MLP matrices)
    config = GPTNeoXConfig(vocab_size=64, hidden_size=32, num_hidden_layers=3, num_attention_heads=4,
                           intermediate_size=96)
    model = GPTNeoXForCausalLM(config)
    block_weights = sum(
        m.weight.numel() for m in model.gpt_neox.layers.modules() if isinstance(m, torch.nn.Linear)
    )
    shape = ModelShape.from_config(config)
    assert shape.token_flops == 2 * block_weights
    assert shape.head_flops == 2 * model.get_output_embeddings().weight.numel()


def test_attention_keys_count_the_packed_causal_mask():
    # prompt of 2 then responses of 1 and 2 tokens. Keys per token: prompt 1, 2; response A: 2 + 1;
    # response B: 2 + 1, 2 + 2  ->  1 + 2 + 3 + 3 + 4 = 13. Same count from an explicit mask:
    assert attention_keys(2, [1, 2]) == 13
    p, lens = 2, [1, 2]
    seg = [0] * p + [i + 1 for i, n in enumerate(lens) for _ in range(n)]  # 0 = prompt, r = response r
    allowed = sum(
        1 for q in range(len(seg)) for k in range(q + 1) if seg[k] == 0 or seg[k] == seg[q]
    )
    assert allowed == 13


def test_forward_flops_by_hand():
    # 5 unique tokens x 64 = 320; attention 4 d L x 13 keys = 104; head at 1 + 2 - 1 = 2 positions
    # (the last prompt position predicts the first token of both responses, counted once) = 24
    assert forward_flops(TOY, 2, [1, 2]) == 320 + 104 + 24


def test_dpo_step_is_policy_forward_backward_plus_reference_forward():
    # 3x for the policy (forward + backward = 2x forward) + 1x for the reference
    assert dpo_step_flops(TOY, [(2, [1, 2]), (2, [1, 2])]) == 2 * 4 * 448


def test_decode_flops_by_hand():
    # a 3-token sample after a 2-token prompt: feed tokens 1 and 2; each 64 + 4·2·1·(2 + j) + 12
    # j = 1: 64 + 24 + 12 = 100;  j = 2: 64 + 32 + 12 = 108
    assert decode_flops(TOY, 2, [3]) == 208
    assert decode_flops(TOY, 2, [1]) == 0  # the first token comes from the prompt pass
    assert online_step_flops(TOY, [(2, [1, 2])], [[3]]) == 4 * 448 + 208


def test_matmul_peak_is_a_positive_rate():
    assert matmul_peak(1, sizes=((64, 64, 64),), seconds=0.05) > 0


def test_token_flops_match_a_llama_models_matmul_weights():
    # grouped-query attention (4 query heads, 2 key / value heads) and a gated MLP (3 matrices)
    from hybridpo import zoo

    model = zoo.random_model("llama", "tiny", 128)
    block_weights = sum(m.weight.numel() for m in model.model.layers.modules() if isinstance(m, torch.nn.Linear))
    shape = ModelShape.from_config(model.config)
    assert shape.kv_hidden == 32 and shape.gated  # 2 heads x head_dim 16
    assert shape.token_flops == 2 * block_weights
    # d 64, d_kv 32, f 256: 2 x 64² + 2 x 64 x 32 + 3 x 64 x 256 = 61,440 weights per block
    assert shape.block_weights == 61_440


def test_smollm2_block_weights_by_hand():
    # d 576, 9 query / 3 key-value heads of 64, f 1536: 2 x 576² + 2 x 576 x 192 + 3 x 576 x 1536
    shape = ModelShape(layers=30, hidden=576, intermediate=1536, vocab=49152, kv_hidden=192, gated=True)
    assert shape.block_weights == 3_538_944
    assert shape.head_flops == 2 * 576 * 49152


def test_last_n_layers_count_the_frozen_trunk_once():
    # 2 blocks, the last one trained: policy forward (every block + head) + backward of block 2 and the
    # head's activation gradient + the reference's block 2 and head: F + 3 x body / 2 + 2 x head
    two = ModelShape(layers=2, hidden=2, intermediate=4, vocab=3)
    body = 5 * two.token_flops + 4 * 2 * 2 * 13  # 5 tokens, 13 keys (test above)
    head = 2 * two.head_flops
    assert dpo_step_flops(two, [(2, [1, 2])], trained_layers=1) == (body + head) + 3 * body // 2 + 2 * head
    assert dpo_step_flops(two, [(2, [1, 2])], trained_layers=2) == 4 * (body + head) - head  # no head weight gradient
