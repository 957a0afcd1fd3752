"""serpent: grow a small language model and watch its rainbow serpent of susceptibilities form."""
from .errors import SerpentError, ConfigError, CheckpointError, CorpusError, DivergenceError
from .config import (ModelConfig, DataConfig, TrainConfig, SamplerConfig, SusceptibilityConfig, EmbeddingConfig,
                     RunConfig, PRESETS, get_preset, config_hash)
from .device import default_device, autocast_dtype, describe_device
from .model import (build_model, model_params, per_token_loss, hooked_per_token_loss, stack_params,
                    supports_fast_path, head_param_names)

__version__ = "0.1.0"
