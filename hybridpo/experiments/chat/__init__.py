"""The chat experiment (`make demo`): the paper's general-chat recipe (§5.1.2, Tables 8-9) in
miniature, on a real pretrained model.

    hybridpo experiment chat --config configs/experiments/demo.yaml [key=value ...]

From SmolLM2-135M-Instruct (π_ref, an instruct model: no SFT stage, as the paper starts from
Llama-3-8B-Instruct), on the shared UltraFeedback pairs rendered with the model's chat template:

1. a Bradley-Terry reward model (Eq. 3) from the same model on the same training pairs: the
   "RM score" of the paper's Table 1, an evaluator no policy trained on;
2. each method of the config (DPO, HyPO) × seed from π_ref, only the last N blocks trained (the
   paper's chat setting), validation KL to π_ref at every evaluation (Figure 1);
3. evaluation on held-out prompts: reverse KL(π‖π_ref), the implicit reward's held-out preference
   accuracy, the reward model's score of the generations, response length, EOS rate;
4. a table (OUT/table.md), the validation-KL figure (OUT/plots/validation_kl.png), and the
   generations side by side (OUT/generations.md: prompt, π_ref, each method).

Every stage is skipped when its output exists, so an interrupted run continues.
"""

from hybridpo.experiments.chat.config import ChatConfig

Config = ChatConfig  # what `hybridpo experiment chat` reads

__all__ = ["ChatConfig", "Config"]
