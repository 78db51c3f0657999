"""``swarm init [DIR] [--name NAME]``: scaffold a spec a new team can edit, validate and compile.

Writes ``DIR/specs/swarm.yaml`` (a swarm with two topics, two roles and one agent) and
``DIR/specs/agents/<name>-worker.yaml`` (a ``kind: Agent`` document), each with the
``$schema`` line editors use, and ``DIR/.gitignore`` entries for ``.swarm/``. It never
overwrites a file: an existing one is an error naming it, and nothing is written.
"""

from __future__ import annotations

import argparse
import re
import sys
from pathlib import Path
from typing import Any

from swarm.cli import EXIT_INVALID, EXIT_OK

_NAME = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")

SWARM_YAML = """\
# yaml-language-server: $schema=../schemas/swarm.schema.json
# The swarm {name}: `swarm validate`, `swarm compile`, then `swarm up --demo` to run it here.
apiVersion: swarm/v1
kind: Swarm
metadata:
  name: {name}
  description: A planner hands out tasks; workers publish results.
registry:
  url: http://127.0.0.1:8700
  ttl_seconds: 30
bus:
  redis_url: redis://127.0.0.1:6379/0
topics:
  - name: tasks.work
    max_len: 10000
  - name: results.work
    max_len: 10000
roles:
  planner:
    publish: ["tasks.>"]
    subscribe: ["results.>"]
  worker:
    publish: ["results.*"]
    subscribe: ["tasks.*"]
agents:
  - id: planner
    version: 0.1.0
    role: planner
    port: 8101
    publishes: [tasks.work]
    subscribes: [results.work]
"""
AGENT_YAML = """\
# yaml-language-server: $schema=../../schemas/swarm.schema.json
# One agent per document; more agents go in this folder.
apiVersion: swarm/v1
kind: Agent
id: {name}-worker
version: 0.1.0
role: worker
port: 8102
capabilities: [work]
publishes: [results.work]
subscribes: [tasks.work]
"""
GITIGNORE = "# swarm up's local state (Redis data, passwords, logs, secrets env files)\n.swarm/\n"


def register(subparsers: Any) -> None:
    p = subparsers.add_parser(
        "init", help="scaffold a spec (specs/swarm.yaml and one agent) in a directory",
        description="Write a small, valid spec to DIR/specs/ (never overwriting a file), with the JSON "
                    "Schema editors use in schemas/.",
        epilog="example: swarm init my-swarm --name research && cd my-swarm && swarm compile specs/",
    )
    p.add_argument("dir", nargs="?", default=".", metavar="DIR", help="where to create specs/ (default: here)")
    p.add_argument("--name", metavar="NAME", help="the swarm's name (default: the directory's name)")
    p.set_defaults(handler=run_init)


def run_init(args: argparse.Namespace) -> int:
    from swarm.spec.schema import schema_files

    root = Path(args.dir)
    name = args.name or root.resolve().name.lower()
    if not _NAME.fullmatch(name) or len(name) > 55:
        print(f"swarm init: {name!r} is not a valid swarm name (lowercase letters, digits and '-', "
              "starting and ending with a letter or digit); pass --name", file=sys.stderr)
        return EXIT_INVALID
    files: dict[Path, str] = {
        root / "specs" / "swarm.yaml": SWARM_YAML.format(name=name),
        root / "specs" / "agents" / f"{name}-worker.yaml": AGENT_YAML.format(name=name),
    }
    files.update({root / "schemas" / rel: text for rel, text in schema_files().items()})
    existing = [p for p in files if p.exists()]
    if existing:
        print("swarm init: refusing to overwrite " + ", ".join(str(p) for p in existing) + " (nothing written)",
              file=sys.stderr)
        return EXIT_INVALID
    for path, text in files.items():
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text, encoding="utf-8")
        print(f"wrote    {path}")
    gitignore = root / ".gitignore"
    current = gitignore.read_text() if gitignore.exists() else ""
    if ".swarm/" not in current.split():
        gitignore.write_text(current + ("\n" if current and not current.endswith("\n") else "") + GITIGNORE)
        print(f"updated  {gitignore}")
    print(f"next: swarm validate {root / 'specs'} && swarm compile {root / 'specs'} --out {root / 'compiled'}")
    return EXIT_OK
