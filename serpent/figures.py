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

from .outputs import (ANATOMY, CLUSTERS, EMBEDDING, load_anatomy, load_embedding, load_heads, load_llc_table,
                      load_scores, load_separation, load_susceptibilities)
from .rundir import Run

__all__ = ["book_run", "book_numbers", "glue_numbers", "ablation_numbers", "corpus_figure", "loss_figure",
           "induction_figure", "llc_figure", "chi_tokens_figure", "response_figure", "toy_figure", "serpent_figure",
           "small_multiples_figure", "spacing_fin_figure", "body_axes_figure", "thickening_figure", "anatomy_numbers",
           "robustness_tables",
           "run_clusters", "cluster_numbers", "clusters_figure", "BOOK_PRESET"]

#: The run behind the book's figures: its results are committed in ``artifacts/cpu``.
BOOK_PRESET = "cpu"


def book_run(preset: str = BOOK_PRESET) -> Run:
    """The book's run: ``runs/<preset>`` when complete, else the committed ``artifacts/<preset>`` (never computed
    here: a missing run raises with the command that creates it)."""
    from .course import course_run
    return course_run(preset, compute=False, progress=False)


def _scores(run: Run) -> pd.DataFrame:
    return load_scores(run)


def _separation(run: Run) -> dict[int, dict]:
    return load_separation(run)


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
    heads = load_heads(run)
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
    score), ``sep_induction_at_<step>`` (for the steps the run has them), ``llc_checkpoints``; the model's sizes
    ``n_layers``, ``n_heads``, ``d_model``, ``d_head``, ``d_vocab`` (and ``context``); ``score_checkpoints``
    (checkpoints with induction scores); the LLC's pause (:func:`serpent.milestones.llc_pause`)
    ``llc_pause_from``/``_to``/``_change`` and the values ``llc_pause_first``/``_second`` there; the spacing fin's
    test ``fin_tokens`` (whitespace tokens at the last checkpoint), ``fin_r2_first``/``_last`` (the share of their
    indentation width that their place in the map explains, at the first and last checkpoint: a fin orders them,
    R² near 1) and ``fin_verdict`` (text).
    """
    from .milestones import llc_pause, predicted_induction_onset
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
    llc = load_llc_table(run).sort_values("step")
    llc_summary = run.stage_summary("llc")["summary"]
    sep = _separation(run)
    s_last = sep[max(sep)]
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
                   for k, v in sep.items()},
                **{f"prev_score_at_{int(k)}": float(v) for k, v in
                   scores[(scores["head"] == prev) & (scores["score"] == "prev_token")].set_index("step")["value"].items()},
                **{f"induction_loss_diff_at_{int(k)}": float(v) for k, v in
                   model[model["score"] == "induction_loss_diff"].set_index("step")["value"].items()}}
    prev_on = _onset(scores, prev, "prev_token", float(th["prev_token"]))
    # the first head of a later layer to copy the previous token (it serves no induction: nothing composes with it)
    later = scores[(scores["score"] == "prev_token") & scores["head"].astype(str).str.match(r"[1-9]\d*:")]
    early = {h: _onset(scores, h, "prev_token", float(th["prev_token"])) for h in later["head"].unique()}
    early = {h: s for h, s in early.items() if s is not None}
    early_head = min(early, key=early.get) if early else None
    pause_from, pause_to, pause_change = llc_pause(llc["step"], llc["mean"])
    at = llc.set_index("step")["mean"]
    frame = _serpent_frame(run)
    fin_first, fin_last = (_fin_r2(frame[frame["step"] == s]) for s in (frame["step"].min(), frame["step"].max()))
    m = cfg.model
    return {
        **per_step, "llc_checkpoints": len(llc),
        "n_layers": int(m.n_layers), "n_heads": int(m.n_heads), "d_model": int(m.d_model), "d_head": int(m.d_head),
        "d_vocab": int(m.d_vocab), "score_checkpoints": int(scores["step"].nunique()),
        "llc_pause_from": pause_from, "llc_pause_to": pause_to, "llc_pause_change": pause_change,
        "early_prev_head": early_head or "none", "early_prev_onset": early.get(early_head, 0),
        "early_prev_last": float(at_last[(early_head, "prev_token")]) if early_head else float("nan"),
        # how far the induction loss difference wanders from zero before the previous-token head forms
        "induction_loss_diff_noise": float(model[(model["score"] == "induction_loss_diff")
                                                 & (model["step"] < (prev_on or 0))]["value"].abs().max())
        if prev_on else float("nan"),
        "llc_pause_first": float(at[pause_from]) if pause_from is not None else float("nan"),
        "llc_pause_second": float(at[pause_to]) if pause_to is not None else float("nan"),
        "fin_tokens": fin_last[0], "fin_r2_first": fin_first[1], "fin_r2_last": fin_last[1],
        "fin_verdict": ("a fin: the whitespace tokens are ordered by their indentation in the map"
                        if fin_last[1] >= 0.5 and fin_last[1] > 2 * fin_first[1] else
                        "no fin: the whitespace tokens are not ordered by their indentation in the map, no more than "
                        "at initialisation"), "preset": cfg.preset, "final_step": int(cfg.train.steps), "checkpoints": len(run.checkpoint_steps()),
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
        "llc_draws": int(cfg.llc.sampler.draws), "llc_burnin": int(cfg.llc.sampler.burnin),
        "llc_chains": int(cfg.llc.sampler.chains), "llc_epsilon": float(cfg.llc.sampler.epsilon),
        "llc_epsilon_text": _power_text(cfg.llc.sampler.epsilon), "llc_n_beta": float(cfg.llc.sampler.n_beta),
        "prev_head": prev, "prev_score": float(at_last[(prev, "prev_token")]),
        "prev_onset": prev_on,
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


def _fin_r2(frame: pd.DataFrame) -> tuple[int, float]:
    """(whitespace tokens of one checkpoint that carry spaces, the R² of their indentation width, spaces in the token
    plus those just before it, regressed linearly on their map coordinates): how well a straight fin orders them.

    >>> f = pd.DataFrame({"x": [0., 1, 2, 3], "y": [0., 0, 1, 0], "n_prev_spaces": [0, 1, 2, 3],
    ...                   "token": ["Ġ", "Ġ", "Ġ", "Ġ"], "pattern": "spacing"})
    >>> _fin_r2(f)
    (4, 1.0)
    """
    spaces = frame["n_prev_spaces"].to_numpy(float) + frame["token"].astype(str).str.count("[ ␣Ġ]").to_numpy(float)
    white = frame["pattern"].isin(["spacing", "formatting"]).to_numpy() & (spaces > 0)
    y = spaces[white]
    if len(y) < 4 or np.ptp(y) == 0:
        return int(len(y)), float("nan")
    X = np.c_[np.ones(len(y)), frame["x"].to_numpy(float)[white], frame["y"].to_numpy(float)[white]]
    beta, *_ = np.linalg.lstsq(X, y, rcond=None)
    return int(len(y)), round(float(1 - ((y - X @ beta) ** 2).sum() / ((y - y.mean()) ** 2).sum()), 6)


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
    heads = load_heads(run)
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
    heads = load_heads(run)
    return induction_scores_chart(_scores(run), thresholds=heads["thresholds"])


def llc_figure(run: Run) -> alt.VConcatChart:
    """The LLC across training above the best induction scores, on one step axis."""
    from .charts.llc import llc_with_scores_chart
    table = load_llc_table(run)
    return llc_with_scores_chart(table, _scores(run))


def chi_tokens_figure(run: Run, heads: Optional[list[str]] = None, seq: int = 0, n_tokens: int = 64,
                      step: Optional[int] = None) -> alt.VConcatChart:
    """A probe sequence at the last checkpoint with susceptibilities (default: one coloured by χ of the best
    prefix head, one by χ of the circuit's previous-token head)."""
    from .charts.tokens import token_strip
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
    return load_embedding(run)


def serpent_figure(run: Run, max_points: int = 500) -> alt.TopLevelMixin:
    """The interactive serpent: a checkpoint slider, a pattern legend that filters, χ bars of the token clicked."""
    from .charts.serpent import serpent_chart
    return serpent_chart(_serpent_frame(run), max_points=max_points, width=460, height=380)


def small_multiples_figure(run: Run, max_points: int = 1000) -> alt.FacetChart:
    """The serpent at every checkpoint side by side."""
    from .charts.serpent import small_multiples
    return small_multiples(_serpent_frame(run), max_points=max_points, columns=3, size=180, point_size=9)


def spacing_fin_figure(run: Run) -> alt.LayerChart:
    """Whitespace tokens at the last checkpoint, coloured by the indentation they carry."""
    from .charts.serpent import spacing_fin_chart
    return spacing_fin_chart(_serpent_frame(run), max_points=3000, width=400, height=320)


def _anatomy(run: Run) -> dict[int, dict]:
    anat = load_anatomy(run, missing={})
    if not anat:
        from .errors import SerpentError
        raise SerpentError(f"{run.path} has no {ANATOMY.path} (its serpent stage ran before the anatomy "
                           f"existed): run `python -m serpent run --out {run.path}` to add it")
    return anat


def anatomy_numbers(run: Run) -> dict:
    """The body plan's numbers the chapters quote (:mod:`serpent.anatomy`, from ``serpent/anatomy.json``), by name:
    ``pc1_share_first``/``_last`` (PC1's share of the variance; ``_min``/``_max`` over checkpoints),
    ``pc1_corr_min`` (its smallest correlation with the tokens' mean χ), ``pc2_share_first``/``_last``,
    ``thickness_first``/``_last``, ``thickness_min``/``thickness_min_step`` (the thinnest checkpoint),
    ``thickening_last`` (last over thinnest),
    ``pc2_head_last`` (the head loading most on PC2 at the end), ``auc_first``/``_last`` (induction tokens along PC2)
    with ``auc_null_last``/``auc_null_sd_last``, ``auc_ci_last_low``/``_high``, ``readout_first``/``_last``
    (pattern from χ, cross-validated accuracy), ``readout_cross_token_last``, ``readout_majority``,
    ``readout_null_last``, ``readout_induction_first``/``_last`` (recall of the induction pattern), ``anatomy_steps``,
    ``fin_spacing_tokens``, ``fin_whitespace_tokens``, ``fin_rho_last``/``fin_null_last``/``fin_null_sd_last`` (the
    whitespace fin), ``fin_present`` (text).
    """
    anat = _anatomy(run)
    steps = sorted(anat)
    first, last = anat[steps[0]], anat[steps[-1]]
    th = {s: anat[s]["thickness"] for s in steps}
    s_min = min(th, key=th.get)
    fin = last.get("fin_whitespace", {})
    return {
        "anatomy_steps": len(steps),
        "pc1_share_first": first["pc1_share"], "pc1_share_last": last["pc1_share"],
        "pc1_share_min": min(a["pc1_share"] for a in anat.values()),
        "pc1_share_max": max(a["pc1_share"] for a in anat.values()),
        "pc1_corr_min": min(a["pc1_mean_corr"] for a in anat.values()),
        "pc2_share_first": first["pc2_share"], "pc2_share_last": last["pc2_share"],
        "thickness_first": first["thickness"], "thickness_last": last["thickness"],
        "thickening_last": last["thickness"] / th[s_min],
        "thickness_min": th[s_min], "thickness_min_step": int(s_min),
        "pc2_head_last": last["pc2_top_heads"][0],
        "auc_first": first["induction_auc_pc2"], "auc_last": last["induction_auc_pc2"],
        "auc_null_last": last["induction_auc_null_mean"], "auc_null_sd_last": last["induction_auc_null_sd"],
        "auc_ci_last_low": last["induction_auc_pc2_ci"][0], "auc_ci_last_high": last["induction_auc_pc2_ci"][1],
        "readout_first": first["pattern"]["accuracy"], "readout_last": last["pattern"]["accuracy"],
        "readout_cross_token_last": last["pattern"].get("cross_token_accuracy", float("nan")),
        "readout_majority": last["pattern"]["majority"], "readout_null_last": last["pattern"]["null_mean"],
        "readout_induction_first": first["pattern"]["recall"].get("induction", float("nan")),
        "readout_induction_last": last["pattern"]["recall"].get("induction", float("nan")),
        "fin_spacing_tokens": int(last.get("fin", {}).get("n", 0)), "fin_whitespace_tokens": int(fin.get("n", 0)),
        "fin_rho_last": fin.get("rho", float("nan")), "fin_null_last": fin.get("null_mean", float("nan")),
        "fin_null_sd_last": fin.get("null_sd", float("nan")),
        "fin_present": ("yes: the whitespace tokens' 16 numbers order them by the length of their whitespace run"
                        if fin.get("present") else "no: no more order than with the counts shuffled"),
    }


def body_axes_figure(run: Run, steps: Optional[list[int]] = None) -> alt.FacetChart:
    """The baby and the adult in body axes (PC1 × PC2, :func:`serpent.charts.serpent.body_axes_chart`), each panel
    titled with its PC2 share and the induction tokens' AUC along PC2."""
    from .anatomy import ANATOMY_PREPROCESS, body_axes_frame
    from .charts.serpent import body_axes_chart
    anat = _anatomy(run)
    frame = body_axes_frame(_serpent_frame(run), ANATOMY_PREPROCESS)
    titles = {s: f"step {s:,}: PC2 {a['pc2_share']:.1%}, induction AUC {a['induction_auc_pc2']:.2f}"
              for s, a in anat.items()}
    return body_axes_chart(frame, steps, numbers=titles, size=260)


def thickening_figure(run: Run) -> alt.HConcatChart:
    """PC2's thickening and the induction tokens' separation along it over training, beside the best prefix score."""
    from .anatomy import anatomy_table
    from .charts.serpent import thickening_chart
    scores = _scores(run)
    best = scores[(scores["score"] == "prefix") & (scores["head"].astype(str).str.startswith("1:"))]
    best = best.groupby("step", as_index=False)["value"].max()
    return thickening_chart(anatomy_table(_anatomy(run)), best)


# -- susceptibility clusters (issue 34) ----------------------------------------------------------------------------

_CLUSTERS_CACHE: dict = {}


def run_clusters(run: Run) -> dict:
    """The run's ``serpent/clusters.json`` (the serpent stage writes it); for a run whose serpent stage ran before
    clusters existed, computed from its serpent frame (about 20 s on one core, kept for the session)."""
    if CLUSTERS.exists(run):
        return CLUSTERS.read(run)
    key = (str(run.path), EMBEDDING.file(run).stat().st_mtime_ns)
    if key not in _CLUSTERS_CACHE:
        from .clusters import clusters_over_training
        _CLUSTERS_CACHE[key] = json.loads(json.dumps(clusters_over_training(_serpent_frame(run)).to_json()))
    return _CLUSTERS_CACHE[key]


def cluster_numbers(run: Run) -> dict:
    """The numbers chapter 7 quotes about the book's run's clusters: ``clusters_step`` (the last checkpoint),
    ``clusters_n``/``_standing`` (its clusters, and how many stand out from the null), ``clusters_first_step`` (the
    first checkpoint with a cluster standing out), ``clusters_tokens`` (tokens per checkpoint), the largest
    induction-rich standing cluster ``clusters_ind_id``/``_size``/``_share`` (its share of induction tokens) /
    ``_enrichment``, ``clusters_ind_first_step`` (the first checkpoint from which a cluster made mostly of induction
    tokens stands out at every later one), and ``clusters_born`` (text: the last checkpoint's clusters that stand out, with their births)."""
    from .clusters import cluster_table, pattern_births
    data = run_clusters(run)
    table = cluster_table(data)
    last = int(max(data["steps"]))
    now = table[table["step"] == last]
    standing = table[table["stands_out"]]
    ind = now[now["stands_out"] & (now["top_pattern"] == "induction")].sort_values("size", ascending=False)
    born = [f"C{int(r.cluster)} ({r.top_pattern} {r.top_pattern_share:.0%}, {int(r.size)} tokens, "
            + (f"born at step {int(r.birth):,}" if r.birth is not None and r.birth == r.birth else "not yet born") + ")"
            for r in now[now["stands_out"]].itertuples()]
    out = {"clusters_step": last, "clusters_n": int(len(now)), "clusters_standing": int(now["stands_out"].sum()),
           "clusters_first_step": int(standing["step"].min()) if len(standing) else None,
           "clusters_tokens": len(data["labels"][str(last)]), "clusters_born": _listing(born) if born else "none"}
    kinds = pattern_births(table).set_index("pattern")
    out["clusters_ind_first_step"] = kinds["from"].get("induction")
    if len(ind):
        r = ind.iloc[0]
        out.update({"clusters_ind_id": int(r["cluster"]), "clusters_ind_size": int(r["size"]),
                    "clusters_ind_share": float(r["top_pattern_share"]),
                    "clusters_ind_enrichment": float(r["enrichment"])})
    return out


def clusters_figure(run: Run) -> alt.VConcatChart:
    """The clusters of every checkpoint against the null, under the heads' scores, with the heads' onsets
    (:func:`serpent.charts.clusters.cluster_births_chart`)."""
    from .charts.clusters import cluster_births_chart
    from .clusters import cluster_table
    n = book_numbers(run)
    onsets = {"previous-token heads": n.get("prev_onset"), "induction heads": n.get("prefix_onset")}
    return cluster_births_chart(cluster_table(run_clusters(run)), _scores(run), onsets=onsets)


def robustness_tables(path=None) -> dict:
    """The anatomy's robustness table (``bench/anatomy_robustness.py`` writes ``bench/results/anatomy_robustness.json``
    from the book's run) as narrow frames: ``preprocess`` (the body-plan numbers under each pre-processing),
    ``views`` (how well the patterns separate in each 2-D picture: chance-corrected kNN purity across tokens, all
    patterns and induction alone), ``umap`` (UMAP's settings), ``seeds`` (two SGLD seeds: one row per quantity, one
    column per checkpoint) and ``probe`` (a probe four times larger), plus ``chosen_view``."""
    from .io import find_root, read_json
    r = read_json(path or find_root() / "bench" / "results" / "anatomy_robustness.json")
    out = {}
    out["preprocess"] = pd.DataFrame([
        {"pre-processing": m, "step": int(s), "PC1": a["pc1_share"], "PC2": a["pc2_share"],
         "AUC on PC2": a["induction_auc_pc2"], "random": a["induction_auc_null_mean"], "read-out": a["readout"],
         "across tokens": a["readout_cross_token"], "majority": a["readout_majority"]}
        for m, by in r["preprocess"].items() for s, a in by.items()]).sort_values("step", kind="stable")
    out["views"] = pd.DataFrame([
        {"picture": v, "step": int(s), "purity": m["cross_token_map"], "induction": m["induction_cross_token_map"]}
        for v, by in r["views"].items() for s, m in by.items()]).sort_values("step", kind="stable")
    out["umap"] = pd.DataFrame([
        {"n_neighbors": int(k.split("/")[0]), "min_dist": float(k.split("/")[1]), "purity": m["cross_token_map"],
         "induction": m["induction_cross_token_map"]} for k, m in r["umap_settings"]["grid"].items()])
    if "seeds" in r:
        sd = r["seeds"]
        rows = {}
        for s in sorted(sd["agreement"], key=int):
            a = sd["agreement"][s]
            col = rows.setdefault(f"step {int(s):,}", {})
            col.update({"per-head correlation (median)": a["head_corr_median"],
                        "per-head correlation (lowest)": a["head_corr_min"],
                        "per-token correlation (median)": a["token_corr_median"],
                        "split R-hat (median)": a.get("rhat_median"), "split R-hat (95th pct)": a.get("rhat_p95")})
            for name in sd["anatomy"]:
                b = sd["anatomy"][name][s]
                col.update({f"{name}: PC2 share": b["pc2_share"], f"{name}: AUC on PC2": b["induction_auc_pc2"],
                            f"{name}: read-out": b["readout"]})
        out["seeds"] = pd.DataFrame(rows).rename_axis("quantity").reset_index()
    if "probe48" in r:
        p = r["probe48"]
        rows = {}
        for s, a in sorted(p["anatomy"].items(), key=lambda kv: int(kv[0])):
            fs, fw = a["fin_spacing"], a["fin_whitespace"]
            rows[f"step {int(s):,}"] = {
                "PC1 share": f"{a['pc1_share']:.3f}", "PC2 share": f"{a['pc2_share']:.4f}",
                "AUC on PC2": f"{a['induction_auc_pc2']:.2f}", "read-out (majority)":
                f"{a['readout']:.2f} ({a['readout_majority']:.2f})",
                f"spacing fin, {fs['n']} tokens": f"{fs['rho']:+.2f} (shuffled {fs['null_mean']:+.2f} ± {fs['null_sd']:.2f})",
                f"whitespace fin, {fw['n']} tokens":
                f"{fw['rho']:+.2f} (shuffled {fw['null_mean']:+.2f} ± {fw['null_sd']:.2f})"}
        out["probe"] = pd.DataFrame(rows).rename_axis(f"{p['tokens']:,} tokens").reset_index()
    out["chosen_view"] = r["chosen_view"]
    return out


# -- four training seeds (issue 31, item 4) -------------------------------------------------------------------------

def _seeds_dir():
    from .io import find_root
    return find_root() / "bench" / "results"


def seed_tables(path=None) -> dict:
    """The body plan across training seeds (``bench/seeds.py`` writes ``bench/results/seeds.json``) as frames:
    ``onsets`` (one row per seed: the circuit's onsets and final scores, and whether its corpus and probe tokens are
    seed 0's), ``body`` (the body-plan numbers, one column per checkpoint, one row per seed and quantity) and
    ``agreement`` (token by token against seed 0, for seeds that probed the same tokens, beside the ceiling that
    SGLD noise alone sets: one model sampled twice)."""
    from .io import read_json
    r = read_json(path or _seeds_dir() / "seeds.json")
    seeds = sorted(r["seeds"], key=int)
    out = {"onsets": pd.DataFrame([{
        "seed": int(s), "init / data order": f"{v['model_seed']} / {v['train_seed']}",
        "previous-token onset": v["onsets"]["prev_token_onset"], "induction onset": v["onsets"]["induction_onset"],
        "best prefix score (head)": f"{v['onsets']['best_prefix']:.3f} ({v['onsets']['best_prefix_head']})",
        "best previous-token score (head)": f"{v['onsets']['best_prev']:.3f} ({v['onsets']['best_prev_head']})",
        "corpus": "the book run's" if int(s) == 0 or v.get("same_corpus") else "this machine's packages",
        "tokenizer and probe": "the book run's" if int(s) == 0 or v.get("same_probe") else "its own"}
        for s, v in ((s, r["seeds"][s]) for s in seeds)])}
    rows = []
    for name, key, fmt in (("PC1 share", "pc1_share", "{:.3f}"), ("thickness", "thickness", "{:.3f}"),
                           ("induction AUC on PC2", "induction_auc_pc2", "{:.2f}"),
                           ("read-out (majority)", "readout", "{:.2f}"), ("PC2's leading head", "pc2_top_head", "{}")):
        for s in seeds:
            rows.append({"quantity": name, "seed": int(s)} | {
                f"{int(t):,}": (fmt.format(a[key]) + (f" ({a['readout_majority']:.2f})" if key == "readout" else ""))
                if a.get(key) is not None else "–"
                for t, a in sorted(r["seeds"][s]["anatomy"].items(), key=lambda kv: int(kv[0]))})
    out["body"] = pd.DataFrame(rows)
    rows = []
    for who, by in [(f"seed {s} vs seed 0", r["agreement"][s]) for s in sorted(r["agreement"], key=int)] + \
            [("one model sampled twice (ceiling)", r["ceiling"])]:
        for t, a in sorted(by.items(), key=lambda kv: int(kv[0])):
            rows.append({"pair": who, "step": int(t), "PC1 r": a["pc1_corr"], "PC2 r": a["pc2_corr"],
                         "15-NN overlap": a["knn_overlap"], "chance": a["knn_chance"],
                         "matched heads r (median)": a["head_match_median"]})
    out["agreement"] = pd.DataFrame(rows)
    return out


def seed_numbers(path=None) -> dict:
    """Numbers the book quotes about the training seeds (``seeds_*`` keys; see :func:`seed_tables`): ranges over the
    seeds of the onsets and of the body plan at the first and last checkpoints."""
    from .io import read_json
    r = read_json(path or _seeds_dir() / "seeds.json")
    seeds = sorted(r["seeds"], key=int)
    first, last = str(r["steps"][0]), str(r["steps"][-1])
    end = [r["seeds"][s]["anatomy"][last] for s in seeds]
    start = [r["seeds"][s]["anatomy"][first] for s in seeds]

    def span(v, f="{:.2f}"):         # a range "a–b" (or one value), negatives with a typographic minus
        v = [x for x in v if x is not None]
        text = f.format(min(v)) if min(v) == max(v) else f"{f.format(min(v))}–{f.format(max(v))}"
        return text.replace("-", "−")

    def thinnest(s):
        return min(a["thickness"] for a in r["seeds"][s]["anatomy"].values())
    own = [s for s, e in zip(seeds, end) if e["pc2_top_head"] == r["seeds"][s]["onsets"]["best_prev_head"]]
    pc1_trained = min(a["pc1_share"] for s in seeds for t, a in r["seeds"][s]["anatomy"].items() if t != first)
    return {"seeds_n": str(len(seeds)), "seeds_last_step": f"{int(last):,}",
            "seeds_pc2_heads": ", ".join(f"{e['pc2_top_head']} in seed {s}" for s, e in zip(seeds, end)),
            "seeds_pc2_own_prev": "every run" if len(own) == len(seeds) else f"{len(own)} of the {len(seeds)} runs",
            "seeds_induction_onsets": span([r["seeds"][s]["onsets"]["induction_onset"] for s in seeds], "{:,}"),
            "seeds_prev_onsets": span([r["seeds"][s]["onsets"]["prev_token_onset"] for s in seeds], "{:,}"),
            "seeds_best_prefix": span([r["seeds"][s]["onsets"]["best_prefix"] for s in seeds], "{:.3f}"),
            "seeds_auc_end": span([e["induction_auc_pc2"] for e in end]),
            "seeds_auc_start": span([a["induction_auc_pc2"] for a in start]),
            "seeds_pc1_min_trained": f"{pc1_trained:.1%}",
            "seeds_pc1_start": span([a["pc1_share"] for a in start], "{:.0%}"),
            "seeds_thinnest": span([thinnest(s) for s in seeds], "{:.3f}"),
            "seeds_thickness_end": span([e["thickness"] for e in end], "{:.3f}"),
            "seeds_thickening": span([e["thickness"] / thinnest(s) for s, e in zip(seeds, end)], "{:.1f}"),
            "seeds_readout_start": span([a["readout"] for a in start]),
            "seeds_readout_end": span([e["readout"] for e in end]),
            "seeds_majority": span([e["readout_majority"] for e in end]),
            **_agreement_numbers(r, span)}


def _agreement_numbers(r: dict, span) -> dict:
    """The token-by-token agreement with seed 0 at the first and last checkpoints (``seeds_pair_*``: ranges over the
    seeds that probed seed 0's tokens) beside one model sampled twice (``seeds_ceiling_*``); none without such a
    seed."""
    if not r["agreement"]:
        return {}
    first, last = str(r["steps"][0]), str(r["steps"][-1])
    paired = sorted(r["agreement"], key=int)
    out = {"seeds_paired": (f"seed {paired[0]}" if len(paired) == 1 else
                            f"seeds {', '.join(paired[:-1])} and {paired[-1]}"),
           "seeds_chance": f"{r['ceiling'][last]['knn_chance']:.3f}"}
    for key, name, fmt in (("pc1_corr", "pc1r", "{:.2f}"), ("pc2_corr", "pc2r", "{:.2f}"),
                           ("knn_overlap", "knn", "{:.3f}"), ("head_match_median", "heads", "{:.2f}")):
        for when, step in (("start", first), ("end", last)):
            out[f"seeds_pair_{name}_{when}"] = span([a[step][key] for a in r["agreement"].values()], fmt)
            if step in r["ceiling"]:
                out[f"seeds_ceiling_{name}_{when}"] = fmt.format(r["ceiling"][step][key])
    steps = sorted(set.intersection(*(set(a) for a in r["agreement"].values())), key=int)
    out["seeds_pair_pc2r_by_step"] = ", ".join(                     # PC2 r over training, a range over the seeds
        f"{span([a[t]['pc2_corr'] for a in r['agreement'].values()])} at {int(t):,}" for t in steps)
    return out


def seeds_figure(steps: Optional[list[int]] = None, size: int = 95) -> alt.VConcatChart:
    """Every training seed's serpent in its body axes (rows) at a few checkpoints (columns; default the first, two
    around the induction onset and the last), from the χ ``bench/seeds.py`` keeps in ``bench/results/seeds/``
    beside the book's run (seed 0); each seed's tokens labelled with its own tokenizer (the book run's where the
    seed kept none: made with ``data.tokenizer=file:artifacts/cpu/tokenizer``)."""
    from .anatomy import ANATOMY_PREPROCESS, body_axes_frame
    from .artifacts import load_artifacts
    from .charts.serpent import body_axes_chart
    from .patterns import label_results
    from .susceptibility import SusceptibilityResult
    from .tokenizer import Tokenizer
    run = load_artifacts("cpu")
    ref = load_susceptibilities(run)
    all_steps = sorted(ref)
    steps = steps or [all_steps[0], all_steps[len(all_steps) // 2 - 1], all_steps[len(all_steps) // 2 + 1],
                      all_steps[-1]]
    by_seed = {0: ({s: ref[s] for s in steps}, run.tokenizer())}
    for d in sorted((_seeds_dir() / "seeds").glob("seed*"), key=lambda p: int(p.name[4:])):
        res = {r.step: r for r in (SusceptibilityResult.load(p) for p in (d / "susceptibility").glob("*.safetensors"))}
        if all(s in res for s in steps):       # no tokenizer.json kept: the seed used the book run's
            tok = Tokenizer.load(d) if (d / "tokenizer.json").is_file() else run.tokenizer()
            by_seed[int(d.name[4:])] = ({s: res[s] for s in steps}, tok)
    rows = []
    for seed, (res, tok) in by_seed.items():
        titles = {s: f"seed {seed}, step {s:,}" for s in steps}
        chart = body_axes_chart(body_axes_frame(label_results(res, tok), ANATOMY_PREPROCESS), steps,
                                numbers=titles, size=size, point_size=6)
        chart.spec.encoding.x.title = "PC1 (mean χ)"      # short: four panels share the text column
        rows.append(chart)
    return alt.vconcat(*rows).resolve_scale(color="shared")
