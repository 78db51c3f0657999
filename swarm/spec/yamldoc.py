"""YAML text to plain data with a position for every value and key. Pure: no I/O.

Who calls it: :mod:`swarm.spec.loader`, once per spec file, before any model
validation. Nothing else in swarm reads YAML specs.

Why not ``yaml.safe_load``: loaded values carry no positions, PyYAML silently
keeps the last of duplicate keys, and expanding aliases is the "billion laughs"
attack. So this module consumes the *event stream* of the safe parser (libyaml's
when available, for speed) and builds the data itself, iteratively — no
recursion, so deep nesting cannot crash the process (libyaml's own composer
segfaults on ~10^5 nested brackets) — while it:

* records :class:`NodeInfo` (value position and key position) for every path;
* refuses duplicate keys, naming both positions;
* refuses every alias (``*name``) at its position — anchors are harmless alone,
  but an alias is never expanded, so no expansion budget needs tuning — and
  merge keys (``<<``), which only make sense with aliases;
* refuses non-standard tags (``!!python/...``, ``!custom``, ``!!set``);
* refuses nesting deeper than :data:`MAX_DEPTH`;
* takes mapping keys as written (``on:`` is the key ``"on"``, not ``True``).

The pure-Python parser's judgement is the reference: when libyaml reports a YAML
error the file is parsed again with PyYAML's parser so messages and columns are
PyYAML's, and files containing tabs (which libyaml accepts in places PyYAML
refuses) go to PyYAML's parser directly. A hypothesis test checks that both
paths give the same issues on mangled specs.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import yaml

from swarm.errors import Position, SpecIssue
from swarm.spec.files import MAX_FILE_BYTES
from swarm.spec.sourcemap import NodeInfo, format_path

__all__ = ["MAX_DEPTH", "MAX_FILE_BYTES", "ParsedDocument", "decode_spec_bytes", "parse_yaml_documents"]

#: Deepest nesting of mappings/sequences accepted (the spec needs about 6).
MAX_DEPTH = 32

_TAG = "tag:yaml.org,2002:"
_SCALAR_TAGS = frozenset(_TAG + t for t in ("str", "int", "float", "bool", "null", "timestamp"))
_MAP_TAG = _TAG + "map"
_SEQ_TAG = _TAG + "seq"
_MERGE_TAG = _TAG + "merge"
_STR_TAG = _TAG + "str"
_NULL_TAG = _TAG + "null"

_FAST_LOADER: Any = getattr(yaml, "CSafeLoader", None)
_scalar_constructor = yaml.SafeLoader("")
_resolver = yaml.resolver.Resolver()

Path = tuple[Any, ...]


def _resolve_scalar(value: str, implicit: tuple[bool, bool]) -> str:
    """The YAML 1.1 tag a plain/quoted scalar resolves to (str, int, bool, ...)."""
    tag: str = _resolver.resolve(yaml.ScalarNode, value, implicit)  # type: ignore[no-untyped-call]
    return tag


@dataclass(frozen=True)
class ParsedDocument:
    """One YAML document: its plain data, its positions and where it came from."""

    file: str
    index: int  # document index within the file, 0-based (empty documents count)
    data: Any
    nodes: dict[Path, NodeInfo]
    poisoned: tuple[Path, ...]  # paths whose value was refused at the YAML level

    def position(self, path: Path = ()) -> Position:
        info = self.nodes.get(path)
        return info.value if info else Position(self.file, 1, 1)


def _pos(file: str, mark: Any) -> Position:
    return Position(file, mark.line + 1, mark.column + 1)


def offset_position(file: str, text: str | bytes, offset: int) -> Position:
    """The line/column of a character (str) or byte (bytes) offset."""
    if isinstance(text, str):
        before_s = text[:offset]
        return Position(file, before_s.count("\n") + 1, offset - (before_s.rfind("\n") + 1) + 1)
    before_b = text[:offset]
    return Position(file, before_b.count(b"\n") + 1, offset - (before_b.rfind(b"\n") + 1) + 1)


def decode_spec_bytes(file: str, raw: bytes, issues: list[SpecIssue]) -> str | None:
    """UTF-8 text of a spec file (BOM dropped), or None with an issue appended."""
    if len(raw) > MAX_FILE_BYTES:
        issues.append(
            SpecIssue(
                Position(file, 1, 1),
                "",
                f"file is {len(raw)} bytes, over the limit of {MAX_FILE_BYTES} bytes (1 MiB)",
            )
        )
        return None
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        issues.append(
            SpecIssue(
                offset_position(file, raw, exc.start),
                "",
                f"file is not valid UTF-8 (byte 0x{raw[exc.start]:02x} at offset {exc.start})",
            )
        )
        return None
    return text[1:] if text.startswith("\ufeff") else text


def _yaml_error_issue(file: str, text: str, exc: yaml.YAMLError) -> SpecIssue:
    if isinstance(exc, yaml.reader.ReaderError):
        char = exc.character
        what = f"#x{char:04x}" if isinstance(char, int) else repr(char)
        return SpecIssue(
            offset_position(file, text, exc.position),
            "",
            f"unacceptable character {what} (control characters are not allowed in YAML)",
        )
    if isinstance(exc, yaml.MarkedYAMLError) and exc.problem_mark is not None:
        message = exc.problem or "invalid YAML"
        if exc.context:
            ctx = exc.context
            if exc.context_mark is not None:
                ctx += f" started at {_pos(file, exc.context_mark)}"
            message = f"{message} ({ctx})"
        return SpecIssue(_pos(file, exc.problem_mark), "", "YAML syntax error: " + message)
    return SpecIssue(Position(file, 1, 1), "", f"YAML error: {exc}")


class _TooDeep(Exception):
    """Aborts reading a file whose nesting exceeds :data:`MAX_DEPTH`."""

    def __init__(self, issue: SpecIssue) -> None:
        super().__init__(issue.message)
        self.issue = issue


class _Frame:
    """An open mapping or sequence while its events arrive."""

    __slots__ = ("path", "value", "key", "key_pos", "first_seen")

    def __init__(self, path: Path, value: dict[str, Any] | list[Any]) -> None:
        self.path = path
        self.value = value
        self.key: str | None = None  # mapping: the key whose value comes next
        self.key_pos: Position | None = None
        self.first_seen: dict[str, Position] = {}


class _DocumentBuilder:
    """Builds one document's data and positions from parser events."""

    def __init__(self, file: str, index: int, issues: list[SpecIssue]) -> None:
        self.file = file
        self.index = index
        self.issues = issues
        self.nodes: dict[Path, NodeInfo] = {}
        self.poisoned: list[Path] = []
        self.root: Any = None
        self.empty = True
        self.stack: list[_Frame] = []
        self.aliases = 0
        self.first_alias = -1

    def refuse(self, mark: Any, path: Path, message: str) -> None:
        self.issues.append(SpecIssue(_pos(self.file, mark), format_path(path), message))
        self.poisoned.append(path)

    def too_deep(self, mark: Any, path: Path) -> SpecIssue:
        message = f"nesting deeper than {MAX_DEPTH} levels; the rest of the file was not read"
        return SpecIssue(_pos(self.file, mark), format_path(path[:4]) + "...", message)

    def document(self) -> ParsedDocument:
        if self.aliases > 1:
            first = self.issues[self.first_alias]
            more = self.aliases - 1
            self.issues[self.first_alias] = SpecIssue(
                first.position,
                first.path,
                f"{first.message}; {more} more alias{'es' if more > 1 else ''} in this document",
            )
        return ParsedDocument(self.file, self.index, self.root, self.nodes, tuple(self.poisoned))


def _skip_events(doc: _DocumentBuilder, path: Path, loader: Any, depth: int) -> None:
    """Consume events until ``depth`` open collections are closed (0: one whole node).

    Skipped subtrees obey :data:`MAX_DEPTH` too: the parsers' cost is quadratic
    in the nesting depth whether or not we keep the data.
    """
    while True:
        event = loader.get_event()
        if isinstance(event, (yaml.MappingStartEvent, yaml.SequenceStartEvent)):
            depth += 1
            if len(path) + depth > MAX_DEPTH:
                raise _TooDeep(doc.too_deep(event.start_mark, path))
        elif isinstance(event, (yaml.MappingEndEvent, yaml.SequenceEndEvent)):
            depth -= 1
        if depth == 0:
            return


def _scalar_value(event: yaml.ScalarEvent, tag: str) -> Any:
    if tag == _STR_TAG:
        return event.value
    node = yaml.ScalarNode(tag, event.value, None, None, event.style)  # errors use the event's mark
    return _scalar_constructor.construct_object(node, deep=True)


def _read_key(doc: _DocumentBuilder, frame: _Frame, event: Any, loader: Any) -> None:
    """Handle an event in key position of ``frame`` (a mapping)."""
    key_pos = _pos(doc.file, event.start_mark)
    if not isinstance(event, yaml.ScalarEvent):
        message = "mapping keys must be plain strings, not collections or aliases"
        doc.refuse(event.start_mark, frame.path, message)
        if not isinstance(event, yaml.AliasEvent):
            _skip_events(doc, frame.path, loader, 1)
        _skip_events(doc, frame.path, loader, 0)  # its value
        return
    plain = event.tag is None and event.implicit[0]
    if plain and _resolve_scalar(event.value, (True, False)) == _MERGE_TAG:
        doc.refuse(event.start_mark, frame.path, "merge keys ('<<') are not supported in a swarm spec")
        _skip_events(doc, frame.path, loader, 0)
        return
    key = str(event.value)
    first = frame.first_seen.get(key)
    if first is not None:
        what = f"role {key!r}" if frame.path == ("roles",) else f"key {key!r}"
        doc.issues.append(
            SpecIssue(
                key_pos,
                format_path(frame.path + (key,)),
                f"duplicate {what} (first at {first}); YAML would silently keep only the last one",
                related=(first,),
            )
        )
        _skip_events(doc, frame.path, loader, 0)
        return
    frame.first_seen[key] = key_pos
    frame.key = key
    frame.key_pos = key_pos


def _place(doc: _DocumentBuilder, path: Path, value: Any) -> None:
    if not doc.stack:
        doc.root = value
        return
    frame = doc.stack[-1]
    if isinstance(frame.value, dict):
        assert frame.key is not None
        frame.value[frame.key] = value
        frame.key = None
    else:
        frame.value.append(value)


def _read_value(doc: _DocumentBuilder, event: Any, loader: Any) -> None:
    """Handle an event in value position (document root, mapping value, sequence item)."""
    key_pos: Position | None = None
    if doc.stack:
        frame = doc.stack[-1]
        if isinstance(frame.value, dict):
            path = frame.path + (frame.key,)
            key_pos = frame.key_pos
        else:
            path = frame.path + (len(frame.value),)
    else:
        path = ()
    doc.empty = False
    doc.nodes[path] = NodeInfo(_pos(doc.file, event.start_mark), key_pos)

    if isinstance(event, yaml.AliasEvent):
        doc.aliases += 1
        if doc.aliases == 1:  # one issue per document; document() counts the rest
            doc.first_alias = len(doc.issues)
            doc.refuse(
                event.start_mark,
                path,
                f"alias '*{event.anchor}' is not allowed: anchors and aliases are refused in a swarm "
                "spec (write the value out)",
            )
        else:
            doc.poisoned.append(path)
        _place(doc, path, None)
        return
    if isinstance(event, yaml.ScalarEvent):
        tag = event.tag
        if tag is None or tag == "!":
            tag = _resolve_scalar(event.value, event.implicit)
        if tag not in _SCALAR_TAGS:
            doc.refuse(event.start_mark, path, f"tag {tag!r} is not allowed")
            _place(doc, path, None)
            return
        if not path and tag == _NULL_TAG and event.value == "":
            doc.empty = True  # an empty document, e.g. after a trailing '---'
        try:
            value = _scalar_value(event, tag)
        except (yaml.YAMLError, ValueError, TypeError, OverflowError) as exc:
            doc.refuse(event.start_mark, path, f"cannot read value {event.value!r}: {exc}")
            value = None
        _place(doc, path, value)
        return
    # a mapping or sequence starts
    is_map = isinstance(event, yaml.MappingStartEvent)
    tag = event.tag
    expected = _MAP_TAG if is_map else _SEQ_TAG
    if tag is not None and tag != "!" and tag != expected:
        doc.refuse(event.start_mark, path, f"tag {tag!r} is not allowed")
        _skip_events(doc, path, loader, 1)
        _place(doc, path, None)
        return
    if len(path) >= MAX_DEPTH:
        # Stop reading the file here: both parsers spend time quadratic in the
        # nesting depth, so skipping the subtree would still let 1 MiB of '['
        # run for minutes.
        raise _TooDeep(doc.too_deep(event.start_mark, path))
    container: dict[str, Any] | list[Any] = {} if is_map else []
    _place(doc, path, container)
    doc.stack.append(_Frame(path, container))


def _parse_with(
    loader_cls: Any, file: str, text: str, issues: list[SpecIssue], docs: list[ParsedDocument]
) -> None:
    """Append the documents of ``text`` to ``docs``; YAML errors propagate after the
    documents completed before them were appended."""
    loader = loader_cls(text)
    doc: _DocumentBuilder | None = None
    index = 0
    try:
        while True:
            event = loader.get_event()
            if event is None or isinstance(event, yaml.StreamEndEvent):
                break
            if isinstance(event, yaml.DocumentStartEvent):
                doc = _DocumentBuilder(file, index, issues)
                index += 1
            elif isinstance(event, yaml.DocumentEndEvent):
                assert doc is not None
                if not doc.empty:
                    docs.append(doc.document())
                doc = None
            elif isinstance(event, (yaml.MappingEndEvent, yaml.SequenceEndEvent)):
                assert doc is not None
                doc.stack.pop()
            elif isinstance(event, yaml.StreamStartEvent):
                continue
            else:
                assert doc is not None
                if doc.stack and isinstance(doc.stack[-1].value, dict) and doc.stack[-1].key is None:
                    _read_key(doc, doc.stack[-1], event, loader)
                else:
                    _read_value(doc, event, loader)
    finally:
        loader.dispose()


def parse_yaml_documents(file: str, text: str, issues: list[SpecIssue]) -> tuple[list[ParsedDocument], bool]:
    """All documents of one file; the flag is False when the file did not parse to the end.

    Documents before a syntax error are returned (their own issues included).
    """
    # libyaml accepts tabs in places where PyYAML refuses them ("a\tb: 1"); files
    # with tabs take the pure-Python parser so every machine gives the same answer.
    if _FAST_LOADER is not None and "\t" not in text:
        fast_docs: list[ParsedDocument] = []
        fast_issues: list[SpecIssue] = []
        try:
            _parse_with(_FAST_LOADER, file, text, fast_issues, fast_docs)
        except _TooDeep as exc:
            issues.extend(fast_issues)
            issues.append(exc.issue)
            return fast_docs, False
        except yaml.YAMLError:
            pass  # parse again below for PyYAML's messages and character columns
        else:
            issues.extend(fast_issues)
            return fast_docs, True
    docs: list[ParsedDocument] = []
    try:
        _parse_with(yaml.SafeLoader, file, text, issues, docs)
    except _TooDeep as exc:
        issues.append(exc.issue)
        return docs, False
    except yaml.YAMLError as exc:
        issues.append(_yaml_error_issue(file, text, exc))
        return docs, False
    return docs, True
