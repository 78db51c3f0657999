"""Load a swarm spec from YAML: parse, keep positions, validate, merge, check.

Who calls it: ``swarm validate`` / ``swarm compile`` (through :func:`load_spec_full`
on paths), the reconciler (through :func:`parse_spec_texts` on bytes read from a
git commit) and library users (``swarm.load_spec``).

Why it is built this way:

* **Pure core, thin adapter.** :func:`parse_spec_texts` takes ``{display path:
  bytes}`` and does no I/O, so the reconciler can feed it a commit's blobs and
  tests can feed it literals. :func:`read_spec_files` is the only function here
  that touches the filesystem.
* **Positions come from the parser's events.** PyYAML's loaded values carry no
  positions and silently keep the last of duplicate keys, so
  :mod:`swarm.spec.yamldoc` builds the data from the safe parser's events and
  records every value's and key's position; a
  :class:`~swarm.spec.sourcemap.SourceMap` maps them onto the merged Spec.
* **Every problem at once.** YAML-level problems, pydantic errors (validated per
  document and mapped back to file:line:col) and semantic checks
  (:mod:`swarm.spec.checks`) are collected into one :class:`SpecError`.

YAML hazards (details in :mod:`swarm.spec.yamldoc`): aliases are refused
outright (a spec is read by people in diffs, and no alias means no "billion
laughs" and no expansion budget to tune), merge keys with them; duplicate keys
name both positions; files must be UTF-8 (BOM accepted) and at most
:data:`MAX_FILE_BYTES`; nesting deeper than :data:`MAX_DEPTH` stops the file;
only standard scalar tags; mapping keys are taken as written.

Files (:func:`read_spec_files`): only regular files are read. A FIFO, socket or
device named like a spec is refused without being opened (a FIFO would block the
reader forever), and files are opened with ``O_NONBLOCK`` and checked again with
``fstat``. A symbolic link found under a spec directory is refused whether it
points inside the directory or out of it: a spec is what a reviewer reads in a
diff, git stores a link as its target path only, and ``ln -s ../.env
specs/env.yaml`` must not turn a secrets file into spec input. A file that is
not a spec — no ``kind:`` or ``apiVersion:`` key at the start of any line, see
:func:`looks_like_spec` — is reported as one issue naming the file and never
quoted: spec errors are printed, returned by ``-o json`` and stored in the
reconciler's status, which the registry serves.

Document rules: every document is a mapping with ``kind: Swarm`` or ``kind:
Agent`` and ``apiVersion: swarm/v1``; exactly one Swarm document; empty
documents (a trailing ``---``) and comment-only files are ignored. Each document
is validated alone; an invalid Agent document (or inline agent) is left out and
the semantic checks run on the rest, with agents still numbered by their place
in the full merged list, so structural and semantic errors come in one report.

Digest (:attr:`LoadedSpec.digest`): ``"sha256:" + hex(sha256(stream))`` where
``stream`` is, for each file in order of its *canonical path*, the UTF-8 path,
``b"\\0"``, the byte length in decimal ASCII, ``b"\\0"`` and the raw bytes.
The canonical path is the display path relative to the deepest directory common
to all files (a single file is canonicalised to its base name). So the digest
depends on the content and layout of the spec only, not on directory listing
order, the current directory or whether ``specs/`` was given relative or
absolute; a change to any byte (comments included) changes it.
"""

from __future__ import annotations

import hashlib
import os
import re
from dataclasses import dataclass, field
from typing import Any, Mapping, Sequence

from pydantic import ValidationError

from swarm.errors import Position, SpecError, SpecIssue
from swarm.spec.checks import check_spec
from swarm.spec.files import MAX_FILE_BYTES, SPEC_SUFFIXES, compute_digest, is_spec_file_name, read_spec_files
from swarm.spec.environments import ENVIRONMENT_KIND, Overlay, apply_overlay, select_overlay
from swarm.spec.models import API_VERSION, Agent, AgentDocument, EnvironmentDocument, Spec, SwarmDocument
from swarm.spec.sourcemap import DocSource, SourceMap, did_you_mean, issues_from_validation
from swarm.spec.yamldoc import (
    MAX_DEPTH,
    ParsedDocument,
    decode_spec_bytes,
    parse_yaml_documents,
)

__all__ = [
    "MAX_DEPTH",
    "MAX_FILE_BYTES",
    "SPEC_SUFFIXES",
    "LoadedSpec",
    "ParsedDocument",
    "DocumentCache",
    "compute_digest",
    "is_spec_file_name",
    "load_spec",
    "looks_like_spec",
    "load_spec_full",
    "parse_documents",
    "parse_spec_texts",
    "read_spec_files",
    "structural_issues",
]

KINDS = ("Swarm", "Agent", ENVIRONMENT_KIND)


@dataclass(frozen=True)
class LoadedSpec:
    """A valid, merged spec with its digest, file list and source map."""

    spec: Spec
    digest: str
    files: tuple[str, ...]
    sources: SourceMap
    #: The environment overlay applied (``--env``), or None for the base spec.
    environment: str | None = None

    @property
    def output_name(self) -> str:
        """The directory under ``compiled/`` this spec compiles to: ``<swarm>`` for the
        base, ``<swarm>.<env>`` for an environment (``.`` is in no swarm name)."""
        return self.spec.name if self.environment is None else f"{self.spec.name}.{self.environment}"


# --------------------------------------------------------------------------- digest


# --------------------------------------------------------------------------- documents


def _document_kind(doc: ParsedDocument, issues: list[SpecIssue]) -> str | None:
    data = doc.data
    if type(data) is dict:  # the common case first (a fleet's worth of documents per load)
        kind = data.get("kind")
        if type(kind) is str and kind in KINDS and data.get("apiVersion", API_VERSION) == API_VERSION:
            return kind
    where = f"document {doc.index + 1}"
    if not isinstance(doc.data, dict):
        # the value itself is not quoted: it may be a line of a file that is not a spec
        got = "a list" if isinstance(doc.data, list) else f"a scalar ({type(doc.data).__name__})"
        issues.append(SpecIssue(doc.position(), "", f"{where} must be a mapping, got {got}"))
        return None
    kind = doc.data.get("kind")
    if "kind" not in doc.data:
        issues.append(
            SpecIssue(doc.position(), "kind", f"{where} has no 'kind' (expected 'Swarm', 'Agent' or 'Environment')")
        )
        return None
    if kind not in KINDS:
        hint = did_you_mean(str(kind), KINDS)
        issues.append(
            SpecIssue(
                doc.position(("kind",)),
                "kind",
                f"unknown kind {kind!r}{hint or ' (expected Swarm, Agent or Environment)'}",
            )
        )
        return None
    version = doc.data.get("apiVersion")
    if "apiVersion" in doc.data and version != API_VERSION:
        issues.append(
            SpecIssue(
                doc.position(("apiVersion",)),
                "apiVersion",
                f"unsupported apiVersion {version!r} (expected {API_VERSION!r})",
            )
        )
        return None
    return str(kind)


#: A line that starts a spec document's ``kind:`` or ``apiVersion:`` key (block or flow
#: style, possibly quoted, possibly after ``---`` or ``- ``).
_SPEC_KEY = re.compile(r"""^(?:---)?[ \t\-{]*["']?(?:kind|apiVersion)["']?[ \t]*:""", re.MULTILINE)


def looks_like_spec(text: str) -> bool:
    """Whether a file's text has a ``kind:`` or ``apiVersion:`` key at the start of a line.

    A file that does not is not a spec (a ``.env``, a key file, notes): problems in
    it are reported without quoting any of its content, because spec errors are
    printed, put in ``-o json`` output and stored in the reconciler's status,
    which other people read.
    """
    return _SPEC_KEY.search(text) is not None


def _not_a_spec_issue(file: str, reason: str, first: SpecIssue | None) -> SpecIssue:
    where = first.position if first is not None and first.position is not None else Position(file, 1, 1)
    return SpecIssue(
        where,
        "",
        f"not a swarm spec: {reason} and it has no 'kind:' or 'apiVersion:' key, so its content is not "
        "shown (a spec document starts with 'apiVersion: swarm/v1' and 'kind: Swarm' or 'kind: Agent'; "
        "move other files out of the spec directory)",
    )


class DocumentCache:
    """Parsed files of earlier loads, keyed by display path and sha256 of the bytes.

    The reconciler keeps one across passes, so a save re-parses only the files whose
    bytes changed (:func:`parse_spec_texts` ``cache=``). An entry is the file's YAML
    result exactly as parsing it again would give it (documents with their positions,
    issues, the parsed-to-the-end flag), plus the models of its Agent documents that
    validated: validating the same data gives the same model, and an agent's place in
    the merged list only shows in the issues of a document that does *not* validate,
    which are never cached. Everything that spans files (one Swarm document, the
    agents' order, duplicate agent ids, roles, topics: :mod:`swarm.spec.checks`) is
    derived again on every load, so cross-file checks stay complete. Entries used by
    neither of the last two loads are dropped (an invalid save and its undo re-parse
    nothing). Not thread-safe: one loader at a time.
    """

    def __init__(self) -> None:
        self._entries: dict[tuple[str, str], _CacheEntry] = {}
        self._previous: set[tuple[str, str]] = set()
        self._used: set[tuple[str, str]] = set()
        self._by_doc: dict[int, tuple[ParsedDocument, _CacheEntry]] = {}
        self.hits = 0
        self.misses = 0

    def parse(self, file: str, raw: bytes) -> "_CacheEntry":
        key = (file, hashlib.sha256(raw).hexdigest())
        self._used.add(key)
        entry = self._entries.get(key)
        if entry is None:
            self.misses += 1
            entry = self._entries[key] = _CacheEntry(*_parse_file(file, raw))
            for doc in entry.docs:
                self._by_doc[id(doc)] = (doc, entry)
        else:
            self.hits += 1
        return entry

    def agent_and_converted(self, doc: ParsedDocument) -> tuple[AgentDocument | None, Agent | None]:
        """The model this very document (not a copy: an overlay's patch is new) validated to and,
        when it was converted before, :meth:`to_agent`'s result (one lookup for both)."""
        found = self._by_doc.get(id(doc))
        if found is None or found[0] is not doc:
            return None, None
        entry = found[1]
        model = entry.agents.get(doc.index)
        if model is None:
            return None, None
        hit = entry.converted.get(doc.index)
        return model, (hit[1] if hit is not None and hit[0] is model else None)

    def keep_agent(self, doc: ParsedDocument, agent: AgentDocument) -> None:
        found = self._by_doc.get(id(doc))
        if found is not None and found[0] is doc:
            found[1].agents[doc.index] = agent

    def to_agent(self, doc: ParsedDocument, model: AgentDocument) -> Agent:
        """``model.to_agent()``, kept with this very document and model (a frozen model: same data, same result)."""
        found = self._by_doc.get(id(doc))
        if found is None or found[0] is not doc:
            return model.to_agent()
        hit = found[1].converted.get(doc.index)
        if hit is not None and hit[0] is model:
            return hit[1]
        agent = model.to_agent()
        found[1].converted[doc.index] = (model, agent)
        return agent

    def end_load(self) -> None:
        keep = self._used | self._previous
        for key in [k for k in self._entries if k not in keep]:
            for doc in self._entries.pop(key).docs:
                self._by_doc.pop(id(doc), None)
        self._previous, self._used = self._used, set()


@dataclass
class _CacheEntry:
    docs: list[ParsedDocument]
    issues: list[SpecIssue]
    ok: bool
    #: models of this file's Agent documents that validated, by document index
    agents: dict[int, AgentDocument] = field(default_factory=dict)
    #: the Agent each of those models converts to (AgentDocument.to_agent), with the model it came from
    converted: dict[int, tuple[AgentDocument, Agent]] = field(default_factory=dict)
    #: its Swarm, Agent and Environment documents, once none had a problem of kind or apiVersion
    split: tuple[list[ParsedDocument], list[ParsedDocument], list[ParsedDocument]] | None = None


def _parse_file(file: str, raw: bytes) -> tuple[list[ParsedDocument], list[SpecIssue], bool]:
    """One file's documents, issues and parsed-to-the-end flag (see :func:`parse_documents`)."""
    file_issues: list[SpecIssue] = []
    text = decode_spec_bytes(file, raw, file_issues)
    if text is None:
        if len(raw) <= MAX_FILE_BYTES and not looks_like_spec(raw.decode("utf-8", "replace")):
            file_issues = [_not_a_spec_issue(file, "it is not UTF-8 text", file_issues[0])]
        return [], file_issues, False
    file_docs, ok = parse_yaml_documents(file, text, file_issues)
    if not looks_like_spec(text) and (file_docs or file_issues):
        if ok:
            reason = "it holds no Swarm or Agent document"
        elif any("nesting deeper" in i.message for i in file_issues):
            reason = f"it nests deeper than {MAX_DEPTH} levels"
        else:
            reason = "it is not valid YAML"
        file_issues = [_not_a_spec_issue(file, reason, file_issues[0] if file_issues else None)]
        file_docs, ok = [], False
    return file_docs, file_issues, ok


def parse_documents(
    files: Mapping[str, bytes], cache: DocumentCache | None = None
) -> tuple[list[ParsedDocument], list[SpecIssue], bool]:
    """YAML stage only: documents of all files (sorted by path), issues, all-files-parsed flag.

    A file that does not :func:`look like a spec <looks_like_spec>` gives at most one
    issue, which names the file and says why, and no documents; a comment-only or
    empty file gives nothing. With ``cache``, files whose bytes it has seen are not
    parsed again (:class:`DocumentCache`).
    """
    per_file, issues, complete = _documents_by_file(files, cache)
    return [doc for file_docs, _ in per_file for doc in file_docs], issues, complete


def _documents_by_file(
    files: Mapping[str, bytes], cache: DocumentCache | None
) -> tuple[list[tuple[list[ParsedDocument], "_CacheEntry | None"]], list[SpecIssue], bool]:
    """:func:`parse_documents` per file (sorted by path), with each file's cache entry (if any)."""
    issues: list[SpecIssue] = []
    per_file: list[tuple[list[ParsedDocument], _CacheEntry | None]] = []
    complete = True
    for file in sorted(files):
        entry: _CacheEntry | None = None
        if cache is not None:
            entry = cache.parse(file, files[file])
            file_docs, file_issues, ok = entry.docs, entry.issues, entry.ok
        else:
            file_docs, file_issues, ok = _parse_file(file, files[file])
        per_file.append((file_docs, entry))
        issues.extend(file_issues)
        complete = complete and ok
    return per_file, issues, complete


def _classified(
    per_file: list[tuple[list[ParsedDocument], "_CacheEntry | None"]], issues: list[SpecIssue]
) -> tuple[list[ParsedDocument], list[ParsedDocument], list[ParsedDocument]]:
    """The Swarm, Agent and Environment documents, in file and document order; issues for the
    rest. A cached file's split is kept with its entry when none of its documents had a problem
    of kind or apiVersion (the same documents give the same split), so a load of 10,000 agents
    files does not look at each document again."""
    swarm_docs: list[ParsedDocument] = []
    agent_docs: list[ParsedDocument] = []
    env_docs: list[ParsedDocument] = []
    for file_docs, entry in per_file:
        split = entry.split if entry is not None else None
        if split is None:
            split = ([], [], [])
            before = len(issues)
            for doc in file_docs:
                kind = _document_kind(doc, issues)
                if kind == "Swarm":
                    split[0].append(doc)
                elif kind == "Agent":
                    split[1].append(doc)
                elif kind == ENVIRONMENT_KIND:
                    split[2].append(doc)
            if entry is not None and len(issues) == before:
                entry.split = split
        swarm_docs += split[0]
        agent_docs += split[1]
        env_docs += split[2]
    return swarm_docs, agent_docs, env_docs


def _validate(
    doc: ParsedDocument, model: type[SwarmDocument] | type[AgentDocument] | type[EnvironmentDocument], label: DocSource
) -> tuple[Any, list[SpecIssue]]:
    try:
        return model.model_validate(doc.data, strict=True), []
    except ValidationError as exc:
        return None, issues_from_validation(exc, model, doc.nodes, doc.file, doc.poisoned, label)


def _drop_invalid_inline_agents(
    doc: ParsedDocument, issues: list[SpecIssue]
) -> tuple[SwarmDocument | None, list[int]]:
    """Validate the Swarm document; if only inline agents are invalid, drop them and retry.

    Returns the document (or None) and the original indices of the inline agents kept.
    """
    label = DocSource(doc, 0)
    swarm, errs = _validate(doc, SwarmDocument, label)
    agents = doc.data.get("agents") if isinstance(doc.data, dict) else None
    n = len(agents) if isinstance(agents, list) else 0
    if swarm is not None:
        return swarm, list(range(n))
    issues.extend(errs)
    bad = {e.path.split("]")[0] for e in errs if e.path.startswith("agents[")}
    if any(not e.path.startswith("agents[") for e in errs) or not isinstance(agents, list):
        return None, []
    keep = [i for i in range(n) if f"agents[{i}" not in bad]
    data = dict(doc.data)
    data["agents"] = [agents[i] for i in keep]
    try:
        return SwarmDocument.model_validate(data, strict=True), keep
    except ValidationError:
        return None, []


def structural_issues(files: Mapping[str, bytes]) -> list[SpecIssue]:
    """Problems of each document on its own (YAML, kind, model); no merging, no semantics.

    This is what the JSON Schema can express too; a test keeps the two in agreement.
    """
    docs, issues, _ = parse_documents(files)
    for doc in docs:
        kind = _document_kind(doc, issues)
        if kind is not None:
            models: dict[str, type[SwarmDocument] | type[AgentDocument] | type[EnvironmentDocument]] = {
                "Swarm": SwarmDocument, "Agent": AgentDocument, ENVIRONMENT_KIND: EnvironmentDocument}
            model = models[kind]
            issues.extend(_validate(doc, model, DocSource(doc, -1))[1])
    return issues


def _overlay(docs: list[ParsedDocument], environment: str, issues: list[SpecIssue]) -> Overlay | None:
    """The Environment document named ``environment``, validated; None (with issues) when it
    is missing, named twice or invalid. Other environments' overlays are not validated:
    a typo in staging's cannot stop prod's load."""
    named = [(_environment_name(d), d) for d in docs]
    doc = select_overlay([(n, d) for n, d in named if n is not None], environment, issues)
    if doc is None:
        return None
    valid, errs = _validate(doc, EnvironmentDocument, DocSource(doc, -1))
    issues.extend(errs)
    return Overlay(environment, doc) if valid is not None else None


def _environment_name(doc: ParsedDocument) -> str | None:
    metadata = doc.data.get("metadata")
    name = metadata.get("name") if isinstance(metadata, dict) else None
    return name if isinstance(name, str) else None


def parse_spec_texts(
    files: Mapping[str, bytes], environment: str | None = None, cache: DocumentCache | None = None
) -> LoadedSpec:
    """Parse, validate, merge and check a spec given as ``{display path: bytes}``. Pure.

    With ``environment``, the ``kind: Environment`` document of that name is applied
    first (:mod:`swarm.spec.environments`); without, Environment documents are
    ignored and left out of the digest. Raises :class:`SpecError` carrying every
    structural and semantic issue found. ``cache``: files (and their Agent documents'
    models) seen by earlier loads are reused (:class:`DocumentCache`); same result.
    """
    if not files:
        raise SpecError([SpecIssue(None, "", "no spec files given (expected .yaml/.yml files)")])
    try:
        return _parse_spec_texts(files, environment, cache)
    finally:
        if cache is not None:
            cache.end_load()


def _parse_spec_texts(files: Mapping[str, bytes], environment: str | None, cache: DocumentCache | None) -> LoadedSpec:
    per_file, issues, complete = _documents_by_file(files, cache)
    # files in path order, each file's documents in order: the agents' merged order is (file, index)
    swarm_docs, agent_docs, env_docs = _classified(per_file, issues)
    overlay: Overlay | None = None
    if environment is not None:
        overlay = _overlay(env_docs, environment, issues)
        if overlay is None:
            raise SpecError(issues)
        if len(swarm_docs) == 1:
            swarm_docs[0], agent_docs = apply_overlay(overlay, swarm_docs[0], agent_docs, issues)

    if len(swarm_docs) > 1:
        places = [d.position() for d in swarm_docs]
        for doc in swarm_docs:
            others = tuple(p for p in places if p != doc.position())
            issues.append(
                SpecIssue(
                    doc.position(),
                    "kind",
                    f"{len(swarm_docs)} 'kind: Swarm' documents; exactly one is allowed "
                    f"(others at {', '.join(map(str, others))})",
                    related=others,
                )
            )
    elif not swarm_docs and complete and not any(i.path == "kind" for i in issues):
        first = sorted(files)[0]
        issues.append(
            SpecIssue(
                Position(first, 1, 1),
                "",
                "no 'kind: Swarm' document found in " + ", ".join(sorted(files)),
            )
        )

    swarm: SwarmDocument | None = None
    inline_keep: list[int] = []
    n_inline = 0
    if len(swarm_docs) == 1:
        sdoc = swarm_docs[0]
        raw_agents = sdoc.data.get("agents")
        n_inline = len(raw_agents) if isinstance(raw_agents, list) else 0
        swarm, inline_keep = _drop_invalid_inline_agents(sdoc, issues)

    valid_agents: list[tuple[int, ParsedDocument, AgentDocument]] = []
    converted: list[Agent | None] = []
    for j, adoc in enumerate(agent_docs):
        merged_index = n_inline + j
        agent, ready = cache.agent_and_converted(adoc) if cache is not None else (None, None)
        if agent is None:
            agent, errs = _validate(adoc, AgentDocument, DocSource(adoc, merged_index))
            issues.extend(errs)
            if agent is not None and cache is not None:
                cache.keep_agent(adoc, agent)
        if agent is not None:
            valid_agents.append((merged_index, adoc, agent))
            converted.append(ready)

    if swarm is None or len(swarm_docs) != 1:
        raise SpecError(issues)

    sdoc = swarm_docs[0]
    sources = SourceMap.build(sdoc, inline_keep, [(i, d) for i, d, _ in valid_agents])
    spec = Spec(
        swarm=swarm,
        agents=list(swarm.agents) + [
            ready if ready is not None else cache.to_agent(d, a) if cache is not None else a.to_agent()
            for (_, d, a), ready in zip(valid_agents, converted)
        ],
    )
    issues.extend(check_spec(spec, sources))
    if issues:
        raise SpecError(issues)
    # the digest covers what this spec is made of: not other environments' overlays
    # (a file holding only Environment documents counts for the one it selects)
    env_files = {d.file for d in env_docs}
    env_ids = {id(d) for d in env_docs}
    mixed = {d.file for file_docs, _ in per_file if file_docs and file_docs[0].file in env_files
             for d in file_docs if id(d) not in env_ids}
    used = {f for f in files if f not in env_files or f in mixed}
    if overlay is not None:
        used.add(overlay.doc.file)
    kept = {f: files[f] for f in files if f in used}
    return LoadedSpec(
        spec=spec,
        digest=compute_digest(kept),
        files=tuple(sorted(kept)),
        sources=sources,
        environment=environment,
    )


# --------------------------------------------------------------------------- files


def load_spec_full(
    paths: str | os.PathLike[str] | Sequence[str | os.PathLike[str]] = "specs", environment: str | None = None
) -> LoadedSpec:
    """Read and load a spec from files/directories (with the overlay of ``environment``
    applied, if given); raises :class:`SpecError`."""
    return parse_spec_texts(read_spec_files(paths), environment)


def load_spec(path: str | os.PathLike[str] | Sequence[str | os.PathLike[str]] = "specs") -> Spec:
    """Read and load a spec, returning only the validated :class:`Spec`."""
    return load_spec_full(path).spec
