"""Configuration: small frozen dataclasses with named presets, validated on construction.

A run is described by one :class:`RunConfig` made of sections (model, data, train, llc, susceptibility, embedding).
Every field is checked when the object is built; a bad value raises :class:`~serpent.errors.ConfigError` naming the
field, the value and what is allowed. Configs round-trip through plain dicts (JSON) so a run directory records
exactly what produced it.

Presets:

* ``tiny``   a CPU recipe that runs end to end in minutes (same architecture family, smaller widths and context).
  It shows the *early* stages of training only (the CI preset).
* ``cpu``    tiny's model trained for 42,000 steps of 16 x 128 tokens (86 M tokens, about 50 minutes on 2 CPU cores):
  previous-token heads, then an induction head, on natural text; the book's run where no GPU run is at hand.
* ``full``   the 3M architecture on the default offline corpus, long enough to grow the induction circuit (GPU).
* ``colab``  ``full`` resized to train in about 15 minutes on a Colab T4.
* ``paper``  the tetrahedron-3m recipe of Hoogland et al. on the paper's data (training windows are drawn at random
  rather than read once in order).

>>> cfg = get_preset("tiny")
>>> cfg.model.n_heads * cfg.model.n_layers
16
>>> get_preset("tiny", train={"steps": 10}).train.steps
10
>>> ModelConfig(n_heads=0)
Traceback (most recent call last):
...
serpent.errors.ConfigError: model.n_heads: got 0; must be an integer >= 1
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import json
from dataclasses import dataclass, field, fields, replace
from typing import Any, Optional

from .errors import ConfigError

__all__ = [
    "ModelConfig", "DataConfig", "TrainConfig", "SamplerConfig", "LLCConfig", "InductionConfig", "SusceptibilityConfig",
    "EmbeddingConfig", "RunConfig", "PRESETS", "get_preset", "config_hash",
]


@contextlib.contextmanager
def _named(inner: str, outer: str):
    """A ConfigError raised by a section as ``inner.field`` named as the user set it, ``outer.field``
    (``llc.sampler.epsilon``, not ``sampler.epsilon``)."""
    try:
        yield
    except ConfigError as e:
        msg = str(e)
        if inner != outer and msg.startswith((inner + ".", inner + ":")):
            raise ConfigError(outer + msg[len(inner):]) from None
        raise


def _check(cond: bool, section: str, name: str, value: Any, allowed: str) -> None:
    if not cond:
        raise ConfigError(f"{section}.{name}: got {value!r}; {allowed}")


def _int_at_least(section: str, name: str, value: Any, low: int) -> None:
    _check(isinstance(value, int) and not isinstance(value, bool) and value >= low, section, name, value,
           f"must be an integer >= {low}")


def _positive(section: str, name: str, value: Any, allow_zero: bool = False) -> None:
    ok = isinstance(value, (int, float)) and not isinstance(value, bool) and value == value
    ok = ok and (value >= 0 if allow_zero else value > 0) and value != float("inf")
    _check(ok, section, name, value, "must be a finite number " + (">= 0" if allow_zero else "> 0"))


class _Section:
    """Mixin: dict round trip with helpful errors for unknown keys."""

    _name = "config"

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict):
        if not isinstance(d, dict):
            raise ConfigError(f"{cls._name}: expected a mapping of fields, got {type(d).__name__}")
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(d) - known)
        if unknown:
            raise ConfigError(f"{cls._name}: unknown field(s) {unknown}; allowed fields are {sorted(known)}")
        kwargs = dict(d)
        for f in fields(cls):
            if f.name in kwargs and isinstance(kwargs[f.name], list):
                kwargs[f.name] = tuple(kwargs[f.name])
        return cls(**kwargs)


@dataclass(frozen=True)
class ModelConfig(_Section):
    """Architecture of the attention-only transformer (TransformerLens vocabulary)."""

    _name = "model"
    n_layers: int = 2
    n_heads: int = 8
    d_model: int = 256
    d_head: int = 32
    n_ctx: int = 1024
    d_vocab: int = 5000
    positional_embedding_type: str = "shortformer"
    normalization_type: Optional[str] = "LN"
    attn_only: bool = True
    d_mlp: Optional[int] = None
    act_fn: str = "gelu"
    seed: int = 0

    def __post_init__(self):
        s = "model"
        for name in ("n_layers", "n_heads", "d_model", "d_head", "n_ctx"):
            _int_at_least(s, name, getattr(self, name), 1)
        _int_at_least(s, "d_vocab", self.d_vocab, 16)
        _check(self.positional_embedding_type in ("shortformer", "standard"), s, "positional_embedding_type",
               self.positional_embedding_type, "allowed: 'shortformer' (the paper's) or 'standard'")
        _check(self.normalization_type in ("LN", None), s, "normalization_type", self.normalization_type,
               "allowed: 'LN' or None")
        _check(isinstance(self.attn_only, bool), s, "attn_only", self.attn_only, "must be True or False")
        if not self.attn_only:
            _int_at_least(s, "d_mlp", self.d_mlp, 1)
        _check(self.act_fn in ("gelu", "relu", "gelu_new"), s, "act_fn", self.act_fn,
               "allowed: 'gelu', 'gelu_new', 'relu'")
        _int_at_least(s, "seed", self.seed, 0)

    @property
    def heads(self) -> list[str]:
        """Head labels ``"L:H"`` in TransformerLens order."""
        return [f"{l}:{h}" for l in range(self.n_layers) for h in range(self.n_heads)]


@dataclass(frozen=True)
class DataConfig(_Section):
    """Where the text comes from and how it is split and tokenized.

    ``corpus`` is one of ``python`` (every .py file of this interpreter: stdlib and site-packages), ``stdlib``,
    ``files:<glob>``, ``shakespeare``, ``hf:<dataset>[:<column>]``. ``max_bytes`` reads a deterministic sample
    (files ordered by a hash of their path) of at most that many bytes; None reads everything.
    ``tokenizer`` is ``bpe`` (a byte-level BPE of ``model.d_vocab`` tokens trained on the corpus), ``hf:<repo>``,
    or ``file:<path>``: a tokenizer folder written by :meth:`serpent.tokenizer.Tokenizer.save` (another run's
    ``RUN/tokenizer``, e.g. ``file:artifacts/cpu/tokenizer``), so that runs made from slightly different corpora
    (the ``python`` corpus of another machine) read the same token ids. A relative path is resolved against the
    current directory when the data stage runs (``tokenizer_train_bytes`` is then unused); the config records the
    path as given, the run keeps a copy in ``RUN/tokenizer/``.

    >>> DataConfig(tokenizer="file:artifacts/cpu/tokenizer").tokenizer
    'file:artifacts/cpu/tokenizer'
    """

    _name = "data"
    corpus: str = "python"
    max_bytes: Optional[int] = None
    test_fraction: float = 0.02
    tokenizer: str = "bpe"
    tokenizer_train_bytes: int = 20_000_000

    def __post_init__(self):
        s = "data"
        _check(isinstance(self.corpus, str) and (
            self.corpus in ("python", "stdlib", "shakespeare") or self.corpus.startswith(("files:", "hf:"))),
            s, "corpus", self.corpus, "allowed: 'python', 'stdlib', 'shakespeare', 'files:<glob>', 'hf:<dataset>[:<column>]'")
        if self.max_bytes is not None:
            _int_at_least(s, "max_bytes", self.max_bytes, 1000)
        _check(isinstance(self.test_fraction, float) and 0 < self.test_fraction < 0.5, s, "test_fraction",
               self.test_fraction, "must be a float in (0, 0.5)")
        _check(isinstance(self.tokenizer, str) and (self.tokenizer == "bpe" or (
            self.tokenizer.startswith(("hf:", "file:")) and bool(self.tokenizer.partition(":")[2].strip()))),
            s, "tokenizer", self.tokenizer, "allowed: 'bpe', 'hf:<repo>' or 'file:<tokenizer folder>'")
        _int_at_least(s, "tokenizer_train_bytes", self.tokenizer_train_bytes, 1000)


@dataclass(frozen=True)
class TrainConfig(_Section):
    """AdamW training with a constant learning rate and a log-plus-linear checkpoint schedule."""

    _name = "train"
    steps: int = 26_000
    batch_size: int = 64
    lr: float = 1e-3
    beta1: float = 0.9
    beta2: float = 0.999
    weight_decay: float = 0.05
    warmup_steps: int = 0
    seed: int = 0
    log_checkpoints: int = 40
    linear_checkpoints: int = 40
    eval_every: int = 100
    eval_batches: int = 4
    precision: str = "auto"
    compile: str = "auto"

    def __post_init__(self):
        s = "train"
        _int_at_least(s, "steps", self.steps, 1)
        _int_at_least(s, "batch_size", self.batch_size, 1)
        _positive(s, "lr", self.lr)
        _check(isinstance(self.beta1, float) and 0 <= self.beta1 < 1, s, "beta1", self.beta1, "must be in [0, 1)")
        _check(isinstance(self.beta2, float) and 0 <= self.beta2 < 1, s, "beta2", self.beta2, "must be in [0, 1)")
        _positive(s, "weight_decay", self.weight_decay, allow_zero=True)
        _int_at_least(s, "warmup_steps", self.warmup_steps, 0)
        _int_at_least(s, "seed", self.seed, 0)
        _int_at_least(s, "log_checkpoints", self.log_checkpoints, 0)
        _int_at_least(s, "linear_checkpoints", self.linear_checkpoints, 0)
        _int_at_least(s, "eval_every", self.eval_every, 1)
        _int_at_least(s, "eval_batches", self.eval_batches, 1)
        _check(self.precision in ("auto", "fp32", "bf16", "fp16"), s, "precision", self.precision,
               "allowed: 'auto', 'fp32', 'bf16', 'fp16'")
        _check(self.compile in ("auto", "yes", "no"), s, "compile", self.compile, "allowed: 'auto', 'yes', 'no'")


@dataclass(frozen=True)
class SamplerConfig(_Section):
    """SGLD hyperparameters, named once: see ``serpent.sgld``.

    ``checkpoints`` selects the training checkpoints to analyse: 0 means all of them, k > 0 means k of them
    spread evenly (always including the first and the last).
    """

    _name = "sampler"
    epsilon: float = 3e-3
    gamma: float = 300.0
    n_beta: float = 21.71
    chains: int = 4
    draws: int = 200
    burnin: int = 0
    steps_between_draws: int = 1
    batch_size: int = 32
    weight_decay: float = 0.0
    seed: int = 100
    checkpoints: int = 0
    precision: str = "auto"

    def __post_init__(self):
        s = self._name
        _positive(s, "epsilon", self.epsilon)
        _positive(s, "gamma", self.gamma, allow_zero=True)
        _positive(s, "n_beta", self.n_beta)
        _int_at_least(s, "chains", self.chains, 1)
        _int_at_least(s, "draws", self.draws, 1)
        _int_at_least(s, "burnin", self.burnin, 0)
        _int_at_least(s, "steps_between_draws", self.steps_between_draws, 1)
        _int_at_least(s, "batch_size", self.batch_size, 1)
        _positive(s, "weight_decay", self.weight_decay, allow_zero=True)
        _int_at_least(s, "seed", self.seed, 0)
        _int_at_least(s, "checkpoints", self.checkpoints, 0)
        _check(self.precision in ("auto", "fp32", "bf16", "fp16"), s, "precision", self.precision,
               "allowed: 'auto', 'fp32', 'bf16', 'fp16'")


@dataclass(frozen=True)
class LLCConfig(_Section):
    """The LLC stage's settings: its SGLD sampler, ``llc.sampler`` (as the susceptibilities' is
    ``susceptibility.sampler``): ``--set llc.sampler.draws=100``."""

    _name = "llc"
    sampler: SamplerConfig = field(default_factory=SamplerConfig)

    def __post_init__(self):
        if isinstance(self.sampler, dict):
            with _named("sampler", "llc.sampler"):
                object.__setattr__(self, "sampler", SamplerConfig.from_dict(self.sampler))
        _check(isinstance(self.sampler, SamplerConfig), "llc", "sampler", self.sampler, "must be a SamplerConfig")


@dataclass(frozen=True)
class SusceptibilityConfig(_Section):
    """Per-token, per-head susceptibilities: an SGLD run per head plus a full run, probed on held-out text.

    The probe: ``probe_sequences`` windows of ``probe_length`` tokens (None: ``model.n_ctx``) drawn from the run's
    held-out split with seed ``probe_seed``; or, with ``probe_from``, the windows (token ids, documents, offsets) of
    another run's susceptibility result: a ``step_*.safetensors`` file, or a run or artifact folder (its first
    result), a relative path read from the current directory. Two training seeds probed on the same windows can be
    compared token by token (``serpent compare``) even when their corpora differ slightly (use the same tokenizer
    too: ``data.tokenizer=file:<the other run>/tokenizer``). The read windows must then agree with
    ``probe_sequences`` and ``probe_length`` (the stage says what to set if not); ``probe_seed`` is not used. The
    stage's settings key holds a hash of the read windows, not the path: other windows are computed again, the same
    windows named by another path are not.
    """

    _name = "susceptibility"
    sampler: SamplerConfig = field(default_factory=lambda: SamplerConfig(
        epsilon=1e-3, gamma=300.0, n_beta=30.0, chains=4, draws=200, batch_size=32, checkpoints=6))
    probe_sequences: int = 96
    probe_length: Optional[int] = None
    components: str = "heads"
    probe_seed: int = 1337
    task_sequences: int = 0      # 0: the probe sequences define the sampling-task loss L; k > 0: k training windows
    baseline: str = "init_loss"  # L_0 in phi = L - L_0: devinterp's "init_loss" or "task" (L at the checkpoint)
    probe_from: Optional[str] = None  # another run's result (file or folder) whose probe windows to use

    def __post_init__(self):
        s = "susceptibility"
        if isinstance(self.sampler, dict):
            with _named("sampler", "susceptibility.sampler"):
                object.__setattr__(self, "sampler", SamplerConfig.from_dict(self.sampler))
        _check(isinstance(self.sampler, SamplerConfig), s, "sampler", self.sampler, "must be a SamplerConfig")
        _int_at_least(s, "probe_sequences", self.probe_sequences, 1)
        if self.probe_length is not None:
            _int_at_least(s, "probe_length", self.probe_length, 2)
        _check(self.components in ("heads", "heads+mlp"), s, "components", self.components,
               "allowed: 'heads' or 'heads+mlp'")
        _int_at_least(s, "probe_seed", self.probe_seed, 0)
        _int_at_least(s, "task_sequences", self.task_sequences, 0)
        _check(self.baseline in ("init_loss", "task"), s, "baseline", self.baseline, "allowed: 'init_loss' or 'task'")
        _check(self.probe_from is None or (isinstance(self.probe_from, str) and bool(self.probe_from.strip())), s,
               "probe_from", self.probe_from, "must be None or the path of a susceptibility result "
               "(step_*.safetensors) or of a run folder that holds one")


@dataclass(frozen=True)
class EmbeddingConfig(_Section):
    """UMAP of the susceptibility vectors (see ``serpent.embedding``)."""

    _name = "embedding"
    # whiten: of raw, center, standardize, whiten and normalize, UMAP of the whitened χ separates the patterns best
    # across tokens in the picture of the book's run at its last checkpoint (bench/anatomy_robustness.py)
    preprocess: str = "whiten"
    n_neighbors: int = 15
    min_dist: float = 0.1
    metric: str = "euclidean"
    seed: int = 0
    aligned: bool = True
    max_points_page: int = 4000

    def __post_init__(self):
        s = "embedding"
        _check(self.preprocess in ("raw", "center", "standardize", "whiten", "normalize"), s, "preprocess",
               self.preprocess, "allowed: 'raw', 'center', 'standardize', 'whiten', 'normalize'")
        _int_at_least(s, "n_neighbors", self.n_neighbors, 2)
        _check(isinstance(self.min_dist, float) and 0 <= self.min_dist <= 1, s, "min_dist", self.min_dist,
               "must be a float in [0, 1]")
        _check(isinstance(self.metric, str) and bool(self.metric), s, "metric", self.metric, "must be a UMAP metric name")
        _int_at_least(s, "seed", self.seed, 0)
        _int_at_least(s, "max_points_page", self.max_points_page, 100)


@dataclass(frozen=True)
class InductionConfig(_Section):
    """Settings of the induction measurements (:mod:`serpent.induction`): the run config's ``induction`` section,
    so ``--set induction.n_seqs=64`` works like any other setting.

    Thresholds of :func:`classify_heads`: a head is an *induction* head when its prefix score is at least
    ``max(prefix_threshold, chance_factor * chance_prefix)``, else a *previous-token* head when its previous-token
    score is at least ``max(prev_threshold, chance_factor * chance_prev_token)``, else *other*. The defaults accept
    the paper's heads at the end of training (0:1/0:4 prev 0.29/0.23, 1:6/1:7 prefix 0.055/0.079 at L=128) and
    reject them before LM4 (step 10k: prefix 0.010/0.019).
    """

    _name = "induction"
    n_seqs: int = 32
    half_len: int = 128
    seed: int = 0
    icl_windows: int = 256
    icl_seed: int = 0
    prev_threshold: float = 0.15
    prefix_threshold: float = 0.04
    chance_factor: float = 5.0
    top_heads: int = 2

    def __post_init__(self):
        s = "induction"
        for name in ("n_seqs", "icl_windows", "top_heads"):
            _int_at_least(s, name, getattr(self, name), 1)
        _int_at_least(s, "half_len", self.half_len, 2)
        _int_at_least(s, "seed", self.seed, 0)
        _int_at_least(s, "icl_seed", self.icl_seed, 0)
        for name in ("prev_threshold", "prefix_threshold", "chance_factor"):
            _positive(s, name, getattr(self, name), allow_zero=True)


_SECTIONS = {"model": ModelConfig, "data": DataConfig, "train": TrainConfig, "llc": LLCConfig,
             "induction": InductionConfig, "susceptibility": SusceptibilityConfig, "embedding": EmbeddingConfig}


def _set_dotted(d: dict, where: str, key: str, value) -> None:
    """Set ``d[a][b]... = value`` for ``key = "a.b..."``, naming the allowed fields when one does not exist."""
    *parents, last = key.split(".")
    for part in parents:
        if not isinstance(d.get(part), dict):
            raise ConfigError(f"{where}: {part!r} is not a section with fields; allowed fields are {sorted(d)}")
        d, where = d[part], f"{where}.{part}"
    if last not in d:
        raise ConfigError(f"{where}: unknown field(s) [{last!r}]; allowed fields are {sorted(d)}")
    d[last] = value


@dataclass(frozen=True)
class RunConfig(_Section):
    """Everything that defines a run; sections can be replaced with :meth:`with_overrides`."""

    _name = "run"
    preset: str = "custom"
    model: ModelConfig = field(default_factory=ModelConfig)
    data: DataConfig = field(default_factory=DataConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    llc: LLCConfig = field(default_factory=LLCConfig)
    induction: InductionConfig = field(default_factory=InductionConfig)
    susceptibility: SusceptibilityConfig = field(default_factory=SusceptibilityConfig)
    embedding: EmbeddingConfig = field(default_factory=EmbeddingConfig)

    def __post_init__(self):
        for name, cls in _SECTIONS.items():
            v = getattr(self, name)
            if isinstance(v, dict):
                with _named(cls._name, name):
                    object.__setattr__(self, name, cls.from_dict(v))
            elif not isinstance(v, cls):
                raise ConfigError(f"run.{name}: expected {cls.__name__}, got {type(v).__name__}")
        if self.susceptibility.probe_length is not None and self.susceptibility.probe_length > self.model.n_ctx:
            raise ConfigError(f"susceptibility.probe_length: got {self.susceptibility.probe_length}; must be at most "
                              f"model.n_ctx = {self.model.n_ctx} (sequences longer than the context cannot be scored)")

    def with_overrides(self, **sections: dict) -> "RunConfig":
        """Return a copy with some fields of some sections replaced, e.g. ``train={"steps": 10}``.

        A nested section's field is named with dots, e.g. ``susceptibility={"sampler.draws": 10}``.
        """
        new = {}
        for name, changes in sections.items():
            if name == _MOVED:
                raise ConfigError(f"run: {_MOVED} is now susceptibility.sampler.checkpoints (one `checkpoints` per "
                                  f"sampler, as llc.sampler.checkpoints); set that instead, e.g. "
                                  f"--set susceptibility.sampler.checkpoints={changes}")
            if name not in _SECTIONS and name != "preset":
                raise ConfigError(f"run: unknown section {name!r}; allowed: {sorted(_SECTIONS)} and the field "
                                  f"'preset'")
            if name in _SECTIONS:
                if isinstance(changes, _SECTIONS[name]):
                    new[name] = changes
                elif not isinstance(changes, dict):
                    raise ConfigError(f"run: {name} is a section; set its fields, e.g. {name}.FIELD=VALUE")
                else:
                    d = getattr(self, name).to_dict()
                    for key, value in changes.items():
                        _moved_llc_field(name, key, value)
                        _set_dotted(d, name, key, value)
                    with _named(_SECTIONS[name]._name, name):
                        new[name] = _SECTIONS[name].from_dict(d)
            else:
                new[name] = changes
        return replace(self, **new)

    @classmethod
    def from_dict(cls, d: dict) -> "RunConfig":
        if not isinstance(d, dict):
            raise ConfigError(f"run: expected a mapping, got {type(d).__name__}")
        d = _migrated(d)
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(d) - known)
        if unknown:
            raise ConfigError(f"run: unknown field(s) {unknown}; allowed fields are {sorted(known)}")
        return cls(**d)

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2, sort_keys=True)


_MOVED = "susceptibility_checkpoints"
_SAMPLER_FIELDS = frozenset(f.name for f in fields(SamplerConfig))


def _moved_llc_field(section: str, key: str, value: Any) -> None:
    """``llc.draws`` and the LLC's other sampler settings moved to ``llc.sampler.draws``: say so, with the new name."""
    if section == "llc" and key in _SAMPLER_FIELDS:
        raise ConfigError(f"llc.{key} is now llc.sampler.{key} (the LLC's sampler settings sit under llc.sampler, "
                          f"as the susceptibilities' under susceptibility.sampler); set that instead, e.g. "
                          f"--set llc.sampler.{key}={value}")


def _migrated(d: dict) -> dict:
    """A run config written before ``susceptibility_checkpoints`` moved into ``susceptibility.sampler.checkpoints``,
    or before the LLC's sampler settings moved from ``llc.*`` into ``llc.sampler.*``.

    Run directories and JSON files written by earlier versions keep loading, with the same meaning:

    >>> _migrated({"susceptibility_checkpoints": 8, "susceptibility": {"sampler": {"draws": 40}}})
    {'susceptibility': {'sampler': {'draws': 40, 'checkpoints': 8}}}
    >>> _migrated({"llc": {"draws": 40, "epsilon": 0.001}})
    {'llc': {'sampler': {'draws': 40, 'epsilon': 0.001}}}
    """
    llc = d.get("llc")
    old_llc = isinstance(llc, dict) and "sampler" not in llc and bool(set(llc) & _SAMPLER_FIELDS)
    if _MOVED not in d and not old_llc:
        return d
    d = dict(d)
    if old_llc:
        d["llc"] = {"sampler": dict(llc)}
    if _MOVED in d:
        k = d.pop(_MOVED)
        sus = dict(d.get("susceptibility") or {})
        sus["sampler"] = {**(sus.get("sampler") or SusceptibilityConfig().sampler.to_dict()), "checkpoints": k}
        d["susceptibility"] = sus
    return d


def config_hash(section: Any) -> str:
    """A short stable hash of a config section (or any JSON-able value), used to skip unchanged stages.

    >>> config_hash(ModelConfig()) == config_hash(ModelConfig())
    True
    """
    if dataclasses.is_dataclass(section):
        section = dataclasses.asdict(section)
    blob = json.dumps(section, sort_keys=True, default=str).encode()
    return hashlib.sha256(blob).hexdigest()[:16]


def _tiny() -> RunConfig:
    return RunConfig(
        preset="tiny",
        model=ModelConfig(n_layers=2, n_heads=8, d_model=64, d_head=8, n_ctx=128, d_vocab=2048),
        data=DataConfig(corpus="python", max_bytes=6_000_000, tokenizer_train_bytes=3_000_000, test_fraction=0.05),
        train=TrainConfig(steps=1200, batch_size=16, lr=3e-3, warmup_steps=50, log_checkpoints=8,
                          linear_checkpoints=6, eval_every=100, eval_batches=4),
        # burn-in: from w* the loss takes about 50-100 steps to reach its plateau at these settings; draws taken
        # before it are not at equilibrium (serpent.llc.trace_drift; BENCHMARKS.md, "LLC chains at equilibrium").
        llc=LLCConfig(sampler=SamplerConfig(epsilon=1e-3, gamma=100.0, n_beta=10.0, chains=2, draws=40, burnin=80,
                                             batch_size=16, checkpoints=8)),
        susceptibility=SusceptibilityConfig(
            sampler=SamplerConfig(epsilon=1e-3, gamma=100.0, n_beta=10.0, chains=4, draws=30, batch_size=4,
                                  checkpoints=4),
            probe_sequences=12, probe_length=None),
        embedding=EmbeddingConfig(n_neighbors=15, min_dist=0.1),
    )


def _cpu() -> RunConfig:
    # The tiny architecture, trained long enough on natural text to grow the induction circuit on a 2-core CPU.
    # Induction heads form after about 10^5.7 x sqrt(batch x context) training tokens (Aoyama et al. 2025): ~23 M
    # tokens at 16 x 128. In steps that is ~ 1/sqrt(batch), so on a CPU, where a step's time grows with the batch,
    # batch 16 reaches the onset sooner in wall time than batch 8 (BENCHMARKS.md, "The cpu preset").
    # 250 MB of the Python corpus is ~90 M training tokens: the run reads it about once (no memorising).
    return _tiny().with_overrides(
        preset="cpu",
        data={"max_bytes": 250_000_000, "test_fraction": 0.02},
        train={"steps": 42_000, "warmup_steps": 100, "log_checkpoints": 16, "linear_checkpoints": 42,
               "eval_every": 500, "eval_batches": 8},
        llc={"sampler.chains": 4, "sampler.draws": 50, "sampler.burnin": 100, "sampler.checkpoints": 16},
        susceptibility={"sampler.draws": 40, "sampler.checkpoints": 8},
    )


def _full() -> RunConfig:
    return RunConfig(
        preset="full",
        model=ModelConfig(),
        data=DataConfig(corpus="python"),
        train=TrainConfig(steps=26_000, batch_size=64, log_checkpoints=40, linear_checkpoints=60),
        llc=LLCConfig(sampler=SamplerConfig(epsilon=3e-3, gamma=300.0, n_beta=21.71, chains=4, draws=200,
                                             batch_size=32, checkpoints=24)),
        susceptibility=SusceptibilityConfig(
            sampler=SamplerConfig(epsilon=1e-3, gamma=300.0, n_beta=30.0, chains=4, draws=200, batch_size=32,
                                  checkpoints=12),
            probe_sequences=32, probe_length=1024),
    )


def _colab() -> RunConfig:
    full = _full()
    return full.with_overrides(
        preset="colab",
        model={"n_ctx": 512},
        train={"steps": 12_000, "batch_size": 64, "log_checkpoints": 30, "linear_checkpoints": 30},
        llc={"sampler.chains": 2, "sampler.draws": 100, "sampler.batch_size": 16, "sampler.checkpoints": 12},
        susceptibility={"sampler": SamplerConfig(epsilon=1e-3, gamma=300.0, n_beta=30.0, chains=2, draws=100,
                                                 batch_size=16, checkpoints=6),
                        "probe_sequences": 32, "probe_length": 512},
    )


def _paper() -> RunConfig:
    return RunConfig(
        preset="paper",
        model=ModelConfig(),
        data=DataConfig(corpus="hf:timaeus/dsir-pile-10m:contents", tokenizer="hf:georgeyw/TinyStories-tokenizer-5k"),
        train=TrainConfig(steps=50_000, batch_size=100, lr=1e-3, weight_decay=0.05, log_checkpoints=100,
                          linear_checkpoints=500),
        llc=LLCConfig(sampler=SamplerConfig(epsilon=3e-3, gamma=300.0, n_beta=21.71, chains=20, draws=200,
                                             batch_size=100, checkpoints=0)),
    ).with_overrides(susceptibility={"sampler.checkpoints": 12})


PRESETS = {"tiny": _tiny, "cpu": _cpu, "full": _full, "colab": _colab, "paper": _paper}


def get_preset(name: str, **overrides: dict) -> RunConfig:
    """The named preset, optionally with fields replaced: ``get_preset("tiny", train={"steps": 100})``."""
    if name not in PRESETS:
        raise ConfigError(f"preset: got {name!r}; allowed: {sorted(PRESETS)}")
    cfg = PRESETS[name]()
    return cfg.with_overrides(**overrides) if overrides else cfg
