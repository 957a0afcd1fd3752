"""Nothing lost in the move to TransformerLens 4 (issue 33): our hooked module against what TransformerLens 3.9's
``HookedTransformer`` computed (``tests/data/tl3_reference.safetensors``, written by
``tests/data/make_tl3_reference.py`` before the switch).

The seeded initialisation, per-token losses, logits and every cached activation of four architecture variants; the
committed ``artifacts/cpu`` run's losses, attention patterns, induction scores, ablation, patching and a seeded
susceptibility run (fast and generic forward); and the published checkpoints' layout (TL 3 state dicts with their
``mask`` and ``IGNORE`` buffers).
"""

import io
import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from safetensors import safe_open

from serpent.checkpoints import load_timaeus_checkpoint
from serpent.circuits import ablate_heads, patch_heads
from serpent.config import ModelConfig, SamplerConfig
from serpent.induction import induction_scores
from serpent.model import build_model, hooked_per_token_loss
from serpent.rundir import Run

ROOT = Path(__file__).resolve().parent.parent
REF = Path(__file__).parent / "data" / "tl3_reference.safetensors"
MICRO = dict(n_layers=2, n_heads=8, d_model=32, d_head=4, n_ctx=32, d_vocab=300)


@pytest.fixture(scope="module")
def ref():
    with safe_open(str(REF), "pt") as f:
        return {k: f.get_tensor(k) for k in f.keys()}, f.metadata()


def _close(a, b, what):
    torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6, msg=lambda m: f"{what}: {m}")


@pytest.mark.parametrize("variant", ["paper", "standard", "noln", "mlp"])
def test_init_losses_and_activations_match_transformer_lens_3(ref, variant):
    t, meta = ref
    model = build_model(ModelConfig(**{**MICRO, **json.loads(meta["variants"])[variant]}))
    # the same parameters in the same order, drawn from the same seed: bit for bit
    assert [k for k, _ in model.named_parameters()] == json.loads(meta[f"{variant}.param_order"])
    for k, v in model.named_parameters():
        assert torch.equal(v.detach(), t[f"{variant}.init.{k}"]), f"{variant}: init of {k}"
    g = torch.Generator().manual_seed(5)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.05 * torch.randn(p.shape, generator=g))
    tokens = t["micro.tokens"]
    _close(hooked_per_token_loss(model, tokens), t[f"{variant}.loss"], f"{variant} per-token loss")
    _close(model(tokens, return_type="loss"), t[f"{variant}.loss_mean"], f"{variant} mean loss")
    logits, cache = model.run_with_cache(tokens)
    _close(logits, t[f"{variant}.logits"], f"{variant} logits")
    # the hooks that fire are TransformerLens 3's, in its order
    assert list(cache.keys()) == json.loads(meta[f"{variant}.cache_keys"])
    if variant in ("paper", "mlp"):
        for k in cache.keys():
            _close(cache[k][:1], t[f"{variant}.cache.{k}"], f"{variant} activation {k}")
        assert torch.equal(cache["pattern", 1], cache["blocks.1.attn.hook_pattern"])   # ActivationCache shorthands
        assert torch.equal(cache["resid_post", -1], cache["blocks.1.hook_resid_post"])


def test_tetrahedron_3m_init_matches_transformer_lens_3(ref):
    t, _ = ref
    with torch.random.fork_rng():
        model = build_model(ModelConfig())
    for k, v in model.named_parameters():
        assert torch.equal(v.detach().flatten()[:16], t[f"tetra.head.{k}"]), k
        assert abs(v.detach().double().sum().item() - t[f"tetra.sum.{k}"].item()) < 1e-9, k


@pytest.fixture(scope="module")
def cpu_model():
    run = Run.open(ROOT / "artifacts" / "cpu")
    return run, run.load_model()


def _frame(meta, key):
    return pd.read_json(io.StringIO(meta[key]), orient="split")


def test_committed_cpu_checkpoint_gives_transformer_lens_3s_numbers(ref, cpu_model):
    t, meta = ref
    run, model = cpu_model
    assert run.checkpoint_steps()[-1] == int(meta["cpu.step"])
    _close(hooked_per_token_loss(model, t["cpu.tokens"]), t["cpu.loss"], "cpu checkpoint per-token loss")
    _, cache = model.run_with_cache(t["cpu.tokens"][:2], names_filter=lambda n: n.endswith("hook_pattern"))
    for layer in (0, 1):
        _close(cache["pattern", layer][0, :, :64, :64], t[f"cpu.pattern{layer}"], f"cpu pattern of layer {layer}")
    got = induction_scores(model, n_seqs=8, half_len=32, seed=0)
    want = _frame(meta, "cpu.induction")
    assert list(got["head"]) == list(want["head"]) and list(got["score"]) == list(want["score"])
    np.testing.assert_allclose(got["value"], want["value"], rtol=1e-5, atol=1e-7)
    probe = t["cpu.probe"]
    for name, got in (("ablate", ablate_heads(model, probe)),
                      ("patch", patch_heads(model, probe, heads=["0:1", "1:6", "1:2"]))):
        want = _frame(meta, f"cpu.{name}")
        assert list(got["head"]) == list(want["head"])
        for col in want.columns[1:]:
            np.testing.assert_allclose(got[col], want[col], rtol=1e-5, atol=1e-6, err_msg=f"{name} {col}")


@pytest.mark.parametrize("forward", ["fast", "generic"])
def test_committed_cpu_checkpoint_gives_transformer_lens_3s_susceptibilities(ref, cpu_model, forward):
    from serpent.susceptibility import susceptibilities
    t, _ = ref
    _, model = cpu_model
    data = t["cpu.sus.data"]
    sampler = SamplerConfig(epsilon=1e-4, gamma=100.0, n_beta=10.0, chains=2, draws=4, batch_size=4, seed=7)
    res = susceptibilities(model, t["cpu.sus.probe"], lambda i: data[(4 * i) % 16:(4 * i) % 16 + 4], sampler,
                           components=["0:1", "1:6"], progress=False, device="cpu", forward=forward)
    want = t[f"cpu.sus.{forward}.chi"].numpy()
    np.testing.assert_allclose(res.chi, want, rtol=1e-4, atol=1e-5 * np.abs(want).max())


def test_published_layout_with_transformer_lens_3_buffers_loads(ref, cpu_model, tmp_path):
    t, meta = ref
    run, model = cpu_model
    params = run.load_params()
    # a TL 3 state dict as the paper's training code wrote it: parameters and each block's mask and IGNORE buffers
    layout = json.loads(meta["paper.state_dict"])
    buffers = [k for k in layout if k.endswith((".mask", ".IGNORE"))]
    assert buffers, "TL 3's state dict has buffers"
    sd = dict(params)
    for k in buffers:
        sd[k] = torch.tensor(-float("inf")) if k.endswith("IGNORE") else torch.ones(0, 0, dtype=torch.bool)
    torch.save(sd, tmp_path / "checkpoint_0042000.pth")
    loaded = load_timaeus_checkpoint(tmp_path / "checkpoint_0042000.pth", run.config.model)
    fresh = build_model(run.config.model)
    fresh.load_state_dict(loaded, strict=True)
    _close(hooked_per_token_loss(fresh, t["cpu.tokens"]), t["cpu.loss"], "published layout per-token loss")
