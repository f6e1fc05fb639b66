"""Typed run configs: dataclass fields with help text, read from JSON/YAML files and flags.

Every trainer's config is a dataclass whose fields carry ``metadata={"help": ...}``. The CLI
builds one ``--flag`` per field from it, a ``--config FILE`` (JSON or YAML) gives the base
values, flags override them, and the resolved config is written to ``<out>/config.json``.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import types
import typing
from pathlib import Path
from typing import Any

import yaml

from trainers.errors import ConfigError

MISSING = dataclasses.MISSING


def opt(default: Any = MISSING, help: str = "", **kw: Any) -> Any:  # noqa: A002
    """A dataclass field with a help text (``default=MISSING`` makes it required)."""
    if isinstance(default, (list, dict)):
        value = default
        return dataclasses.field(default_factory=lambda: type(value)(value), metadata={"help": help}, **kw)
    return dataclasses.field(default=default, metadata={"help": help}, **kw)


def _base_type(tp: Any) -> tuple[Any, bool]:
    """(inner type, optional?) for ``X``, ``X | None`` and ``Optional[X]``."""
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        return args[0], True
    return tp, False


def _coerce(name: str, tp: Any, value: Any) -> Any:
    base, optional = _base_type(tp)
    if value is None:
        if optional:
            return None
        raise ConfigError(f"config key {name!r} must not be null")
    try:
        if base is bool:
            if isinstance(value, bool):
                return value
            if isinstance(value, str) and value.lower() in ("true", "1", "yes", "false", "0", "no"):
                return value.lower() in ("true", "1", "yes")
            raise ValueError(value)
        if base is int:
            if isinstance(value, bool) or (isinstance(value, float) and not value.is_integer()):
                raise ValueError(value)
            return int(value)
        if base is float:
            if isinstance(value, bool):
                raise ValueError(value)
            return float(value)
        if base is str:
            if not isinstance(value, (str, int, float)):
                raise ValueError(value)
            return str(value)
        if typing.get_origin(base) is list:
            if isinstance(value, str):
                value = [v for v in value.split(",") if v]
            if not isinstance(value, list):
                raise ValueError(value)
            (inner,) = typing.get_args(base)
            return [_coerce(name, inner, v) for v in value]
    except (TypeError, ValueError):
        raise ConfigError(f"config key {name!r}: expected {getattr(base, '__name__', base)}, got {value!r}") from None
    return value


def _hints(cls: type) -> dict[str, Any]:
    return typing.get_type_hints(cls)


def build_config(cls: type, values: dict[str, Any]) -> Any:
    """Create ``cls`` from a mapping, checking keys and coercing types; errors are ConfigError."""
    hints = _hints(cls)
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(values) - names)
    if unknown:
        raise ConfigError(f"unknown config key(s) for {cls.__name__}: {', '.join(unknown)}")
    kwargs = {k: _coerce(k, hints[k], v) for k, v in values.items()}
    missing = [
        f.name for f in dataclasses.fields(cls)
        if f.name not in kwargs and f.default is MISSING and f.default_factory is MISSING
    ]
    if missing:
        flags = ", ".join("--" + m.replace("_", "-") for m in missing)
        raise ConfigError(f"missing required option(s): {flags}")
    cfg = cls(**kwargs)
    check = getattr(cfg, "validate", None)
    if check is not None:
        check()
    return cfg


def load_config_file(path: str | Path) -> dict[str, Any]:
    """Read a JSON or YAML config file into a dict (keys may use '-' or '_')."""
    p = Path(path)
    if not p.is_file():
        raise ConfigError(f"config file not found: {p}")
    text = p.read_text(encoding="utf-8")
    try:
        data = json.loads(text) if p.suffix == ".json" else yaml.safe_load(text)
    except (json.JSONDecodeError, yaml.YAMLError) as e:
        raise ConfigError(f"{p}: cannot parse config: {e}".splitlines()[0]) from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"{p}: a config file must hold a mapping of keys to values")
    return {str(k).replace("-", "_"): v for k, v in data.items()}


def config_to_dict(cfg: Any) -> dict[str, Any]:
    return dataclasses.asdict(cfg)


def write_config(cfg: Any, out_dir: str | Path) -> Path:
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    path = out / "config.json"
    payload = {"kind": type(cfg).__name__, **config_to_dict(cfg)}
    path.write_text(json.dumps(payload, indent=2, sort_keys=False) + "\n", encoding="utf-8")
    return path


def add_dataclass_arguments(parser: argparse.ArgumentParser, cls: type) -> None:
    """One ``--flag`` per field, documented by the field's help and default; none set defaults."""
    hints = _hints(cls)
    parser.add_argument("--config", metavar="FILE", help="JSON or YAML file of keys; flags override it")
    for f in dataclasses.fields(cls):
        base, _ = _base_type(hints[f.name])
        flag = "--" + f.name.replace("_", "-")
        helptext = f.metadata.get("help", "")
        if f.default is MISSING and f.default_factory is MISSING:
            helptext += " (required)"
        else:
            default = f.default if f.default is not MISSING else f.default_factory()
            helptext += f" (default: {default})"
        helptext = helptext.replace("%", "%%")
        if base is bool:
            parser.add_argument(flag, dest=f.name, action=argparse.BooleanOptionalAction,
                                default=argparse.SUPPRESS, help=helptext)
        else:
            metavar = getattr(base, "__name__", "VALUE").upper()
            parser.add_argument(flag, dest=f.name, default=argparse.SUPPRESS, metavar=metavar,
                                help=helptext)


def config_from_args(cls: type, ns: argparse.Namespace) -> Any:
    values: dict[str, Any] = {}
    given = vars(ns).copy()
    path = given.pop("config", None)
    given.pop("command", None)
    if path:
        values.update(load_config_file(path))
    values.update({k: v for k, v in given.items()})
    return build_config(cls, values)
