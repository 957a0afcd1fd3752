import pytest
import torch

from serpent.config import ModelConfig
from serpent.errors import ConfigError
from serpent.model import (ReplicaParams, build_model, head_param_names, hooked_per_token_loss, linear_cross_entropy,
                           model_params, per_token_loss, stack_params, supports_fast_path)
from tolerances import assert_f32_close, assert_separates, forward_terms


@pytest.mark.parametrize("kwargs", [
    {},                                                   # the paper's family: shortformer + LN, attention-only
    {"positional_embedding_type": "standard"},
    {"normalization_type": None},
    {"attn_only": False, "d_mlp": 64},
    {"attn_only": False, "d_mlp": 64, "act_fn": "gelu_new"},
])
def test_fast_path_matches_hooked_transformer(kwargs, micro_model_cfg):
    cfg = ModelConfig(**{**micro_model_cfg.to_dict(), **kwargs})
    model = build_model(cfg)
    # move weights off their init so biases and LN params matter
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.05 * torch.randn_like(p))
    assert supports_fast_path(model)
    tokens = torch.randint(0, cfg.d_vocab, (3, cfg.n_ctx))
    fast = per_token_loss(model_params(model), tokens, cfg)
    ref = hooked_per_token_loss(model, tokens)
    assert fast.shape == (3, cfg.n_ctx - 1)
    # per-token losses through the same mathematics in another order (tests/tolerances.py)
    _, tol = assert_f32_close(fast, ref, terms=forward_terms(cfg), what=f"fast vs TransformerLens {kwargs}")
    assert_separates(fast[:, 1:] - fast[:, :-1], tol, what="neighbouring tokens' losses")
    # gradients agree too: back through the same chain and summed over the batch's 3 x 31 tokens
    g_fast = torch.autograd.grad(fast.mean(), list(model.parameters()))
    g_ref = torch.autograd.grad(hooked_per_token_loss(model, tokens).mean(), list(model.parameters()))
    # (scale: the model's largest gradient entry, since an entry's terms can cancel: the key bias's is 0 exactly)
    g_scale = max(g.abs().max().item() for g in g_ref)
    for (name, _), a, b in zip(model.named_parameters(), g_fast, g_ref):
        assert_f32_close(a, b, terms=forward_terms(cfg) + 3 * (cfg.n_ctx - 1), scale=g_scale,
                         what=f"gradient of {name} {kwargs}")


def test_stacked_replicas_are_independent_models(micro_model_cfg):
    cfg = micro_model_cfg
    model = build_model(cfg)
    params = model_params(model)
    stacked = stack_params(params, 3)
    with torch.no_grad():
        stacked["blocks.1.attn.W_V"][2].mul_(3.0)
    tokens = torch.randint(0, cfg.d_vocab, (2, cfg.n_ctx))
    out = per_token_loss(stacked, tokens, cfg)
    ref = hooked_per_token_loss(model, tokens)
    assert out.shape == (3, 2, cfg.n_ctx - 1)
    terms = forward_terms(cfg)
    assert_f32_close(out[0], ref, terms=terms, what="replica 0 vs TransformerLens")
    _, tol = assert_f32_close(out[1], ref, terms=terms, what="replica 1 vs TransformerLens")
    assert_separates(out[2] - ref, tol, what="the perturbed replica")  # the perturbed replica differs
    # per-replica token batches
    tok3 = torch.randint(0, cfg.d_vocab, (3, 2, cfg.n_ctx))
    out3 = per_token_loss(stacked, tok3, cfg)
    assert_f32_close(out3[1], hooked_per_token_loss(model, tok3[1]), terms=terms, what="own tokens vs TransformerLens")


@pytest.mark.parametrize("kwargs", [{}, {"positional_embedding_type": "standard"}, {"normalization_type": None},
                                    {"attn_only": False, "d_mlp": 64}])
def test_rows_that_share_frozen_weights_share_work_with_the_same_numbers(kwargs):
    # the layout of a head sweep: rows 0-1 free everywhere ("full"), rows 2-3 move layer 0 only, rows 4-5 layer 1
    cfg = ModelConfig(n_layers=2, n_heads=4, d_model=16, d_head=4, n_ctx=12, d_vocab=50, **kwargs)
    torch.manual_seed(0)
    base = stack_params(model_params(build_model(cfg)), 6)
    free = {}
    for name, t in base.items():
        rows = (0, 6) if name.startswith("blocks.1.") else (0, 4) if name.startswith("blocks.0.") else (0, 2)
        free[name] = rows
        with torch.no_grad():
            t[rows[0]:rows[1]] += 0.3 * torch.randn_like(t[rows[0]:rows[1]])
    tokens = torch.randint(0, cfg.d_vocab, (3, cfg.n_ctx))
    plain = {k: v.clone().requires_grad_(True) for k, v in base.items()}
    shared = ReplicaParams({k: v.clone().requires_grad_(True) for k, v in base.items()}, free)
    a, b = per_token_loss(plain, tokens, cfg), per_token_loss(shared, tokens, cfg)
    terms = forward_terms(cfg)
    assert_f32_close(b, a, terms=terms, what=f"shared rows vs plain {kwargs}")
    ga = torch.autograd.grad(a.sum(), list(plain.values()))
    gb = torch.autograd.grad(b.sum(), list(shared.values()), allow_unused=True, materialize_grads=True)
    g_scale = max(g.abs().max().item() for g in ga)
    for name, x, y in zip(plain, ga, gb):
        lo, hi = free[name]
        assert_f32_close(y[lo:hi], x[lo:hi], terms=terms + 3 * (cfg.n_ctx - 1), scale=g_scale,
                         what=f"gradient of {name} {kwargs}")
    # the rows past a parameter's range got no gradient: their work was shared or skipped
    assert gb[list(shared).index("unembed.W_U")][2:].abs().max() == 0
    assert gb[list(shared).index("embed.W_E")][2:].abs().max() == 0
    # tokens that differ between replicas: nothing can be shared, and the answer is still right
    tok6 = torch.randint(0, cfg.d_vocab, (6, 3, cfg.n_ctx))
    assert_f32_close(per_token_loss(shared, tok6, cfg), per_token_loss(plain, tok6, cfg), terms=terms,
                     what=f"shared rows vs plain, own tokens {kwargs}")


@pytest.mark.parametrize("kwargs", [{}, {"positional_embedding_type": "standard"}, {"normalization_type": None},
                                    {"attn_only": False, "d_mlp": 64}])
@pytest.mark.parametrize("order", [("full", "0:1", "0:3", "1:0", "1:2"),       # a head sweep's order
                                   ("full", "1:0", "0:1", "1:2")])             # rows moving no head of layer 0
def test_rows_that_move_one_head_run_that_head_only_with_the_same_numbers(kwargs, order, monkeypatch):
    # two chains per restriction, as the sampler lays them out; each head row moves its own head's weights only
    import serpent.model
    from serpent.sgld import _Layout, make_restriction
    cfg = ModelConfig(n_layers=2, n_heads=4, d_model=16, d_head=4, n_ctx=12, d_vocab=50, **kwargs)
    torch.manual_seed(0)
    w0 = {k: v.detach() for k, v in model_params(build_model(cfg)).items()}
    restrictions = [make_restriction(s, w0) for s in order]
    layout = _Layout(w0, restrictions, 2, torch.device("cpu"), type("F", (), {"shares_frozen_rows": True})())
    buf = layout.start()
    buf += 0.3 * torch.randn_like(buf) * (layout.mask.reshape(len(order), 1, -1).expand(-1, 2, -1)
                                          .reshape(buf.shape))
    shared = layout.views(buf.clone().requires_grad_(True))
    assert shared.heads[0][2:4] == ((1, 1) if order[1] == "0:1" else (-1, -1))
    plain = {k: v.detach().clone().requires_grad_(True) for k, v in shared.items()}
    calls = []
    real = serpent.model._one_head_rows
    monkeypatch.setattr(serpent.model, "_one_head_rows", lambda *a: calls.append(a[1:3]) or real(*a))
    tokens = torch.randint(0, cfg.d_vocab, (3, cfg.n_ctx))
    a, b = per_token_loss(plain, tokens, cfg), per_token_loss(shared, tokens, cfg)
    assert len(calls) == 2                    # both layers took the one-head path
    terms = forward_terms(cfg)
    assert_f32_close(b, a, terms=terms, what=f"one-head rows vs plain {kwargs} {order}")
    ga = torch.autograd.grad(a.sum(), [plain[n] for n in layout.active])
    gb = torch.autograd.grad(b.sum(), [shared[n] for n in layout.active], allow_unused=True, materialize_grads=True)
    g_scale = max(g.abs().max().item() for g in ga)
    mask = layout.mask.reshape(len(order), 1, -1).expand(-1, 2, -1).reshape(buf.shape)
    for (name, x, y), mk in zip(zip(layout.active, ga, gb), mask.split(layout.sizes, dim=1)):
        mk = mk.reshape(x.shape).bool()         # the gradient the sampler uses: the free weights of each row
        assert_f32_close(y[mk], x[mk], terms=terms + 3 * (cfg.n_ctx - 1), scale=g_scale,
                         what=f"gradient of {name} {kwargs} {order}")


@pytest.mark.parametrize("keep_probs", [True, False])
@pytest.mark.parametrize("blocks", ["tokens", "replicas"])
def test_linear_cross_entropy_matches_dense_and_its_gradient(keep_probs, blocks, monkeypatch):
    import serpent.model
    if not keep_probs:  # force the recompute-in-backward path used for large inputs
        monkeypatch.setattr(serpent.model, "_KEEP_PROBS_ELEMENTS", 0)
    chunk = 10                                  # blocks of 10 tokens of one replica, the last one shorter
    if blocks == "replicas":                    # blocks of 2 whole replicas (37 tokens each), the last one alone
        monkeypatch.setattr(serpent.model, "_CE_BLOCK_ELEMENTS", 80 * 50)
        chunk = 1000
    R = 5
    torch.manual_seed(0)
    x = torch.randn(R, 37, 8, requires_grad=True)
    W = torch.randn(R, 8, 50, requires_grad=True)
    b = torch.randn(R, 50, requires_grad=True)
    t = torch.randint(0, 50, (R, 37))
    assert len(list(serpent.model._ce_blocks(R, 37, 50, chunk))) == (R * 4 if blocks == "tokens" else 3)
    ours = linear_cross_entropy(x, W, b, t, chunk=chunk)
    dense = torch.nn.functional.cross_entropy((x @ W + b[:, None]).reshape(-1, 50), t.reshape(-1),
                                              reduction="none").reshape(R, 37)
    # blocked against dense: a dot product over 8 and a log-sum-exp over 50 per token; the gradients also sum over
    # the 37 tokens (W, b) or the 50 logits (x)
    assert_f32_close(ours, dense, terms=8 + 50, what="blocked vs dense cross entropy")
    w = torch.rand(R, 37)
    g1 = torch.autograd.grad((ours * w).sum(), [x, W, b], retain_graph=True)
    g2 = torch.autograd.grad((dense * w).sum(), [x, W, b])
    for name, a, c in zip("xWb", g1, g2):
        assert_f32_close(a, c, terms=8 + 50 + 37, what=f"gradient of {name}: blocked vs dense")
    # the kept exponentials became the first gradient in place: a second backward recomputes them
    again = torch.autograd.grad((ours * w).sum(), [x, W, b])
    for name, a, c in zip("xWb", again, g2):
        assert_f32_close(a, c, terms=8 + 50 + 37, what=f"second gradient of {name}: blocked vs dense")


def test_sequences_longer_than_context_are_refused(micro_model_cfg):
    model = build_model(micro_model_cfg)
    tokens = torch.zeros(1, micro_model_cfg.n_ctx + 1, dtype=torch.long)
    with pytest.raises(ConfigError, match="longer than the model's context"):
        per_token_loss(model_params(model), tokens, micro_model_cfg)


def test_head_slices_have_the_papers_size():
    cfg = ModelConfig()  # tetrahedron-3m
    with torch.device("meta"):
        model = build_model(cfg, device="meta")
    params = model_params(model)
    assert sum(p.numel() for p in params.values()) == 3_355_016
    per_head = sum(params[n][0].numel() for n in head_param_names(1))
    assert per_head == 32_864  # W_Q, W_K, W_V, W_O and the Q/K/V biases of one head (one head's slice of each matrix, as devinterp's head restriction)


def test_one_way_from_a_hooked_model_to_our_config(micro_model_cfg):
    from dataclasses import replace
    from bridges import tiny_pythia
    from serpent.hooked import HookedShortformer
    from serpent.model import fast_model_config, hooked_config, model_config_of
    ours = build_model(micro_model_cfg)
    assert model_config_of(ours) == micro_model_cfg == fast_model_config(ours)
    other_eps = HookedShortformer(replace(hooked_config(micro_model_cfg), eps=1e-6))
    assert fast_model_config(other_eps) is None              # our forward hard-codes LayerNorm's 1e-5
    rotary = tiny_pythia(n_layers=1, n_heads=2, d_model=16, d_vocab=32, d_mlp=32)
    assert fast_model_config(rotary) is None                 # a TransformerBridge's own forward is used for it


def test_the_hooked_model_works_like_a_transformer_lens_model(micro_model_cfg):
    """Hooks, caches and return types as with TransformerLens 3's HookedTransformer; the ln1 hook fires once."""
    model = build_model(micro_model_cfg)
    tokens = torch.randint(0, micro_model_cfg.d_vocab, (2, micro_model_cfg.n_ctx))
    logits, loss = model(tokens, return_type="both")
    assert logits.shape == (2, micro_model_cfg.n_ctx, micro_model_cfg.d_vocab) and loss.shape == ()
    assert model(tokens, return_type=None) is None
    assert torch.allclose(loss, hooked_per_token_loss(model, tokens).mean())
    calls = []
    model.run_with_hooks(tokens, fwd_hooks=[("blocks.0.ln1.hook_normalized", lambda x, hook: calls.append(1))])
    assert len(calls) == 1
    # zero-ablating every head of both layers leaves only the direct path: embedding -> unembedding
    zero = [(f"blocks.{l}.attn.hook_z", lambda z, hook: torch.zeros_like(z)) for l in range(2)]
    ablated = model.run_with_hooks(tokens, return_type="loss", loss_per_token=True, fwd_hooks=zero)
    with torch.no_grad():
        for l in range(2):
            model.blocks[l].attn.W_O.zero_()
    assert_f32_close(ablated, hooked_per_token_loss(model, tokens), terms=forward_terms(micro_model_cfg),
                     what="hook_z ablation vs zero W_O")
    assert not model.hook_dict["blocks.0.attn.hook_z"].fwd_hooks            # run_with_hooks removed its hooks
    _, cache = model.run_with_cache(tokens[:1], remove_batch_dim=True)
    assert cache["pattern", 0].shape == (micro_model_cfg.n_heads, micro_model_cfg.n_ctx, micro_model_cfg.n_ctx)
    assert model.to("cpu", print_details=False) is model                    # devinterp passes print_details
    with pytest.raises(ConfigError, match="longer than the model's context"):
        model(torch.zeros(1, micro_model_cfg.n_ctx + 1, dtype=torch.long))



@pytest.mark.parametrize("T", [1, 7, 37, 128])          # one block, a part block, blocks and a remainder, 8 blocks
def test_causal_attention_matches_torchs_fused_attention_and_its_gradient(T):
    """The CPU path of serpent.model.causal_attention (issue 32) against scaled_dot_product_attention."""
    from serpent.model import causal_attention
    import torch.nn.functional as F
    torch.manual_seed(T)
    q, k, v = [torch.randn(6, T, 8) * 3 for _ in range(3)]
    g = torch.randn(6, T, 8)
    outs = []
    for fn in (causal_attention, lambda *a: F.scaled_dot_product_attention(*a, is_causal=True)):
        leaves = [t.clone().requires_grad_() for t in (q, k, v)]
        z = fn(*leaves)
        z.backward(g)
        outs.append([z.detach()] + [t.grad for t in leaves])
    for ours, ref in zip(*outs):
        torch.testing.assert_close(ours, ref, atol=1e-4, rtol=1e-4)


def test_causal_attention_falls_back_to_fused_attention_past_its_memory_bound(monkeypatch):
    import serpent.model as model_module
    calls = []
    monkeypatch.setattr(model_module._CausalAttention, "apply", lambda *a: calls.append(1) or None)
    q = torch.randn(4, 16, 8)
    model_module.causal_attention(q, q, q)
    assert calls == [1]
    monkeypatch.setattr(model_module, "_ATTN_KEEP_ELEMENTS", 4 * 16 * 16 - 1)
    out = model_module.causal_attention(q, q, q)
    assert calls == [1] and out.shape == q.shape
