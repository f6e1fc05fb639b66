"""Every trainer's options as a typed dataclass, importable without torch.

The trainers read them (``python -m trainers KIND`` builds one flag per field), and the web app
validates a run's options with the same classes (``trainers.config.build_config``) when the run
is created, so a bad option is refused at once instead of failing minutes later on a worker.
Each field carries its help text; a field without a default is required.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import PurePath

from trainers.config import opt
from trainers.errors import ConfigError

ENGINES = ("transformers", "vllm")


def check_engine_option(engine: str, gpu_memory_utilization: float) -> None:
    """The value check (anywhere, the web app included); whether vllm can run is checked where the run starts."""
    if engine not in ENGINES:
        raise ConfigError(f"--engine must be one of {', '.join(ENGINES)}, not {engine!r}")
    if not 0 < gpu_memory_utilization <= 1:
        raise ConfigError("vllm_gpu_memory_utilization must be in (0, 1]")


@dataclass
class TinyConfig:
    out: str = opt(help="output folder for the model and tokenizer")
    text: str | None = opt(None, help="plain-text file to train the tokenizer on (default: a built-in corpus)")
    vocab_size: int = opt(384, help="tokenizer vocabulary size (BPE, byte level)")
    hidden_size: int = opt(64, help="model width")
    num_layers: int = opt(2, help="number of transformer layers")
    num_heads: int = opt(4, help="attention heads")
    intermediate_size: int = opt(128, help="MLP width")
    max_positions: int = opt(512, help="maximum sequence length")
    pad_equals_eos: bool = opt(False, help="use the EOS token as the padding token")
    seed: int = opt(0, help="random seed of the weights")

    def validate(self) -> None:
        if self.hidden_size % self.num_heads:
            raise ConfigError("hidden_size must be a multiple of num_heads")
        if self.vocab_size < 300:
            raise ConfigError("vocab_size must be at least 300 (256 bytes + merges + specials)")

@dataclass
class SFTConfig:
    model: str = opt(help="causal LM folder or hub name to start from")
    data: str = opt(help="SFT rows (prompt/completion or messages): .jsonl, .jsonl.gz or .parquet")
    out: str = opt(help="run folder: config.json, metrics.jsonl, checkpoints/, model/")
    valid_data: str | None = opt(None, help="validation SFT rows (default: rows with split valid/test, else valid_fraction)")
    valid_fraction: float = opt(0.1, help="share of rows held out for validation when no split is given")
    reward_model: str | None = opt(None, help="RM folder: keep the epoch whose greedy validation responses score best")
    epochs: int = opt(3, help="passes over the training rows")
    batch_size: int = opt(8, help="sequences per optimiser step (global, over all processes)")
    micro_batch_size: int = opt(8, help="sequences per forward pass on each process (gradient accumulation)")
    lr: float = opt(1e-4, help="peak learning rate (AdamW)")
    final_lr_ratio: float = opt(0.1, help="cosine decay ends at this fraction of lr")
    warmup_steps: int = opt(0, help="linear warm-up steps")
    weight_decay: float = opt(0.0, help="AdamW weight decay")
    residual_dropout: float = opt(0.0, help="dropout on attention/MLP outputs before the residual add (paper: 0.2)")
    grad_clip: float = opt(1.0, help="gradient norm clip (0 = off)")
    max_length: int = opt(512, help="maximum tokens of prompt + response")
    max_steps: int = opt(0, help="stop after this many optimiser steps (0 = all epochs); the schedule still spans all epochs")
    save_every: int = opt(0, help="also checkpoint every N steps (0 = at epoch ends only)")
    keep_checkpoints: int = opt(2, help="checkpoints kept on disk")
    resume: bool = opt(True, help="continue from the latest checkpoint in out/checkpoints when there is one")
    valid_max_new_tokens: int = opt(64, help="response length for the validation RM score")
    gradient_checkpointing: bool = opt(False, help="recompute activations in the backward pass to save memory")
    dtype: str = opt("auto", help="auto (bf16 autocast on GPU, fp32 on CPU), float32, bfloat16")
    compile: bool | None = opt(None, help="torch.compile each transformer block (default: on with CUDA, off on CPU; --no-compile turns it off)")
    fsdp: bool = opt(False, help="shard parameters, gradients and optimizer state over the processes (FSDP2; launch with torchrun); checkpoints are sharded")
    seed: int = opt(0, help="random seed (data order, dropout, init of new weights)")
    skip_bad_rows: bool = opt(False, help="skip malformed rows (counted and reported) instead of stopping")

    def validate(self) -> None:
        if self.epochs < 1 or self.batch_size < 1 or self.micro_batch_size < 1:
            raise ConfigError("epochs, batch_size and micro_batch_size must be at least 1")
        if not 0 <= self.residual_dropout < 1:
            raise ConfigError("residual_dropout must be in [0, 1)")


@dataclass
class RMConfig:
    model: str = opt(help="backbone: causal LM folder (SFT model), RM folder, or encoder (e.g. MiniLM) folder")
    data: str = opt(help="native comparison rows or pairwise rows: .jsonl, .jsonl.gz or .parquet")
    out: str = opt(help="run folder: config.json, metrics.jsonl, checkpoints/, model/")
    valid_data: str | None = opt(None, help="held-out comparisons (default: rows with split valid/test, else valid_fraction)")
    valid_fraction: float = opt(0.1, help="share of prompts held out when no split is given")
    demonstrations: str | None = opt(None, help="SFT rows whose responses should score mean 0 after training")
    epochs: int = opt(1, help="passes over the prompts (paper: 1)")
    batch_size: int = opt(8, help="prompts (ranking groups) per optimiser step, global")
    micro_batch_size: int = opt(8, help="prompts per forward pass on each process; all K completions of one prompt share a pass")
    lr: float = opt(1e-5, help="peak learning rate (AdamW)")
    final_lr_ratio: float = opt(0.1, help="cosine decay ends at this fraction of lr")
    warmup_steps: int = opt(0, help="linear warm-up steps")
    weight_decay: float = opt(0.0, help="AdamW weight decay")
    grad_clip: float = opt(1.0, help="gradient norm clip (0 = off)")
    max_length: int = opt(512, help="maximum tokens of prompt + completion (saved with the RM: PPO and evals score at it)")
    dropout: float | None = opt(0.0, help="dropout rate of the backbone and head while training (0 = off, as TRL does; empty = the backbone's own)")
    max_steps: int = opt(0, help="stop after this many steps (0 = all epochs)")
    eval_every: int = opt(0, help="also evaluate every N steps (0 = at epoch ends)")
    keep_checkpoints: int = opt(2, help="checkpoints kept on disk")
    resume: bool = opt(True, help="continue from the latest checkpoint in out/checkpoints when there is one")
    dtype: str = opt("auto", help="auto (bf16 autocast on GPU, fp32 on CPU), float32, bfloat16")
    compile: bool = opt(False, help="torch.compile the model (faster steps on GPU after a compile warm-up)")
    fsdp: bool = opt(False, help="shard parameters, gradients and optimizer state over the processes (FSDP2; launch with torchrun); checkpoints are sharded")
    seed: int = opt(0, help="random seed")
    skip_bad_rows: bool = opt(False, help="skip malformed rows (counted and reported) instead of stopping")

    def validate(self) -> None:
        if self.epochs < 1 or self.batch_size < 1 or self.micro_batch_size < 1:
            raise ConfigError("epochs, batch_size and micro_batch_size must be at least 1")
        if self.dropout is not None and not 0 <= self.dropout < 1:
            raise ConfigError("dropout must be in [0, 1)")

@dataclass
class PPOConfig:
    policy: str = opt(help="SFT model folder: the policy and the frozen reference start from it")
    prompts: str = opt(help="prompt rows (docs/formats.md 'prompts'); rows with split valid/test are held out for eval")
    out: str = opt(help="run folder: config.json, metrics.jsonl, checkpoints/, model/")
    reward_model: str | None = opt(None, help="RM folder (required on the command line)")
    pretrain_data: str | None = opt(None, help="pretraining text for the ptx term (docs/formats.md 'pretraining text'): a UTF-8 .txt or .txt.gz corpus, documents separated by blank lines, or .jsonl/.jsonl.gz/.parquet rows with 'text' (or SFT rows), one document per row")
    value_model: str | None = opt(None, help="value model start (default: the RM when it is a decoder with the policy's vocabulary, else the policy)")
    steps: int = opt(100, help="PPO iterations (rollout + update)")
    max_steps: int = opt(0, help="stop after this many iterations (0 = all); for interrupted runs")
    rollout_batch_size: int = opt(16, help="prompts sampled per iteration (global)")
    generation_batch_size: int = opt(16, help="prompts per generate() call on each process")
    minibatch_size: int = opt(8, help="episodes per optimiser step (global)")
    ppo_epochs: int = opt(2, help="passes over each rollout")
    lr: float = opt(1e-5, help="policy learning rate (AdamW, constant after warm-up)")
    value_lr: float = opt(1e-5, help="value model learning rate")
    warmup_steps: int = opt(0, help="linear warm-up (optimiser steps)")
    kl_coef: float = opt(0.02, help="beta: per-token KL penalty coefficient")
    ptx_coef: float = opt(1.0, help="gamma: weight of the pretraining LM loss (0 = plain PPO; the paper's 27.8 swamps the PPO term here, see docs/formats.md 'choosing gamma')")
    ptx_batch_size: int = opt(8, help="pretraining sequences per optimiser step (global)")
    ptx_max_length: int = opt(256, help="pretraining sequence length: each document is cut to its first N tokens (the rest is dropped; no packing)")
    gamma: float = opt(1.0, help="discount of GAE")
    lam: float = opt(0.95, help="lambda of GAE")
    clip_range: float = opt(0.2, help="policy ratio clip")
    value_clip: float = opt(0.2, help="value clip around the rollout values")
    vf_coef: float = opt(1.0, help="value loss weight")
    grad_clip: float = opt(1.0, help="gradient norm clip per model (0 = off)")
    temperature: float = opt(1.0, help="sampling temperature; log-probs are recomputed at it; no top-k/top-p")
    max_new_tokens: int = opt(64, help="response length limit; a response cut here has no EOS")
    max_prompt_length: int = opt(256, help="prompts are cut from the left to this many tokens")
    missing_eos_penalty: float | None = opt(None, help="subtract this from the score of a response without EOS (default: score it as is)")
    engine: str = opt("transformers", help="who samples the responses: transformers (generate(); default, CPU and GPU) or vllm (needs the vllm extra and a CUDA GPU); with vllm the policy's weights are pushed into it before each rollout, log-probs are still computed by the policy")
    vllm_gpu_memory_utilization: float = opt(0.3, help="share of the GPU's memory the vLLM engine may take (weights + KV cache), beside the four PPO models on the same GPU; only with --engine vllm")
    ema_decay: float = opt(0.0, help="EMA of the policy weights, saved as the final model (0 = off; paper 0.992)")
    valid_fraction: float = opt(0.0, help="share of prompts held out for eval/reward when no split is given")
    eval_every: int = opt(0, help="evaluate held-out reward and pretraining loss every N iterations (0 = start and end)")
    eval_prompts: int = opt(64, help="held-out prompts used per evaluation")
    save_every: int = opt(0, help="checkpoint every N iterations (0 = at the end only)")
    keep_checkpoints: int = opt(2, help="checkpoints kept on disk")
    resume: bool = opt(True, help="continue from the latest checkpoint in out/checkpoints when there is one")
    dtype: str = opt("auto", help="auto (bf16 autocast on GPU, fp32 on CPU), float32, bfloat16")
    fsdp: bool = opt(False, help="shard the policy, value, reference and reward models, gradients and optimizer state over the processes (FSDP2; launch with torchrun; rollout_batch_size and minibatch_size multiples of the process count); checkpoints are sharded")
    seed: int = opt(0, help="random seed")
    skip_bad_rows: bool = opt(False, help="skip malformed rows (counted and reported) instead of stopping")

    def validate(self) -> None:
        if self.ptx_coef > 0 and not self.pretrain_data:
            raise ConfigError("ptx_coef > 0 needs --pretrain-data (or set --ptx-coef 0 for plain PPO)")
        if self.rollout_batch_size % self.minibatch_size:
            raise ConfigError("rollout_batch_size must be a multiple of minibatch_size")
        check_engine_option(self.engine, self.vllm_gpu_memory_utilization)

@dataclass
class GenerateConfig:
    model: str = opt(help="causal LM folder or hub name; several separated by commas, sampled in turn")
    prompts: str = opt(help="prompts file (.jsonl, .jsonl.gz, .parquet; docs/formats.md 'prompts')")
    out: str = opt(help="completions file to write (.jsonl or .jsonl.gz)")
    k: int = opt(4, help="samples per prompt")
    max_new_tokens: int = opt(128, help="maximum response length in tokens")
    temperature: float = opt(1.0, help="sampling temperature (0 = greedy); no top-k/top-p")
    batch_size: int = opt(16, help="prompts per generation batch")
    max_prompt_length: int = opt(512, help="prompts are cut from the left to this many tokens")
    model_name: str | None = opt(None, help="name(s) written in the 'model' column, comma-separated, one per model (default: each folder's name)")
    seed: int = opt(0, help="random seed")
    dtype: str = opt("auto", help="auto (bf16 on GPU, fp32 on CPU), float32, bfloat16")
    skip_bad_rows: bool = opt(False, help="skip malformed prompt rows (counted) instead of stopping")
    engine: str = opt("transformers", help="who samples the responses: transformers (generate(); default, CPU and GPU) or vllm (needs the vllm extra and a CUDA GPU)")
    vllm_gpu_memory_utilization: float = opt(0.9, help="share of the GPU's memory the vLLM engine may take (weights + KV cache); only with --engine vllm")

    def models(self) -> list[str]:
        """The model folders / hub names of ``model``, in order."""
        return [m.strip() for m in self.model.split(",")]

    def model_names(self) -> list[str]:
        """One 'model' column value per model: ``model_name``'s entries, else each folder's name."""
        if self.model_name and self.model_name.strip():  # "" means the default, as before
            return [n.strip() for n in self.model_name.split(",")]
        return [PurePath(m.rstrip("/")).name for m in self.models()]

    def validate(self) -> None:
        if self.k < 1:
            raise ConfigError("k must be at least 1")
        check_engine_option(self.engine, self.vllm_gpu_memory_utilization)
        if not self.out.endswith((".jsonl", ".jsonl.gz")):
            raise ConfigError("--out must end with .jsonl or .jsonl.gz")
        models = self.models()
        if not all(models):
            raise ConfigError(f"--model: an empty entry in {self.model!r} (separate models by single commas)")
        names = self.model_names()
        if self.model_name and self.model_name.strip() and not all(names):
            raise ConfigError(f"--model-name: an empty entry in {self.model_name!r}")
        if len(names) != len(models):
            raise ConfigError(f"--model-name gives {len(names)} name(s) for {len(models)} model(s); "
                              "give one name per model, comma-separated, in the same order")
        if len(set(names)) != len(names):
            raise ConfigError(f"two models would be written under the same name ({', '.join(names)}); "
                              "give distinct names with --model-name")

@dataclass
class EvalConfig:
    model: str = opt(help="causal LM folder(s) or hub name(s) to evaluate, comma-separated; loaded one at a time")
    out: str = opt(help="run folder: results.json, metrics.jsonl, config.json")
    model_name: str | None = opt(None, help="name(s) of the models in results.json, comma-separated, one per model (default: each folder's name)")
    reference: str | None = opt(None, help="reference (SFT) model folder: each policy's KL to it on its sampled responses (needs --prompts)")
    reward_model: str | None = opt(None, help="RM folder: mean score of the sampled responses (--prompts) and pairwise accuracy (--comparisons)")
    prompts: str | None = opt(None, help="held-out prompts file (docs/formats.md 'prompts'): one response sampled per prompt from each model")
    corpus: str | None = opt(None, help="held-out pretraining text (docs/formats.md 'pretraining text': .txt, .txt.gz, or rows with 'text'): per-token NLL and perplexity")
    comparisons: str | None = opt(None, help="held-out comparisons (native rows with labeler_group, or pairwise rows): the RM's pairwise accuracy, overall and per labeler group")
    max_prompts: int = opt(256, help="evaluate the first N prompts of --prompts")
    max_documents: int = opt(512, help="evaluate the first N documents of --corpus")
    max_new_tokens: int = opt(64, help="response length limit of the sampled responses")
    temperature: float = opt(1.0, help="sampling temperature, and the temperature of the KL's log-probs (0 = greedy responses, KL at temperature 1); no top-k/top-p")
    max_length: int = opt(512, help="token limit: prompts are cut from the left to it, corpus documents to their first N tokens, RM inputs to N")
    batch_size: int = opt(16, help="prompts, documents or RM inputs per forward pass")
    seed: int = opt(0, help="random seed: every model samples from it")
    dtype: str = opt("auto", help="auto (bf16 on GPU, fp32 on CPU), float32, bfloat16")
    skip_bad_rows: bool = opt(False, help="skip malformed rows (counted) instead of stopping")

    def models(self) -> list[str]:
        """The model folders / hub names of ``model``, in order."""
        return [m.strip() for m in self.model.split(",")]

    def model_names(self) -> list[str]:
        """One name per model: ``model_name``'s entries, else each folder's name."""
        if self.model_name and self.model_name.strip():
            return [n.strip() for n in self.model_name.split(",")]
        return [PurePath(m.rstrip("/")).name for m in self.models()]

    def validate(self) -> None:
        models = self.models()
        if not all(models):
            raise ConfigError(f"--model: an empty entry in {self.model!r} (separate models by single commas)")
        names = self.model_names()
        if self.model_name and self.model_name.strip() and not all(names):
            raise ConfigError(f"--model-name: an empty entry in {self.model_name!r}")
        if len(names) != len(models):
            raise ConfigError(f"--model-name gives {len(names)} name(s) for {len(models)} model(s); "
                              "give one name per model, comma-separated, in the same order")
        if len(set(names)) != len(names):
            raise ConfigError(f"two models would be reported under the same name ({', '.join(names)}); "
                              "give distinct names with --model-name")
        if not (self.prompts or self.corpus or self.comparisons):
            raise ConfigError("nothing to evaluate: give --prompts, --corpus and/or --comparisons")
        if self.prompts and not (self.reward_model or self.reference):
            raise ConfigError("--prompts needs --reward-model (RM score) and/or --reference (KL): "
                              "without either, the sampled responses are not measured")
        if self.comparisons and not self.reward_model:
            raise ConfigError("--comparisons needs --reward-model (the RM whose pairwise accuracy is measured)")
        if min(self.max_prompts, self.max_documents, self.max_new_tokens, self.batch_size) < 1:
            raise ConfigError("max_prompts, max_documents, max_new_tokens and batch_size must be at least 1")
        if self.max_length < 2:
            raise ConfigError("max_length must be at least 2")
        if self.temperature < 0:
            raise ConfigError("temperature must be >= 0 (0 = greedy)")
