"""Writes ``tests/data/tl3_reference.safetensors``: what TransformerLens 3.9's ``HookedTransformer`` computed for the
course's model, recorded before serpent moved to TransformerLens 4 (issue 33). ``tests/test_tl3_reference.py``
checks that our own hooked module gives the same numbers.

Run once, with TransformerLens 3.9 installed and serpent at commit 81e58fe (the last one on TL 3)::

    PYTHONPATH=. python tests/data/make_tl3_reference.py

Recorded: the seeded initialisation of a micro model (every tensor, four architecture variants) and of the
tetrahedron-3m config (sums and first values); the per-token loss, logits and every cached activation of a perturbed
micro model on fixed tokens; the TL 3 ``state_dict`` keys (buffers included: the published checkpoints' layout) and
hook names; and, on the committed ``artifacts/cpu`` run's last checkpoint, per-token losses, attention patterns,
induction scores, ablation, patching and a seeded susceptibility run.
"""

import json
import warnings
from pathlib import Path

import torch
from safetensors.torch import save_file

warnings.simplefilter("ignore", DeprecationWarning)

from serpent.circuits import ablate_heads, patch_heads  # noqa: E402
from serpent.config import ModelConfig, SamplerConfig  # noqa: E402
from serpent.induction import induction_scores, repeated_random_tokens  # noqa: E402
from serpent.model import build_model, hooked_per_token_loss  # noqa: E402
from serpent.rundir import Run  # noqa: E402
from serpent.susceptibility import susceptibilities  # noqa: E402

HERE = Path(__file__).parent
ROOT = HERE.parent.parent
MICRO = dict(n_layers=2, n_heads=8, d_model=32, d_head=4, n_ctx=32, d_vocab=300)
VARIANTS = {"paper": {}, "standard": {"positional_embedding_type": "standard"}, "noln": {"normalization_type": None},
            "mlp": {"attn_only": False, "d_mlp": 64, "seed": 3}}


def main():
    import transformer_lens
    out, meta = {}, {"transformer_lens": transformer_lens.__version__ if hasattr(transformer_lens, "__version__")
                     else "3.9.0", "variants": json.dumps(VARIANTS)}
    tokens = torch.randint(0, 300, (3, 32), generator=torch.Generator().manual_seed(11))
    out["micro.tokens"] = tokens
    for name, kw in VARIANTS.items():
        model = build_model(ModelConfig(**{**MICRO, **kw}))
        for k, v in model.named_parameters():
            out[f"{name}.init.{k}"] = v.detach().clone()
        meta[f"{name}.param_order"] = json.dumps([k for k, _ in model.named_parameters()])
        meta[f"{name}.state_dict"] = json.dumps({k: [list(v.shape), str(v.dtype)] for k, v in model.state_dict().items()})
        meta[f"{name}.hook_names"] = json.dumps(sorted(model.hook_dict))
        g = torch.Generator().manual_seed(5)
        with torch.no_grad():
            for p in model.parameters():
                p.add_(0.05 * torch.randn(p.shape, generator=g))
        out[f"{name}.loss"] = hooked_per_token_loss(model, tokens).detach()
        logits, cache = model.run_with_cache(tokens)
        out[f"{name}.logits"] = logits.detach()
        meta[f"{name}.cache_keys"] = json.dumps(list(cache.keys()))
        if name in ("paper", "mlp"):
            for k, v in cache.items():
                out[f"{name}.cache.{k}"] = v[:1].detach().clone()   # the first sequence
        out[f"{name}.loss_mean"] = model(tokens, return_type="loss").detach()
    # the tetrahedron-3m init: too big to store, so sums and the first values of each tensor
    big = build_model(ModelConfig())
    for k, v in big.named_parameters():
        out[f"tetra.sum.{k}"] = v.detach().double().sum().reshape(1)
        out[f"tetra.head.{k}"] = v.detach().flatten()[:16].clone()
    # the committed CPU run's last checkpoint
    run = Run.open(ROOT / "artifacts" / "cpu")
    model = run.load_model()
    step = run.checkpoint_steps()[-1]
    meta["cpu.step"] = str(step)
    V, T = model.cfg.d_vocab, model.cfg.n_ctx
    toks = torch.randint(0, V, (4, T), generator=torch.Generator().manual_seed(12))
    out["cpu.tokens"] = toks
    out["cpu.loss"] = hooked_per_token_loss(model, toks).detach()
    _, cache = model.run_with_cache(toks[:2], names_filter=lambda n: n.endswith("hook_pattern"))
    for layer in (0, 1):   # the first sequence's first 64 queries (the keys after them are masked)
        out[f"cpu.pattern{layer}"] = cache["pattern", layer][0, :, :64, :64].detach().clone()
    scores = induction_scores(model, n_seqs=8, half_len=32, seed=0)
    meta["cpu.induction"] = scores.to_json(orient="split", double_precision=15)
    probe = repeated_random_tokens(8, 32, V, seed=3)
    out["cpu.probe"] = probe
    meta["cpu.ablate"] = ablate_heads(model, probe).to_json(orient="split", double_precision=15)
    meta["cpu.patch"] = patch_heads(model, probe, heads=["0:1", "1:6", "1:2"]).to_json(orient="split",
                                                                                       double_precision=15)
    data = torch.randint(0, V, (16, 48), generator=torch.Generator().manual_seed(13))
    sprobe = torch.randint(0, V, (2, 24), generator=torch.Generator().manual_seed(14))
    sampler = SamplerConfig(epsilon=1e-4, gamma=100.0, n_beta=10.0, chains=2, draws=4, batch_size=4, seed=7)
    out["cpu.sus.data"], out["cpu.sus.probe"] = data, sprobe
    for forward in ("fast", "generic"):
        res = susceptibilities(model, sprobe, lambda i: data[(4 * i) % 16:(4 * i) % 16 + 4], sampler,
                               components=["0:1", "1:6"], progress=False, device="cpu", forward=forward)
        out[f"cpu.sus.{forward}.chi"] = torch.as_tensor(res.chi)
    save_file({k: v.contiguous() for k, v in out.items()}, str(HERE / "tl3_reference.safetensors"), metadata=meta)


if __name__ == "__main__":
    main()
