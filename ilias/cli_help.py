"""How ``ilias ... --help`` reads: flags as flags, list options by their element type,
positionals as ``NAME``, and help texts with their brackets.

typer renders the help of every command with rich: each option's type column comes from
the parameter's ``display_type_rich`` (a flag shows ``<bool>``, a repeatable option
``<list[str]>``), the usage line from ``TyperArgument._usage_display_name`` (``{config}``),
and each help text is parsed as rich markup, where ``[extraction]`` is a style tag that
vanishes. typer offers no per-application setting for any of these, and
``typer.main.get_command`` builds fresh click objects on every call, so the fix is made
where the tree is built: :class:`HelpGroup`, the ``cls`` of the root ``typer.Typer``,
receives every command and sub-group of the application when it is constructed and
tidies them once (:func:`tidy_command`). The parameters become :class:`HelpOption` /
:class:`HelpArgument`, typer's own classes with only the help display overridden, so
parsing is untouched. ``rich_markup_mode="markdown"`` was considered: it keeps brackets
but reads ``<collection>-v<N>`` as HTML and drops it.
"""

from __future__ import annotations

import importlib
import re
import sys
import types
from typing import Any

from rich.markup import escape
from typer import _click as click
from typer.core import HAS_RICH, TyperArgument, TyperGroup, TyperOption


class _Deferred(type):
    """A stand-in for a class of a heavy rich module: the module is imported when the class
    is first called or asked for an attribute, never before."""

    _module: str

    def _real(cls) -> Any:
        return getattr(importlib.import_module(cls._module), cls.__name__)

    def __call__(cls, *args: Any, **kwargs: Any) -> Any:
        return cls._real()(*args, **kwargs)

    def __getattr__(cls, name: str) -> Any:
        if name.startswith("__"):  # a probe (typing, inspect): no reason to import
            raise AttributeError(name)
        return getattr(cls._real(), name)


def import_rich_utils_lightly() -> None:
    """Import ``typer.rich_utils`` (every help and usage error is drawn by it) without the
    two modules it imports at its top and ``ilias`` never needs for help: ``rich.markdown``
    (markdown-it; for ``rich_markup_mode="markdown"``, not this app's) and
    ``rich.traceback`` (pygments; for pretty tracebacks, which the app turns off). They
    were 110 ms of the 0.33 s ``ilias --help`` took (``python -X importtime``); rich_utils
    gets :class:`_Deferred` stand-ins that import the real class if it is ever used, and the
    modules themselves stay importable as they are.
    """
    if "typer.rich_utils" in sys.modules:
        return
    standins: dict[str, types.ModuleType] = {}
    for module, name in (("rich.markdown", "Markdown"), ("rich.traceback", "Traceback")):
        if module not in sys.modules:
            standins[module] = types.ModuleType(module)
            setattr(standins[module], name, _Deferred(name, (), {"_module": module}))
    sys.modules.update(standins)
    try:
        importlib.import_module("typer.rich_utils")
    finally:
        for module, standin in standins.items():
            if sys.modules.get(module) is standin:
                del sys.modules[module]


import_rich_utils_lightly()

_LIST_TYPE = re.compile(r"^<list\[(.*)\]>")


def _element_type(shown: str | None) -> str | None:
    """``<list[str]>`` -> ``<str>``: a repeatable option takes one value at a time."""
    return _LIST_TYPE.sub(r"<\1>", shown) if shown else shown


class HelpOption(TyperOption):
    """A typer option whose help shows no type for a flag and the element type of a list."""

    def display_type_rich(self, ctx: click.Context) -> str | None:
        if self.is_flag and not self.count:
            return None
        return _element_type(super().display_type_rich(ctx))


class HelpArgument(TyperArgument):
    """A typer argument shown as click and POSIX write it: ``NAME``, ``[NAME]``, ``NAME...``."""

    def display_type_rich(self, ctx: click.Context) -> str | None:
        return _element_type(super().display_type_rich(ctx))

    def _usage_display_name(self) -> str:
        name = self.display_name_raw.upper()
        name = name if self.required else f"[{name}]"
        return f"{name}..." if self.nargs != 1 else name


def _tidy_param(param: Any, markup: bool = True) -> None:
    """Give a typer parameter the help display above (its class is swapped for the
    subclass, which adds no state) and escape its help text's brackets (``markup``: the
    help is rendered as rich markup), once."""
    if type(param) is TyperOption:
        param.__class__ = HelpOption
    elif type(param) is TyperArgument:
        param.__class__ = HelpArgument
    else:
        return  # already tidied, or not typer's
    if param.help and markup:
        param.help = escape(param.help)


def tidy_command(command: click.Command) -> None:
    """Tidy a command's help, its parameters' (``--help`` included) and, for a group,
    every command below it; a command already tidied is left as it is."""
    if getattr(command, "_ilias_help_tidied", False):
        return
    command._ilias_help_tidied = True  # type: ignore[attr-defined]
    # Plain click help (TYPER_USE_RICH=0, or rich not installed) prints texts as they are.
    markup = HAS_RICH and getattr(command, "rich_markup_mode", None) == "rich"
    if command.help:
        command.help = escape(command.help) if markup else command.help
        if not command.short_help:  # a group's list shows the first paragraph, on one line
            command.short_help = " ".join(command.help.split("\n\n")[0].split())
    for param in command.params:
        _tidy_param(param, markup)
    _tidy_param(command.get_help_option(click.Context(command)), markup)
    for sub in getattr(command, "commands", {}).values():
        tidy_command(sub)


class HelpGroup(TyperGroup):
    """The root group of ``ilias``: tidies the help of the whole command tree it is built
    with (typer builds sub-groups and commands first, then this group around them)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        tidy_command(self)

    def format_help(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        for param in self.get_params(ctx):  # typer adds --install-completion after __init__
            _tidy_param(param, HAS_RICH and self.rich_markup_mode == "rich")
        super().format_help(ctx, formatter)
