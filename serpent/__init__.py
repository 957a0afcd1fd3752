"""serpent: grow a small language model and watch its rainbow serpent of susceptibilities form."""
from .errors import SerpentError, ConfigError, CheckpointError, CorpusError, DivergenceError
from .config import (ModelConfig, DataConfig, TrainConfig, SamplerConfig, SusceptibilityConfig, EmbeddingConfig,
                     RunConfig, PRESETS, get_preset, config_hash)
from .device import default_device, autocast_dtype, describe_device
from .model import (build_model, model_params, per_token_loss, hooked_per_token_loss, stack_params,
                    supports_fast_path, head_param_names)

from .corpus import Corpus, Document, open_corpus
from .tokenizer import Tokenizer, train_bpe, build_tokenizer
from .tokens import TokenData, tokenize_corpus, batch_at, fixed_windows, document_of
from .rundir import Run
from .checkpoints import (save_checkpoint, load_checkpoint, checkpoint_schedule, load_timaeus_checkpoint,
                          download_timaeus_checkpoint)
from .train import train, evaluate_loss, unigram_entropy
from .pipeline import STAGES, run_pipeline

__version__ = "0.1.0"
