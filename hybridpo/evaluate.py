"""Evaluation metrics shared by training and `hybridpo eval` (paper Table 1 and Figure 1).

On validation prompts x with reference responses y_ref:

- generations: one near-greedy sample per prompt (the paper's TL;DR practice: temperature 0.01,
  at most 53 new tokens), scored and judged against y_ref;
- `kl`: reverse KL(π‖π_ref) = E_{x, y~π}[log π(y|x) - log π_ref(y|x)], estimated as the mean
  over `kl_samples` fresh samples per prompt, drawn at `kl_temperature` (1.0: π itself), of the
  SUMMED token log-ratio over the response, the same estimator as training (losses.sequence_kl).
  The mask at EOS: the EOS token is part of y and counted; nothing after it is; a sample that
  hits `max_new_tokens` without EOS is summed over the tokens it has (a truncated y). Log-probs
  use the sampling temperature, so the estimate is unbiased and exactly 0 for π = π_ref.
- `logratio/generations`: the same summed log-ratio (at temperature 1) on the near-greedy
  generations: what a Table-1 "KL" computed on the evaluated samples shows; NOT an unbiased KL
  (the generations are not samples of π), reported beside it because papers often mean this;
  `logratio/generations_stderr` is its standard error over prompts (as `kl_stderr` for `kl`).
- `forward_kl/reference`: mean over references of log π_ref(y_ref|x) - log π(y_ref|x). When the
  references are samples of π_ref this estimates KL(π_ref‖π); in general it is
  KL(D‖π) - KL(D‖π_ref) for the reference distribution D: how much more likelihood of the
  reference responses π lost than π_ref had (≥ 0 expected after preference tuning).
- each scorer s (gold reward r*, a reward model): mean s(x, y) on generations, on references,
  and the difference (`<name>`, `<name>/reference`, `<name>/diff`). A text scorer reads the
  rendered prompt text and the decoded response; a `TokenScorer` (a reward model) reads the token
  ids themselves: the prompt ids the policy was fed (rendered and truncated) and the response ids,
  a generation ending with EOS only where it emitted one (a cut generation is scored cut, as the
  reward model saw truncated responses in training), a reference as the data layer built it;
- `win_rate` against the references by a judge (hybridpo.judges), ties = 1/2, errors excluded
  and counted; a `judges.ScorerJudge` compares the scores one scorer already gave;
- `logps/chosen`, `logps/rejected` on validation pairs for π and π_ref (`ref_logps/*`): the
  paper's §6 observation that DPO pushes both down shows as logps < ref_logps for both.
- `coverage/...` (`coverage_metrics`, on the same samples y ~ π the KL estimate uses): the
  paper's coverage quantities (Assumptions 4.1-4.2) measured where π puts its mass.
  `coverage/logratio_{mean,q50,q90,q99,max}`: the distribution of the summed log density ratio
  log π(y|x)/π_ref(y|x) over the samples; its max is the log of an empirical coverage constant
  max π/π_ref (a lower bound on the sup of Assumption 4.1 / 4.2's C over these prompts);
  `coverage/share_above_log10`, `.._log100`: the share of samples with π/π_ref > 10, > 100;
  `coverage/log_mean_ratio`: log of the sample mean of π/π_ref, an estimate of log E_π[π/π_ref]
  = log(1 + χ²(π‖π_ref)) (≥ the KL by Jensen; dominated by the largest ratios).
  Against the offline data: `coverage/ref_logp_per_token` is the mean per-token log π_ref of π's
  samples, `coverage/data_ref_logp_per_token` the same for the data's own responses on these
  prompts (the chosen and rejected responses of `pairs` when given, else the references), and
  `coverage/outside_data_q05` the share of π's samples less likely per token under π_ref than the
  5th percentile of the data's responses: π's outputs outside what the offline data covers. For
  π = π_ref every log ratio is exactly 0 and `outside_data_q05` measures how π_ref's own samples
  sit against the data (0.05 when they are distributed alike).
"""

from __future__ import annotations

import contextlib
import math
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable

import torch
from torch import Tensor

from hybridpo.forward import response_logps, reward_scores
from hybridpo.judges import Judge, ScorerJudge, win_rate
from hybridpo.losses import sequence_kl
from hybridpo.rollout import sample


@dataclass
class EvalConfig:
    temperature: float = 0.01  # generation temperature (paper TL;DR: near-greedy 0.01)
    max_new_tokens: int = 53  # generation length limit (paper TL;DR: 53)
    kl_samples: int = 2  # samples per prompt for the reverse-KL estimate (0 = skip it)
    kl_temperature: float = 1.0  # temperature of those samples and their log-probs (1.0 = π itself)
    batch_size: int = 16  # prompts (or pairs) per forward
    max_prompts: int = 0  # evaluate the first N prompts / pairs; 0 = all
    seed: int = 0  # seeds the samplers (generations and KL samples)
    layout: str = "padded"  # hybridpo.forward layout for the log-prob forwards
    generator_name: str = "policy"  # the `generator` field of generations.jsonl (AlpacaEval)
    coverage: bool = True  # coverage/... diagnostics on the KL samples (module docstring); needs kl_samples > 0


@dataclass(frozen=True)
class TokenScorer:
    """A scorer of token ids (a reward model): it scores exactly what the policy was fed and wrote."""

    score_ids: Callable[[list[list[int]], list[list[int]]], list[float]]  # (prompt ids, response ids) -> one score each


Scorer = Callable[[list[str], list[str]], list[float]] | TokenScorer  # (prompt texts, response texts) -> scores


@dataclass
class EvalResult:
    metrics: dict  # eval.json
    generations: list[dict] = field(default_factory=list)  # generations.jsonl rows


def _ref_parts(ref):
    """(model, scope) from an nn.Module or a hybridpo.models.Reference (disabled LoRA adapter)."""
    if hasattr(ref, "scope") and hasattr(ref, "model"):
        return ref.model, ref.scope
    return ref, contextlib.nullcontext


def _batches(n: int, size: int):
    for s in range(0, n, size):
        yield slice(s, min(n, s + size))


@torch.no_grad()
def logratios(policy, ref, prompts: list[list[int]], responses: list[list[list[int]]], *,
              pad_id: int, temperature: float = 1.0, layout: str = "padded") -> tuple[Tensor, Tensor]:
    """(log π(y|x), log π_ref(y|x)) at `temperature`, each (N,) prompt-major, summed over y incl. EOS."""
    ref_model, scope = _ref_parts(ref)
    pol = response_logps(policy, prompts, responses, pad_id=pad_id, temperature=temperature, layout=layout).logps
    with scope():
        rlp = response_logps(ref_model, prompts, responses, pad_id=pad_id, temperature=temperature, layout=layout).logps
    return pol, rlp


@dataclass
class SampleLogps:
    """Log-probs of k samples y ~ π per prompt, under π and π_ref; tensors (P, k)."""

    policy: Tensor  # log π(y|x) at cfg.kl_temperature, summed over y incl. EOS
    ref: Tensor  # log π_ref(y|x), the same
    lengths: Tensor  # tokens per sample (EOS included)


@torch.no_grad()
def kl_samples(policy, ref, prompts: list[list[int]], *, pad_id: int, eos_id: int, cfg: EvalConfig) -> SampleLogps:
    """`cfg.kl_samples` fresh samples per prompt at cfg.kl_temperature and their log-probs (the
    samples of the KL estimate and of the coverage diagnostics)."""
    gen = torch.Generator(device=next(policy.parameters()).device).manual_seed(cfg.seed + 1)
    k = cfg.kl_samples
    pols, rlps, lengths = [], [], []
    for sl in _batches(len(prompts), cfg.batch_size):
        batch = prompts[sl]
        roll = sample(policy, batch, k, max_new_tokens=cfg.max_new_tokens, eos_id=eos_id,
                      pad_id=pad_id, temperature=cfg.kl_temperature, generator=gen)
        pol, rlp = logratios(policy, ref, batch, roll.responses, pad_id=pad_id, temperature=cfg.kl_temperature,
                             layout=cfg.layout)
        pols.append(pol.view(-1, k))
        rlps.append(rlp.view(-1, k))
        lengths.append(roll.lengths.view(-1, k).cpu())
    return SampleLogps(torch.cat(pols), torch.cat(rlps), torch.cat(lengths))


def kl_from_samples(s: SampleLogps) -> dict:
    """`kl` (mean over prompts of the per-prompt Monte-Carlo KL) and `kl_stderr` (over prompts)."""
    kl = sequence_kl(s.policy, s.ref).double()  # (P,)
    return {"kl": kl.mean().item(), "kl_stderr": _stderr(kl)}


@torch.no_grad()
def reverse_kl(policy, ref, prompts: list[list[int]], *, pad_id: int, eos_id: int, cfg: EvalConfig) -> dict:
    """Monte-Carlo KL(π‖π_ref) on `cfg.kl_samples` samples per prompt (module docstring)."""
    return kl_from_samples(kl_samples(policy, ref, prompts, pad_id=pad_id, eos_id=eos_id, cfg=cfg))


LOG10, LOG100 = math.log(10.0), math.log(100.0)


def coverage_metrics(logratio: Tensor, ref_logp_per_token: Tensor, data_ref_logp_per_token: Tensor | None = None) -> dict:
    """The coverage/... metrics of the module docstring from flat tensors over samples y ~ π:
    `logratio` (N,) = log π(y|x) - log π_ref(y|x), `ref_logp_per_token` (N,) = log π_ref(y|x) / |y|,
    and `data_ref_logp_per_token` (M,), the same for the offline data's responses (or None).

    Quantiles are torch.quantile's (linear interpolation), computed in float64."""
    d = logratio.detach().double().flatten()
    a = ref_logp_per_token.detach().double().flatten()
    if d.numel() == 0:
        return {}
    q = torch.quantile(d, torch.tensor([0.5, 0.9, 0.99], dtype=torch.float64))
    m = {
        "coverage/logratio_mean": d.mean().item(),
        "coverage/logratio_q50": q[0].item(),
        "coverage/logratio_q90": q[1].item(),
        "coverage/logratio_q99": q[2].item(),
        "coverage/logratio_max": d.max().item(),
        "coverage/share_above_log10": (d > LOG10).double().mean().item(),
        "coverage/share_above_log100": (d > LOG100).double().mean().item(),
        "coverage/log_mean_ratio": (torch.logsumexp(d, 0) - math.log(d.numel())).item(),
        "coverage/samples": d.numel(),
        "coverage/ref_logp_per_token": a.mean().item(),
    }
    if data_ref_logp_per_token is not None and data_ref_logp_per_token.numel():
        b = data_ref_logp_per_token.detach().double().flatten()
        floor = torch.quantile(b, 0.05)
        m["coverage/data_ref_logp_per_token"] = b.mean().item()
        m["coverage/outside_data_q05"] = (a < floor).double().mean().item()
    return m


@torch.no_grad()
def generate(policy, prompts: list[list[int]], *, pad_id: int, eos_id: int, cfg: EvalConfig):
    """One sample per prompt at cfg.temperature: (responses [prompt] -> ids, finished (P,) bool)."""
    gen = torch.Generator(device=next(policy.parameters()).device).manual_seed(cfg.seed)
    responses: list[list[int]] = []
    finished: list[bool] = []
    for sl in _batches(len(prompts), cfg.batch_size):
        roll = sample(policy, prompts[sl], 1, max_new_tokens=cfg.max_new_tokens, eos_id=eos_id, pad_id=pad_id,
                      temperature=cfg.temperature, generator=gen)
        responses += [r[0] for r in roll.responses]
        finished += roll.finished[:, 0].tolist()
    return responses, finished


def evaluate(
    policy,
    ref,
    tokenizer,
    prompts: list,
    *,
    pairs: list | None = None,
    judge: Judge | ScorerJudge | None = None,
    scorers: dict[str, Scorer] | None = None,
    cfg: EvalConfig | None = None,
) -> EvalResult:
    """All metrics of the module docstring for `policy` against `ref`.

    prompts: hybridpo.data.PromptExample (with `reference` for the forward KL, scores vs
    references and the win rate); pairs: hybridpo.data.PreferenceExample for logps/chosen|rejected.
    scorers: name -> score(prompt texts, response texts), or a TokenScorer (e.g. {"gold": ..., "rm": ...}).
    judge: a Judge of texts, or a ScorerJudge naming one of `scorers`.
    """
    cfg = cfg or EvalConfig()
    scorers = scorers or {}
    pad_id, eos_id = tokenizer.pad_token_id, tokenizer.eos_token_id
    if cfg.max_prompts:
        prompts = prompts[: cfg.max_prompts]
        pairs = pairs[: cfg.max_prompts] if pairs else pairs
    was_training = policy.training
    policy.eval()
    try:
        m: dict = {"prompts": len(prompts), "eval_config": asdict(cfg)}
        pids = [p.prompt_ids for p in prompts]
        texts = [p.prompt for p in prompts]
        gen_ids, finished = generate(policy, pids, pad_id=pad_id, eos_id=eos_id, cfg=cfg)
        outputs = [tokenizer.decode(r, skip_special_tokens=True) for r in gen_ids]
        m["response_length"] = sum(map(len, gen_ids)) / max(1, len(gen_ids))
        m["eos_rate"] = sum(finished) / max(1, len(finished))
        samples = None
        if cfg.kl_samples:
            samples = kl_samples(policy, ref, pids, pad_id=pad_id, eos_id=eos_id, cfg=cfg)
            m.update(kl_from_samples(samples))
        gen_lr = _logratio_on(policy, ref, pids, gen_ids, pad_id, cfg)
        m["logratio/generations"] = gen_lr.mean().item()
        m["logratio/generations_stderr"] = _stderr(gen_lr.double())
        rows = [{"instruction": x, "output": y, "generator": cfg.generator_name, "finished": bool(f),
                 "logratio": float(lr), "scores": {}} for x, y, f, lr in zip(texts, outputs, finished, gen_lr)]

        have_refs = bool(prompts) and all(p.reference is not None for p in prompts)
        data_per_token = None  # per-token log π_ref of the data's own responses (coverage/...)
        if have_refs:
            refs, ref_ids = [p.reference for p in prompts], [p.reference_ids for p in prompts]
            ref_pol, ref_rlp = _logps_on(policy, ref, pids, ref_ids, pad_id, cfg)
            ref_lr = ref_pol - ref_rlp
            m["forward_kl/reference"] = (-ref_lr).mean().item()  # log π_ref - log π on y_ref
            data_per_token = ref_rlp.double() / torch.tensor([max(1, len(r)) for r in ref_ids], dtype=torch.float64)
            for row, r in zip(rows, refs):
                row["reference"] = r
        scored: dict[str, tuple[list[float], list[float] | None]] = {}  # name -> (generations, references)
        for name, score in scorers.items():
            s_gen = _score(score, texts, outputs, pids, gen_ids)
            s_ref = _score(score, texts, refs, pids, ref_ids) if have_refs else None
            scored[name] = (s_gen, s_ref)
            m[name] = sum(s_gen) / len(s_gen)
            for row, v in zip(rows, s_gen):
                row["scores"][name] = v
            if s_ref is not None:
                m[f"{name}/reference"] = sum(s_ref) / len(s_ref)
                m[f"{name}/diff"] = m[name] - m[f"{name}/reference"]
                for row, v in zip(rows, s_ref):
                    row["scores"][f"{name}/reference"] = v
        if judge is not None and have_refs:
            if isinstance(judge, ScorerJudge):
                if judge.scorer not in scored:
                    raise ValueError(f"judge {judge.name!r} reads scorer {judge.scorer!r}; scorers: {sorted(scored)}")
                verdicts = judge.verdicts(*scored[judge.scorer])
            else:
                verdicts = judge.judge(texts, outputs, refs)
            m.update(win_rate(verdicts))
            m["judge"] = judge.name
            for row, v in zip(rows, verdicts):
                row["judge"] = {"score": v.score, "order": v.order, "error": v.error, "cached": v.cached}
        if pairs:
            pl = pair_logp_tensors(policy, ref, pairs, pad_id=pad_id, cfg=cfg)
            m.update(_pair_metrics(pl))
            data_per_token = (pl.ref.double() / pl.lengths.double().clamp(min=1)).flatten()  # chosen and rejected
        if samples is not None and cfg.coverage:
            per_token = samples.ref.double() / samples.lengths.double().clamp(min=1)
            m.update(coverage_metrics(samples.policy - samples.ref, per_token, data_per_token))
        return EvalResult(metrics=m, generations=rows)
    finally:
        policy.train(was_training)


@torch.no_grad()
def pair_logp_tensors(policy, ref, pairs: list, *, pad_id: int, cfg: EvalConfig) -> SampleLogps:
    """Sequence log-probs of each pair's (chosen, rejected) under π and π_ref: tensors (B, 2)."""
    pols, rlps, lengths = [], [], []
    for sl in _batches(len(pairs), cfg.batch_size):
        batch = pairs[sl]
        pol, rlp = logratios(policy, ref, [e.prompt_ids for e in batch],
                             [[e.chosen_ids, e.rejected_ids] for e in batch], pad_id=pad_id, layout=cfg.layout)
        pols.append(pol.view(-1, 2))
        rlps.append(rlp.view(-1, 2))
        lengths.append(torch.tensor([[len(e.chosen_ids), len(e.rejected_ids)] for e in batch]))
    return SampleLogps(torch.cat(pols), torch.cat(rlps), torch.cat(lengths))


@torch.no_grad()
def pair_logps(policy, ref, pairs: list, *, pad_id: int, cfg: EvalConfig) -> dict:
    """Mean sequence log-probs of the chosen and rejected responses under π and π_ref (§6), and
    `rewards/accuracies`: the share of pairs whose implicit reward log π/π_ref (DPO's, up to β)
    ranks the chosen response above the rejected one, ties counted 1/2 (so π_ref itself scores 1/2)."""
    return _pair_metrics(pair_logp_tensors(policy, ref, pairs, pad_id=pad_id, cfg=cfg))


def _pair_metrics(pl: SampleLogps) -> dict:
    pol, rlp = pl.policy.double(), pl.ref.double()  # (B, 2): chosen, rejected
    margin = (pol - rlp)[:, 0] - (pol - rlp)[:, 1]  # (B,) implicit-reward margin, chosen minus rejected
    n = pol.shape[0]
    return {
        "logps/chosen": pol[:, 0].sum().item() / n, "logps/rejected": pol[:, 1].sum().item() / n,
        "ref_logps/chosen": rlp[:, 0].sum().item() / n, "ref_logps/rejected": rlp[:, 1].sum().item() / n,
        "rewards/accuracies": ((margin > 0).double() + 0.5 * (margin == 0).double()).sum().item() / n,
        "pairs": n,
    }


def reward_model_scorer(model, pad_id: int, batch_size: int = 16) -> TokenScorer:
    """A reward model (a scalar-head model, or the folder of one) as a TokenScorer: it scores the
    prompt ids the policy was fed (rendered, truncated) and the response ids as they are (a
    generation ends with EOS only where it emitted one), never text decoded and encoded again."""
    if isinstance(model, (str, Path)):
        from hybridpo.config import ModelConfig
        from hybridpo.models import load_reward_model

        model = load_reward_model(str(model), ModelConfig(name_or_path=str(model)))

    @torch.no_grad()
    def score_ids(prompt_ids: list[list[int]], response_ids: list[list[int]]) -> list[float]:
        out = []
        for s in range(0, len(prompt_ids), batch_size):
            responses = [[r] for r in response_ids[s : s + batch_size]]
            out += reward_scores(model, prompt_ids[s : s + batch_size], responses, pad_id=pad_id).tolist()
        return out

    return TokenScorer(score_ids)


def _score(score: Scorer, prompt_texts, response_texts, prompt_ids, response_ids) -> list[float]:
    if isinstance(score, TokenScorer):
        values = score.score_ids(prompt_ids, response_ids)
    else:
        values = score(prompt_texts, response_texts)
    return [float(v) for v in values]


def _logps_on(policy, ref, prompts, responses, pad_id, cfg) -> tuple[Tensor, Tensor]:
    """(log π(y|x), log π_ref(y|x)) at temperature 1 for one given response per prompt.   -> (P,), (P,)"""
    pols, rlps = [], []
    for sl in _batches(len(prompts), cfg.batch_size):
        pol, rlp = logratios(policy, ref, prompts[sl], [[r] for r in responses[sl]], pad_id=pad_id, layout=cfg.layout)
        pols.append(pol)
        rlps.append(rlp)
    if not pols:
        return torch.zeros(0), torch.zeros(0)
    return torch.cat(pols), torch.cat(rlps)


def _logratio_on(policy, ref, prompts, responses, pad_id, cfg) -> Tensor:
    """log π(y|x) - log π_ref(y|x) at temperature 1 for one given response per prompt.   -> (P,)"""
    pol, rlp = _logps_on(policy, ref, prompts, responses, pad_id, cfg)
    return pol - rlp


def _stderr(x: Tensor) -> float:
    return (x.std(unbiased=True) / math.sqrt(x.numel())).item() if x.numel() > 1 else float("nan")
