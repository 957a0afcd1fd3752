"""The ``susceptibility`` stage: χ per token and head at a run's checkpoints (:mod:`serpent.susceptibility`
estimates it), and :func:`load_susceptibilities`, which reads them back.

Probe windows are fixed windows of held-out text (seeded), or another run's (``susceptibility.probe_from``:
:func:`read_probe`, :func:`check_probe`), SGLD minibatches come from the training split, and each
checkpoint's result is written as soon as it is computed, stamped with the settings and the checkpoint it came from
(:class:`serpent.stages.stage.Stage`), so an interrupted stage resumes. A checkpoint whose chains diverge is retried
with smaller steps; one that diverges at every step size is left out with a note saying what to do (the sweep over
the checkpoints, shared with the ``llc`` stage: :class:`serpent.stages.sweep.Sweep`).
"""

from __future__ import annotations

import functools
import hashlib
import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Optional, Sequence

import numpy as np
import torch

from ..config import RunConfig, SamplerConfig, config_hash
from ..errors import ConfigError, SerpentError
from ..outputs import SUSCEPTIBILITY, SUSCEPTIBILITY_DIVERGED, TOKENIZER, load_susceptibilities
from ..susceptibility import SusceptibilityResult
from .distributed import current_world, susceptibilities_across_ranks
from .llc import check_fits, epsilon_check
from .stage import Stage
from .sweep import Sweep

__all__ = ["susceptibility_stage", "load_susceptibilities", "step_path", "ProbeWindows", "read_probe",
           "check_probe"]

STAGE = "susceptibility"


@dataclass(frozen=True)
class ProbeWindows:
    """The windows a susceptibility stage probes: ``tokens`` ``(S, L)`` int64 (column 0 the BOS), the offsets of
    their column 1 in the held-out stream they were drawn from ``(S,)`` (-1 where unknown), their documents' names,
    and the result file they were read from (None: drawn from this run's held-out split)."""

    tokens: torch.Tensor
    offsets: np.ndarray
    doc_names: list[str]
    source: Optional[Path] = None

    def digest(self) -> str:
        """A content hash (16 hex digits) of the token ids and document names: equal windows, equal digest."""
        h = hashlib.sha256(np.ascontiguousarray(self.tokens.numpy(), dtype="<i8").tobytes())
        h.update(json.dumps(list(self.doc_names)).encode())
        return h.hexdigest()[:16]


def read_probe(source) -> ProbeWindows:
    """The probe windows of another run's susceptibility result (``susceptibility.probe_from``): ``source`` is a
    ``step_*.safetensors`` file, a run or artifact folder (the first result of its ``susceptibility/``) or such a
    ``susceptibility/`` folder; a relative path is read from the current directory. Read with
    :meth:`SusceptibilityResult.load` (safetensors, never unpickled); check them with :func:`check_probe`.

    >>> probe = read_probe(Path(__file__).parents[2] / "artifacts" / "cpu")
    >>> tuple(probe.tokens.shape), probe.source.name
    ((12, 128), 'step_0000000.safetensors')
    """
    path = Path(source).expanduser()
    if path.is_dir():
        results = SUSCEPTIBILITY.files(path) or sorted(path.glob("step_*.safetensors"))
        if not results:
            raise SerpentError(f"susceptibility.probe_from={source}: {path.resolve()} holds no susceptibility result "
                               "(susceptibility/step_*.safetensors); point it to a step_*.safetensors file or to a "
                               "run or artifact folder whose susceptibility stage has run (e.g. artifacts/cpu)")
        path = results[0]
    elif not path.is_file():
        raise SerpentError(f"susceptibility.probe_from={source}: no such file or folder ({path.resolve()}; a relative "
                           f"path is read from the current directory, {Path.cwd()}); point it to a run or artifact "
                           "folder whose susceptibility stage has run (e.g. artifacts/cpu) or to one of its "
                           "susceptibility/step_*.safetensors files")
    r = SusceptibilityResult.load(path)
    n = len(r.probe_tokens)
    offsets = r.settings.get("probe_offsets")
    offsets = np.asarray(offsets if isinstance(offsets, list) and len(offsets) == n else [-1] * n, dtype=np.int64)
    if len(r.doc_names) != n:
        raise SerpentError(f"{path}: {n} probe windows but {len(r.doc_names)} document names; not a result the "
                           "susceptibility stage wrote, so its windows cannot be probed again")
    return ProbeWindows(torch.from_numpy(np.ascontiguousarray(r.probe_tokens, dtype=np.int64)), offsets,
                        list(r.doc_names), path)


def check_probe(probe: ProbeWindows, cfg: RunConfig, tokenizer=None) -> None:
    """Refuse, with what to set, windows that this run cannot probe as they were probed where they came from: token
    ids outside ``model.d_vocab``, windows longer than ``model.n_ctx``, a shape other than ``probe_sequences`` x
    ``probe_length`` (default ``n_ctx``) or, given this run's ``tokenizer``, a BOS or a tokenizer other than the
    source run's (the same ids would be other text).

    >>> from serpent.config import get_preset
    >>> probe = read_probe(Path(__file__).parents[2] / "artifacts" / "cpu")
    >>> check_probe(probe, get_preset("cpu"))
    >>> try:
    ...     check_probe(probe, get_preset("cpu", susceptibility={"probe_sequences": 96}))
    ... except ConfigError as e:
    ...     print(str(e).split("; ")[1])
    set susceptibility.probe_sequences=12 (now 96)
    """
    sc, mc = cfg.susceptibility, cfg.model
    where = f"susceptibility.probe_from={sc.probe_from or probe.source}"
    tokens = probe.tokens
    s, length = (int(n) for n in tokens.shape)
    if tokens.numel() and (int(tokens.min()) < 0 or int(tokens.max()) >= mc.d_vocab):
        raise ConfigError(f"{where}: its probe holds token ids up to {int(tokens.max())}, outside this run's "
                          f"vocabulary of model.d_vocab = {mc.d_vocab}; make this run with that run's tokenizer "
                          "(data.tokenizer=file:<that run>/tokenizer and its model.d_vocab)")
    if length > mc.n_ctx:
        raise ConfigError(f"{where}: its windows have {length} tokens, longer than this run's context, model.n_ctx = "
                          f"{mc.n_ctx}; probe windows of at most {mc.n_ctx} tokens")
    if s != sc.probe_sequences:
        raise ConfigError(f"{where}: its probe has {s} windows of {length} tokens; "
                          f"set susceptibility.probe_sequences={s} (now {sc.probe_sequences})")
    if length != (sc.probe_length or mc.n_ctx):
        raise ConfigError(f"{where}: its probe has {s} windows of {length} tokens; set susceptibility.probe_length="
                          f"{length} (now {sc.probe_length or f'None: model.n_ctx = {mc.n_ctx}'})")
    if tokenizer is None:
        return
    root = probe.source.parent.parent if probe.source and probe.source.parent.name == STAGE else None
    theirs = TOKENIZER.read(root) if root is not None and TOKENIZER.exists(root) else None
    if theirs is not None and theirs.fingerprint() != tokenizer.fingerprint():
        raise ConfigError(f"{where}: those token ids were made by another tokenizer than this run's (fingerprints "
                          f"{theirs.fingerprint()} and {tokenizer.fingerprint()}), so here they would be other text; "
                          f"make this run with data.tokenizer=file:{TOKENIZER.file(root)}")
    if bool((tokens[:, 0] != tokenizer.bos_id).any()):
        raise ConfigError(f"{where}: its windows do not start with this run's BOS (id {tokenizer.bos_id}): they were "
                          "made by another tokenizer; make this run with the tokenizer of the run they came from "
                          "(data.tokenizer=file:<that run>/tokenizer)")


def _drawn_probe(run, length: int) -> ProbeWindows:
    """``probe_sequences`` windows of ``length`` tokens from the run's held-out split (seed ``probe_seed``)."""
    from ..tokens import document_of, fixed_windows

    sc = run.config.susceptibility
    test = run.tokens("test")
    check_fits("susceptibility.probe_sequences", sc.probe_sequences, test, length - 1, "held-out")
    probe, offsets = fixed_windows(test, sc.probe_sequences, length, sc.probe_seed, run.tokenizer().bos_id)
    starts, names = run.documents("test")
    docs = [names[i] if 0 <= i < len(names) else "?" for i in document_of(starts, offsets)]
    return ProbeWindows(probe, offsets, docs)


def _settings(cfg, probe: ProbeWindows | None = None) -> dict:
    """What a checkpoint's result depends on; which checkpoints are analysed is not part of it (written as 0, the
    value it had before ``susceptibility.sampler.checkpoints`` existed, so older results stay valid). With
    ``probe_from``, the read windows' digest (read when not given) stands for where they came from: the same windows
    under another path are the same probe. Without it the settings are those of runs made before it existed."""
    sus = cfg.susceptibility.to_dict()
    sus["sampler"]["checkpoints"] = 0
    sus.pop("probe_from")
    settings = {"model": cfg.model.to_dict(), "data": cfg.data.to_dict(), "susceptibility": sus, "v": 1}
    if cfg.susceptibility.probe_from is not None:
        settings["probe"] = (probe or read_probe(cfg.susceptibility.probe_from)).digest()
    return settings


def _stage_key(cfg) -> str:
    """The settings key stored in every result (``settings["key"]``)."""
    return config_hash(_settings(cfg))


def step_path(run, step: int) -> Path:
    """Where the result of checkpoint ``step`` lives: ``RUN/susceptibility/step_{step:07d}.safetensors``."""
    run.stage_dir(STAGE)
    return SUSCEPTIBILITY.file(run, step=step)


def _sweep(stage: Stage) -> Sweep:
    """The susceptibility stage's checkpoint sweep: one safetensors file per checkpoint (its stamp read from the
    header: ``settings["key"]`` and ``settings["checkpoint"]``), a divergence record beside it."""
    return Sweep(stage, result=SUSCEPTIBILITY, record=SUSCEPTIBILITY_DIVERGED, head=SusceptibilityResult.read_settings,
                 settings="key", what="susceptibilities")


def susceptibility_stage(run, *, steps: Sequence[int] | None = None, device=None, progress: bool = True,
                         gather: bool = True) -> dict:
    """Susceptibilities at ``run.config.susceptibility.sampler.checkpoints`` checkpoints (or the given ``steps``).

    Probe windows: ``probe_sequences`` fixed windows of ``probe_length`` tokens (default ``n_ctx``) from the held-out
    split (seed ``probe_seed``), with their document names, or those of ``probe_from`` (read and checked before
    anything else: :func:`read_probe`, :func:`check_probe`); SGLD minibatches from the training split; results in
    ``RUN/susceptibility/step_{step:07d}.safetensors``. A step whose file was written with the same settings from
    the same checkpoint is skipped, so an interrupted stage continues where it stopped.

    ``gather=False`` (``--partial``): compute and keep these checkpoints' results only, and record no stage: one job
    of a sweep run as independent jobs; a last run without it gathers them. Under ``torchrun`` the ranks share the
    work (:mod:`serpent.stages.distributed`).
    """
    from ..tokens import batch_at, fixed_windows

    cfg = run.config
    sc, mc = cfg.susceptibility, cfg.model
    world = current_world(device)
    eps_note = epsilon_check(run, "susceptibility", echo=None if world.is_main else (lambda line: None))
    read = read_probe(sc.probe_from) if sc.probe_from is not None else None
    if read is not None:
        check_probe(read, cfg, run.tokenizer())
    stage = Stage(run, STAGE, _settings(cfg, read))
    key = stage.settings
    chosen = stage.steps(sc.sampler.checkpoints, steps)
    stage_key = stage.key(steps=chosen)
    if gather and (done := stage.current(stage_key, [step_path(run, s) for s in chosen])) is not None:
        return {**done, **({"epsilon_note": eps_note} if eps_note else {})}
    length = sc.probe_length or mc.n_ctx
    if length > mc.n_ctx:
        raise ConfigError(f"susceptibility.probe_length: got {length}; must be at most model.n_ctx = {mc.n_ctx}")
    tok = run.tokenizer()
    train = run.tokens("train")
    windows = read or _drawn_probe(run, length)
    probe, docs = windows.tokens, windows.doc_names
    check_fits("susceptibility.task_sequences", sc.task_sequences, train, length - 1, "training")
    check_fits("susceptibility.sampler.batch_size", sc.sampler.batch_size, train, mc.n_ctx - 1, "training")
    task = None
    if sc.task_sequences:
        task, _ = fixed_windows(train, sc.task_sequences, length, sc.probe_seed + 1, tok.bos_id)
    s_cfg = sc.sampler
    batches = lambda i: batch_at(train, i, s_cfg.batch_size, mc.n_ctx, s_cfg.seed, tok.bos_id)

    dev = world.device(device)
    run.stage_dir(STAGE)

    # where read windows came from (their offsets are in that run's held-out stream); absent for drawn ones
    probe_origin = {"probe_from": str(sc.probe_from), "probe_digest": windows.digest()} if read is not None else {}
    model_at = functools.lru_cache(1)(lambda step: run.load_model(step, device="cpu"))   # once for its retries

    def compute(step, eps, ranks, first):
        checkpoint = stage.stamp(step)["checkpoint"]
        model = model_at(step)
        c = SamplerConfig(**{**s_cfg.to_dict(), "epsilon": eps})
        return susceptibilities_across_ranks(
            model, probe, batches, c, world=ranks, task_tokens=task, components=sc.components, doc_names=docs,
            step=step, baseline=sc.baseline, device=dev, progress=progress and first and world.is_main,
            settings={"key": key, "checkpoint": checkpoint, "probe_seed": sc.probe_seed,
                      "probe_offsets": windows.offsets.tolist(), "epsilon": c.epsilon, **probe_origin})

    def diverged_note(failures):
        tried = "; ".join(f"{eps:.2g}: {error.split(';')[0]}" for eps, error in failures)
        return (f"SGLD diverged at every step size tried ({tried}); choose susceptibility."
                f"sampler.epsilon with serpent.calibrate_run(serpent.Run.open('{run.path}')) (notebook 4), "
                "or a larger gamma")

    swept = _sweep(stage).run(chosen, compute, lambda path, res, stamp: res.save(path), diverged_note,
                              epsilon=s_cfg.epsilon, world=world, gather=gather, progress=progress,
                              desc="susceptibilities")
    if not swept.gathered:
        return swept.report
    done, kept = swept.good, swept.heads
    drift = {str(s): _largest_drift(kept[s]) for s in done}
    retried = [s for s in swept.computed if kept[s].get("epsilon", s_cfg.epsilon) != s_cfg.epsilon]
    n_comp = mc.n_layers * mc.n_heads + (mc.n_layers if sc.components == "heads+mlp" else 0)
    seconds = time.time() - stage.t0
    summary = {"steps": done, "computed": swept.computed, "components": n_comp,
               "tokens_per_step": int(sc.probe_sequences * (length - 1)), "seconds": round(seconds, 1),
               "retried": retried, "diverged": {str(s): note for s, note in swept.diverged.items()},
               "largest_drift": drift, "ranks": world.size}
    if eps_note:
        summary["epsilon_note"] = eps_note
    stage.done(stage_key, seconds, summary)
    return summary


def _largest_drift(settings: dict) -> float | None:
    """The largest |drift| of the draws' loss over a result's restrictions (None for results saved before it)."""
    drift = settings.get("drift")
    return round(max(abs(v) for v in drift.values()), 3) if drift else None
