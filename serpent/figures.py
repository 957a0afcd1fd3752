"""The book's figures and the numbers its prose quotes, read from one run's tables (the committed ``cpu`` run).

The chapters call these in hidden cells, so every chart and every number about the book's run on a page comes from
the run the page was built with. Nothing is sampled or trained here: each function reads tables the pipeline wrote
and takes a second or two on any machine. The notebooks draw the same charts live (with the same chart functions
from :mod:`serpent.charts`).

>>> run = book_run()                      # the committed artifacts/cpu, unpacked once into runs/
>>> n = book_numbers(run)
>>> n["preset"], n["final_step"], n["prefix_onset"] < n["final_step"]
('cpu', 42000, True)
>>> type(llc_figure(run)).__name__
'VConcatChart'
"""

from __future__ import annotations

import json
import math
from typing import Optional

import altair as alt
import numpy as np
import pandas as pd

from .rundir import Run

__all__ = ["book_run", "book_numbers", "glue_numbers", "ablation_numbers", "corpus_figure", "loss_figure",
           "induction_figure", "llc_figure", "chi_tokens_figure", "response_figure", "toy_figure", "serpent_figure",
           "small_multiples_figure", "spacing_fin_figure", "BOOK_PRESET"]

#: The run behind the book's figures: its results are committed in ``artifacts/cpu``.
BOOK_PRESET = "cpu"


def book_run(preset: str = BOOK_PRESET) -> Run:
    """The book's run: ``runs/<preset>`` when complete, else the committed ``artifacts/<preset>`` (never computed
    here: a missing run raises with the command that creates it)."""
    from .course import course_run
    return course_run(preset, compute=False, progress=False)


def _scores(run: Run) -> pd.DataFrame:
    return pd.read_parquet(run.path / "induction" / "scores.parquet")


def _separation(run: Run) -> dict[int, dict]:
    steps = json.loads((run.path / "serpent" / "separation.json").read_text())["steps"]
    return {int(k): v for k, v in steps.items()}


def _onset(scores: pd.DataFrame, head: str, score: str, threshold: float) -> Optional[int]:
    """First checkpoint from which ``head``'s ``score`` stays at or above ``threshold`` (None if never)."""
    from .milestones import onset
    s = scores[(scores["head"] == head) & (scores["score"] == score)].sort_values("step")
    return onset(s["step"].tolist(), s["value"].to_numpy(), threshold)


def _listing(items) -> str:
    """``a``, ``a and b``, ``a, b and c`` (``none`` when empty)."""
    items = list(items)
    return "none" if not items else items[0] if len(items) == 1 else ", ".join(items[:-1]) + " and " + items[-1]


def _power_text(x: float) -> str:
    """``10⁻³`` for a power of ten, else ``3 × 10⁻⁴``: how the chapters write a step size."""
    exponent = math.floor(math.log10(abs(x)))
    mantissa = round(x / 10 ** exponent, 3)
    sup = str(exponent).translate(str.maketrans("-0123456789", "⁻⁰¹²³⁴⁵⁶⁷⁸⁹"))
    return f"10{sup}" if mantissa == 1 else f"{mantissa:g} × 10{sup}"


def _circuit_heads(run: Run, heads: dict, at_last: pd.Series) -> tuple[str, str]:
    """(the layer-0 previous-token head with the highest score at the last checkpoint, the best prefix head)."""
    ind = run.stage_summary("induction")["summary"]
    layer0_prev = [h for h in heads["previous_token"] if h.startswith("0:")]
    prev = max(layer0_prev, key=lambda h: at_last[(h, "prev_token")]) if layer0_prev else ind["best_prev_token"]["head"]
    return prev, ind["best_prefix"]["head"]


def _last_scores(run: Run) -> tuple[dict, pd.DataFrame, pd.Series]:
    heads = json.loads((run.path / "induction" / "heads.json").read_text())
    scores = _scores(run)
    at_last = scores[scores["step"] == scores["step"].max()].set_index(["head", "score"])["value"]
    return heads, scores, at_last


def book_numbers(run: Run) -> dict:
    """The numbers the chapters quote about ``run``, by name (steps, tokens, losses, entropies, head scores, LLC,
    the serpent's separation), each read from the run's own tables.

    Keys: ``preset``, ``final_step``, ``checkpoints`` (saved), ``train_tokens`` (seen in training; also ``train_tokens_millions``), ``train_minutes``,
    ``sample_tokens`` (training tokens kept in the run's folder), ``batch``,
    ``context``, ``test_loss_first``/``_last``, ``train_loss_last``, ``unigram_entropy``, ``bigram_entropy``
    (in-sample, on the run's token sample), ``llc_first``/``_last``/``_std_last``, ``llc_flagged`` (steps not at
    equilibrium, as text), ``llc_draws``/``_burnin``/``_chains``/``_epsilon`` (and ``_epsilon_text``: 10⁻³)/``_n_beta``, ``prev_head``/``_score``/
    ``_onset`` (the circuit's layer-0 previous-token head), ``induction_heads`` (text), ``prefix_head``/``_score``/
    ``_onset``/``_over_chance`` (the best layer-1 prefix head), ``prefix_head_2``/``prefix_score_2`` (the runner-up),
    ``prefix_onset_tokens_millions`` beside ``law_tokens_millions`` (10^5.7·√(batch × context), Aoyama et al.) and
    their ratio ``onset_over_law``, ``prefix_chance``/``_threshold``, ``icl_last``, ``induction_loss_diff_last`` (second copy minus first on
    repeated random tokens), ``chi_step`` (last), ``chi_steps`` (text), ``chi_checkpoints``,
    ``chi_tokens``, ``chi_draws``, ``chi_chains``, ``chi_probe_sequences``/``_length``, ``sep_induction_last``, ``sep_null_sd_last``, ``sep_sigmas_last`` (its distance from the shuffled-pattern null in
    null standard deviations), ``sep_all_first``/``_last``; and per checkpoint ``llc_at_<step>``, ``best_prefix_at_<step>`` (best head's prefix
    score), ``sep_induction_at_<step>`` (for the steps the run has them), ``llc_checkpoints``.
    """
    from .milestones import predicted_induction_onset
    from .train import bigram_entropy
    cfg = run.config
    metrics = pd.DataFrame(run.metrics())
    data = run.stage_summary("data")["summary"]
    ind = run.stage_summary("induction")["summary"]
    heads, scores, at_last = _last_scores(run)
    th = heads["thresholds"]
    prev, prefix = _circuit_heads(run, heads, at_last)
    layer1 = sorted({h for h, _ in at_last.index if str(h).startswith("1:")},
                    key=lambda h: -at_last[(h, "prefix")])
    second = next(h for h in layer1 if h != prefix)
    onset = _onset(scores, prefix, "prefix", float(th["prefix"]))
    onset_tokens = onset * cfg.train.batch_size * cfg.model.n_ctx if onset is not None else None
    law = predicted_induction_onset(cfg.train.batch_size, cfg.model.n_ctx)   # Aoyama et al. (arXiv 2511.16893)
    llc = pd.read_parquet(run.path / "llc" / "llc.parquet").sort_values("step")
    llc_summary = run.stage_summary("llc")["summary"]
    sep = _separation(run)
    s_last = sep[max(sep)]
    from .stages import load_susceptibilities
    chi_results = load_susceptibilities(run)
    chi_steps = sorted(chi_results)
    chi_last = chi_results[chi_steps[-1]]
    sus = cfg.susceptibility.sampler
    model = scores[scores["head"] == "model"].sort_values("step")
    model_last = lambda name: float(model[model["score"] == name]["value"].iloc[-1]) if (model["score"] == name).any() \
        else float("nan")
    best_prefix = scores[(scores["score"] == "prefix") & (scores["head"] != "model")].groupby("step")["value"].max()
    per_step = {**{f"llc_at_{int(r.step)}": float(r.mean) for r in llc.itertuples()},
                **{f"best_prefix_at_{int(k)}": float(v) for k, v in best_prefix.items()},
                **{f"sep_induction_at_{k}": float(v.get("by_pattern_cross_token", {}).get("induction", np.nan))
                   for k, v in sep.items()}}
    return {
        **per_step, "llc_checkpoints": len(llc), "preset": cfg.preset, "final_step": int(cfg.train.steps), "checkpoints": len(run.checkpoint_steps()),
        "train_tokens": int(metrics["tokens"].iloc[-1]), "train_tokens_millions": metrics["tokens"].iloc[-1] / 1e6,
        "train_minutes": float(metrics["seconds"].iloc[-1]) / 60, "sample_tokens": len(run.tokens("train")),
        "batch": int(cfg.train.batch_size), "context": int(cfg.model.n_ctx),
        "test_loss_first": float(metrics["test_loss"].dropna().iloc[0]),
        "test_loss_last": float(metrics["test_loss"].dropna().iloc[-1]),
        "train_loss_last": float(metrics["train_loss"].dropna().iloc[-1]),
        "unigram_entropy": float(data["unigram_entropy"]),
        "bigram_entropy": bigram_entropy(np.asarray(run.tokens("train"), dtype=np.int64), cfg.model.d_vocab),
        "llc_first": float(llc["mean"].iloc[0]), "llc_last": float(llc["mean"].iloc[-1]),
        "llc_std_last": float(llc["std"].iloc[-1]),
        "llc_flagged": _listing(f"{s:,}" for s in llc_summary.get("not_at_equilibrium", [])),
        "llc_draws": int(cfg.llc.draws), "llc_burnin": int(cfg.llc.burnin), "llc_chains": int(cfg.llc.chains),
        "llc_epsilon": float(cfg.llc.epsilon), "llc_epsilon_text": _power_text(cfg.llc.epsilon),
        "llc_n_beta": float(cfg.llc.n_beta),
        "prev_head": prev, "prev_score": float(at_last[(prev, "prev_token")]),
        "prev_onset": _onset(scores, prev, "prev_token", float(th["prev_token"])),
        "induction_heads": _listing(f"`{h}`" for h in heads["induction"]),
        "prefix_head": prefix, "prefix_score": float(at_last[(prefix, "prefix")]),
        "prefix_onset": onset,
        "prefix_over_chance": float(at_last[(prefix, "prefix")]) / float(th["chance_prefix"]),
        "prefix_head_2": second, "prefix_score_2": float(at_last[(second, "prefix")]),
        "prefix_chance": float(th["chance_prefix"]), "prefix_threshold": float(th["prefix"]),
        "prefix_onset_tokens_millions": onset_tokens / 1e6 if onset_tokens else float("nan"),
        "law_tokens_millions": law / 1e6,
        "onset_over_law": onset_tokens / law if onset_tokens else float("nan"),
        "icl_last": model_last("icl_score"), "induction_loss_diff_last": model_last("induction_loss_diff"),
        "chi_step": max(chi_steps), "chi_checkpoints": len(chi_steps), "chi_steps": _listing(f"{s:,}" for s in chi_steps),
        "chi_probe_sequences": int(chi_last.settings.get("probe_sequences", chi_last.probe_tokens.shape[0])),
        "chi_probe_length": int(chi_last.settings.get("probe_length", chi_last.probe_tokens.shape[1])),
        "chi_tokens": int(run.stage_summary("serpent")["summary"]["tokens_per_step"]),
        "chi_draws": int(sus.draws), "chi_chains": int(sus.chains),
        "sep_induction_last": float(s_last.get("by_pattern_cross_token", {}).get("induction", np.nan)),
        "sep_null_sd_last": float(s_last.get("cross_token_null_sd", np.nan)),
        "sep_sigmas_last": (float(s_last.get("by_pattern_cross_token", {}).get("induction", np.nan))
                            - float(s_last.get("cross_token_null_mean", 0.0)))
                           / float(s_last.get("cross_token_null_sd", np.nan) or np.nan),
        "sep_all_first": float(sep[min(sep)]["cross_token"]), "sep_all_last": float(s_last["cross_token"]),
    }


def glue_numbers(run: Run, extra: Optional[dict] = None) -> dict:
    """Glue every :func:`book_numbers` entry (and those of ``extra``, e.g. :func:`ablation_numbers`) into the page
    being built (MyST-NB), and return them: numbers for ``{glue:text}`key:.2f```, text for ``{glue:md}`key```."""
    from IPython.display import Markdown
    from myst_nb import glue
    numbers = {**book_numbers(run), **(extra or {})}
    for key, value in numbers.items():
        if isinstance(value, np.generic):
            value = value.item()
        glue(key, Markdown(value) if isinstance(value, str) else value, display=False)
    return numbers


def ablation_numbers(run: Run, half_len: int = 31, seed: int = 7) -> dict:
    """The in-context gain (first copy's loss minus the second's, nats) of the run's last checkpoint on 16 repeated
    random sequences, intact and with groups of heads mean-ablated together: ``gain_intact``,
    ``gain_without_prev`` (the layer-0 previous-token heads), ``gain_without_induction``,
    ``gain_without_other0`` / ``gain_without_other1`` (every other head of that layer), and the heads as text
    (``ablated_prev``, ``ablated_induction``)."""
    from .circuits import ablate_heads
    from .induction import repeated_random_tokens
    heads = json.loads((run.path / "induction" / "heads.json").read_text())
    model = run.load_model()
    n = model.cfg.n_heads
    probe = repeated_random_tokens(16, min(half_len, (model.cfg.n_ctx - 1) // 2), model.cfg.d_vocab, seed=seed)
    prev = [h for h in heads["previous_token"] if h.startswith("0:")]
    ind = [h for h in heads["induction"] if h.startswith("1:")]
    groups = {"prev": prev, "induction": ind,
              "other0": [f"0:{h}" for h in range(n) if f"0:{h}" not in prev],
              "other1": [f"1:{h}" for h in range(n) if f"1:{h}" not in ind]}
    out = {"gain_intact": float(ablate_heads(model, probe, heads=[])["in_context_gain"].iloc[0]),
           "ablated_prev": _listing(f"`{h}`" for h in prev), "ablated_induction": _listing(f"`{h}`" for h in ind)}
    for name, group in groups.items():
        if group:
            out[f"gain_without_{name}"] = float(ablate_heads(model, probe, heads=group, together=True)
                                                ["in_context_gain"].iloc[1])
    return out


def _longest_document(run: Run, split: str = "test") -> tuple[np.ndarray, str]:
    ids = np.asarray(run.tokens(split), dtype=np.int64)
    starts, names = run.documents(split)
    doc = int(np.argmax(np.diff(np.append(starts, len(ids)))))
    end = starts[doc + 1] if doc + 1 < len(starts) else len(ids)
    return ids[starts[doc]:end], names[doc]


def corpus_figure(run: Run, n_tokens: int = 64) -> alt.LayerChart:
    """The first ``n_tokens`` tokens of the longest held-out document, each a box coloured by its pattern."""
    from .charts.tokens import token_strip
    ids, name = _longest_document(run)
    tok = run.tokenizer()
    strings = [tok.token_str(int(i)) for i in ids[:n_tokens]]
    return token_strip(strings, title=f"{name}: the first {len(strings)} tokens")


def loss_figure(run: Run) -> alt.LayerChart:
    """Training and held-out loss against step, the unigram and bigram entropies, and the checkpoints."""
    from .charts.training import loss_curves_chart
    from .train import bigram_entropy
    unigram = float(run.stage_summary("data")["summary"]["unigram_entropy"])
    bigram = bigram_entropy(np.asarray(run.tokens("train"), dtype=np.int64), run.config.model.d_vocab)
    return loss_curves_chart(run.metrics(), {"unigram entropy": unigram, "bigram entropy (in-sample)": bigram},
                             run.checkpoint_steps())


def induction_figure(run: Run) -> alt.TopLevelMixin:
    """Previous-token and prefix scores of every head over the checkpoints, with the classification thresholds."""
    from .charts.induction import induction_scores_chart
    heads = json.loads((run.path / "induction" / "heads.json").read_text())
    return induction_scores_chart(_scores(run), thresholds=heads["thresholds"])


def llc_figure(run: Run) -> alt.VConcatChart:
    """The LLC across training above the best induction scores, on one step axis."""
    from .charts.llc import llc_with_scores_chart
    table = pd.read_parquet(run.path / "llc" / "llc.parquet")
    return llc_with_scores_chart(table, _scores(run))


def chi_tokens_figure(run: Run, heads: Optional[list[str]] = None, seq: int = 0, n_tokens: int = 64,
                      step: Optional[int] = None) -> alt.VConcatChart:
    """A probe sequence at the last checkpoint with susceptibilities (default: one coloured by χ of the best
    prefix head, one by χ of the circuit's previous-token head)."""
    from .charts.tokens import token_strip
    from .stages import load_susceptibilities
    results = load_susceptibilities(run)
    res = results[max(results) if step is None else step]
    if heads is None:
        head_lists, _, at_last = _last_scores(run)
        prev, prefix = _circuit_heads(run, head_lists, at_last)
        heads = [prefix, prev]
    rows = np.flatnonzero(res.seq_index == seq)[:n_tokens]
    tok = run.tokenizer()
    strings = [tok.token_str(int(res.probe_tokens[seq, p])) for p in res.position[rows]]
    return alt.vconcat(*[token_strip(strings, res.chi[rows, res.components.index(h)],
                                     title=f"head {h}: χ of each token (blue: expresses, red: suppresses)")
                         for h in heads])


def response_figure(run: Run, step: Optional[int] = None) -> alt.HConcatChart:
    """The response matrix (mean χ per head and pattern) at the last checkpoint, beside the heads in its PCA."""
    from .charts.susceptibility import response_matrix_chart, response_pca_chart
    from .patterns import PATTERNS, label_result
    from .stages import load_susceptibilities
    from .susceptibility import response_matrix, response_pca
    results = load_susceptibilities(run)
    res = results[max(results) if step is None else step]
    labels = label_result(res, run.tokenizer())["pattern"].astype(str)
    matrix = response_matrix(res, labels, categories=[p for p in PATTERNS if (labels == p).any()])
    return alt.hconcat(response_matrix_chart(matrix, width=180, height=300),
                       response_pca_chart(response_pca(matrix), width=190, height=260))


def toy_figure(cache=None) -> alt.VConcatChart:
    """The induction toy of chapter 2 (the notebooks' shared circuit, trained once into ``runs/toy``): its training
    loss against the uniform-guess and ideal-copier levels, above the previous-token and prefix scores of its heads."""
    from .charts.induction import induction_scores_chart, training_loss_chart
    from .course import toy_cache_dir
    from .induction import classify_heads
    from .induction_toy import TOY_MODEL, grow_induction_circuit, loss_levels
    grown = grow_induction_circuit(TOY_MODEL, steps=1200, eval_every=50, keep_every=100, seed=0, progress=False,
                                   cache=toy_cache_dir() if cache is None else cache)
    heads = classify_heads(grown.history)
    return alt.vconcat(training_loss_chart(grown.history, loss_levels(TOY_MODEL), width=480, height=200),
                       induction_scores_chart(grown.history, thresholds=heads["thresholds"], log_steps=False))


def _serpent_frame(run: Run) -> pd.DataFrame:
    return pd.read_parquet(run.path / "serpent" / "embedding.parquet")


def serpent_figure(run: Run, max_points: int = 500) -> alt.TopLevelMixin:
    """The interactive serpent: a checkpoint slider, a pattern legend that filters, χ bars of the token clicked."""
    from .charts.serpent import serpent_chart
    return serpent_chart(_serpent_frame(run), max_points=max_points, width=460, height=380)


def small_multiples_figure(run: Run, max_points: int = 1000) -> alt.FacetChart:
    """The serpent at every checkpoint side by side."""
    from .charts.serpent import small_multiples
    return small_multiples(_serpent_frame(run), max_points=max_points, columns=4, size=115)


def spacing_fin_figure(run: Run) -> alt.LayerChart:
    """Whitespace tokens at the last checkpoint, coloured by the indentation they carry."""
    from .charts.serpent import spacing_fin_chart
    return spacing_fin_chart(_serpent_frame(run), max_points=3000, width=400, height=320)
