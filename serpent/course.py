"""The course's run: find (or make) the run directory a notebook works on, in full or in fast mode.

Every notebook starts with ``run = course_run()``. Design:

* **Where.** The repository root is found by walking up from the current directory to the first folder that holds
  ``runs/`` or ``pyproject.toml`` (notebooks run from ``notebooks/``); in Colab it is ``/content``. Runs live in
  ``ROOT/runs/<name>``.
* **Which.** ``course_run()`` without a preset takes :func:`default_preset`: the full (GPU) run when its committed
  results (``artifacts/full``) or a complete ``runs/full`` are there, else the book's CPU run (``artifacts/cpu``,
  which grows the induction circuit on text), else ``tiny``. Where neither is on disk but
  fetching is allowed (:func:`published_artifacts_url`: in Colab, or with ``SERPENT_ONLINE=1``; never in fast mode),
  the published artifacts of the full run, else of the CPU run, are downloaded first
  (:func:`serpent.artifacts.fetch_artifacts`); if that fails, the notebook says why and goes on with ``tiny``.
* **What.** ``course_run("tiny")`` returns ``runs/tiny`` when that run is *complete* (every available pipeline stage
  recorded in its ``stages.json`` and training finished); else, when committed artifacts ``ROOT/artifacts/<preset>``
  exist (:mod:`serpent.artifacts`), their unpacked run directory; otherwise it runs :func:`serpent.stages.run_pipeline`
  on it, which resumes whatever is missing. A complete run is returned without touching it, so a notebook opens in
  seconds when the run exists (refresh it from the command line with ``python -m serpent run --out runs/tiny``).
* **Fast mode** (:func:`is_fast`: the environment variable ``SERPENT_FAST=1``, set by the tests, CI and the fast
  book build). A complete ``runs/tiny`` is still preferred (CI creates one before the tests); without it the
  notebooks use ``runs/<preset>-fast``, a *micro* override of the tiny preset (:func:`micro_config`: 150 training
  steps on 1.5 MB of text, a handful of SGLD draws) that runs end to end in about a minute on a free CPU.
* Presets other than ``tiny`` take long: ``cpu`` about 1.75 hours on a 2-core CPU, ``colab`` and ``full`` many
  minutes on a GPU; ``course_run`` builds them only when asked to (``compute=True``, the default), and says how long
  to expect.

>>> micro_config().train.steps
150
>>> is_fast({"SERPENT_FAST": "1"}), is_fast({})
(True, False)
"""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Mapping, Optional

from .config import RunConfig, get_preset
from .errors import ConfigError, SerpentError
from .io import find_root, in_colab

__all__ = ["course_run", "default_preset", "is_fast", "find_root", "micro_config", "run_is_complete",
           "published_artifacts_url", "live_settings", "toy_cache_dir"]

FAST_ENV = "SERPENT_FAST"
ONLINE_ENV = "SERPENT_ONLINE"


def is_fast(env: Optional[Mapping[str, str]] = None) -> bool:
    """True when ``SERPENT_FAST`` is set to ``1``/``true``/``yes`` (in ``env``, default ``os.environ``)."""
    env = os.environ if env is None else env
    return str(env.get(FAST_ENV, "0")).strip().lower() in ("1", "true", "yes", "on")


def toy_cache_dir(root: Optional[str | os.PathLike] = None) -> Path:
    """Where the notebooks keep the induction toy's trained circuit (``ROOT/runs/toy``, :func:`find_root`), so that
    notebooks 2, 4 and 6 (and the book build after nbmake) train it once: pass it as ``cache=`` to
    :func:`serpent.induction_toy.grow_induction_circuit`.

    >>> toy_cache_dir("/content").parts[-2:]
    ('runs', 'toy')
    """
    return find_root(root) / "runs" / "toy"


def micro_config(preset: str = "tiny") -> RunConfig:
    """The fast-mode recipe: ``preset`` (tiny) shrunk to run end to end in about a minute on a CPU.

    Tiny's widths with a 64-token context; 1.5 MB of text; 150 training steps of 8 windows with 9 checkpoints; LLC
    with 2 chains x 12 draws (after 36 burn-in steps) at 4 checkpoints; susceptibilities with 2 chains x 6 draws (minibatches of 4) on 4 probe
    windows of 64 tokens at 2 checkpoints. It is a smoke test of the whole course, not a model worth reading.
    """
    base = get_preset(preset)
    s = base.susceptibility.sampler.to_dict()
    s.update(chains=2, draws=6, batch_size=4, checkpoints=2)
    return base.with_overrides(
        preset=f"{base.preset}-fast",
        model={"n_ctx": min(64, base.model.n_ctx)},
        data={"max_bytes": 1_500_000, "tokenizer_train_bytes": 1_000_000},
        train={"steps": 150, "batch_size": 8, "log_checkpoints": 6, "linear_checkpoints": 3, "eval_every": 25, "eval_batches": 2},
        llc={"sampler.chains": 2, "sampler.draws": 12, "sampler.burnin": 36, "sampler.batch_size": 8,
             "sampler.checkpoints": 4},
        susceptibility={"sampler": s, "probe_sequences": 4, "probe_length": min(64, base.model.n_ctx)},
        embedding={"n_neighbors": 10, "max_points_page": 400},
    )


def run_is_complete(path: str | os.PathLike) -> bool:
    """True when ``path`` is a run directory whose every available pipeline stage has run and whose training
    reached ``train.steps``."""
    from .outputs import CONFIG, STAGES_RECORD
    from .stages import STAGES
    from .rundir import Run

    path = Path(path)
    if not CONFIG.file(path).is_file() or not STAGES_RECORD.file(path).is_file():
        return False
    try:
        run = Run.open(path)
        stages = STAGES_RECORD.read(path)
    except (SerpentError, ConfigError):
        return False
    if not all(s in stages for s in STAGES):
        return False
    return run.config.train.steps in run.checkpoint_steps()


def live_settings(model_cfg, settings: Mapping[str, object], cpu: Mapping[str, object], *, device=None,
                  echo=print) -> dict:
    """The sizes of a notebook's live computation (SGLD, calibration) on this machine.

    A notebook's parameters are sized for a GPU, or for the ``tiny`` model on a CPU. With a larger model (the full
    run's 3M model, e.g. from its committed artifacts) on a CPU the same cell would take hours, so there every entry of
    ``cpu`` replaces the one in ``settings`` (numbers: the smaller of the two, so fast mode stays fast) and ``echo``
    says so. ``model_cfg``: the run's :class:`~serpent.config.ModelConfig`.

    >>> from serpent.config import get_preset
    >>> big, small = get_preset("full").model, get_preset("tiny").model
    >>> live_settings(big, {"DRAWS": 40, "WINDOW": 1024}, {"DRAWS": 16, "WINDOW": 128}, device="cpu", echo=None)
    {'DRAWS': 16, 'WINDOW': 128}
    >>> live_settings(small, {"DRAWS": 40, "WINDOW": 128}, {"DRAWS": 16, "WINDOW": 128}, device="cpu", echo=None)
    {'DRAWS': 40, 'WINDOW': 128}
    """
    from .device import default_device
    out = dict(settings)
    tiny = get_preset("tiny").model
    larger = (model_cfg.d_model > tiny.d_model or model_cfg.n_ctx > tiny.n_ctx or model_cfg.d_vocab > tiny.d_vocab
              or model_cfg.n_layers * model_cfg.n_heads > tiny.n_layers * tiny.n_heads)
    if not larger or default_device(device).type != "cpu":
        return out
    for k, v in cpu.items():
        cur = out.get(k)
        numbers = isinstance(v, (int, float)) and isinstance(cur, (int, float)) and not isinstance(v, bool)
        out[k] = min(cur, v) if numbers else v
    if echo is not None:
        changed = {k: out[k] for k in cpu if out[k] != settings.get(k)}
        if changed:
            echo(f"a {model_cfg.d_model}-wide model on a CPU: this notebook's live cells use {changed} so that they "
                 f"take a minute or two (on a GPU: {({k: settings.get(k) for k in changed})})")
    return out


def published_artifacts_url(env: Optional[Mapping[str, str]] = None) -> Optional[str]:
    """Where the published artifact folders live (``SERPENT_ARTIFACTS_URL``, which the notebooks' Colab setup cell
    sets to the repository's ``artifacts/`` folder), or None when fetching is not allowed: only in Colab or with
    ``SERPENT_ONLINE=1``, never in fast mode.

    >>> published_artifacts_url({"SERPENT_ARTIFACTS_URL": "https://example.org/artifacts", "SERPENT_ONLINE": "1"})
    'https://example.org/artifacts'
    >>> published_artifacts_url({"SERPENT_ARTIFACTS_URL": "https://example.org/artifacts"}) is None  # offline
    True
    """
    from .artifacts import ARTIFACTS_URL_ENV
    env = os.environ if env is None else env
    url = str(env.get(ARTIFACTS_URL_ENV, "")).strip()
    online = in_colab() or str(env.get(ONLINE_ENV, "0")).strip().lower() in ("1", "true", "yes", "on")
    return url.rstrip("/") if url and online and not is_fast(env) else None


def _fetch_published(base: Path, progress: bool, then: str) -> None:
    """Download the published results of the full run, else of the book's CPU run, into ``base/artifacts/NAME``
    when fetching is allowed and neither is at hand."""
    url = published_artifacts_url()
    if url is None or default_preset(base) != "tiny":
        return
    from .artifacts import ArtifactError, fetch_artifacts
    why = {}
    for name in ("full", "cpu"):
        try:
            fetch_artifacts(f"{url}/{name}", name, root=base, progress=progress)
            print(f"fetched the {name} run's results from {url}/{name}")
            return
        except ArtifactError as e:
            why[name] = str(e)
    print(f"note: the published results could not be fetched (full: {why['full']}; cpu: {why['cpu']}); {then}")


def default_preset(root: Optional[str | os.PathLike] = None) -> str:
    """The preset the notebooks use unless told otherwise: the first of ``"full"`` (the GPU run) and ``"cpu"`` (the
    book's CPU run, which grows the induction circuit on text) whose results are at hand under ``root`` (default
    :func:`find_root`): committed ``artifacts/NAME`` or a complete ``runs/NAME``; else ``"tiny"``.

    >>> import tempfile
    >>> default_preset(tempfile.mkdtemp())
    'tiny'
    """
    base = Path(root) if root is not None else find_root()
    for name in ("full", "cpu"):
        if (base / "artifacts" / name / "manifest.json").is_file() or run_is_complete(base / "runs" / name):
            return name
    return "tiny"


def course_run(preset: Optional[str] = None, fast: Optional[bool] = None, *,
               root: Optional[str | os.PathLike] = None, compute: bool = True, progress: bool = True, device=None):
    """The :class:`~serpent.rundir.Run` a notebook works on (see the module docstring).

    ``preset``: ``"tiny"``, ``"cpu"``, ``"colab"`` or ``"full"``; None (default): :func:`default_preset`. ``fast``: default
    :func:`is_fast`; ``root``: where ``runs/`` lives (default :func:`find_root`); ``compute=False`` raises instead of
    running the pipeline when the run is missing or incomplete.
    """
    from .config import PRESETS
    from .rundir import Run

    base = Path(root) if root is not None else find_root()
    fast = is_fast() if fast is None else bool(fast)
    if preset in (None, "full", "cpu") and not fast:
        _fetch_published(base, progress, "going on with the tiny preset" if preset is None
                         else f"the {preset} preset will be computed here")
    preset = default_preset(base) if preset is None else preset
    if preset not in PRESETS:
        raise ConfigError(f"preset: got {preset!r}; allowed: {sorted(PRESETS)}")
    runs = base / "runs"
    full_path = runs / preset
    if run_is_complete(full_path):
        return Run.open(full_path)
    if (base / "artifacts" / preset / "manifest.json").is_file():   # committed results: instant, no compute
        from .artifacts import load_artifacts
        return load_artifacts(base / "artifacts" / preset, root=base)
    if fast:
        path, cfg = runs / f"{preset}-fast", micro_config("tiny")
        if preset != "tiny":
            print(f"fast mode: using the micro recipe of the tiny preset instead of {preset!r}")
    else:
        path, cfg = full_path, get_preset(preset)
    if run_is_complete(path):
        return Run.open(path)
    if not compute:
        raise SerpentError(f"{path} is missing or incomplete; create it with `python -m serpent run --preset "
                           f"{preset} --out {path}` (or call course_run(compute=True))")
    if preset in ("full", "paper") and not fast:
        print(f"note: the {preset!r} preset trains for a long time and needs a GPU; on a CPU use preset='tiny'")
    if preset == "cpu" and not fast:
        print("note: the 'cpu' preset takes about 1.75 hours on a 2-core CPU (the command line shows time left: "
              "`python -m serpent run --preset cpu`); preset='tiny' takes minutes")
    print(f"building the run {path} ({cfg.preset} recipe): this happens once, later notebooks load it")
    from .stages import run_pipeline
    t0 = time.time()
    run = Run.create(path, cfg)
    run_pipeline(run, device=device, progress=progress, echo=print if progress else (lambda s: None))
    print(f"run ready in {time.time() - t0:.0f} s: {path}")
    return run
