"""Extra CLI commands, one module each; every module defines ``register(app)``.

Kept out of ``cli.py`` so that a feature adds its command without touching the core CLI.
"""

#: modules whose ``register(app: typer.Typer)`` adds commands to ``bossnas``
COMMAND_MODULES: tuple[str, ...] = (
    "bossnas.commands.models",
    "bossnas.commands.retrain",
    "bossnas.commands.export",
    "bossnas.commands.version",
    "bossnas.commands.latency",
)
