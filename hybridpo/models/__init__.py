"""Models and their roles. Loading (`load`), π_ref in its three forms (`reference`), and the role
objects the methods call downward (STYLE habit 11):

    Policy        logps / prompt_pass / sample of the model being trained      (models.policy)
    Reference     logps of π_ref, no grad                                       (models.reference)
    RewardModel   score of a reward model (trained by `rm`, or scoring samples) (models.reward)
    TextReward    score of a program on the decoded text                        (models.reward)
    ImplicitReward  score β log π_dpo/π_ref of a trained DPO policy             (models.reward)
    StepClock     wall time per phase of a step, shared by all of them          (models.clock)
"""

from hybridpo.models.clock import StepClock
from hybridpo.models.load import (
    DTYPES, DecoderParts, apply_lora, decoder_parts, freeze, load_policy, load_reward_model, train_last_n_layers,
    trainable_parameters,
)
from hybridpo.models.policy import BuiltinSampler, Policy, Sampler
from hybridpo.models.reference import FrozenTrunkReference, Reference, build_reference
from hybridpo.models.reward import ImplicitReward, RewardModel, TextReward, load_scorer

__all__ = [
    "DTYPES", "BuiltinSampler", "DecoderParts", "FrozenTrunkReference", "ImplicitReward", "Policy", "Reference",
    "RewardModel", "Sampler", "StepClock", "TextReward", "apply_lora", "build_reference", "decoder_parts", "freeze",
    "load_policy", "load_reward_model", "load_scorer", "train_last_n_layers",
    "trainable_parameters",
]
