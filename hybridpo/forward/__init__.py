"""The forward package: token ids in, log-probs and prompt caches out. Imports point down:

    layout    pure packing / index math and attention masks (no model)
    hf        the thin layer over transformers / peft internals (unwrapping, the forward with the
              LM head only at chosen positions, caches)
    logprobs  response_logps in the padded, packed and after-a-prompt-pass layouts
    prompts   the prompt pass (prompts once per step, packed) and the sampler's prefill
    reward    a scalar-head model's score at the last real token
"""

from hybridpo.forward.hf import PackingUnsupported, packing_unsupported_reason, unwrap_model
from hybridpo.forward.logprobs import LAYOUTS, ResponseLogps, response_logps, scaled_logits
from hybridpo.forward.prompts import PromptPass, prefill, prompt_pass, prompt_pass_unsupported_reason
from hybridpo.forward.reward import reward_scores

__all__ = [
    "LAYOUTS", "PackingUnsupported", "PromptPass", "ResponseLogps", "packing_unsupported_reason", "prefill",
    "prompt_pass", "prompt_pass_unsupported_reason", "response_logps", "reward_scores", "scaled_logits", "unwrap_model",
]
