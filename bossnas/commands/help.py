"""One look for every command's help, in click's plain conventions.

Typer's own help renders each option's Python type (``--resume <bool>``, ``--help <bool>``),
puts positional arguments in braces (``{run_dir}``), shows defaults in several ways and
reads help texts as rich markup (``'bossnas[onnx]'`` lost its ``[onnx]``). The classes here
write the help themselves, the same way for every command:

- ``-h`` and ``--help`` (the app's ``context_settings``; every command inherits them);
- an on/off flag is its name alone (``--resume``, ``--onnx / --no-onnx``), an option that
  takes a value shows what it takes (``--out DIR``, ``--batch INTEGER``);
- positional arguments in capitals (``RUN_DIR``, ``[OVERRIDES]...``);
- a default, where there is one, as a trailing ``[default: X]``: the option's value, its
  ``show_default`` text, or a ``(default: X)`` written in its help text, moved there;
- help texts are plain text (no markup), wrapped to the terminal;
- the command list gives each command's first paragraph whole, never cut mid-sentence.

:func:`register_conventions` gives every registered command these classes, so the command
modules only declare their options.
"""

from __future__ import annotations

import inspect
import re
from typing import Any

import typer
from typer.core import TyperCommand, TyperGroup

#: "(default: X)" or "(default X)" in an option's help text; X may hold one level of parentheses
_DEFAULT_IN_HELP = re.compile(r"\s*\(default:?\s+((?:[^()]|\([^()]*\))*)\)")
#: the value names of click's conventions, by Python type
_VALUE_NAMES = {int: "INTEGER", float: "FLOAT", str: "TEXT", bool: "BOOLEAN"}


def _annotation(param: Any) -> Any:
    """The Python type a parameter converts to (typer's descriptor, or click's type name)."""
    descriptor = getattr(param, "type_descriptor", None)
    if descriptor is not None:
        return descriptor.annotation
    return getattr(getattr(param, "type", None), "name", None)


def value_name(param: Any) -> str:
    """What an option or argument takes, as help shows it: its metavar, else its type in capitals."""
    if param.metavar:
        return param.metavar
    kind = _annotation(param)
    args = getattr(kind, "__args__", None)
    if args:  # list[str] and the like: the element's name
        kind = args[0]
    if isinstance(kind, type):
        if kind.__name__ in ("Path", "PosixPath", "WindowsPath"):
            return "PATH"
        return _VALUE_NAMES.get(kind, kind.__name__.upper())
    return str(kind or "TEXT").upper()


def argument_usage(param: Any) -> str:
    """``RUN_DIR``, ``[ARCH]`` or ``[OVERRIDES]...``: an argument as the usage line names it."""
    name = (param.metavar or param.name).upper()
    many = param.nargs == -1
    text = name if param.required else f"[{name}]"
    return text + ("..." if many else "")


def split_default(help_text: str) -> tuple[str, str | None]:
    """The help text without its ``(default: X)``, and X (None when the text names none)."""
    match = _DEFAULT_IN_HELP.search(help_text)
    if match is None:
        return help_text, None
    return (help_text[: match.start()] + help_text[match.end():]).strip(), match.group(1).strip()


def default_text(param: Any, help_default: str | None) -> str | None:
    """The default a parameter's help shows, or None.

    A flag that is off by default shows none (its absence is the default); an option whose
    default is None shows what its ``show_default`` text or its help text says.
    """
    show = getattr(param, "show_default", None)
    if isinstance(show, str):
        return show
    if help_default is not None:
        return help_default
    value = param.default
    if value is None or callable(value) or show is False:
        return None
    if getattr(param, "is_flag", False):
        if not getattr(param, "secondary_opts", None):
            return None if not value else param.opts[0]
        return param.opts[0] if value else param.secondary_opts[0]
    if isinstance(value, (list, tuple)):
        return ", ".join(map(str, value)) if value else None
    return str(value)


def _range_text(param: Any) -> str | None:
    low, high = getattr(param, "min", None), getattr(param, "max", None)
    if low is not None and high is not None:
        return f"{low}<=x<={high}"
    if low is not None:
        return f"x>={low}"
    if high is not None:
        return f"x<={high}"
    return None


def help_record(param: Any) -> tuple[str, str]:
    """(the option's or argument's names and value, its help with defaults and limits): one row."""
    text, help_default = split_default(inspect.cleandoc(param.help or ""))
    extras = []
    default = default_text(param, help_default)
    if default is not None:
        extras.append(f"default: {default}")
    limits = _range_text(param)
    if limits:
        extras.append(limits)
    if param.required and param.param_type_name == "argument":
        extras.append("required")
    if extras:
        text = f"{text}  [{'; '.join(extras)}]" if text else f"[{'; '.join(extras)}]"
    if param.param_type_name == "argument":
        return argument_usage(param), text
    names = sorted(param.opts, key=lambda o: (o.startswith("--"), o))  # -o, --out
    if not getattr(param, "is_flag", False):
        names[-1] += f" {value_name(param)}"
    if getattr(param, "secondary_opts", None):
        names = [", ".join(names) + " / " + ", ".join(param.secondary_opts)]
    return ", ".join(names), text


def first_paragraph(text: str | None) -> str:
    """A command's summary for the command list: its help's first paragraph, on one line."""
    return " ".join(inspect.cleandoc(text or "").split("\n\n")[0].split())


def _format_params(command: Any, ctx: Any, formatter: Any) -> None:
    params = [p for p in command.get_params(ctx) if not getattr(p, "hidden", False)]
    arguments = [help_record(p) for p in params if p.param_type_name == "argument"]
    options = [help_record(p) for p in params if p.param_type_name == "option"]
    if arguments:
        with formatter.section("Arguments"):
            formatter.write_dl(arguments)
    if options:
        with formatter.section("Options"):
            formatter.write_dl(options)


def _usage(command: Any, ctx: Any) -> str:
    pieces = [command.options_metavar] if command.options_metavar else []
    pieces += [argument_usage(p) for p in command.get_params(ctx) if p.param_type_name == "argument"]
    return " ".join(pieces)


class BossNASCommand(TyperCommand):
    """A command whose help follows this module's conventions."""

    def collect_usage_pieces(self, ctx: Any) -> list[str]:
        return _usage(self, ctx).split(" ")

    def format_help(self, ctx: Any, formatter: Any) -> None:
        formatter.write_usage(ctx.command_path, _usage(self, ctx))
        self.format_help_text(ctx, formatter)
        _format_params(self, ctx, formatter)
        self.format_epilog(ctx, formatter)


class BossNASGroup(TyperGroup):
    """The ``bossnas`` app: its own options, then every command with its whole summary."""

    def format_help(self, ctx: Any, formatter: Any) -> None:
        formatter.write_usage(ctx.command_path, f"{self.options_metavar} {self.subcommand_metavar}")
        self.format_help_text(ctx, formatter)
        _format_params(self, ctx, formatter)
        rows = [(name, first_paragraph(cmd.help)) for name, cmd in self.commands.items() if not cmd.hidden]
        if rows:
            with formatter.section("Commands"):
                formatter.write_dl(rows)
        self.format_epilog(ctx, formatter)


def register_conventions(app: typer.Typer) -> None:
    """Give every command registered on ``app`` the :class:`BossNASCommand` help (a command
    that chose its own class keeps it)."""
    for info in app.registered_commands:
        if info.cls in (None, TyperCommand):
            info.cls = BossNASCommand


__all__ = ["BossNASCommand", "BossNASGroup", "default_text", "help_record", "register_conventions", "split_default",
           "value_name"]
