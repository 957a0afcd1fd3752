"""serpent.checks: each check passes the reference, returns False for an unsolved stub, and names typical mistakes;
the references agree with the package (serpent.sgld, serpent.induction); the notebooks' hidden solutions pass."""

from __future__ import annotations

import contextlib
import io
import json
import math
from pathlib import Path

import pytest
import torch

from serpent import checks
from serpent.checks import CheckFailed
from serpent.patterns import classify_tokens
from tolerances import assert_f32_close

ROOT = Path(__file__).resolve().parents[1]


def _stub(*args, **kwargs):
    raise NotImplementedError


def _fails(check, fn, *needles):
    with pytest.raises(CheckFailed) as e:
        check(fn)
    msg = str(e.value)
    for n in needles:
        assert n in msg, msg
    return msg


@pytest.mark.parametrize("check, ref", [
    (checks.check_sgld_step, checks.reference_sgld_step),
    (checks.check_prefix_score, checks.reference_prefix_score),
    (checks.check_prev_token_score, checks.reference_prev_token_score),
    (checks.check_pattern_classifier, classify_tokens),
])
def test_reference_passes_and_stub_reminds(check, ref, capsys):
    assert check(ref) is True
    assert "Correct!" in capsys.readouterr().out
    assert check(_stub) is False
    assert "Not implemented yet" in capsys.readouterr().out


def test_not_a_function():
    with pytest.raises(CheckFailed, match="pass your function itself"):
        checks.check_sgld_step(3.0)


# ---------------------------------------------------------------------------------------------------------------- SGLD

def test_sgld_diagnoses():
    sq = math.sqrt
    _fails(checks.check_sgld_step,
           lambda w, g, ws, xi, *, epsilon, n_beta, gamma: w - epsilon * (n_beta * g + gamma * (w - ws)) + sq(epsilon) * xi,
           "twice too large", "ε/2")
    _fails(checks.check_sgld_step,
           lambda w, g, ws, xi, *, epsilon, n_beta, gamma: w - epsilon / 2 * (n_beta * g + gamma * (w - ws)) + sq(epsilon / 2) * xi,
           "√(ε/2)")
    _fails(checks.check_sgld_step,
           lambda w, g, ws, xi, *, epsilon, n_beta, gamma: w - epsilon / 2 * (n_beta * g + gamma * (w - ws)) + epsilon * xi,
           "scaled by ε")
    _fails(checks.check_sgld_step,
           lambda w, g, ws, xi, *, epsilon, n_beta, gamma: w - epsilon / 2 * (g + gamma * (w - ws)) + sq(epsilon) * xi,
           "not multiplied by nβ")
    _fails(checks.check_sgld_step,
           lambda w, g, ws, xi, *, epsilon, n_beta, gamma: w - epsilon / 2 * n_beta * (g + gamma * (w - ws)) + sq(epsilon) * xi,
           "nβ multiplies the gradient only")
    _fails(checks.check_sgld_step,
           lambda w, g, ws, xi, *, epsilon, n_beta, gamma: w - epsilon / 2 * (n_beta * g + gamma * (ws - w)) + sq(epsilon) * xi,
           "localization term has the wrong sign")
    _fails(checks.check_sgld_step,
           lambda w, g, ws, xi, *, epsilon, n_beta, gamma: w + epsilon / 2 * (n_beta * g - gamma * (w - ws)) + sq(epsilon) * xi,
           "gradient term has the wrong sign")
    _fails(checks.check_sgld_step,
           lambda w, g, ws, xi, *, epsilon, n_beta, gamma: -epsilon / 2 * (n_beta * g + gamma * (w - ws)) + sq(epsilon) * xi,
           "returned the change Δw")
    _fails(checks.check_sgld_step,
           lambda w, g, ws, xi, *, epsilon, n_beta, gamma: w - epsilon / 2 * (n_beta * g + gamma * (w - ws)) + sq(epsilon) * torch.randn_like(w),
           "not even a fixed combination")


def test_sgld_in_place_and_shape():
    def in_place(w, g, ws, xi, *, epsilon, n_beta, gamma):
        w -= epsilon / 2 * (n_beta * g + gamma * (w - ws))
        return w + math.sqrt(epsilon) * xi
    _fails(checks.check_sgld_step, in_place, "in place")
    _fails(checks.check_sgld_step,
           lambda w, g, ws, xi, *, epsilon, n_beta, gamma: checks.reference_sgld_step(
               w, g, ws, xi, epsilon=epsilon, n_beta=n_beta, gamma=gamma).flatten(), "shape")


def test_reference_sgld_step_is_the_engines_step():
    """Two steps of serpent.sgld.run_sgld (one chain) equal two reference steps with the engine's noise stream."""
    from serpent.config import SamplerConfig
    from serpent.sgld import run_sgld

    A = torch.tensor([[2.0, 0.5, 0.0], [0.5, 1.0, 0.0], [0.0, 0.0, 3.0]])
    target = torch.tensor([0.3, -0.2, 0.1])

    def loss(p, batch):                                  # (R, 1): a quadratic, minimum at `target`
        d = p["w"] - target
        return 0.5 * torch.einsum("ri,ij,rj->r", d, A, d)[:, None]

    w0 = torch.tensor([1.0, -1.0, 0.5])
    cfg = SamplerConfig(epsilon=0.01, gamma=4.0, n_beta=5.0, chains=1, draws=2, batch_size=1, seed=7)
    seen = []
    run_sgld(loss, {"w": w0}, lambda i: None, cfg, on_draw=lambda s: seen.append(s.params["w"][0].clone()),
             progress=False)
    g = torch.Generator().manual_seed(cfg.seed)
    w = w0.clone()
    for i in range(2):
        grad = A @ (w - target)
        w = checks.reference_sgld_step(w, grad, w0, torch.randn(3, generator=g), epsilon=cfg.epsilon,
                                       n_beta=cfg.n_beta, gamma=cfg.gamma)
        # the same update written another way: a 3-term product per step, after i + 1 steps
        assert_f32_close(seen[i], w, terms=3, steps=i + 1, what=f"SGLD step {i + 1} vs the reference")


# -------------------------------------------------------------------------------------------------- attention scores

def _score_fn(pairs_of):
    def fn(pattern, L):
        pairs = pairs_of(L)
        return torch.stack([pattern[:, :, q, k] for q, k in pairs], -1).mean(dim=(0, 2))
    return fn


def test_prefix_diagnoses():
    _fails(checks.check_prefix_score, _score_fn(lambda L: [(L + i, i) for i in range(1, L + 1)]), "duplicate-token")
    _fails(checks.check_prefix_score, _score_fn(lambda L: [(i + 1, L + i) for i in range(1, L + 1)]), "(query, key)")
    _fails(checks.check_prefix_score, _score_fn(lambda L: [(L + i - 1, i) for i in range(1, L + 1)]), "BOS")
    _fails(checks.check_prefix_score, lambda p, L: torch.stack(
        [p[:, :, L + i, i + 1] for i in range(1, L + 1)], -1).mean(-1), "kept the batch dimension")
    _fails(checks.check_prefix_score, lambda p, L: torch.stack(
        [p[:, :, L + i, i + 1] for i in range(1, L + 1)], -1).sum(-1).mean(0), "summed over the positions")


def test_prev_token_diagnoses():
    _fails(checks.check_prev_token_score, _score_fn(lambda L: [(t, t - 1) for t in range(1, 2 * L + 1)]), "BOS")
    _fails(checks.check_prev_token_score, _score_fn(lambda L: [(t, t) for t in range(2, 2 * L + 1)]), "diagonal")
    _fails(checks.check_prev_token_score, lambda p, L: p.diagonal(-1, -2, -1)[..., 1:].mean(-1).sum(0), "summed")


def test_score_references_agree_with_serpent_induction():
    """On the planted induction model, the references computed from the cached attention patterns equal the scores
    of serpent.induction (same probe)."""
    from serpent.induction import induction_scores, planted_induction_model, repeated_random_tokens

    model = planted_induction_model(d_vocab=30, n_ctx=25, n_heads=3, prev_head=1, induction_head=2)
    L = 12
    probe = repeated_random_tokens(4, L, 30, bos_id=0, seed=3)
    df = induction_scores(model, probe=probe, bos_id=0)
    _, cache = model.run_with_cache(probe, names_filter=lambda n: n.endswith("hook_pattern"))
    for layer in range(2):
        pat = cache[f"blocks.{layer}.attn.hook_pattern"].double()
        pre, prev = checks.reference_prefix_score(pat, L), checks.reference_prev_token_score(pat, L)
        for h in range(3):
            row = df[df["head"] == f"{layer}:{h}"].set_index("score")["value"]
            assert abs(row["prefix"] - float(pre[h])) < 1e-5
            assert abs(row["prev_token"] - float(prev[h])) < 1e-5
    assert float(checks.reference_prefix_score(cache["blocks.1.attn.hook_pattern"].double(), L)[2]) > 0.9


# ------------------------------------------------------------------------------------------------- susceptibilities

def _sus(fn):
    return lambda task, probe, ft, fp, baseline: fn(task - baseline, probe - task[..., None],
                                                    (fp - ft[..., None]).mean(axis=(0, 1)), task, probe, ft, fp)


def test_susceptibility_reference_and_diagnoses(capsys):
    from serpent.susceptibility import susceptibility_from_traces
    assert checks.check_susceptibility_estimator(susceptibility_from_traces) is True
    assert checks.check_susceptibility_estimator(_stub) is False
    E = lambda x: x.mean(axis=(0, 1))
    _fails(checks.check_susceptibility_estimator,
           _sus(lambda phi, d, fd, *_: E(phi[..., None] * d) - phi.mean() * fd), "sign is flipped")
    _fails(checks.check_susceptibility_estimator, _sus(lambda phi, d, fd, *_: -E(phi[..., None] * d)),
           "correction term is missing")
    _fails(checks.check_susceptibility_estimator,
           _sus(lambda phi, d, fd, *_: -(E(phi[..., None] * d) - phi.mean() * E(d))), "*full* (unrestricted) run")
    _fails(checks.check_susceptibility_estimator,
           _sus(lambda phi, d, fd, task, *_: -(E(task[..., None] * d) - task.mean() * fd)), "subtract the baseline")
    _fails(checks.check_susceptibility_estimator,
           _sus(lambda phi, d, fd, *_: -((phi[..., None] * d).mean(1) - phi.mean() * fd)), "average over the chains")
    _fails(checks.check_susceptibility_estimator,
           _sus(lambda phi, d, fd, *_: -30.0 * (E(phi[..., None] * d) - phi.mean() * fd)), "30 times the reference")


# ---------------------------------------------------------------------------------------------------- patterns

def test_pattern_classifier_diagnoses():
    def no_induction(tokens):
        out = classify_tokens(tokens)
        # relabel induction tokens with their base class (classify a copy with the context cut away)
        return [classify_tokens(tokens[t - 1:t + 1])[-1] if o == "induction" and t else o for t, o in enumerate(out)]

    _fails(checks.check_pattern_classifier, no_induction, "expected `induction`", "test the induction rule first")
    _fails(checks.check_pattern_classifier, lambda toks: classify_tokens(toks, whitespace_induction=True),
           "whitespace-only tokens are never `induction`")

    def unigram(tokens):
        out = classify_tokens(tokens)
        return ["induction" if t and tok in tokens[:t] and out[t] not in ("spacing", "formatting")
                and not tokens[t - 1].startswith("<|") and not tok.startswith("<|") else o
                for t, (tok, o) in enumerate(zip(tokens, out))]
    _fails(checks.check_pattern_classifier, unigram, "not a repeated token")

    def word_parts_as_starts(tokens):
        return ["word start" if o == "word part" else o for o in classify_tokens(tokens)]
    _fails(checks.check_pattern_classifier, word_parts_as_starts, "`word part`", "continues a word")
    _fails(checks.check_pattern_classifier, lambda toks: classify_tokens(toks)[1:], "labels for")
    _fails(checks.check_pattern_classifier, lambda toks: ["token"] * len(toks), "unknown pattern")


# --------------------------------------------------------------------------------------- the notebooks' solutions

def _solution_cells():
    out = []
    for nb in sorted((ROOT / "notebooks").glob("0*.ipynb")):
        for i, cell in enumerate(json.loads(nb.read_text())["cells"]):
            if cell["cell_type"] == "code" and "solution" in cell.get("metadata", {}).get("tags", []):
                out.append(pytest.param("".join(cell["source"]), id=f"{nb.stem}-cell{i}"))
    return out


def test_every_required_exercise_has_a_solution_cell():
    text = "\n".join(p.values[0] for p in _solution_cells())
    for check in ("check_sgld_step", "check_prefix_score", "check_susceptibility_estimator",
                  "check_pattern_classifier"):
        assert check in text, f"no notebook solution cell calls {check}"


@pytest.mark.parametrize("source", _solution_cells())
def test_notebook_solutions_pass_their_checks(source):
    buf = io.StringIO()
    with contextlib.redirect_stdout(buf):
        exec(compile(source, "<solution>", "exec"), {"__name__": "__solution__"})
    assert "check_" in source and "Correct!" in buf.getvalue(), buf.getvalue()


def test_k_composition_check_accepts_the_reference_and_names_each_mistake():
    from serpent.checks import check_k_composition, reference_k_composition
    assert check_k_composition(reference_k_composition) is True
    norm = torch.linalg.norm
    mistakes = {
        "query side": lambda ov, q, k: norm(ov @ (q @ k.T)) / (norm(ov) * norm(q @ k.T)),
        "not normalised": lambda ov, q, k: norm(ov @ (q @ k.T).T),
        "only one of the two norms": lambda ov, q, k: norm(ov @ (q @ k.T).T) / norm(ov),
        "squared": lambda ov, q, k: norm(ov @ (q @ k.T).T) ** 2 / (norm(ov) ** 2 * norm(q @ k.T) ** 2),
        "expected": lambda ov, q, k: 0.5,
        "one number": lambda ov, q, k: ov,
    }
    for words, fn in mistakes.items():
        with pytest.raises(CheckFailed, match=words):
            check_k_composition(fn)


def test_k_composition_reference_agrees_with_composition_scores_on_a_model():
    from serpent.checks import reference_k_composition
    from serpent.circuits import composition_scores
    from serpent.config import ModelConfig
    from serpent.model import build_model
    m = build_model(ModelConfig(n_layers=2, n_heads=3, d_model=24, d_head=8, n_ctx=16, d_vocab=50))
    k = composition_scores(m).query("kind == 'K'").set_index(["source", "target"])["score"]
    b0, b1 = m.blocks[0].attn, m.blocks[1].attn
    for s in range(3):
        for t in range(3):
            ref = reference_k_composition((b0.W_V[s] @ b0.W_O[s]).detach(), b1.W_Q[t].detach(), b1.W_K[t].detach())
            # Frobenius norms of 24 x 24 products of 8-term dot products, in another order
            assert_f32_close(k.loc[(f"0:{s}", f"1:{t}")], ref, terms=24 * 24 + 8, what="K-composition vs reference")


def test_classifier_check_shows_what_a_non_ascii_token_reads_as():
    def wrong_on_bytes(toks):    # mislabels the partial UTF-8 token of the check's vocabulary
        return ["numeric" if "Ã" in t else p for t, p in zip(toks, classify_tokens(toks))]
    _fails(checks.check_pattern_classifier, wrong_on_bytes, "(token 'ĠÃ', text ' \ufffd': part of a multi-byte",
           "counts as a letter")


def test_check_cluster_names_accepts_good_guesses_and_names_the_misses(capsys):
    """Issue 34's exercise: three clusters named from their cards, checked against the patterns they hold."""
    from types import SimpleNamespace as C
    from serpent.checks import CheckFailed, check_cluster_names
    cards = [C(cluster=0, size=100, patterns={"induction": 70, "word part": 30}),
             C(cluster=1, size=100, patterns={"spacing": 60, "word part": 40}),
             C(cluster=2, size=100, patterns={"word part": 50, "induction": 10, "formatting": 40}),
             C(cluster=3, size=100, patterns={"word part": 90, "formatting": 10})]
    assert check_cluster_names(None, cards) is False
    good = {0: ("copies", "induction"), 1: ("indents", "spacing"), 2: ("line ends", "formatting")}
    assert check_cluster_names(good, cards) is True                 # formatting: not the top, but 3.2x enriched
    assert "Correct!" in capsys.readouterr().out
    with pytest.raises(CheckFailed, match=r"C3: induction is 0% of it.*most common pattern is word part \(90%\)"):
        check_cluster_names({0: ("a", "induction"), 1: ("b", "spacing"), 3: ("c", "induction")}, cards)
    with pytest.raises(CheckFailed, match="name 3 clusters"):
        check_cluster_names({0: ("a", "induction")}, cards)
    # a miss on a cluster that does not stand out from the null is said, not failed
    cards[3].stands_out = False
    capsys.readouterr()
    assert check_cluster_names({0: ("a", "induction"), 1: ("b", "spacing"), 3: ("c", "induction")}, cards) is True
    out = capsys.readouterr().out
    assert "C3 does not stand out" in out and "Correct!" not in out
    cards[3].stands_out = True
    with pytest.raises(CheckFailed, match="not a pattern"):
        check_cluster_names({0: ("a", "induction"), 1: ("b", "spaces"), 2: ("c", "other")}, cards)
    with pytest.raises(CheckFailed, match="no cluster 9"):
        check_cluster_names({0: ("a", "induction"), 1: ("b", "spacing"), 9: ("c", "other")}, cards)
    with pytest.raises(CheckFailed, match="a name of your own"):
        check_cluster_names({0: (" ", "induction"), 1: ("b", "spacing"), 2: ("c", "formatting")}, cards)
