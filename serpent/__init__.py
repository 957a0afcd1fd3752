"""serpent: grow a small language model and watch its rainbow serpent of susceptibilities form.

Data flows one way: corpus -> tokens -> model checkpoints -> SGLD samples -> statistics (LLC, susceptibilities)
-> embeddings -> charts. The science modules take tensors (or frames) and return results; :mod:`serpent.stages`
runs them over a run directory's checkpoints and keeps what they return. This namespace lists the public API in
those groups (``python -c "import serpent; print(serpent.API)"``). Widgets are imported lazily
(``from serpent.widgets import token_inspector``) so the package does not need ipywidgets.
"""
import os as _os

# Bounded OpenMP spinning, set before torch loads its OpenMP runtime (an environment value already set wins; it has no
# effect if torch was imported before serpent). With the unbounded default two torch processes on a 2-core machine
# slow each other down some thirtyfold; see serpent.device.configure_cpu_threads and BENCHMARKS.md, "Two processes".
_os.environ.setdefault("GOMP_SPINCOUNT", "10000")

# -- settings, errors, devices ---------------------------------------------------------------------------------------
from .errors import SerpentError, ConfigError, CheckpointError, CorpusError, DivergenceError
from .config import (ModelConfig, DataConfig, TrainConfig, SamplerConfig, SusceptibilityConfig, EmbeddingConfig,
                     InductionConfig, RunConfig, PRESETS, get_preset, config_hash)
from .device import default_device, autocast_dtype, describe_device

# -- data: corpus -> tokens ------------------------------------------------------------------------------------------
from .corpus import Corpus, Document, open_corpus
from .tokenizer import Tokenizer, train_bpe, build_tokenizer
from .tokens import TokenData, tokenize_corpus, batch_at, fixed_windows, document_of

# -- the model and its training --------------------------------------------------------------------------------------
from .model import (build_model, model_params, per_token_loss, hooked_per_token_loss, stack_params,
                    supports_fast_path, head_param_names, model_config_of, fast_model_config)
from .hooked import HookedShortformer, HookedConfig
from .checkpoints import (save_checkpoint, load_checkpoint, check_checkpoint, checkpoint_schedule,
                          load_timaeus_checkpoint, download_timaeus_checkpoint)
from .train import train, evaluate_loss, unigram_entropy, bigram_entropy, adamw

# -- the science: observables of one model ---------------------------------------------------------------------------
from .induction import (induction_scores, classify_heads, planted_induction_model, repeated_random_tokens,
                        icl_windows, chance_scores)
from .circuits import ablate_heads, patch_heads, corrupted_probe, composition_scores
from .induction_toy import (TOY_MODEL, repeated_segments, copyable_tokens, sgld_minibatches, grow_induction_circuit,
                           GrownCircuit)
from .sgld import (Restriction, make_restriction, pulled_back_restriction, head_restrictions, restriction_size,
                   run_sgld, SGLDResult, DrawState, transformer_loss_fn, module_loss_fn)
from .llc import (estimate_llc, LLCResult, combine_chains, select_steps, calibrate, calibration_advice,
                  crossing_llc_target, trace_drift)
from .susceptibility import (SusceptibilityResult, SusceptibilityStats, susceptibilities, sample_susceptibilities,
                             susceptibility_from_traces, component_specs, combine_components, response_matrix,
                             response_pca, SIGN_CONVENTION)
from .patterns import PATTERNS, PALETTE, classify_tokens, repeated_bigrams, n_prev_spaces, label_result, label_results
from .embedding import preprocess, embed_checkpoints, separation, pattern_separation, compare_serpents, serpent_frame
from .anatomy import body_axes, checkpoint_anatomy, anatomy_table, seed_agreement
from .clusters import (ClusterSettings, ClusterCard, find_clusters, cluster_cards, cluster_births,
                       clusters_over_training, cards_from_json, cluster_table, pattern_births, read_notes,
                       notes_json)
from .patterning import patterning_shift, zero_sum_shift, class_weights, circuit_target

# -- runs: a run directory and the stages that fill it ---------------------------------------------------------------
from .rundir import Run
from .stages import (STAGES, run_pipeline, corpus_notes, data_stage, train_stage, induction_stage, llc_stage,
                     susceptibility_stage, serpent_stage, scores_over_checkpoints, llc_over_checkpoints,
                     calibrate_run, load_susceptibilities, load_anatomy)
from .stages.distributed import susceptibilities_across_ranks
from .milestones import milestones
from .explorer import write_explorer
from .artifacts import ArtifactError, export_artifacts, verify_artifacts, load_artifacts, fetch_artifacts

# -- the course: which run a notebook loads, the book's figures, the exercises' checks, charts -----------------------
from .course import course_run, default_preset, is_fast, toy_cache_dir
from . import charts, checks, figures

__version__ = "0.1.0"

#: The public API by group, as above (what notebooks and users call).
API = {
    "settings": ["RunConfig", "get_preset", "PRESETS", "ModelConfig", "DataConfig", "TrainConfig", "SamplerConfig",
                 "SusceptibilityConfig", "EmbeddingConfig", "InductionConfig", "config_hash", "SerpentError",
                 "ConfigError", "CheckpointError", "CorpusError", "DivergenceError", "default_device",
                 "autocast_dtype", "describe_device"],
    "data": ["open_corpus", "Corpus", "Document", "Tokenizer", "train_bpe", "build_tokenizer", "TokenData",
             "tokenize_corpus", "batch_at", "fixed_windows", "document_of"],
    "model": ["build_model", "HookedShortformer", "HookedConfig", "model_params", "per_token_loss",
              "hooked_per_token_loss", "stack_params", "supports_fast_path", "head_param_names", "model_config_of",
              "fast_model_config", "save_checkpoint", "load_checkpoint", "check_checkpoint", "checkpoint_schedule",
              "load_timaeus_checkpoint", "download_timaeus_checkpoint",
              "train", "evaluate_loss", "unigram_entropy", "bigram_entropy", "adamw"],
    "science": ["induction_scores", "classify_heads", "planted_induction_model", "repeated_random_tokens",
                "icl_windows", "chance_scores", "ablate_heads", "patch_heads", "corrupted_probe",
                "composition_scores", "TOY_MODEL", "repeated_segments", "copyable_tokens", "sgld_minibatches",
                "grow_induction_circuit", "GrownCircuit", "Restriction", "make_restriction", "pulled_back_restriction",
                "head_restrictions", "restriction_size", "run_sgld", "SGLDResult", "DrawState", "transformer_loss_fn", "module_loss_fn",
                "estimate_llc", "LLCResult", "combine_chains", "select_steps", "calibrate", "calibration_advice",
                "crossing_llc_target",
                "trace_drift", "SusceptibilityResult", "SusceptibilityStats", "susceptibilities",
                "sample_susceptibilities", "susceptibility_from_traces", "component_specs", "combine_components",
                "response_matrix", "response_pca", "SIGN_CONVENTION", "PATTERNS", "PALETTE", "classify_tokens",
                "repeated_bigrams", "n_prev_spaces", "label_result", "label_results", "preprocess",
                "embed_checkpoints", "separation", "pattern_separation", "compare_serpents", "serpent_frame",
                "body_axes", "checkpoint_anatomy", "anatomy_table", "seed_agreement",
                "ClusterSettings", "ClusterCard", "find_clusters", "cluster_cards", "cluster_births",
                "clusters_over_training", "cards_from_json", "cluster_table", "pattern_births", "read_notes",
                "notes_json",
                "patterning_shift", "zero_sum_shift", "class_weights", "circuit_target"],
    "runs": ["Run", "STAGES", "run_pipeline", "corpus_notes", "data_stage", "train_stage", "induction_stage",
             "llc_stage", "susceptibility_stage", "serpent_stage", "scores_over_checkpoints", "llc_over_checkpoints",
             "calibrate_run", "load_susceptibilities", "load_anatomy", "susceptibilities_across_ranks", "milestones",
             "write_explorer", "ArtifactError", "export_artifacts", "verify_artifacts", "load_artifacts",
             "fetch_artifacts"],
    "course": ["course_run", "default_preset", "is_fast", "toy_cache_dir", "charts", "checks", "figures"],
}
__all__ = [name for group in API.values() for name in group]
