"""``init-tiny``: a tiny randomly initialised Llama-style causal LM and a small BPE tokenizer.

Entirely offline: the tokenizer is trained on the given text (or a built-in corpus), the model
is built from a config. For demos, tests and benchmarks.
"""

from __future__ import annotations

from pathlib import Path

import torch

from trainers.configs import TinyConfig
from trainers.errors import ConfigError

BUILTIN_CORPUS = """\
User: Write a short poem about the sea.
Assistant: The sea is wide, the sea is deep, it sings the sailors into sleep.
User: What is the capital of France?
Assistant: The capital of France is Paris.
User: Explain photosynthesis to a child.
Assistant: Plants eat sunlight. They take light, water and air and make sugar and oxygen.
User: List three fruits.
Assistant: Apples, bananas and oranges.
User: Summarize the story in one sentence.
Assistant: A girl finds a lost dog and brings it home to its family.
User: Translate good morning into Spanish.
Assistant: Buenos dias.
User: Is this review positive or negative? I loved it.
Assistant: Positive.
User: Give me an idea for a birthday party.
Assistant: Hold a picnic in the park with games, music and a cake.
The quick brown fox jumps over the lazy dog. A good answer is helpful, honest and harmless.
Yes no maybe good bad great terrible happy sad one two three four five six seven eight nine ten.
Red green blue yellow black white cat dog bird fish tree house car road river mountain.
"""

SPECIALS = ["<s>", "</s>", "<pad>", "<unk>"]


def train_tokenizer(text: str, vocab_size: int, pad_equals_eos: bool = False):
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tk = Tokenizer(models.BPE(unk_token=None))
    tk.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tk.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size, special_tokens=SPECIALS,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False,
    )
    tk.train_from_iterator(text.splitlines(), trainer=trainer)
    return PreTrainedTokenizerFast(
        tokenizer_object=tk, bos_token="<s>", eos_token="</s>", unk_token="<unk>",
        pad_token="</s>" if pad_equals_eos else "<pad>", clean_up_tokenization_spaces=False,
    )


def init_tiny(cfg: TinyConfig) -> Path:
    from transformers import LlamaConfig, LlamaForCausalLM

    if cfg.text:
        p = Path(cfg.text)
        if not p.is_file():
            raise ConfigError(f"--text file not found: {p}")
        text = p.read_text(encoding="utf-8")
    else:
        text = BUILTIN_CORPUS
    tok = train_tokenizer(text, cfg.vocab_size, cfg.pad_equals_eos)
    torch.manual_seed(cfg.seed)
    mcfg = LlamaConfig(
        vocab_size=len(tok), hidden_size=cfg.hidden_size, intermediate_size=cfg.intermediate_size,
        num_hidden_layers=cfg.num_layers, num_attention_heads=cfg.num_heads,
        num_key_value_heads=cfg.num_heads, max_position_embeddings=cfg.max_positions,
        bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id,
        tie_word_embeddings=False, rms_norm_eps=1e-5,
    )
    model = LlamaForCausalLM(mcfg)
    model.generation_config.pad_token_id = tok.pad_token_id
    out = Path(cfg.out)
    out.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out, safe_serialization=True)
    tok.save_pretrained(out)
    return out
