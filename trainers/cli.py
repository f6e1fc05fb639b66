"""``python -m trainers init-tiny|sft|rm|ppo|generate|eval``: flags generated from the config dataclasses.

Each command takes ``--config FILE`` (JSON or YAML) and one flag per config key that overrides
it. The trainers' own errors are printed as one line (``error: ...``) with exit status 2.
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any, Callable

from trainers.common import is_main
from trainers.config import add_dataclass_arguments, config_from_args
from trainers.errors import TrainerError


def _commands() -> dict[str, tuple[type, Callable[[Any], Any], str]]:
    from trainers.evaluate import EvalConfig, run_eval
    from trainers.generate import GenerateConfig, generate_completions
    from trainers.ppo import PPOConfig, train_ppo
    from trainers.reward import RMConfig, train_rm
    from trainers.sft import SFTConfig, train_sft
    from trainers.tiny import TinyConfig, init_tiny

    return {
        "init-tiny": (TinyConfig, init_tiny, "build a tiny random causal LM + BPE tokenizer, offline"),
        "sft": (SFTConfig, train_sft, "supervised fine-tuning on demonstrations"),
        "rm": (RMConfig, train_rm, "reward model on K-wise rankings or pairwise rows"),
        "ppo": (PPOConfig, train_ppo, "PPO-ptx against a reward model"),
        "generate": (GenerateConfig, generate_completions, "sample K completions per prompt"),
        "eval": (EvalConfig, run_eval, ("automatic evaluations: RM score, KL to a reference, corpus perplexity, "
                                        "RM accuracy per labeler group")),
    }


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m trainers", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    for name, (cls, _, helptext) in _commands().items():
        p = sub.add_parser(name, help=helptext, description=helptext)
        add_dataclass_arguments(p, cls)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    ns = parser.parse_args(argv)
    cls, fn, _ = _commands()[ns.command]
    try:
        cfg = config_from_args(cls, ns)
        result = fn(cfg)
        if isinstance(result, dict) and ns.command != "generate" and is_main():  # generate prints its own
            print(json.dumps(result))
    except TrainerError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("error: interrupted", file=sys.stderr)
        return 130
    return 0
