"""serpent: grow a small language model and watch its rainbow serpent of susceptibilities form.

Data flows one way: corpus -> tokens -> model checkpoints -> SGLD samples -> statistics (LLC, susceptibilities)
-> embeddings -> charts. Each step is a module; this namespace lists the public API. Widgets are imported lazily
(``from serpent.widgets import token_inspector``) so the package does not need ipywidgets.
"""
import os as _os

# Bounded OpenMP spinning, set before torch loads its OpenMP runtime (an environment value already set wins; it has no
# effect if torch was imported before serpent). With the unbounded default two torch processes on a 2-core machine
# slow each other down some thirtyfold; see serpent.device.configure_cpu_threads and BENCHMARKS.md, "Two processes".
_os.environ.setdefault("GOMP_SPINCOUNT", "10000")

from .errors import SerpentError, ConfigError, CheckpointError, CorpusError, DivergenceError
from .config import (ModelConfig, DataConfig, TrainConfig, SamplerConfig, SusceptibilityConfig, EmbeddingConfig,
                     RunConfig, PRESETS, get_preset, config_hash)
from .device import default_device, autocast_dtype, describe_device
from .model import (build_model, model_params, per_token_loss, hooked_per_token_loss, stack_params,
                    supports_fast_path, head_param_names, model_config_of, fast_model_config)

from .corpus import Corpus, Document, open_corpus
from .tokenizer import Tokenizer, train_bpe, build_tokenizer
from .tokens import TokenData, tokenize_corpus, batch_at, fixed_windows, document_of
from .rundir import Run
from .checkpoints import (save_checkpoint, load_checkpoint, checkpoint_schedule, load_timaeus_checkpoint,
                          download_timaeus_checkpoint)
from .train import train, evaluate_loss, unigram_entropy, bigram_entropy, adamw
from .pipeline import STAGES, run_pipeline, corpus_notes
from .induction import (InductionConfig, induction_scores, scores_over_checkpoints, classify_heads,
                        planted_induction_model, induction_stage, repeated_random_tokens, icl_windows, chance_scores)
from .circuits import ablate_heads, patch_heads, corrupted_probe, composition_scores
from .induction_toy import (TOY_MODEL, repeated_segments, copyable_tokens, sgld_minibatches, grow_induction_circuit,
                           GrownCircuit)
from .sgld import (Restriction, make_restriction, head_restrictions, restriction_size, run_sgld, SGLDResult,
                   DrawState, transformer_loss_fn, module_loss_fn)
from .llc import (estimate_llc, LLCResult, select_steps, llc_stage, calibrate, calibrate_run, crossing_llc_target,
                  trace_drift)
from .susceptibility import (SusceptibilityResult, SusceptibilityStats, susceptibilities, sample_susceptibilities,
                             susceptibility_from_traces, component_specs, load_susceptibilities, response_matrix,
                             response_pca, susceptibility_stage, SIGN_CONVENTION)
from .patterns import PATTERNS, PALETTE, classify_tokens, repeated_bigrams, n_prev_spaces, label_result, label_results
from .embedding import (preprocess, embed_checkpoints, separation, pattern_separation, compare_serpents, serpent_frame,
                        serpent_stage)
from .explorer import write_explorer
from .artifacts import ArtifactError, export_artifacts, verify_artifacts, load_artifacts, fetch_artifacts
from .milestones import milestones
from .patterning import patterning_shift, zero_sum_shift, class_weights, circuit_target
from .course import course_run, default_preset, is_fast, toy_cache_dir
from . import charts, checks, figures

__version__ = "0.1.0"
