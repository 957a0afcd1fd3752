"""serpent: grow a small language model and watch its rainbow serpent of susceptibilities form.

Data flows one way: corpus -> tokens -> model checkpoints -> SGLD samples -> statistics (LLC, susceptibilities)
-> embeddings -> charts. The science modules take tensors (or frames) and return results; :mod:`serpent.stages`
runs them over a run directory's checkpoints and keeps what they return. This namespace lists the public API in
those groups (``python -c "import serpent; print(serpent.API)"``): the names the notebooks and the book use, and
the entry points of a run. Every name is imported when first used (a module-level ``__getattr__``), so ``import
serpent`` loads neither torch's model stack nor the charting stack (altair) until something needs them; the rest of
each module is reachable from the module itself (``from serpent.sgld import DrawState``). Widgets are imported from
their module (``from serpent.widgets import token_inspector``) so the package does not need ipywidgets.
``serpent.train`` and ``serpent.milestones`` are the modules (their functions: ``serpent.train.train``,
``serpent.milestones.milestones``).
"""
import os as _os

# Bounded OpenMP spinning, set before torch loads its OpenMP runtime (an environment value already set wins; it has no
# effect if torch was imported before serpent). With the unbounded default two torch processes on a 2-core machine
# slow each other down some thirtyfold; see serpent.device.configure_cpu_threads and BENCHMARKS.md, "Two processes".
_os.environ.setdefault("GOMP_SPINCOUNT", "10000")

#: The public API by group: the module each name comes from (imported on first use).
_GROUPS: dict[str, dict[str, list[str]]] = {
    # -- settings, errors, devices
    "settings": {
        "config": ["RunConfig", "get_preset", "PRESETS", "ModelConfig", "SamplerConfig", "LLCConfig",
                   "SusceptibilityConfig", "EmbeddingConfig", "config_hash"],
        "errors": ["SerpentError", "ConfigError", "CheckpointError", "DivergenceError"],
        "device": ["default_device", "describe_device"],
    },
    # -- data: corpus -> tokens
    "data": {
        "corpus": ["open_corpus"],
        "tokenizer": ["Tokenizer", "train_bpe"],
        "tokens": ["batch_at", "fixed_windows"],
    },
    # -- the model and its training
    "model": {
        "model": ["build_model", "model_params", "per_token_loss"],
        "hooked": ["HookedShortformer", "HookedConfig"],
        "checkpoints": ["load_checkpoint", "save_checkpoint"],
        "train": ["unigram_entropy", "bigram_entropy"],
    },
    # -- the science: observables of one model (chapters 2-8)
    "science": {
        "induction": ["induction_scores", "classify_heads", "repeated_random_tokens", "chance_scores"],
        "circuits": ["ablate_heads", "patch_heads", "composition_scores"],
        "induction_toy": ["TOY_MODEL", "grow_induction_circuit"],
        "sgld": ["make_restriction", "run_sgld", "sgld_update", "transformer_loss_fn"],
        "llc": ["estimate_llc", "LLCResult", "calibrate", "calibration_advice", "crossing_llc_target"],
        "susceptibility": ["susceptibilities", "SusceptibilityResult", "response_matrix"],
        "patterns": ["PATTERNS", "PALETTE", "classify_tokens", "label_result", "label_results"],
        "embedding": ["preprocess", "embed_checkpoints", "separation", "compare_serpents"],
        "anatomy": ["anatomy_table"],
        "clusters": ["cards_from_json", "cluster_table"],
        "patterning": ["patterning_shift", "class_weights", "circuit_target"],
    },
    # -- runs: a run directory, the stages that fill it, what they write (serpent.outputs) and its artifacts
    "runs": {
        "rundir": ["Run"],
        "stages": ["STAGES", "run_pipeline", "scores_over_checkpoints", "llc_over_checkpoints", "calibrate_run",
                   "load_susceptibilities", "load_anatomy"],
        "explorer": ["write_explorer"],
        "artifacts": ["ArtifactError", "export_artifacts", "load_artifacts", "fetch_artifacts"],
    },
    # -- the course: which run a notebook loads, the book's figures, the exercises' checks, charts (modules)
    "course": {
        "course": ["course_run", "toy_cache_dir"],
        "": ["charts", "checks", "figures", "outputs"],
    },
}

#: Names this namespace has always answered, kept working (imported on first use) but no longer listed: each
#: lives in its module, where new code should import it from.
_ELSEWHERE: dict[str, list[str]] = {
    "config": ["DataConfig", "TrainConfig", "InductionConfig"],
    "errors": ["CorpusError"],
    "device": ["autocast_dtype"],
    "corpus": ["Corpus", "Document"],
    "tokenizer": ["build_tokenizer"],
    "tokens": ["TokenData", "tokenize_corpus", "document_of"],
    "model": ["hooked_per_token_loss", "stack_params", "supports_fast_path", "head_param_names", "model_config_of",
              "fast_model_config"],
    "checkpoints": ["check_checkpoint", "checkpoint_schedule", "load_timaeus_checkpoint",
                    "download_timaeus_checkpoint"],
    "train": ["evaluate_loss", "adamw"],
    "induction": ["planted_induction_model", "icl_windows"],
    "circuits": ["corrupted_probe"],
    "induction_toy": ["repeated_segments", "copyable_tokens", "sgld_minibatches", "GrownCircuit"],
    "sgld": ["Restriction", "head_restrictions", "restriction_size", "SGLDResult", "DrawState", "module_loss_fn",
             "pulled_back_restriction"],
    "llc": ["combine_chains", "trace_drift"],
    "susceptibility": ["SusceptibilityStats", "sample_susceptibilities", "susceptibility_from_traces",
                       "component_specs", "combine_components", "response_pca", "SIGN_CONVENTION"],
    "patterns": ["repeated_bigrams", "n_prev_spaces"],
    "embedding": ["pattern_separation", "serpent_frame"],
    "anatomy": ["body_axes", "checkpoint_anatomy", "seed_agreement"],
    "clusters": ["ClusterSettings", "ClusterCard", "find_clusters", "cluster_cards", "cluster_births",
                 "clusters_over_training", "pattern_births", "read_notes", "notes_json"],
    "patterning": ["zero_sum_shift"],
    "stages": ["corpus_notes", "data_stage", "train_stage", "induction_stage", "llc_stage", "susceptibility_stage",
               "serpent_stage"],
    "stages.distributed": ["susceptibilities_across_ranks"],
    "stages.sweep": ["select_steps"],
    "artifacts": ["verify_artifacts"],
    "course": ["default_preset", "is_fast"],
}

__version__ = "0.1.0"

#: The public API by group (what notebooks and users call).
API: dict[str, list[str]] = {group: [n for names in mods.values() for n in names] for group, mods in _GROUPS.items()}
__all__ = [name for group in API.values() for name in group]
_WHERE: dict[str, str] = {n: m for mods in _GROUPS.values() for m, names in mods.items() for n in names}
_WHERE.update({n: m for m, names in _ELSEWHERE.items() for n in names})


def __getattr__(name: str):
    """Import a public name (or a submodule) when it is first used, and keep it."""
    import importlib
    module = _WHERE.get(name)
    if module is None or module == "":
        try:
            value = importlib.import_module(f"{__name__}.{name}")
        except ModuleNotFoundError as e:
            if e.name != f"{__name__}.{name}":
                raise
            raise AttributeError(f"module {__name__!r} has no attribute {name!r}") from None
    else:
        value = getattr(importlib.import_module(f"{__name__}.{module}"), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_WHERE))
