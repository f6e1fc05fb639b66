"""InstructGPT trainers: SFT, K-wise reward model, PPO-ptx and generation.

Runs on its own (``python -m trainers ...``) and never imports the web application: it reads
the export formats of docs/formats.md and writes checkpoints, ``metrics.jsonl`` and final model
folders that ``from_pretrained`` loads.
"""

from trainers.errors import ConfigError, DataError, TrainerError

__all__ = ["TrainerError", "DataError", "ConfigError"]
