import torch
import pytest

from serpent.checkpoints import (checkpoint_schedule, load_checkpoint, load_resume, load_timaeus_checkpoint,
                                 save_checkpoint, save_resume)
from serpent.config import ModelConfig
from serpent.errors import CheckpointError
from serpent.model import build_model, model_params


def test_schedule_is_dense_early_sparse_late_and_includes_ends():
    s = checkpoint_schedule(26_000, 40, 60)
    assert s[0] == 0 and s[-1] == 26_000 and s == sorted(set(s))
    early = [x for x in s if x <= 1000]
    late = [x for x in s if x > 25_000]
    assert len(early) > 10 * max(1, len(late)) / 3
    assert checkpoint_schedule(10, 0, 0) == [0, 10]


def test_round_trip_exact(tmp_path, micro_model_cfg):
    params = model_params(build_model(micro_model_cfg))
    save_checkpoint(tmp_path / "c.safetensors", params, 42, micro_model_cfg)
    loaded, meta = load_checkpoint(tmp_path / "c.safetensors", micro_model_cfg)
    assert meta["step"] == 42
    assert set(loaded) == set(params)
    for k in params:
        assert torch.equal(loaded[k], params[k].detach())
    # bf16 artifacts load back (as fp32) with small error
    save_checkpoint(tmp_path / "b.safetensors", params, 1, micro_model_cfg, dtype=torch.bfloat16)
    b, _ = load_checkpoint(tmp_path / "b.safetensors", micro_model_cfg)
    assert b["embed.W_E"].dtype == torch.float32
    torch.testing.assert_close(b["embed.W_E"], params["embed.W_E"].detach(), atol=1e-2, rtol=1e-2)


def test_corrupt_truncated_and_foreign_files_give_clear_errors(tmp_path, micro_model_cfg):
    params = model_params(build_model(micro_model_cfg))
    good = tmp_path / "good.safetensors"
    save_checkpoint(good, params, 1, micro_model_cfg)
    data = good.read_bytes()
    (tmp_path / "trunc.safetensors").write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError, match="corrupt"):
        load_checkpoint(tmp_path / "trunc.safetensors", micro_model_cfg)
    (tmp_path / "tiny.safetensors").write_bytes(b"abc")
    with pytest.raises(CheckpointError, match="truncated"):
        load_checkpoint(tmp_path / "tiny.safetensors")
    (tmp_path / "garbage.safetensors").write_bytes(b"\x10\x00\x00\x00\x00\x00\x00\x00{not json!!!!!!!")
    with pytest.raises(CheckpointError, match="corrupt header"):
        load_checkpoint(tmp_path / "garbage.safetensors")
    other = ModelConfig(**{**micro_model_cfg.to_dict(), "d_model": 48, "d_head": 6})
    with pytest.raises(CheckpointError, match="different model config"):
        load_checkpoint(good, other)
    torch.save({"x": torch.zeros(2)}, tmp_path / "model.pth")
    with pytest.raises(CheckpointError, match="not a safetensors file"):
        load_checkpoint(tmp_path / "model.pth")
    with pytest.raises(CheckpointError, match="does not exist"):
        load_checkpoint(tmp_path / "missing.safetensors")


def test_resume_state_round_trip(tmp_path, micro_model_cfg):
    model = build_model(micro_model_cfg)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-2)
    model(torch.randint(0, 300, (2, 8)), return_type="loss").backward()
    opt.step()
    save_resume(tmp_path / "r.safetensors", opt, 7, {"scale": 2.0})
    opt2 = torch.optim.AdamW(model.parameters(), lr=5.0)
    step, extra = load_resume(tmp_path / "r.safetensors", opt2)
    assert step == 7 and extra == {"scale": 2.0}
    s1, s2 = opt.state_dict(), opt2.state_dict()
    assert s2["param_groups"][0]["lr"] == 1e-2
    for i in s1["state"]:
        for k in ("exp_avg", "exp_avg_sq"):
            assert torch.equal(s1["state"][i][k], s2["state"][i][k])


def _timaeus_layout(model) -> dict:
    """A state dict as written by the paper's training code (TransformerLens 3 names, with each attention layer's
    ``mask`` and ``IGNORE`` buffers, which our TransformerLens 4 module does not keep)."""
    sd = {k: v.detach().clone() for k, v in model.state_dict().items()}
    for layer in range(model.cfg.n_layers):
        sd[f"blocks.{layer}.attn.mask"] = torch.ones(model.cfg.n_ctx, model.cfg.n_ctx, dtype=torch.bool).tril()
        sd[f"blocks.{layer}.attn.IGNORE"] = torch.tensor(-float("inf"))
    return sd


def test_published_checkpoint_layout_loads_and_maps(tmp_path, micro_model_cfg):
    model = build_model(micro_model_cfg)
    sd = _timaeus_layout(model)
    assert any(k.endswith("mask") or k.endswith("IGNORE") for k in sd)  # buffers are present in that layout
    torch.save(sd, tmp_path / "checkpoint_0001000.pth")
    params = load_timaeus_checkpoint(tmp_path / "checkpoint_0001000.pth", micro_model_cfg)
    for k, v in model_params(model).items():
        assert torch.equal(params[k], v.detach())
    # wrapped in a dict and compiled-module prefixes are accepted too
    torch.save({"model": {"_orig_mod." + k: v for k, v in sd.items()}}, tmp_path / "wrapped.pth")
    assert set(load_timaeus_checkpoint(tmp_path / "wrapped.pth", micro_model_cfg)) == set(params)


def test_published_loader_refuses_pickled_objects_and_foreign_models(tmp_path, micro_model_cfg):
    class Evil:
        def __reduce__(self):
            return (print, ("this must never run",))
    torch.save({"model": Evil()}, tmp_path / "evil.pth")
    with pytest.raises(CheckpointError, match="refuse to unpickle"):
        load_timaeus_checkpoint(tmp_path / "evil.pth", micro_model_cfg)
    torch.save({"embed.W_E": torch.zeros(3, 3)}, tmp_path / "foreign.pth")
    with pytest.raises(CheckpointError, match="another model"):
        load_timaeus_checkpoint(tmp_path / "foreign.pth", micro_model_cfg)
    (tmp_path / "junk.pth").write_bytes(b"not a zip file at all")
    with pytest.raises(CheckpointError):
        load_timaeus_checkpoint(tmp_path / "junk.pth", micro_model_cfg)


def test_the_header_check_refuses_what_loading_would_and_never_unpickles(tmp_path, micro_model_cfg, monkeypatch):
    """Issue 37 item 4: `check_checkpoint` reads the header only (no tensor), finds a truncated, renamed, foreign or
    padded file from it, and names the file; a pickle renamed `.safetensors` is refused from its first bytes."""
    import pickle
    from safetensors.torch import save_file
    from serpent.checkpoints import check_checkpoint

    params = model_params(build_model(micro_model_cfg))
    good = tmp_path / "step_0000001.safetensors"
    save_checkpoint(good, params, 1, micro_model_cfg)
    assert check_checkpoint(good, micro_model_cfg) == {"step": 1, "model_config": micro_model_cfg.to_dict()}
    import serpent.checkpoints as ck
    monkeypatch.setattr(ck, "load_file", lambda *a, **k: pytest.fail("the header check read the tensors"))
    data = good.read_bytes()

    class Evil:
        def __reduce__(self):
            return (pytest.fail, ("a checkpoint was unpickled",))

    cases = {
        "cut.safetensors": (data[:-3], "truncated or corrupt"),                 # the last tensor is 3 bytes short
        "padded.safetensors": (data + b"\0" * 16, "truncated or corrupt"),
        "header_cut.safetensors": (data[:40], "truncated or corrupt"),
        "zip.safetensors": (None, "not a safetensors file"),                    # torch.save's zip, renamed
        "pickle.safetensors": (pickle.dumps({"w": Evil()}, protocol=2), "not a safetensors file"),
        "text.safetensors": (b"these are not the weights you are looking for", "not a safetensors file"),
    }
    for name, (blob, message) in cases.items():
        f = tmp_path / name
        if blob is None:
            torch.save({k: v.detach() for k, v in params.items()}, f)
        else:
            f.write_bytes(blob)
        with pytest.raises(CheckpointError, match=message) as e:
            check_checkpoint(f, micro_model_cfg)
        assert name in str(e.value) and "\n" not in str(e.value)
    foreign = tmp_path / "foreign.safetensors"                  # safetensors, but not ours: no format in its header
    save_file({k: v.detach().contiguous() for k, v in params.items()}, str(foreign))
    with pytest.raises(CheckpointError, match="not a serpent checkpoint"):
        check_checkpoint(foreign, micro_model_cfg)
    other = ModelConfig(**{**micro_model_cfg.to_dict(), "n_heads": 4, "d_head": 8})
    with pytest.raises(CheckpointError, match="different model config"):
        check_checkpoint(good, other)
    ints = tmp_path / "ints.safetensors"                         # our header, but integer tensors
    save_checkpoint(ints, {k: v.detach().long() for k, v in params.items()}, 1, micro_model_cfg)
    with pytest.raises(CheckpointError, match="stored as 'I64'"):
        check_checkpoint(ints, micro_model_cfg)
    renamed = tmp_path / "renamed.safetensors"                   # the right config in the header, other weights
    save_checkpoint(renamed, {**{k: v for k, v in params.items() if k != "embed.W_E"}, "embed.W_F": params["embed.W_E"]},
                    1, micro_model_cfg)
    with pytest.raises(CheckpointError, match="does not hold this model's parameters"):
        check_checkpoint(renamed, micro_model_cfg)
    # a real checkpoint whose header length starts with the byte a pickle starts with (0x80) is still read
    import json
    from safetensors.torch import save
    from serpent.checkpoints import FORMAT
    tensors = {k: v.detach().contiguous() for k, v in params.items()}
    for pad in range(600):
        blob = save(tensors, metadata={"format": FORMAT, "step": "1", "pad": "x" * pad,
                                       "model_config": json.dumps(micro_model_cfg.to_dict(), sort_keys=True)})
        if blob[0] == 0x80:
            break
    (tmp_path / "odd.safetensors").write_bytes(blob)
    assert blob[0] == 0x80 and check_checkpoint(tmp_path / "odd.safetensors", micro_model_cfg)["step"] == 1
