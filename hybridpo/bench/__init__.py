"""`hybridpo bench`: measuring instruments, one module per mode.

- `workloads`  the fixed workloads (tiny, tldr, hypo, hypo-160m, smollm2-*): model shapes, data, batch sizes.
- `flops`      the FLOPs a step *needs* (each unique token once, LM head only where scored) and this
               machine's measured fp32 matmul peak.
- `hybridpo_runner` / `trl_runner`  run one workload variant and time it step by step.
- `speed`      `hybridpo bench speed`: each variant in a fresh process, medians, the side-by-side table.

Nothing here prints or writes files on import; `hybridpo.commands.bench` does the I/O.
"""
