"""The coverage lab: exact, float64, CPU experiments for the theory of Song et al. 2024
("The Importance of Online Data", arXiv 2406.01462) and the accompanying lecture.

One module per experiment; each exposes `NAME`, `SECTION`, a `Config` dataclass,
`run(seed, cfg) -> LabResult` (pure computation, no files, no printing) and `plot(result, path)`.
`registry.py` maps names to modules and writes `DIR/NAME/result.json` and `DIR/NAME/figure.png`.
Every loss and objective comes from `hybridpo.losses`: the lab exercises the production math.
"""
