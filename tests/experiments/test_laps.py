"""The experiments' stage clock (hybridpo.experiments.common.Laps)."""


def test_stage_times_add_up_over_a_resumed_experiment(tmp_path, monkeypatch):
    import json

    from hybridpo.experiments import common

    clock = iter([0.0, 10.0, 25.0, 100.0, 100.5, 104.0])  # first invocation: 10 s, 15 s; second: 0.5 s, 3.5 s
    monkeypatch.setattr(common.time, "perf_counter", lambda: next(clock))
    laps = common.Laps(tmp_path)
    laps("sft")
    laps("dpo-seed0")  # interrupted after 15 s
    laps = common.Laps(tmp_path)  # the same command again: sft is found done, dpo-seed0 continues
    laps("sft")
    laps("dpo-seed0")
    times = json.loads((tmp_path / "timing.json").read_text())
    assert times == {"sft": 10.5, "dpo-seed0": 18.5, "total": 29.0}
