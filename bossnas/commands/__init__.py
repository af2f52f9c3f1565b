"""The CLI commands, one module each; every module defines ``register(app)``.

``bossnas/cli.py`` holds only the app and the registration; a command lives in
``bossnas/commands/<command>.py`` (shared options and the torchrun launcher: ``common.py``).
"""

#: modules whose ``register(app: typer.Typer)`` adds commands to ``bossnas``, in help order
COMMAND_MODULES: tuple[str, ...] = (
    "bossnas.commands.run",
    "bossnas.commands.train",
    "bossnas.commands.search",
    "bossnas.commands.rate",
    "bossnas.commands.correlate",
    "bossnas.commands.spaces",
    "bossnas.commands.presets",
    "bossnas.commands.show",
    "bossnas.commands.models",
    "bossnas.commands.retrain",
    "bossnas.commands.export",
    "bossnas.commands.version",
    "bossnas.commands.latency",
    "bossnas.commands.plot",
)
