"""Source positions of a loaded spec, and pydantic errors translated to user terms.

Who calls it: the loader (``loader.py``) builds a :class:`SourceMap` from composed
YAML nodes and maps each pydantic error through :func:`issues_from_validation`;
the semantic checks (``checks.py``) ask the map where a field of the merged
:class:`~swarm.spec.models.Spec` was written.

Why a separate map: the merged Spec mixes inline agents (in the Swarm document)
and ``kind: Agent`` documents from other files. A path such as
``("agents", 3, "role")`` must resolve to the right file and line, and be shown
with the agent's index in the *full* merged list even when invalid agents were
left out of the Spec. Pure: no I/O.
"""

from __future__ import annotations

import difflib
import re
import types
import typing
from dataclasses import dataclass
from datetime import date
from typing import TYPE_CHECKING, Any, Iterable, Sequence

from pydantic import BaseModel, ValidationError

from swarm.errors import Position, SpecIssue
from swarm.spec import models

if TYPE_CHECKING:  # pragma: no cover
    from swarm.spec.loader import ParsedDocument

Path = tuple[Any, ...]


@dataclass(frozen=True)
class NodeInfo:
    """Where a value was written, and where its mapping key was (None for list items)."""

    value: Position
    key: Position | None


@dataclass(frozen=True)
class DocSource:
    """A document plus the index its agent has in the merged ``agents`` list.

    Paths are shown as written for the Swarm document, and for any document when
    ``agent_index`` is negative (checking documents one by one, unmerged).
    """

    doc: "ParsedDocument"
    agent_index: int

    def label(self, path: Path) -> Path:
        if self.agent_index >= 0 and self.doc.data.get("kind") == "Agent":
            return ("agents", self.agent_index) + path
        return path


_IDENT = re.compile(r"[A-Za-z0-9_-]+")


def format_path(path: Iterable[Any]) -> str:
    """``("agents", 2, "role")`` -> ``agents[2].role``; odd keys as ``["a.b"]``."""
    out = ""
    for part in path:
        if isinstance(part, int):
            out += f"[{part}]"
        elif _IDENT.fullmatch(str(part)):
            out += f".{part}" if out else str(part)
        else:
            out += f"[{str(part)!r}]"
    return out


def closest(word: str, candidates: Iterable[str]) -> str | None:
    """The candidate closest to ``word`` (difflib ratio >= 0.6), if any."""
    match = difflib.get_close_matches(word, list(candidates), n=1, cutoff=0.6)
    return match[0] if match else None


def did_you_mean(word: str, candidates: Iterable[str]) -> str:
    """`` (did you mean 'x'?)`` for the closest candidate, or an empty string."""
    match = closest(word, candidates)
    return f" (did you mean {match!r}?)" if match else ""


class SourceMap:
    """Positions of every field of a merged Spec, by Spec path."""

    def __init__(
        self,
        swarm_doc: "ParsedDocument",
        agents: Sequence[tuple["ParsedDocument", Path, int]],
    ) -> None:
        self._swarm = swarm_doc
        self._agents = list(agents)

    @classmethod
    def build(
        cls,
        swarm_doc: "ParsedDocument",
        inline_kept: Sequence[int],
        agent_docs: Sequence[tuple[int, "ParsedDocument"]],
    ) -> "SourceMap":
        """Inline agents kept (original indices) first, then Agent documents (merged index)."""
        agents: list[tuple["ParsedDocument", Path, int]] = [
            (swarm_doc, ("agents", i), i) for i in inline_kept
        ]
        agents.extend((doc, (), index) for index, doc in agent_docs)
        return cls(swarm_doc, agents)

    def _resolve(self, path: Path) -> tuple["ParsedDocument", Path, Path]:
        """(document, path inside it, path as shown to the user)."""
        if path[:1] == ("swarm",):
            path = path[1:]
        if len(path) >= 2 and path[0] == "agents" and isinstance(path[1], int):
            k = path[1]
            if 0 <= k < len(self._agents):
                doc, prefix, label = self._agents[k]
                return doc, prefix + path[2:], ("agents", label) + path[2:]
        return self._swarm, path, path

    def position(self, path: Path) -> Position | None:
        """Where the value at ``path`` was written; None when it was not written (a default)."""
        doc, inner, _ = self._resolve(tuple(path))
        info = doc.nodes.get(inner)
        return info.value if info else None

    def key_position(self, path: Path) -> Position | None:
        """Where the mapping key of ``path`` was written (the value's position for list items)."""
        doc, inner, _ = self._resolve(tuple(path))
        info = doc.nodes.get(inner)
        if info is None:
            return None
        return info.key or info.value

    def nearest(self, path: Path) -> Position:
        """The position of ``path`` or of its closest written ancestor."""
        doc, inner, _ = self._resolve(tuple(path))
        while inner:
            info = doc.nodes.get(inner)
            if info:
                return info.value
            inner = inner[:-1]
        return doc.position(())

    def label(self, path: Path) -> str:
        """The user-facing field path, e.g. ``agents[5].role``."""
        return format_path(self._resolve(tuple(path))[2])


# --------------------------------------------------------------------------- pydantic errors

_PATTERN_WORDS = {
    models.NAME_PATTERN: "lowercase letters, digits and '-', starting and ending with a letter "
    f"or digit, at most {models.NAME_MAX} characters",
    models.TOPIC_PATTERN: "dot-separated tokens of lowercase letters, digits, '_' and '-'",
    models.VERSION_PATTERN: "a SemVer 2.0 version like 1.2.3, 1.0.0-rc.1 or 1.0.0-rc.1+build.5",
    models.HANDLER_PATTERN: "'package.module:function'",
    models.HANDLER_FIELD_PATTERN: "'package.module:function' (runtime python) or 'path/to/file.ts:export' "
    "(runtime node; .js too)",
}
_URL_WORDS = "a URL like scheme://host:port/path"

_EXPECTED = {
    "string_type": "a string",
    "int_type": "an integer",
    "int_parsing": "an integer",
    "float_type": "a number",
    "bool_type": "a boolean (true or false)",
    "list_type": "a list",
    "dict_type": "a mapping",
    "model_type": "a mapping",
    "model_attributes_type": "a mapping",
}

_BOUNDS = {
    "greater_than": ("gt", "greater than"),
    "greater_than_equal": ("ge", "at least"),
    "less_than": ("lt", "less than"),
    "less_than_equal": ("le", "at most"),
}


def describe_value(value: Any) -> str:
    """'a string', 'an integer', ... as a user would say it."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, int):
        return "an integer"
    if isinstance(value, float):
        return "a number"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, list):
        return "a list"
    if isinstance(value, dict):
        return "a mapping"
    if isinstance(value, date):
        return "a date"
    return type(value).__name__


def _unwrap(tp: Any) -> list[Any]:
    """The model/collection types an annotation can hold (Optional, Annotated unwrapped)."""
    origin = typing.get_origin(tp)
    if origin is typing.Annotated:
        return _unwrap(typing.get_args(tp)[0])
    if origin in (typing.Union, types.UnionType):
        return [t for arg in typing.get_args(tp) for t in _unwrap(arg)]
    return [tp]


def fields_at(model: type[BaseModel], path: Path) -> list[str]:
    """Field names of the model found at ``path`` inside ``model`` (empty if none)."""
    current: list[Any] = [model]
    for part in path:
        nxt: list[Any] = []
        for tp in current:
            origin = typing.get_origin(tp)
            if isinstance(tp, type) and issubclass(tp, BaseModel) and isinstance(part, str):
                field = tp.model_fields.get(part)
                if field is not None:
                    nxt.extend(_unwrap(field.annotation))
            elif origin is list and isinstance(part, int):
                nxt.extend(_unwrap(typing.get_args(tp)[0]))
            elif origin is dict and isinstance(part, str):
                nxt.extend(_unwrap(typing.get_args(tp)[1]))
        current = nxt
    names: list[str] = []
    for tp in current:
        if isinstance(tp, type) and issubclass(tp, BaseModel):
            names.extend(tp.model_fields)
    return names


def _field_word(loc: Path, key_error: bool) -> str:
    strs = [p for p in loc if isinstance(p, str)]
    if key_error:
        parent = strs[-2] if len(strs) >= 2 else ""
        return {"roles": "role name"}.get(parent, "key")
    if not strs:
        return "value"
    last = strs[-1]
    if last in ("publishes", "subscribes") or (last == "name" and "topics" in strs):
        return "topic name"
    if last == "name" and strs[:1] == ["metadata"]:
        return "swarm name"
    return {"id": "id", "role": "role name"}.get(last, last)


def _message(err: Any, loc: Path, key_error: bool) -> str:
    kind = err["type"]
    value = err.get("input")
    ctx = err.get("ctx") or {}
    if kind in _EXPECTED:
        got = describe_value(value)
        if isinstance(value, (str, int, float)) and len(repr(value)) <= 40:
            got += f" ({value!r})"
        return f"expected {_EXPECTED[kind]}, got {got}"
    if kind == "literal_error":
        return f"expected {ctx.get('expected')}, got {value!r}"
    if kind == "string_pattern_mismatch":
        pattern = ctx.get("pattern", "")
        words = _PATTERN_WORDS.get(pattern, _URL_WORDS if "://" in pattern else f"pattern {pattern}")
        return f"{value!r} is not a valid {_field_word(loc, key_error)}: use {words}"
    if kind == "string_too_long":
        return (
            f"{_field_word(loc, key_error)} is {len(value)} characters long, "
            f"at most {ctx.get('max_length')} allowed"
        )
    if kind == "string_too_short":
        return f"must be at least {ctx.get('min_length')} character(s) long"
    if kind in _BOUNDS:
        key, words = _BOUNDS[kind]
        return f"must be {words} {ctx.get(key)}, got {value!r}"
    msg = str(err.get("msg", "invalid value"))
    return msg[:1].lower() + msg[1:]


def issues_from_validation(
    exc: ValidationError,
    model: type[BaseModel],
    nodes: dict[Path, NodeInfo],
    file: str,
    poisoned: Sequence[Path],
    source: DocSource,
) -> list[SpecIssue]:
    """One :class:`SpecIssue` per pydantic error, positioned in ``file``.

    Unknown keys point at the key, missing fields at the parent mapping, all else
    at the value. Errors under a path already refused at the YAML level are dropped.
    """
    issues: list[SpecIssue] = []
    errors = exc.errors(include_url=False)
    missing = {tuple(e["loc"]) for e in errors if e["type"] == "missing"}
    explained: set[Path] = set()  # missing fields already named by a did-you-mean
    for err in errors:
        loc: Path = tuple(err["loc"])
        key_error = bool(loc) and loc[-1] == "[key]"
        if key_error:
            loc = loc[:-1]
        if any(loc[: len(p)] == p for p in poisoned):
            continue
        kind = err["type"]
        if kind == "missing":
            continue  # after the loop, so that a typo can explain it first
        # the deepest part of loc that exists in the document
        inner = loc
        while inner and inner not in nodes:
            inner = inner[:-1]
        info = nodes.get(inner)
        if kind == "extra_forbidden":
            name = str(loc[-1])
            allowed = fields_at(model, loc[:-1])
            match = closest(name, allowed)
            if match is not None:
                hint = f" (did you mean {match!r}?)"
                if loc[:-1] + (match,) in missing:
                    explained.add(loc[:-1] + (match,))
                    hint = f" (did you mean {match!r}? it is required)"
            elif allowed:
                hint = " (allowed: " + ", ".join(sorted(allowed)) + ")"
            else:
                hint = ""
            pos = (info.key or info.value) if info else Position(file, 1, 1)
            issues.append(SpecIssue(pos, format_path(source.label(loc)), f"unknown field {name!r}{hint}"))
            continue
        if info is None:
            pos = Position(file, 1, 1)
        elif key_error:
            pos = info.key or info.value
        else:
            pos = info.value
        issues.append(SpecIssue(pos, format_path(source.label(inner)), _message(err, loc, key_error)))
    for loc in sorted(missing - explained, key=str):
        if any(loc[: len(p)] == p for p in poisoned):
            continue
        parent = loc[:-1]
        info = nodes.get(parent)
        pos = info.value if info else Position(file, 1, 1)
        issues.append(SpecIssue(pos, format_path(source.label(parent)), f"missing required field {loc[-1]!r}"))
    return issues
