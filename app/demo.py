"""`rlhf demo`: a SQLite database, demo accounts, labeling content and, when torch is installed,
everything the training loop needs, then the server with a training worker beside it.

What it sets up, each step skipped when already there (the demo can be restarted on its database):

- migrations, three accounts (admin, researcher, labeler) with new random passwords each start;
- the domains' demo seeders (``app.cli.DEMO_SEEDERS``): prompts in every split and a
  demonstration batch for them, a ranking batch of canned responses;
- with torch and transformers importable: a tiny Llama + BPE tokenizer built offline under the
  artifact folder (``models/tiny-base``) and registered as ``tiny-base``, and a small built-in
  pretraining corpus kept as the ``demo-corpus`` dataset for PPO-ptx runs;
- a training worker (``rlhf worker --poll 1``) as a child process: same database, artifact folder
  and secret, output to ``<database folder>/demo-worker.log``. The kernel stops it when the demo
  dies in any way (PR_SET_PDEATHSIG), and the demo stops it when the server stops.
"""

from __future__ import annotations

import importlib.util
import io
import os
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

import typer
from sqlalchemy import select

from app.config import REPO_ROOT, Settings
from app.launchers.local import die_with

TINY_NAME = "tiny-base"
TINY_FOLDER = Path("models") / TINY_NAME  # under the artifact folder
# Whole words of the demo's text become tokens (the text yields about 1,100 merges), so even the
# untrained model's samples read as words rather than bytes; the init-tiny default is 384.
TINY_VOCAB = 1024
CORPUS_NAME = "demo-corpus"
WORKER_POLL_S = 1
WORKER_STOP_S = 45.0  # the worker gives its trainer 30 s to stop (app/worker.py STOP_GRACE_S)
TRAINING_PACKAGES = ("torch", "transformers", "tokenizers", "safetensors")
INSTALL_HINT = "bash scripts/demo installs them (or: pip install torch==2.13.0 && pip install -e '.[train]')"

# The pretraining text of the PPO-ptx term: documents separated by blank lines (docs/formats.md
# 'pretraining text'). Plain sentences in the register of the demo prompts; also the text the tiny
# model's tokenizer is trained on.
DEMO_CORPUS = """\
The sun is a star. It gives the earth light and warmth, and plants use its light to grow.

The moon goes around the earth about once a month. People first walked on the moon in 1969.

A rainbow has seven colours: red, orange, yellow, green, blue, indigo and violet.

The sky looks blue because air scatters blue light from the sun more than red light.

Rome is the capital of Italy. Paris is the capital of France. Madrid is the capital of Spain.

Cats sleep for most of the day. Many cats do not like rain, but some love to watch it from a window.

Dogs are loyal friends. A new puppy needs food, water, a warm bed, short walks and a name.

To sleep well, go to bed at the same time each night, keep the room dark and put the phone away.

Bananas and lemons are yellow. Apples can be red or green. Oranges are orange.

A tomato is a fruit, because it grows from a flower and holds seeds. Cooks often treat it as a vegetable.

In French, good night is bonne nuit and thank you is merci. In Spanish, good morning is buenos dias.

The sea covers most of the earth. Its waves rise and fall with the wind and the tides.

A short poem can rhyme or not. It paints a picture with a few words and a steady beat.

Frogs live near ponds. They jump with long back legs and catch flies with their tongues.

On a rainy day, children can build a fort of blankets, bake cookies, paint, or read a story aloud.

A good summary keeps the main point and drops the details. One clear sentence is often enough.

To rewrite a sentence politely, add please and thank you, and ask instead of ordering.

A review that says the food was cold and the staff was rude is negative. A review that says it was lovely is positive.

A date names a day, a month and often a year, like 12 May 2024.

Raw cookie dough can contain raw egg and raw flour, which can make people sick, so it is safer to bake it first.

A helpful answer is honest, clear and kind. When the question is unclear, a good assistant asks what is meant.

The bus was late, so the boy walked to school. He ran the last part and arrived just in time.

Water freezes at zero degrees Celsius and boils at one hundred degrees Celsius at sea level.

Bees carry pollen from flower to flower. Without bees, many fruits and vegetables would not grow.

A meeting that is postponed indefinitely is put off with no new date.

Trees take in carbon dioxide and give out oxygen. A forest is home to birds, insects and many animals.

The heart pumps blood around the body. Exercise, sleep and good food keep it strong.

Numbers count things: one, two, three, four, five, six, seven, eight, nine, ten.

A library lends books for free. Reading every day builds a larger vocabulary.

Mountains are high and cold at the top. Rivers start in the mountains and flow down to the sea.
"""


def missing_training_packages() -> list[str]:
    """What this Python lacks to run the trainers (torch and the ``[train]`` extra); found, not imported."""
    return [name for name in TRAINING_PACKAGES if importlib.util.find_spec(name) is None]


# ---------------------------------------------------------------- setting up


def demo_settings(database: Path, port: int) -> Settings:
    database = database.resolve()
    return Settings(
        mode="demo", database_url=f"sqlite:///{database}", secret_key=secrets.token_urlsafe(48),
        artifact_dir=database.parent / "artifacts", port=port,
    )


def seed_accounts(factory) -> list[tuple[str, str, str]]:
    """admin, researcher and labeler, each with a new random password: (username, role, password)."""
    from app.db import unit_of_work
    from app.users import service as users

    accounts = []
    with unit_of_work(factory) as db:
        for username, role in (("admin", "admin"), ("researcher", "researcher"), ("labeler", "labeler")):
            password = secrets.token_urlsafe(12)
            existing = users.get_by_username(db, username)
            if existing is None:
                users.create_user(db, username=username, password=password, role=role)
            else:
                existing.password_hash = users.security.hash_password(password)
                existing.active = True
            accounts.append((username, role, password))
    return accounts


def build_tiny_model(settings: Settings, echo: Callable[[str], None] = typer.echo) -> Path:
    """The tiny base model's folder, built once (offline, a few seconds) by ``python -m trainers
    init-tiny`` in a child process, so the server never imports torch. Built beside its final
    place and renamed, so an interrupted build leaves nothing half-written."""
    target = Path(settings.artifact_dir) / TINY_FOLDER
    if (target / "config.json").is_file():
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    echo(f"building the tiny base model in {target} (once, about 10 s) ...")
    with tempfile.TemporaryDirectory(prefix=".tiny-", dir=target.parent) as scratch:
        text = Path(scratch) / "tokenizer.txt"
        text.write_text(DEMO_CORPUS + "\n" + "\n".join(_demo_prompt_texts()) + "\n", encoding="utf-8")
        built = Path(scratch) / "model"
        env = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "TRAINERS_NO_PROGRESS": "1",
               "TOKENIZERS_PARALLELISM": "false"}
        done = subprocess.run(
            [sys.executable, "-m", "trainers", "init-tiny", "--out", str(built), "--text", str(text),
             "--vocab-size", str(TINY_VOCAB)],
            cwd=REPO_ROOT, env=env, capture_output=True, text=True, check=False,
        )
        if done.returncode != 0 or not (built / "config.json").is_file():
            raise RuntimeError(f"init-tiny failed (exit {done.returncode}):\n{done.stderr[-3000:]}")
        shutil.rmtree(target, ignore_errors=True)
        built.rename(target)
    return target


def _demo_prompt_texts() -> list[str]:
    from app.labeling.cli import DEMO_PROMPTS, LOOP_PROMPTS

    return [p for p, _u, _c in DEMO_PROMPTS + LOOP_PROMPTS]


def seed_training(settings: Settings, factory, echo: Callable[[str], None] = typer.echo) -> list[str]:
    """The tiny base model, registered as ``tiny-base``, and the ``demo-corpus`` dataset."""
    from app.datasets import frozen
    from app.datasets.models import Dataset
    from app.db import unit_of_work
    from app.registry import service as registry
    from app.registry.models import ModelKind, RegisteredModel

    folder = build_tiny_model(settings, echo)
    lines = []
    with unit_of_work(factory) as db:
        model = db.scalar(select(RegisteredModel).where(RegisteredModel.name == TINY_NAME))
        if model is None:
            model = registry.register_model(
                db, settings, name=TINY_NAME, path=str(TINY_FOLDER), kind=ModelKind.base,
                description="A tiny Llama (2 layers, width 64) and BPE tokenizer built offline by the demo: "
                            "random weights, for turning the loop on a CPU in minutes.",
            )
        elif not model.path:  # a demo database from before: the name came from canned completions
            model.kind, model.path = ModelKind.base, str(TINY_FOLDER)
        lines.append(f"models  : {TINY_NAME} (base, {folder})")
        if db.scalar(select(Dataset.id).where(Dataset.name == CORPUS_NAME)) is None:
            frozen.store_corpus(db, settings, name=CORPUS_NAME, filename="demo-corpus.txt",
                                stream=io.BytesIO(DEMO_CORPUS.encode("utf-8")))
        lines.append(f"datasets: {CORPUS_NAME} (pretraining text for PPO-ptx)")
    return lines


# ---------------------------------------------------------------- the worker beside the server

@dataclass
class DemoWorker:
    process: subprocess.Popen
    log_path: Path

    @classmethod
    def start(cls, settings: Settings, log_path: Path) -> DemoWorker:
        """``rlhf worker --poll 1`` with the demo's settings, in a session of its own (Ctrl-C in the
        terminal reaches the demo, which then stops the worker once) and killed with the demo."""
        env = {k: v for k, v in os.environ.items() if not k.startswith("RLHF_")}
        env.update(RLHF_DATABASE_URL=settings.database_url, RLHF_ARTIFACT_DIR=str(settings.artifact_dir),
                   RLHF_SECRET_KEY=settings.require_secret(), PYTHONUNBUFFERED="1", TOKENIZERS_PARALLELISM="false")
        log_path.parent.mkdir(parents=True, exist_ok=True)
        with log_path.open("ab") as log:
            process = subprocess.Popen(
                [sys.executable, "-m", "app.cli", "worker", "--poll", str(WORKER_POLL_S)],
                cwd=REPO_ROOT, env=env, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                start_new_session=True, preexec_fn=die_with(os.getpid()),  # noqa: PLW1509 - forked from the main thread
            )
        return cls(process, log_path)

    def stop(self, timeout_s: float = WORKER_STOP_S) -> None:
        """SIGTERM (the worker stops its trainer and gives the run back to the queue), then SIGKILL."""
        if self.process.poll() is not None:
            return
        self.process.terminate()
        try:
            self.process.wait(timeout_s)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()


# ---------------------------------------------------------------- the command

WALKTHROUGH = [
    "the loop, in the browser (labeler in one window, admin in a private one; README.md, Quickstart):",
    "  1. labeler: Next demonstration, write short answers (20 prompts wait)",
    "  2. admin: Datasets > Freeze a dataset: kind sft",
    "  3. Models > tiny-base > Fine-tune on demonstrations (SFT): epochs 10, batch_size 4, lr 0.003",
    "  4. the SFT model > Generate for ranking: limit 8, max_new_tokens 32; labeler: Next ranking task",
    "  5. then a reward model, PPO-ptx with demo-corpus, and round 2 (settings in the README)",
]


def run_demo(*, port: int, database: Path, serve: bool, worker: bool, seeders: Iterable[Callable]) -> None:
    from app.db import make_engine, make_sessionmaker
    from app.migrate import upgrade

    database.parent.mkdir(parents=True, exist_ok=True)
    settings = demo_settings(database, port)
    upgrade(settings.database_url)
    engine = make_engine(settings.database_url)
    factory = make_sessionmaker(engine)
    accounts = seed_accounts(factory)
    extra: list[str] = []
    for seeder in seeders:
        extra.extend(seeder(settings, factory))
    missing = missing_training_packages()
    trainable = not missing
    if trainable:
        extra.extend(seed_training(settings, factory))

    typer.secho("\nrlhf-lab demo", bold=True)
    typer.echo(f"  database : {database}")
    typer.echo(f"  artifacts: {settings.artifact_dir}")
    typer.echo(f"  open     : http://127.0.0.1:{port}/login\n")
    typer.echo("  accounts (passwords are new each time the demo starts):")
    for username, role, password in accounts:
        typer.echo(f"    {role:<11} {username:<11} {password}")
    for line in extra:
        typer.echo(f"  {line}")
    typer.echo("")
    if not trainable:
        typer.secho(f"  training is off: {', '.join(missing)} not installed; {INSTALL_HINT}.", fg=typer.colors.YELLOW)
        typer.echo("  Serving labeling only.\n")
    if not serve:
        return

    demo_worker = None
    if trainable and worker:
        demo_worker = DemoWorker.start(settings, database.parent / "demo-worker.log")
        typer.echo(f"  worker   : pid {demo_worker.process.pid}, runs queued training jobs; log {demo_worker.log_path}")
        typer.echo("")
        for line in WALKTHROUGH:
            typer.echo(f"  {line}")
        typer.echo("")
    elif trainable:
        typer.echo("  no worker (--no-worker): queued runs wait for one, e.g.")
        typer.echo(f"    RLHF_DATABASE_URL={settings.database_url} RLHF_ARTIFACT_DIR={settings.artifact_dir} "
                   "RLHF_SECRET_KEY=... rlhf worker\n")
    _serve(settings, engine, port, demo_worker)


def _serve(settings: Settings, engine, port: int, demo_worker: DemoWorker | None) -> None:
    import uvicorn

    from app.main import create_app

    # uvicorn re-raises the SIGTERM it caught once the server has stopped: exit through `finally`.
    previous = signal.signal(signal.SIGTERM, lambda signum, _frame: sys.exit(128 + signum))
    try:
        uvicorn.run(create_app(settings, engine=engine), host="127.0.0.1", port=port, log_level="warning")
    finally:
        signal.signal(signal.SIGTERM, previous)
        if demo_worker is not None:
            demo_worker.stop()
