"""Models beyond the course's for the tests: TransformerLens 4 ``TransformerBridge``s around randomly initialised
Hugging Face models built from a ``transformers`` config (no download, works with ``HF_HUB_OFFLINE=1``)."""

import torch


def tiny_pythia(n_layers: int = 6, n_heads: int = 4, d_model: int = 128, d_mlp: int = 512, d_vocab: int = 256,
                n_ctx: int = 2048, rotary_pct: float = 0.25, seed: int = 0):
    """The Pythia-14m architecture (GPT-NeoX: rotary positions on a quarter of each head's dimensions, parallel
    attention + MLP, LayerNorm), by default its sizes with the vocabulary shrunk for speed, random weights seeded by
    ``seed``, wrapped in a ``TransformerBridge``."""
    from transformer_lens.model_bridge.sources import build_bridge_from_module
    from transformers import GPTNeoXConfig, GPTNeoXForCausalLM

    hf = GPTNeoXConfig(vocab_size=d_vocab, hidden_size=d_model, num_hidden_layers=n_layers,
                       num_attention_heads=n_heads, intermediate_size=d_mlp, rotary_pct=rotary_pct,
                       max_position_embeddings=n_ctx, use_parallel_residual=True, tie_word_embeddings=False,
                       hidden_act="gelu")
    torch.manual_seed(seed)
    model = GPTNeoXForCausalLM(hf).eval()
    return build_bridge_from_module(model, "GPTNeoXForCausalLM", hf_config=hf)
