"""The ``induction`` stage: previous-token and prefix scores, the ICL score and the heads' classes over every
checkpoint of a run (:mod:`serpent.induction` computes them on one model).

Writes ``RUN/induction/{scores.parquet, heads.json, scores.*, icl.*}``.
"""

from __future__ import annotations

import time
from typing import Optional, Sequence

import pandas as pd

from ..config import InductionConfig
from ..errors import SerpentError
from ..induction import classify_heads, icl_windows, induction_scores, repeated_random_tokens
from ..io import atomic_write_json, write_parquet
from ..outputs import INDUCTION_HEADS, INDUCTION_SCORES
from .stage import Stage

__all__ = ["induction_stage", "scores_over_checkpoints"]

STAGE = "induction"


def _run_bos_id(run) -> int:
    try:
        return int(run.tokenizer().bos_id)
    except SerpentError:  # no tokenizer saved (e.g. a hand-made run): our tokenizers put <|endoftext|> at id 0
        return 0


def _settings(run) -> InductionConfig:
    return run.config.induction


def scores_over_checkpoints(run, steps: Optional[Sequence[int]] = None, *, settings: Optional[InductionConfig] = None,
                            device=None, progress: bool = True) -> pd.DataFrame:
    """:func:`induction_scores` at every checkpoint of ``run`` (or at ``steps``): a tidy frame with columns
    ``step, head, score, value``. The probe and the held-out ICL windows (from ``run.tokens("test")``) are seeded
    and identical for every checkpoint; one model object is reused and only its weights are swapped.
    """
    from tqdm.auto import tqdm
    from ..device import default_device

    settings = settings or _settings(run)
    all_steps = run.checkpoint_steps()
    steps = list(all_steps if steps is None else steps)
    if not steps:
        raise SerpentError(f"{run.path} has no checkpoints; train first (`python -m serpent run --out {run.path}`)")
    run.check_checkpoints(steps)                  # every one, before the first is scored
    dev = default_device(device)
    bos = _run_bos_id(run)
    mcfg = run.config.model
    L = min(settings.half_len, (mcfg.n_ctx - 1) // 2)
    probe = repeated_random_tokens(settings.n_seqs, L, mcfg.d_vocab, bos_id=bos, seed=settings.seed)
    windows = None
    try:
        test = run.tokens("test")
    except SerpentError:
        test = None
    if test is not None and len(test) >= mcfg.n_ctx - 1:
        windows = icl_windows(test, settings.icl_windows, mcfg.n_ctx, bos_id=bos, seed=settings.icl_seed)
    model = run.load_model(steps[0], device=dev)
    frames = []
    for step in tqdm(steps, desc="induction scores", unit="ckpt", disable=not progress):
        model.load_state_dict(run.load_params(step, device=dev), strict=False)
        df = induction_scores(model, probe=probe, bos_id=bos, text_tokens=windows)
        df.insert(0, "step", int(step))
        frames.append(df)
    out = pd.concat(frames, ignore_index=True)
    out.attrs.update(half_len=L, bos_id=bos, n_seqs=settings.n_seqs)
    return out


def induction_stage(run, *, device=None, progress: bool = True) -> dict:
    """Pipeline stage ``induction``: scores over all checkpoints, head classes at the last one, and charts.

    Writes into ``RUN/induction/``: ``scores.parquet`` (step, head, score, value), ``heads.json``
    (:func:`~serpent.induction.classify_heads` output plus the settings) and ``scores.{png,html}``,
    ``icl.{png,html}``. Skipped when it already ran with the same settings and checkpoints. Returns a short summary.
    """
    settings = _settings(run)
    stage = Stage(run, STAGE, {"v": 1, "settings": settings.to_dict(), "model": run.config.model.to_dict()})
    steps = stage.steps(0)
    key = stage.key(steps=steps)
    out = stage.dir
    if (done := stage.current(key, [INDUCTION_HEADS.file(run)])) is not None:
        return {**done, "skipped": True}
    df = scores_over_checkpoints(run, settings=settings, device=device, progress=progress)
    write_parquet(pd.DataFrame(df), INDUCTION_SCORES.file(run))
    heads = classify_heads(df, prev_threshold=settings.prev_threshold, prefix_threshold=settings.prefix_threshold,
                           chance_factor=settings.chance_factor)
    heads["settings"] = settings.to_dict()
    heads["half_len"] = int(df.attrs.get("half_len", settings.half_len))
    heads["bos_id"] = int(df.attrs.get("bos_id", 0))
    atomic_write_json(INDUCTION_HEADS.file(run), heads)

    from ..charts.induction import icl_chart, induction_scores_chart, save_chart
    save_chart(induction_scores_chart(df, top=settings.top_heads, thresholds=heads["thresholds"]), out / "scores")
    if "icl_score" in set(df["score"]) or "induction_loss_diff" in set(df["score"]):
        save_chart(icl_chart(df), out / "icl")

    last = df[df["step"] == df["step"].max()]
    model_last = last[last["head"] == "model"].set_index("score")["value"]
    per_head = last[last["head"] != "model"]

    def best(score):
        r = per_head[per_head["score"] == score].sort_values("value").iloc[-1]
        return {"head": r["head"], "value": round(float(r["value"]), 4)}

    summary = {
        "checkpoints": len(steps), "final_step": int(steps[-1]),
        "previous_token_heads": heads["previous_token"], "induction_heads": heads["induction"],
        "best_prev_token": best("prev_token"), "best_prefix": best("prefix"),
        "induction_loss_diff": round(float(model_last["induction_loss_diff"]), 4),
    }
    if "icl_score" in model_last:
        summary["icl_score"] = round(float(model_last["icl_score"]), 4)
    stage.done(key, summary=summary)
    summary["seconds"] = round(time.time() - stage.t0, 2)
    return summary
