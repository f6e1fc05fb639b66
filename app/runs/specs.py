"""What each run kind takes: its inputs (registered models and frozen datasets, per trainer
option) and its options (the trainer's own config dataclass, read without torch).

The run form, the API, the CLI and the worker all read these specs, so a run kind's inputs and
options are described once, here and in ``trainers/configs.py``.
"""

from __future__ import annotations

import dataclasses
import typing
from dataclasses import dataclass
from typing import Any, Literal

from pydantic import BaseModel, Field

from app.datasets.models import ExportKind
from app.prompts.models import Category, PromptSource, Split
from app.registry.models import ModelKind
from app.runs.models import RunKind
from trainers.config import MISSING, _base_type
from trainers.configs import EvalConfig, GenerateConfig, PPOConfig, RMConfig, SFTConfig, TinyConfig


@dataclass(frozen=True)
class InputSpec:
    """One trainer option filled from the registry: a model of these kinds or a dataset of these kinds."""

    role: str  # the trainer option it fills
    label: str
    help: str
    model_kinds: tuple[ModelKind, ...] = ()
    dataset_kinds: tuple[ExportKind, ...] = ()
    required: bool = True
    many: bool = False  # several models (generate)

    @property
    def is_model(self) -> bool:
        return bool(self.model_kinds)

    def accepts(self) -> str:
        kinds = self.model_kinds or self.dataset_kinds
        what = "model" if self.is_model else "dataset"
        return f"a {' or '.join(k.value for k in kinds)} {what}"


@dataclass(frozen=True)
class RunSpec:
    kind: RunKind
    title: str
    config_class: type
    inputs: tuple[InputSpec, ...]
    basic: tuple[str, ...]  # options shown first; the rest are folded under "advanced"
    output_kind: ModelKind | None  # what the run registers when it succeeds
    managed: frozenset[str] = frozenset({"out", "resume"})  # set by the worker, never by users

    def input(self, role: str) -> InputSpec | None:
        return next((i for i in self.inputs if i.role == role), None)

    def option_fields(self) -> list[OptionField]:
        hidden = self.managed | {i.role for i in self.inputs} | GENERATE_HIDDEN.get(self.kind, frozenset())
        hints = typing.get_type_hints(self.config_class)
        out = []
        for f in dataclasses.fields(self.config_class):
            if f.name in hidden:
                continue
            base, optional = _base_type(hints[f.name])
            default = f.default if f.default is not MISSING else (f.default_factory() if f.default_factory is not MISSING else None)
            out.append(OptionField(
                name=f.name, type=getattr(base, "__name__", str(base)), optional=optional, default=default,
                help=f.metadata.get("help", ""), required=f.default is MISSING and f.default_factory is MISSING,
                advanced=f.name not in self.basic,
            ))
        out.sort(key=lambda o: (o.advanced, self.basic.index(o.name) if o.name in self.basic else 0))
        return out


@dataclass(frozen=True)
class OptionField:
    """One option of a run form: from the trainer's dataclass field (type, default, help)."""

    name: str
    type: str  # int, float, str, bool, list
    optional: bool
    default: Any
    help: str
    required: bool
    advanced: bool


_BASE_LIKE = (ModelKind.base, ModelKind.sft, ModelKind.ppo)

SPECS: dict[RunKind, RunSpec] = {
    RunKind.sft: RunSpec(
        RunKind.sft, "Supervised fine-tuning", SFTConfig,
        inputs=(
            InputSpec("model", "Start from", "the model to fine-tune (usually a base model)", model_kinds=_BASE_LIKE),
            InputSpec("data", "Demonstrations", "a frozen SFT dataset", dataset_kinds=(ExportKind.sft,)),
            InputSpec("valid_data", "Validation demonstrations", "default: rows of the valid/test split, else a share of the data",
                      dataset_kinds=(ExportKind.sft,), required=False),
            InputSpec("reward_model", "Select epochs with RM", "keep the epoch whose validation responses this RM scores best",
                      model_kinds=(ModelKind.rm,), required=False),
        ),
        basic=("epochs", "lr", "batch_size", "max_length", "residual_dropout", "valid_fraction"),
        output_kind=ModelKind.sft,
    ),
    RunKind.rm: RunSpec(
        RunKind.rm, "Reward model", RMConfig,
        inputs=(
            InputSpec("model", "Backbone", "usually the SFT model; its unembedding is replaced by a scalar head",
                      model_kinds=(ModelKind.sft, ModelKind.base, ModelKind.rm)),
            InputSpec("data", "Comparisons", "a frozen comparisons or pairwise dataset",
                      dataset_kinds=(ExportKind.comparisons, ExportKind.pairwise)),
            InputSpec("valid_data", "Held-out comparisons", "default: rows of the valid/test split, else a share of the prompts",
                      dataset_kinds=(ExportKind.comparisons, ExportKind.pairwise), required=False),
            InputSpec("demonstrations", "Demonstrations for the bias", "after training, these responses score mean 0",
                      dataset_kinds=(ExportKind.sft,), required=False),
        ),
        basic=("epochs", "lr", "batch_size", "max_length", "valid_fraction"),
        output_kind=ModelKind.rm,
    ),
    RunKind.ppo: RunSpec(
        RunKind.ppo, "PPO-ptx", PPOConfig,
        inputs=(
            InputSpec("policy", "Policy", "the SFT model: the policy and the frozen reference start from it",
                      model_kinds=(ModelKind.sft, ModelKind.ppo, ModelKind.base)),
            InputSpec("reward_model", "Reward model", "scores each finished response; the value model starts from it",
                      model_kinds=(ModelKind.rm,)),
            InputSpec("prompts", "Prompts", "a frozen prompts dataset", dataset_kinds=(ExportKind.prompts,)),
            InputSpec("pretrain_data", "Pretraining mix", "text for the ptx term: an uploaded corpus or an SFT dataset (needed when ptx_coef > 0)",
                      dataset_kinds=(ExportKind.corpus, ExportKind.sft), required=False),
            InputSpec("value_model", "Value model", "default: the reward model", model_kinds=(ModelKind.rm,), required=False),
        ),
        basic=("steps", "kl_coef", "ptx_coef", "lr", "rollout_batch_size", "minibatch_size", "max_new_tokens", "ema_decay"),
        output_kind=ModelKind.ppo,
    ),
    RunKind.generate: RunSpec(
        RunKind.generate, "Generate for ranking", GenerateConfig,
        inputs=(
            InputSpec("model", "Policies", "one or several models; when several, each ranking task mixes their responses",
                      model_kinds=(ModelKind.base, ModelKind.sft, ModelKind.ppo), many=True),
        ),
        basic=("temperature", "max_new_tokens"),
        output_kind=None,
    ),
    RunKind.eval: RunSpec(
        RunKind.eval, "Automatic evaluation", EvalConfig,
        inputs=(
            InputSpec("model", "Policies", "the models to evaluate side by side", model_kinds=_BASE_LIKE, many=True),
            InputSpec("reference", "Reference", "KL of each policy to this model on its responses (usually the SFT model)",
                      model_kinds=_BASE_LIKE, required=False),
            InputSpec("reward_model", "Reward model", "mean RM score of the responses, and the RM's accuracy on comparisons",
                      model_kinds=(ModelKind.rm,), required=False),
            InputSpec("prompts", "Held-out prompts", "one response per prompt and policy (needs a reward model or a reference)",
                      dataset_kinds=(ExportKind.prompts,), required=False),
            InputSpec("corpus", "Held-out pretraining text", "per-token loss and perplexity: the alignment tax",
                      dataset_kinds=(ExportKind.corpus, ExportKind.sft), required=False),
            InputSpec("comparisons", "Held-out comparisons", "RM pairwise accuracy, per labeler group (export with group 'all')",
                      dataset_kinds=(ExportKind.comparisons, ExportKind.pairwise), required=False),
        ),
        basic=("max_prompts", "max_documents", "max_new_tokens", "temperature"),
        output_kind=None,
    ),
    RunKind.init_tiny: RunSpec(
        RunKind.init_tiny, "Tiny base model (offline)", TinyConfig, inputs=(),
        basic=("hidden_size", "num_layers", "vocab_size"), output_kind=ModelKind.base,
    ),
}

# generate: the app picks the prompts file, the per-model sample count and the model names.
GENERATE_HIDDEN = {RunKind.generate: frozenset({"prompts", "k", "model_name"}), RunKind.eval: frozenset({"model_name"})}


class GenerationPlan(BaseModel):
    """A generate run's prompt selection and the ranking batch it builds from the samples."""

    model_config = {"extra": "forbid"}

    k: int = Field(4, ge=1, le=9, description="responses per prompt (K of the ranking batch: 4-9 when a batch is built)")
    split: Split | None = Field(Split.train, description="prompts of this split (empty: any)")
    category: Category | None = Field(None, description="only prompts of this category")
    source: PromptSource | None = Field(None, description="only prompts from this source")
    prompt_batch: str | None = Field(None, max_length=200, description="only prompts of this labeling batch (name or id)")
    limit: int | None = Field(None, ge=1, le=100_000, description="at most this many prompts")
    create_batch: bool = Field(True, description="build a ranking batch from the samples")
    batch_name: str | None = Field(None, max_length=200, description="name of the ranking batch (default: from the run)")
    overlap_share: float = Field(0.0, ge=0, le=1, description="share of tasks ranked by several labelers")
    overlap_count: int = Field(1, ge=1, le=20, description="labelers per overlapping task")
    priority: int = Field(0, ge=-1000, le=1000, description="higher batches are served first")
    purpose: Literal["training", "evaluation"] = Field(
        "training", description="evaluation: one response per model and prompt, judged blind; kept out of training exports")
    heldout_only: bool = Field(False, description="only held-out labelers take the tasks")

    def samples_per_model(self, n_models: int) -> int:
        """Each model's share of K, plus one spare for training batches (identical samples of a
        model are dropped on import); an evaluation takes exactly one response per model."""
        if self.purpose == "evaluation":
            return 1
        share = -(-self.k // n_models)
        return share + 1 if self.create_batch else share


PLAN_KEYS = frozenset(GenerationPlan.model_fields)
