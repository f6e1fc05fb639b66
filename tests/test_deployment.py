"""docker-compose.yml cannot run here (no Docker engine), so it is checked by reading it."""

from __future__ import annotations

import shlex

import typer.main
import yaml

from app.cli import cli
from app.config import REPO_ROOT


def _compose() -> dict:
    return yaml.safe_load((REPO_ROOT / "docker-compose.yml").read_text())


def _rlhf_commands(command) -> list[list[str]]:
    """Every `rlhf ...` invocation in a service command (list form or `sh -c "a && b"`)."""
    if isinstance(command, list) and command[:2] == ["sh", "-c"]:
        command = command[2]
    if isinstance(command, str):
        parts = [shlex.split(piece) for piece in command.split("&&")]
    else:
        parts = [command]
    return [p for p in parts if p and p[0] == "rlhf"]


def _is_group(command) -> bool:
    return isinstance(getattr(command, "commands", None), dict)


def _resolves(argv: list[str]) -> bool:
    group = typer.main.get_command(cli)
    args = argv[1:]
    while _is_group(group) and args and not args[0].startswith("-"):
        sub = group.commands.get(args[0])
        if sub is None:
            return False
        group, args = sub, args[1:]
    if _is_group(group):
        return False  # stopped at a group: not a runnable command
    known = {opt for param in group.params for opt in getattr(param, "opts", [])}
    return all(a in known for a in args if a.startswith("--"))


def test_compose_has_db_web_and_gpu_worker():
    services = _compose()["services"]
    assert set(services) >= {"db", "web", "worker"}
    assert "healthcheck" in services["db"] and services["db"]["volumes"]
    devices = services["worker"]["deploy"]["resources"]["reservations"]["devices"]
    assert any("gpu" in d["capabilities"] for d in devices)
    assert services["web"]["depends_on"]["db"]["condition"] == "service_healthy"


def test_every_service_command_is_a_real_rlhf_subcommand():
    services = _compose()["services"]
    seen = []
    for name in ("web", "worker"):
        commands = _rlhf_commands(services[name]["command"])
        assert commands, f"{name} runs no rlhf command"
        for argv in commands:
            assert _resolves(argv), f"{name}: `{' '.join(argv)}` is not an rlhf command"
            seen.append(argv[1])
    assert {"db", "serve", "worker"} <= set(seen)


def test_the_checker_rejects_made_up_commands():
    assert not _resolves(["rlhf", "no-such-command"])
    assert not _resolves(["rlhf", "serve", "--no-such-flag"])
    assert not _resolves(["rlhf", "db"])


def test_web_migrates_before_serving():
    command = _compose()["services"]["web"]["command"]
    argvs = _rlhf_commands(command)
    assert argvs[0][1:3] == ["db", "upgrade"] and argvs[-1][1] == "serve"


def test_web_sends_cookies_over_https_only_and_sits_behind_a_proxy():
    """Issue 12: compose sets secure cookies, believes X-Forwarded-For only from configured proxies,
    and publishes the app on the host's loopback only (the TLS proxy is the way in)."""
    from app.config import Settings

    web = _compose()["services"]["web"]
    env = web["environment"]
    assert str(env["RLHF_COOKIE_SECURE"]).lower() == "true"
    assert env["RLHF_TRUSTED_PROXIES"] == "${RLHF_TRUSTED_PROXIES:-}"
    assert Settings(cookie_secure=env["RLHF_COOKIE_SECURE"], trusted_proxies="").cookie_secure is True
    assert all(str(p).startswith("127.0.0.1:") for p in web["ports"])
    assert _compose()["services"]["worker"]["environment"] == env  # the worker reads the same settings
