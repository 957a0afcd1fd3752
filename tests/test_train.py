"""Training end to end on a micro corpus: checkpoints, metrics, resume, stage skipping, CLI errors."""
import json

import pytest
import torch

from serpent.cli import main
from serpent.errors import ConfigError
from serpent.stages import data_stage, train_stage
from serpent.rundir import Run


def _train_run(path, cfg):
    run = Run.create(path, cfg)
    data_stage(run, progress=False)
    return run


def test_training_writes_checkpoints_metrics_and_loss_falls(tmp_path, micro_run_config):
    run = _train_run(tmp_path / "run", micro_run_config)
    summary = train_stage(run, progress=False)
    steps = run.checkpoint_steps()
    assert steps[0] == 0 and steps[-1] == micro_run_config.train.steps and len(steps) >= 4
    m = run.metrics()
    assert m and m[-1]["step"] == micro_run_config.train.steps
    data = run.stage_summary("data")["summary"]
    assert m[-1]["test_loss"] < m[0]["test_loss"]
    assert summary["final_test_loss"] < torch.log(torch.tensor(float(data["vocab_size"]))).item()
    # the checkpoint loads into the hooked model, which gives the logged loss scale
    model = run.load_model()
    assert model.cfg.n_heads == 8
    # a second call with the same config is skipped (stage is current)
    before = (run.path / "metrics.jsonl").read_text()
    again = train_stage(run, progress=False)
    assert again == summary and (run.path / "metrics.jsonl").read_text() == before


def test_interrupted_run_resumes_to_the_same_weights(tmp_path, micro_run_config):
    from serpent.train import train
    ref = _train_run(tmp_path / "ref", micro_run_config)
    train(ref, progress=False)
    cut = _train_run(tmp_path / "cut", micro_run_config)
    first = train(cut, progress=False, max_steps_this_call=13)   # "interrupted" after 13 steps
    assert first["steps"] == 13
    resumed = train(cut, progress=False)
    assert resumed["resumed_from"] == max(s for s in cut.checkpoint_steps() if s <= 13)
    a, b = ref.load_params(), cut.load_params()
    for k in a:
        torch.testing.assert_close(a[k], b[k], atol=0, rtol=0)
    assert [m["step"] for m in cut.metrics()] == [m["step"] for m in ref.metrics()]


def test_a_failing_compiler_falls_back_to_eager_with_the_same_weights(tmp_path, micro_run_config, monkeypatch):
    """torch.compile that breaks at the first step (e.g. no working triton on a GPU machine) must not end the run."""
    from serpent.train import train
    ref = _train_run(tmp_path / "ref", micro_run_config.with_overrides(train={"compile": "no"}))
    train(ref, progress=False)

    def broken_compile(fn, *a, **k):
        def call(*args, **kwargs):
            raise RuntimeError("triton: no working compiler found\n(long traceback)")
        return call
    monkeypatch.setattr(torch, "compile", broken_compile)
    run = _train_run(tmp_path / "run", micro_run_config.with_overrides(train={"compile": "yes"}))
    with pytest.warns(UserWarning, match="torch.compile failed at step 0.*no working compiler"):
        summary = train(run, progress=False)
    assert summary["compiled"] is False and summary["compile_error"] == "RuntimeError: triton: no working compiler found"
    a, b = ref.load_params(), run.load_params()
    for k in a:
        torch.testing.assert_close(a[k], b[k], atol=0, rtol=0)


def test_reopening_with_another_model_is_refused(tmp_path, micro_run_config):
    Run.create(tmp_path / "r", micro_run_config)
    other = micro_run_config.with_overrides(model={"d_model": 64, "d_head": 8})
    with pytest.raises(ConfigError, match="different model config"):
        Run.create(tmp_path / "r", other)
    # more steps is fine: training continues
    Run.create(tmp_path / "r", micro_run_config.with_overrides(train={"steps": 60}))


def test_cli_reports_bad_input_without_a_traceback(tmp_path, capsys):
    assert main(["run", "--preset", "tiny", "--set", "train.lr=-1", "--out", str(tmp_path / "x")]) == 2
    err = capsys.readouterr().err
    assert "train.lr" in err and "Traceback" not in err
    assert main(["induction", str(tmp_path / "nothing")]) == 2
    assert "not a run directory" in capsys.readouterr().err
    empty = tmp_path / "empty"
    empty.mkdir()
    assert main(["run", "--preset", "tiny", "--set", f"data.corpus=files:{empty}/*.txt", "--out",
                 str(tmp_path / "y"), "--stages", "data", "--quiet"]) == 2
    assert "files:" in capsys.readouterr().err


def test_pipeline_with_config_file(tmp_path, micro_run_config, capsys):
    cfg_file = tmp_path / "cfg.json"
    cfg_file.write_text(json.dumps(micro_run_config.with_overrides(train={"steps": 8}).to_dict()))
    assert main(["run", "--config", str(cfg_file), "--out", str(tmp_path / "run"), "--stages", "data", "train",
                 "--quiet"]) == 0
    out = capsys.readouterr().out
    assert "run directory" in out and "train: 8 steps" in out


def test_the_cpu_attention_trains_the_same_loss_curve_as_torchs_fused_attention(tmp_path, micro_run_config,
                                                                                monkeypatch):
    """Issue 32: the faster attention on the CPU changes the speed, not the run (same seed, float tolerance)."""
    import serpent.model as model_module
    from serpent.train import train
    runs = {}
    for name, keep in (("ours", model_module._ATTN_KEEP_ELEMENTS), ("fused", 0)):
        monkeypatch.setattr(model_module, "_ATTN_KEEP_ELEMENTS", keep)
        runs[name] = _train_run(tmp_path / name, micro_run_config)
        train(runs[name], progress=False)
    ours, fused = runs["ours"].metrics(), runs["fused"].metrics()
    assert [m["step"] for m in ours] == [m["step"] for m in fused] and len(ours) >= 3
    for a, b in zip(ours, fused):
        assert a["train_loss"] == pytest.approx(b["train_loss"], abs=2e-4)
        assert a["test_loss"] == pytest.approx(b["test_loss"], abs=2e-4)
    assert ours[-1]["test_loss"] < ours[0]["test_loss"] - 0.1   # it trained
