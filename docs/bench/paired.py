"""What the paired measurements (docs/bench/*_paired.py) share: one batch of a SmolLM2 workload
loaded as the training runs load it, and two settings alternated in one process, so that a drift
of the machine's load hits both alike."""

import contextlib
import statistics
import time

import torch

from hybridpo import rollout
from hybridpo.bench.workloads import batches, build_model, build_pairs, get_workload, load_tokenizer
from hybridpo.fast.cpu_memory import keep_freed_memory


def arguments(doc: str, repeats: int):
    """The paired scripts' command line: --repeats (default `repeats`) and --batch; `doc` is the
    script's docstring (its first line the description)."""
    import argparse

    parser = argparse.ArgumentParser(description=doc.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=repeats)
    parser.add_argument("--batch", type=int, default=0, help="which batch of the workload's 64 pairs")
    return parser


def prompts_and_pairs(batch) -> tuple[list, list]:
    """A batch's prompt ids and, per prompt, its [chosen, rejected] ids."""
    return [p.prompt_ids for p in batch], [[p.chosen_ids, p.rejected_ids] for p in batch]


def setup(workload: str, batch: int):
    """(workload, tokenizer, model in training mode, the workload's batch `batch`), on 2 threads with
    freed memory kept, as `hybridpo train` on CPU."""
    torch.set_num_threads(2)
    keep_freed_memory()
    w = get_workload(workload)
    tokenizer = load_tokenizer(w)
    pairs = build_pairs(w, tokenizer)
    return w, tokenizer, build_model(w).train(), batches(w, pairs)[batch]


def _scored(model, prompts, responses, pad: int, pp=None, **speed):
    """The policy's log-probs with grad (after the prompt pass `pp`, if given), the reference's
    without (the same weights), the backward, with response_logps's speed settings `speed`
    (train_gemm=, span_kernel=, ...; set here, since response_logps enters their scopes itself):
    (sequence log-probs, (their three times in s))."""
    from hybridpo.forward import response_logps

    t0 = time.perf_counter()
    out = response_logps(model, prompts, responses, pad_id=pad, prompt_pass=pp, **speed)
    t1 = time.perf_counter()
    with torch.no_grad():
        response_logps(model, prompts, responses, pad_id=pad, **speed)
    t2 = time.perf_counter()
    out.logps.sum().backward()
    return out.logps.detach(), (t1 - t0, t2 - t1, time.perf_counter() - t2)


def dpo_work(model, prompts, pairs, pad: int, **speed):
    """A DPO step's model work: the policy's log-probs with grad, the reference's without (the same
    weights), the backward, with response_logps's speed settings `speed`. Returns (the policy's
    sequence log-probs, (policy forward s, reference forward s, backward s, total s)); the gradients
    are left on the model."""
    logps, times = _scored(model, prompts, pairs, pad, **speed)
    return logps, (*times, sum(times))


def hypo_work(model, w, prompts, offline, pad: int, eos: int, seed: int, decode_gemm: str = "auto"):
    """A HyPO step's model work (workload `w`'s k and new tokens): the policy's prompt pass with grad,
    the samples drawn from it, the policy's log-probs of pairs and samples after the pass, the
    reference's of both, the backward. Returns (the samples, (prompt pass s, sampling s, policy
    log-probs s, reference s, backward s, total s)); the gradients are left on the model."""
    from hybridpo.forward.prompts import prompt_pass

    t0 = time.perf_counter()
    pp = prompt_pass(model, prompts, pad_id=pad)
    t1 = time.perf_counter()
    samples = rollout.sample(model, prompts, w.hypo_k, max_new_tokens=w.hypo_new_tokens, eos_id=eos, pad_id=pad,
                             generator=torch.Generator().manual_seed(seed), prompt_pass=pp, decode_gemm=decode_gemm)
    t2 = time.perf_counter()
    both = [o + s for o, s in zip(offline, samples.responses)]
    times = (t1 - t0, t2 - t1, *_scored(model, prompts, both, pad, pp)[1])
    return samples, (*times, sum(times))


def prefilled(model, prompts: int, width: int, generator=None):
    """A decode's start on `model` (eval mode): `prompts` random prompts of `width` tokens prefilled.
    Returns (the cache as (keys, values) per layer, the attention mask, the last position's logits,
    the EOS id, a draw that takes a fixed token, never EOS, so that every row runs every step)."""
    prompt = torch.randint(100, model.config.vocab_size, (prompts, width), generator=generator)
    attn = torch.ones(prompts, width, dtype=torch.long)
    with torch.no_grad():
        out = model(input_ids=prompt, attention_mask=attn, use_cache=True)
    kv = [(layer.keys, layer.values) for layer in out.past_key_values.layers]
    eos = model.config.eos_token_id if isinstance(model.config.eos_token_id, int) else 0

    def draw(lg, rows, t):
        tok = torch.full((lg.shape[0],), 500 + t, dtype=torch.long)
        zero = torch.zeros(lg.shape[0])
        return tok, zero, zero

    return kv, attn, out.logits[:, -1], eos, draw


def best(fn, reps: int) -> float:
    """The fastest of `reps` calls of fn(), in seconds."""
    times = []
    for _ in range(reps):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return min(times)


@contextlib.contextmanager
def swapped(owner, name: str, value, when: bool = True):
    """Within (where `when`): owner.name is `value`; restored after."""
    original = getattr(owner, name)
    if when:
        setattr(owner, name, value)
    try:
        yield
    finally:
        setattr(owner, name, original)


def alternate(settings: tuple[str, ...], step, repeats: int) -> dict[str, list]:
    """step(setting, repeat) for every setting once as a warm-up (compiles, the heap grown to the
    step's size), then `repeats` rounds over the settings in turn; the timed results per setting."""
    for s in settings:
        step(s, 0)
    times = {s: [] for s in settings}
    for r in range(repeats):
        for s in settings:
            times[s].append(step(s, r + 1))
    return times


def table(setting: str, phases: list[str], times: dict[str, list]) -> None:
    """Print the markdown table: per setting the median of each phase's seconds (the last phase
    being the total), then every repeat's total."""
    print(f"| {setting} | " + " | ".join(f"{p} s" for p in phases) + " | every total s |")
    print("|---|" + "---:|" * (len(phases) + 1))
    for s, runs in times.items():
        cols = [statistics.median(c) for c in zip(*runs)]
        print(f"| {s} | " + " | ".join(f"{c:.2f}" for c in cols) + " | " + ", ".join(f"{t[-1]:.2f}" for t in runs) + " |")


def dpo_two_settings(doc: str, title: str, settings: tuple[str, str], work, repeats: int = 3) -> None:
    """Print, as markdown, two settings of one smollm2-dpo batch's model work compared (the batch
    and repeats from the command line, `doc` its help): `work(model, prompts, pairs, pad, setting)`
    -> (sequence log-probs, times) as dpo_work returns, gradients left on the model. First the two
    settings' log-probs and gradients on the batch, then `--repeats` alternated rounds timed."""
    from hybridpo.bench.record import machine

    args = arguments(doc, repeats).parse_args()
    _, tokenizer, model, batch = setup("smollm2-dpo", args.batch)
    prompts, pairs = prompts_and_pairs(batch)
    run = lambda setting: work(model, prompts, pairs, tokenizer.pad_token_id, setting)  # noqa: E731
    agree = {}
    for setting in settings:
        logps, _ = run(setting)
        agree[setting] = (logps, {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None})
        model.zero_grad(set_to_none=True)
    (la, ga), (lb, gb) = agree[settings[0]], agree[settings[1]]
    grad_error = max(float((gb[n] - ga[n]).norm() / ga[n].norm().clamp(min=1e-30)) for n in ga)

    def step(setting: str, _repeat: int) -> tuple[float, ...]:
        times = run(setting)[1]
        model.zero_grad(set_to_none=True)
        return times

    times = alternate(settings, step, args.repeats)
    tokens = sum(len(p) + len(c) + len(r) for p, (c, r) in zip(prompts, pairs))
    print(f"{machine()}; SmolLM2-135M-Instruct, batch {args.batch} of smollm2-dpo ({len(batch)} pairs, {tokens} tokens), "
          f"every weight trained, median of {args.repeats} alternated repeats.\n")
    print(f"{settings[1]} vs {settings[0]} on this batch: sequence log-probs within {float((lb - la).abs().max()):.1e} "
          f"(of values up to {float(la.abs().max()):.0f}); every parameter's gradient within {grad_error:.1e} of its norm\n")
    table(title, ["policy forward", "reference forward", "backward", "total"], times)
    a, b = (statistics.median(t[-1] for t in times[s]) for s in settings)
    print(f"\n{settings[1]} / {settings[0]}: {b / a:.3f} ({a - b:+.2f} s a step)")
