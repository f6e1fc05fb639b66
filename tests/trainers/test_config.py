"""Typed configs: coercion, unknown keys, JSON and YAML files."""

import json

import pytest

from trainers.config import build_config, load_config_file
from trainers.errors import ConfigError
from trainers.ppo import PPOConfig
from trainers.sft import SFTConfig


def test_values_are_coerced_to_the_field_types():
    cfg = build_config(PPOConfig, {"policy": "p", "prompts": "x", "out": "o", "steps": "3", "kl_coef": "0.1",
                                   "ptx_coef": 0, "resume": "false", "missing_eos_penalty": None})
    assert (cfg.steps, cfg.kl_coef, cfg.resume, cfg.missing_eos_penalty) == (3, 0.1, False, None)


def test_unknown_and_badly_typed_keys_are_errors():
    with pytest.raises(ConfigError, match="unknown config key.*learning_rate"):
        build_config(SFTConfig, {"model": "m", "data": "d", "out": "o", "learning_rate": 1})
    with pytest.raises(ConfigError, match="'epochs': expected int"):
        build_config(SFTConfig, {"model": "m", "data": "d", "out": "o", "epochs": 1.5})
    with pytest.raises(ConfigError, match="residual_dropout"):
        build_config(SFTConfig, {"model": "m", "data": "d", "out": "o", "residual_dropout": 1.5})


def test_json_and_yaml_files(tmp_path):
    (tmp_path / "a.json").write_text(json.dumps({"batch-size": 4}))
    (tmp_path / "a.yaml").write_text("batch_size: 4\n")
    assert load_config_file(tmp_path / "a.json") == load_config_file(tmp_path / "a.yaml") == {"batch_size": 4}
    (tmp_path / "b.yaml").write_text("- 1\n- 2\n")
    with pytest.raises(ConfigError, match="mapping"):
        load_config_file(tmp_path / "b.yaml")
