import json

import pytest

from serpent.cli import parse_overrides
from serpent.config import (PRESETS, DataConfig, EmbeddingConfig, ModelConfig, RunConfig, SamplerConfig,
                            SusceptibilityConfig, TrainConfig, config_hash, get_preset)
from serpent.errors import ConfigError


@pytest.mark.parametrize("name", sorted(PRESETS))
def test_presets_round_trip_through_json(name):
    cfg = get_preset(name)
    again = RunConfig.from_dict(json.loads(cfg.to_json()))
    assert again == cfg
    assert config_hash(again) == config_hash(cfg)
    assert cfg.model.n_layers * cfg.model.n_heads == 16  # one susceptibility per head: 16 numbers


def test_paper_preset_is_the_tetrahedron_recipe():
    c = get_preset("paper")
    m, t = c.model, c.train
    assert (m.n_layers, m.n_heads, m.d_model, m.d_head, m.n_ctx, m.d_vocab) == (2, 8, 256, 32, 1024, 5000)
    assert m.positional_embedding_type == "shortformer" and m.normalization_type == "LN" and m.attn_only
    assert (t.lr, t.weight_decay, t.batch_size, t.steps, t.warmup_steps) == (1e-3, 0.05, 100, 50_000, 0)


@pytest.mark.parametrize("build, field", [
    (lambda: ModelConfig(n_heads=0), "model.n_heads"),
    (lambda: ModelConfig(positional_embedding_type="rotary"), "model.positional_embedding_type"),
    (lambda: ModelConfig(attn_only=False, d_mlp=None), "model.d_mlp"),
    (lambda: DataConfig(corpus="wikipedia"), "data.corpus"),
    (lambda: DataConfig(test_fraction=0.9), "data.test_fraction"),
    (lambda: TrainConfig(lr=-1.0), "train.lr"),
    (lambda: TrainConfig(lr=float("nan")), "train.lr"),
    (lambda: TrainConfig(precision="fp8"), "train.precision"),
    (lambda: SamplerConfig(epsilon=0.0), "sampler.epsilon"),
    (lambda: SamplerConfig(chains=0), "sampler.chains"),
    (lambda: SamplerConfig(draws=2.5), "sampler.draws"),
    (lambda: SusceptibilityConfig(probe_sequences=0), "susceptibility.probe_sequences"),
    (lambda: EmbeddingConfig(preprocess="tsne"), "embedding.preprocess"),
])
def test_invalid_fields_name_the_field_and_what_is_allowed(build, field):
    with pytest.raises(ConfigError) as e:
        build()
    msg = str(e.value)
    assert msg.startswith(field + ":"), msg
    assert "got" in msg and ("allowed" in msg or "must" in msg)


def test_probe_longer_than_context_is_refused():
    with pytest.raises(ConfigError, match="n_ctx"):
        get_preset("tiny", susceptibility={"probe_length": 4096})


def test_unknown_fields_and_sections_are_refused():
    with pytest.raises(ConfigError, match="unknown field"):
        get_preset("tiny", train={"stepz": 3})
    with pytest.raises(ConfigError, match="unknown section"):
        get_preset("tiny", optimiser={"lr": 3})
    with pytest.raises(ConfigError, match="preset"):
        get_preset("huge")
    with pytest.raises(ConfigError, match="unknown field"):
        RunConfig.from_dict({"model": {}, "colour": 1})


def test_overrides_and_cli_parsing():
    cfg = get_preset("tiny", **parse_overrides(["train.steps=7", "llc.sampler.epsilon=0.01", "data.corpus=stdlib"]))
    assert cfg.train.steps == 7 and cfg.llc.sampler.epsilon == 0.01 and cfg.data.corpus == "stdlib"
    for bad in (["steps"], ["=7"], ["train.=7"], ["train..steps=7"]):
        with pytest.raises(ConfigError, match="SECTION.FIELD=VALUE"):
            parse_overrides(bad)
    with pytest.raises(ConfigError, match="unknown section 'steps'"):
        get_preset("tiny", **parse_overrides(["steps=7"]))


def test_nested_and_top_level_overrides():
    cfg = get_preset("tiny", **parse_overrides(["susceptibility.sampler.draws=9", "susceptibility.probe_sequences=3",
                                                "susceptibility.sampler.checkpoints=5"]))
    assert cfg.susceptibility.sampler.draws == 9 and cfg.susceptibility.probe_sequences == 3
    assert cfg.susceptibility.sampler.checkpoints == 5
    assert cfg.susceptibility.sampler.chains == get_preset("tiny").susceptibility.sampler.chains  # others kept
    with pytest.raises(ConfigError, match=r"susceptibility.sampler: unknown field.*'drawz'.*allowed fields.*draws"):
        get_preset("tiny", susceptibility={"sampler.drawz": 9})
    with pytest.raises(ConfigError, match="'probe_length' is not a section"):
        get_preset("tiny", susceptibility={"probe_length.x": 9})
    with pytest.raises(ConfigError, match="set its fields"):
        get_preset("tiny", **parse_overrides(["train=7"]))
    with pytest.raises(ConfigError, match="draws"):   # the nested value is still validated
        get_preset("tiny", **parse_overrides(["susceptibility.sampler.draws=0"]))


def test_cpu_preset_reaches_the_predicted_induction_onset_without_memorising():
    """The `cpu` preset is tiny's architecture trained past the induction onset that Aoyama et al.'s fit predicts
    for its batch and context, on a corpus sample large enough to be read about once."""
    from serpent.milestones import predicted_induction_onset
    cpu, tiny = get_preset("cpu"), get_preset("tiny")
    assert cpu.model == tiny.model
    t = cpu.train
    budget = t.steps * t.batch_size * cpu.model.n_ctx
    assert budget >= 3 * predicted_induction_onset(t.batch_size, cpu.model.n_ctx)
    # ~0.36 tokens per byte with the 2k BPE on Python source (measured: 91 M tokens from 250 MB)
    assert budget <= 1.2 * 0.36 * cpu.data.max_bytes * (1 - cpu.data.test_fraction)
    assert cpu.llc.sampler.checkpoints >= 16 and cpu.susceptibility.sampler.checkpoints >= 8


def test_reading_note_warns_before_training_when_the_sample_is_read_many_times():
    from serpent.stages import reading_note
    cfg = get_preset("tiny")                                  # 2.46 M training tokens a run
    assert not reading_note(cfg, 2_000_000).startswith("warning")           # 1.2 passes
    note = reading_note(cfg, 100_000)                                        # 24.6 passes: memorised
    assert note.startswith("warning") and "24.58 passes" in note
    assert "data.max_bytes (now 6,000,000) to about 49,152,000" in note and "train.steps (now 1,200)" in note


def test_induction_settings_are_a_section_of_the_run_config(tmp_path):
    """--set induction.FIELD=VALUE reaches the induction stage (it used to read a field that did not exist), bad
    values are named, and a config saved before the section existed still loads with the defaults."""
    from serpent.cli import parse_overrides
    from serpent.config import InductionConfig
    from serpent.stages.induction import _settings
    from serpent.rundir import Run
    cfg = get_preset("tiny").with_overrides(**parse_overrides(["induction.n_seqs=8", "induction.half_len=20"]))
    assert (cfg.induction.n_seqs, cfg.induction.half_len) == (8, 20)
    run = Run.create(tmp_path / "r", cfg)
    assert _settings(Run.open(run.path)) == cfg.induction           # saved in config.json, read back by the stage
    with pytest.raises(ConfigError, match="induction.n_seqs"):
        get_preset("tiny").with_overrides(induction={"n_seqs": 0})
    old = get_preset("tiny").to_dict()
    del old["induction"]
    assert RunConfig.from_dict(old).induction == InductionConfig()


def test_one_checkpoints_field_per_sampler_and_older_configs_still_load():
    """Issue 19 item 4: how many checkpoints the susceptibility stage analyses is `susceptibility.sampler.checkpoints`,
    as the LLC's is `llc.sampler.checkpoints`. Configs written before (the committed cpu artifacts) load with the same
    meaning, and the old override name says which one replaced it."""
    import json
    from pathlib import Path
    from serpent.config import RunConfig
    from serpent.stages.susceptibility import _stage_key

    old = json.loads((Path(__file__).parents[1] / "artifacts" / "cpu" / "config.json").read_text())
    assert old["susceptibility_checkpoints"] == 8          # written by an earlier version
    cfg = RunConfig.from_dict(old)
    assert cfg.susceptibility.sampler.checkpoints == 8 and cfg == get_preset("cpu")
    assert "susceptibility_checkpoints" not in cfg.to_dict()
    with pytest.raises(ConfigError, match=r"susceptibility\.sampler\.checkpoints=3"):
        get_preset("tiny", **parse_overrides(["susceptibility_checkpoints=3"]))
    with pytest.raises(ConfigError, match="checkpoints"):
        get_preset("tiny", susceptibility={"sampler.checkpoints": -1})
    # which checkpoints are analysed does not change one checkpoint's result: its cache key ignores the count
    tiny = get_preset("tiny")
    assert _stage_key(tiny) == _stage_key(tiny.with_overrides(susceptibility={"sampler.checkpoints": 9}))
    assert _stage_key(tiny) != _stage_key(tiny.with_overrides(susceptibility={"sampler.draws": 9}))
    from serpent.susceptibility import SusceptibilityResult       # and results computed before the move stay valid
    kept = sorted((Path(__file__).parents[1] / "artifacts" / "cpu" / "susceptibility").glob("step_*.safetensors"))
    assert kept and SusceptibilityResult.load(kept[-1]).settings["key"] == _stage_key(cfg)


def test_the_llc_sampler_sits_under_llc_sampler_and_older_configs_still_load():
    """Issue 35 item 4b: the LLC's sampler settings are `llc.sampler.*`, as the susceptibilities' are
    `susceptibility.sampler.*`. A config written before (a run directory's config.json, the committed cpu artifacts)
    loads with the same meaning; the old override names say which name replaced them."""
    import json
    from pathlib import Path
    from serpent.config import LLCConfig, RunConfig
    old = json.loads((Path(__file__).parents[1] / "artifacts" / "cpu" / "config.json").read_text())
    assert "draws" in old["llc"] and "sampler" not in old["llc"]           # written by an earlier version
    cfg = RunConfig.from_dict(old)
    assert cfg.llc.sampler == SamplerConfig(**old["llc"]) and cfg == get_preset("cpu")
    assert set(cfg.to_dict()["llc"]) == {"sampler"} and RunConfig.from_dict(cfg.to_dict()) == cfg
    assert isinstance(cfg.llc, LLCConfig) and cfg.llc.sampler.draws == old["llc"]["draws"] == 50
    for old_name in ("llc.draws=8", "llc.epsilon=0.01", "llc.checkpoints=3"):
        field_name = old_name.split("=")[0].split(".")[1]
        with pytest.raises(ConfigError, match=rf"llc\.{field_name} is now llc\.sampler\.{field_name}.*"
                                              rf"--set llc\.sampler\.{old_name.split('.', 1)[1]}"):
            get_preset("tiny", **parse_overrides([old_name]))
    assert get_preset("tiny", **parse_overrides(["llc.sampler.draws=8"])).llc.sampler.draws == 8
    with pytest.raises(ConfigError, match=r"llc\.sampler\.draws: got 0"):
        get_preset("tiny", **parse_overrides(["llc.sampler.draws=0"]))
    with pytest.raises(ConfigError, match=r"llc\.sampler\.draws: got 0"):
        RunConfig.from_dict({"llc": {"draws": 0}})                           # an old file, named the new way
