"""What every command shares about output: ``-o json``, JSON errors, colour, help text.

Who calls it: the command modules of :mod:`swarm.cli` (``add_output_option``, ``emit``,
``fail``, ``paint``, ``example``) and the dispatcher :func:`swarm.cli.main` (``print_error``,
``set_colour``). Standard library only: the parser must load fast (issue 12).

* ``-o json`` (:func:`add_output_option`): data goes to stdout as one JSON document (a few
  streaming commands print JSON lines); :func:`emit` picks JSON or the text renderer.
* Errors under ``-o json``: ONE JSON object on ONE line on **stderr** (stdout keeps only
  data, so ``swarm plan -o json | jq`` never parses an error as a plan), exit codes unchanged::

      {"error": {"kind": "spec", "message": "...", "exit": 2,
                 "issues": [{"file": ..., "line": ..., "column": ..., "message": ..., ...}]}}

  ``kind`` is ``spec`` (an invalid spec; ``issues`` lists every problem), ``usage`` (bad
  arguments), ``invalid`` (bad input, exit 2), ``refused`` (a check said no, exit 1),
  ``unavailable`` (Redis / registry / router not reachable) or ``error``. Without
  ``-o json`` errors stay text: ``swarm: error: ...``. ``validate -o json`` is the one
  exception: its data IS the issue list, printed to stdout (``[]`` when valid).
* Colour (:func:`paint`): only when stdout is a terminal, never with ``NO_COLOR`` set to
  anything non-empty (https://no-color.org), forced on by a non-empty ``FORCE_COLOR``
  (NO_COLOR wins), and ``swarm --color always|never`` overrides all of that; ``TERM=dumb``
  counts as no colour. Applied to the cells of the status, plan and agents tables, after
  padding, so columns stay aligned.
* Help: :class:`HelpFormatter` wraps the description paragraph by paragraph and keeps
  indented lines (the ``Example:`` block of every epilog, built by :func:`example`) as written.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import sys
from typing import Any, Callable, Sequence, TextIO

from swarm.errors import SpecError, SwarmError

OUTPUT_CHOICES = ("text", "json")

#: the dispatcher's --color choice for this run ("auto", "always" or "never")
_colour_mode = "auto"

_CODES = {"green": "32", "red": "31", "yellow": "33", "bold": "1", "dim": "2"}

#: words of a status/plan/agents cell -> colour
_WORD_STYLE = {
    "healthy": "green", "synced": "green", "ok": "green", "allow": "green", "closed": "green",
    "up-to-date": "green", "create": "green",
    "critical": "red", "error": "red", "failed": "red", "expired": "red", "deny": "red", "open": "red",
    "invalid-spec": "red", "unhealthy": "red", "delete": "red", "remove": "red",
    "expiring": "yellow", "degraded": "yellow", "refused": "yellow", "standby": "yellow", "pending": "yellow",
    "half_open": "yellow", "half-open": "yellow", "starting": "yellow", "unknown": "yellow", "update": "yellow",
    "drift": "yellow", "dry-run": "yellow",
}


# --------------------------------------------------------------------------- -o json


def add_output_option(parser: argparse.ArgumentParser, choices: Sequence[str] = OUTPUT_CHOICES,
                      help: str | None = None) -> None:
    """``-o/--output`` with ``choices`` (default the first); ``json`` also makes errors JSON."""
    parser.add_argument("-o", "--output", choices=tuple(choices), default=choices[0],
                        help=help or f"output format ({', '.join(choices)}; json: errors as JSON on stderr too)")


def wants_json(args: argparse.Namespace | None) -> bool:
    return args is not None and getattr(args, "output", None) == "json"


def emit(args: argparse.Namespace, data: Any, text: Callable[[Any], str | None] | None = None) -> None:
    """Print ``data`` as indented JSON under ``-o json``, else ``text(data)`` (nothing when it is None)."""
    if wants_json(args):
        print(json.dumps(data, indent=2), flush=True)
        return
    shown = text(data) if text is not None else str(data)
    if shown is not None:
        print(shown, flush=True)


def error_kind(exc: BaseException) -> str:
    from swarm.errors import BusError, InvalidRequestError, NotDeclaredError, TransientError

    if isinstance(exc, SpecError):
        return "spec"
    if isinstance(exc, TransientError):
        return "unavailable"
    if isinstance(exc, (InvalidRequestError, NotDeclaredError)):
        return "invalid"
    if isinstance(exc, BusError):
        return "refused"
    return "error"


def error_document(kind: str, message: str, code: int, issues: list[dict[str, Any]] | None = None) -> dict[str, Any]:
    body: dict[str, Any] = {"kind": kind, "message": message, "exit": code}
    if issues is not None:
        body["issues"] = issues
    return {"error": body}


def print_error(as_json: bool, kind: str, message: str, code: int, *, prefix: str = "swarm: error: ",
                issues: list[dict[str, Any]] | None = None, text_lines: Sequence[str] | None = None,
                stream: TextIO | None = None) -> None:
    """One error: a JSON object on one line (``as_json``), else ``text_lines`` or ``prefix + message``."""
    out = stream or sys.stderr
    if as_json:
        print(json.dumps(error_document(kind, message, code, issues)), file=out, flush=True)
        return
    for line in text_lines if text_lines is not None else [prefix + message]:
        print(line, file=out, flush=True)


def print_exception(args: argparse.Namespace | None, exc: SwarmError, code: int, prefix: str = "swarm: error: ") -> None:
    if isinstance(exc, SpecError):
        print_error(wants_json(args), "spec", f"invalid spec: {len(exc.issues)} problem(s)", code,
                    issues=[i.to_dict() for i in exc.issues], text_lines=[i.format() for i in exc.issues])
    else:
        print_error(wants_json(args), error_kind(exc), str(exc), code, prefix=prefix)


def fail(args: argparse.Namespace | None, message: str, code: int = 2, kind: str = "invalid",
         prefix: str = "swarm: error: ") -> int:
    """Report an error the way ``-o`` asks and return ``code`` (for ``return fail(...)``)."""
    print_error(wants_json(args), kind, message, code, prefix=prefix)
    return code


def json_requested(words: Sequence[str]) -> bool:
    """Whether raw argv asks for ``-o json`` (for usage errors, before parsing succeeded)."""
    for n, word in enumerate(words):
        if word == "--":
            return False
        if word in ("-o", "--output") and n + 1 < len(words) and words[n + 1] == "json":
            return True
        if word in ("-ojson", "--output=json"):
            return True
    return False


# --------------------------------------------------------------------------- colour


def set_colour(mode: str) -> None:
    global _colour_mode
    _colour_mode = mode


def colour_enabled(stream: TextIO | None = None) -> bool:
    """Colour for ``stream`` (default stdout): --color, then NO_COLOR, FORCE_COLOR, TERM=dumb, isatty."""
    if _colour_mode in ("always", "never"):
        return _colour_mode == "always"
    if os.environ.get("NO_COLOR"):
        return False
    if os.environ.get("FORCE_COLOR"):
        return True
    if os.environ.get("TERM") == "dumb":
        return False
    target = sys.stdout if stream is None else stream
    try:
        return target.isatty()
    except (AttributeError, ValueError):  # a closed or odd stream
        return False


def paint(text: str, style: str | None, enabled: bool | None = None) -> str:
    """``text`` wrapped in the ANSI colour ``style`` when colour is on (and style is known)."""
    if style is None or style not in _CODES or not (colour_enabled() if enabled is None else enabled):
        return text
    return f"\033[{_CODES[style]}m{text}\033[0m"


def style_of(word: str) -> str | None:
    """The colour a status word gets (``healthy`` green, ``critical`` red, ...), or None."""
    return _WORD_STYLE.get(word.strip().lower())


def paint_words(line: str, enabled: bool | None = None) -> str:
    """Colour the status words of a rendered text line (whole words only; the rest untouched)."""
    on = colour_enabled() if enabled is None else enabled
    if not on:
        return line
    return re.sub(r"(?<![\w-])[a-z][a-z_-]*(?![\w-])",
                  lambda m: paint(m.group(0), style_of(m.group(0)), True), line)


def paint_lines(text: str, enabled: bool | None = None) -> str:
    """:func:`paint_words` on every line of a rendered table or report."""
    on = colour_enabled() if enabled is None else enabled
    return "\n".join(paint_words(line, on) for line in text.split("\n")) if on else text


# --------------------------------------------------------------------------- help


class HelpFormatter(argparse.RawDescriptionHelpFormatter):
    """Descriptions and epilogs: each paragraph wrapped to the terminal, indented lines kept as written."""

    def _fill_text(self, text: str, width: int, indent: str) -> str:
        import textwrap

        out: list[str] = []
        for block in text.split("\n\n"):
            lines = block.splitlines()
            if any(line.startswith((" ", "\t")) for line in lines) or any(line.endswith(":") for line in lines[:-1]):
                out.append("\n".join(indent + line for line in lines))
            else:
                out.append(textwrap.fill(" ".join(lines), width, initial_indent=indent, subsequent_indent=indent))
        return "\n\n".join(out)


def example(*commands: str) -> str:
    """An epilog: ``Example:`` and each command indented (the help test looks for ``swarm <path>``)."""
    return "Example:\n" + "\n".join(f"  {c}" for c in commands)
