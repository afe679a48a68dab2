"""Tiny random models and tokenizers for tests, tutorials and quick trials.

Nothing here downloads anything: models are built from a config with random
weights and the tokenizer is a byte-level one whose vocabulary is the 256
byte values.
"""

from __future__ import annotations

import torch
from transformers import AutoConfig, AutoModelForCausalLM, PreTrainedTokenizerFast

__all__ = ["TINY_ARCHITECTURES", "byte_tokenizer", "tiny_model"]

_VOCAB = 260  # 256 byte values + specials
_SMALL = dict(num_hidden_layers=3, num_attention_heads=4, vocab_size=_VOCAB,
              max_position_embeddings=256, bos_token_id=256, eos_token_id=257,
              pad_token_id=258)

#: Config keyword arguments of a tiny model of each supported family.
TINY_ARCHITECTURES: dict[str, dict] = {
    "llama": dict(hidden_size=32, intermediate_size=48, num_key_value_heads=2, **_SMALL),
    "qwen2": dict(hidden_size=32, intermediate_size=48, num_key_value_heads=2, **_SMALL),
    "mistral": dict(hidden_size=32, intermediate_size=48, num_key_value_heads=2, **_SMALL),
    "gemma3_text": dict(hidden_size=32, intermediate_size=48, num_key_value_heads=2,
                        head_dim=8, **_SMALL),
    "phi3": dict(hidden_size=32, intermediate_size=48, num_key_value_heads=2, **_SMALL),
    "gpt2": dict(n_embd=32, n_inner=48, n_layer=3, n_head=4, vocab_size=_VOCAB,
                 n_positions=256, bos_token_id=256, eos_token_id=257, pad_token_id=258),
    "gpt_neox": dict(hidden_size=32, intermediate_size=48, **_SMALL),
    "opt": dict(hidden_size=32, ffn_dim=48, word_embed_proj_dim=32, **_SMALL),
    "phi": dict(hidden_size=32, intermediate_size=48, **_SMALL),
}


def byte_tokenizer() -> PreTrainedTokenizerFast:
    """A byte-level tokenizer (one token per UTF-8 byte) needing no files."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers

    byte_to_char = pre_tokenizers.ByteLevel.alphabet()
    vocab = {char: i for i, char in enumerate(sorted(byte_to_char))}
    for i, special in enumerate(["<s>", "</s>", "<pad>"], start=256):
        vocab[special] = i
    tok = Tokenizer(models.BPE(vocab=vocab, merges=[]))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)
    tok.decoder = decoders.ByteLevel()
    return PreTrainedTokenizerFast(tokenizer_object=tok, bos_token="<s>", eos_token="</s>",
                                   pad_token="<pad>", model_max_length=256)


def tiny_model(architecture: str = "llama", seed: int = 0, **overrides):
    """Build a tiny random causal LM of ``architecture`` (3 layers, 48 neurons).

    Parameters
    ----------
    architecture : str
        A key of :data:`TINY_ARCHITECTURES`.
    seed : int
        Seed of the random weights.
    **overrides
        Config values to change, e.g. ``intermediate_size=64``.

    Returns
    -------
    model : transformers.PreTrainedModel
        In evaluation mode, float32, on the CPU.
    """
    if architecture not in TINY_ARCHITECTURES:
        raise ValueError(f"No tiny config for {architecture!r}; choose one of "
                         f"{sorted(TINY_ARCHITECTURES)}.")
    config = AutoConfig.for_model(architecture, **{**TINY_ARCHITECTURES[architecture],
                                                   **overrides})
    torch.manual_seed(seed)
    model = AutoModelForCausalLM.from_config(config, attn_implementation="eager")
    model.config.name_or_path = f"tiny-random-{architecture}"
    return model.eval()
