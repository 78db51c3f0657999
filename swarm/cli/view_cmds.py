"""``swarm agents`` (the live registrations as a table), ``swarm events`` (the registry's
watch as text lines) and ``swarm topics`` (the bus as Redis holds it).

``agents`` and ``events`` talk to the registry over HTTP with a read token: ``SWARM_READ_TOKEN``, else the
admin token (``SWARM_ADMIN_TOKEN``, else derived from ``SWARM_REGISTRY_SECRET``). The
registry's URL comes from the spec (``--env`` applies an overlay) or ``--registry-url``.
``topics`` reads Redis (``bus.redis_url`` or ``--redis-url``, with ``SWARM_REDIS_PASSWORD``) through
:mod:`swarm.bus.inspect`, which the registry dashboard shares.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from typing import Any

from swarm.cli import EXIT_OK, add_env_option
from swarm.cli.output import paint_lines

READ_TOKEN_ENV = "SWARM_READ_TOKEN"


def register(subparsers: Any) -> None:
    a = subparsers.add_parser(
        "agents", help="list the live registrations (id, role, version, status, lease, heartbeat)",
        description="GET /agents of the registry, as a table (or JSON).",
        epilog="example: swarm agents specs/ --status critical -o wide",
    )
    _target(a)
    a.add_argument("-o", "--output", choices=("text", "wide", "json"), default="text",
                   help="table, wide table (address, health URL, capabilities) or JSON")
    a.add_argument("--status", metavar="STATUS", help="only agents in this status (healthy, critical, expiring...)")
    a.add_argument("--role", metavar="ROLE", help="only agents of this role")
    a.set_defaults(handler=run_agents)

    e = subparsers.add_parser(
        "events", help="print the registry's watch events as text (registered, expired, breaker changes...)",
        description="GET /agents/watch of the registry, one line per event. Without --follow: the events "
                    "the registry still holds (or those after --since), then exit.",
        epilog="example: swarm events specs/ --follow",
    )
    _target(e)
    e.add_argument("--follow", "-f", action="store_true", help="keep printing new events until Ctrl-C")
    e.add_argument("--since", metavar="ID", help="start after this event id (default: all the registry holds; "
                                                 "with --follow: from now)")
    e.add_argument("-o", "--output", choices=("text", "json"), default="text", help="text lines or JSON lines")
    e.set_defaults(handler=run_events)

    t = subparsers.add_parser(
        "topics", help="per topic its publishers, subscribers, log length and dead letters; per inbox its backlog",
        description="Read the bus from Redis: each declared topic's log length, publishers, subscribers and "
                    "dead letters, and each subscriber's inbox (entries waiting, delivered but not acked, lag).",
        epilog="example: swarm topics specs/ -o json",
    )
    t.add_argument("spec", nargs="*", metavar="SPEC", help="spec files or directories (default: specs/)")
    t.add_argument("--redis-url", metavar="URL", help="override the spec's bus.redis_url")
    t.add_argument("-o", "--output", choices=("text", "json"), default="text", help="tables or JSON")
    add_env_option(t)
    t.set_defaults(handler=run_topics)


def _target(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("spec", nargs="*", metavar="SPEC", help="spec files or directories (default: specs/)")
    parser.add_argument("--registry-url", metavar="URL", help="override the spec's registry.url")
    add_env_option(parser)


def _connection(args: argparse.Namespace) -> tuple[str, dict[str, str]]:
    from swarm.registry.catalog_push import admin_token_from_env
    from swarm.spec.loader import load_spec_full

    spec = load_spec_full(args.spec or "specs", args.env).spec
    url = (args.registry_url or spec.swarm.registry.url).rstrip("/")
    token = os.environ.get(READ_TOKEN_ENV) or admin_token_from_env(os.environ, spec.name)
    return url, ({"Authorization": f"Bearer {token}"} if token else {})


def _seconds(ms: int) -> str:
    return f"{ms / 1000:.0f}s"


def agent_rows(agents: list[dict[str, Any]], now_ms: int, wide: bool) -> list[list[str]]:
    """The table: a header row, then one row per agent (sorted by id)."""
    header = ["ID", "ROLE", "VERSION", "STATUS", "LEASE", "LAST HEARTBEAT"]
    if wide:
        header += ["ADDRESS", "CAPABILITIES"]
    rows = [header]
    for a in sorted(agents, key=lambda a: str(a.get("agent_id"))):
        ttl_ms = int(a.get("ttl_seconds", 0)) * 1000
        expires = int(a.get("lease_expires_at", 0))
        # the lease is renewed to a full TTL by each heartbeat: expiry - TTL is the last one
        row = [str(a.get("agent_id")), str(a.get("role") or "-"), str(a.get("version")), str(a.get("status")),
               _seconds(expires - now_ms) + " left" if expires > now_ms else "expired",
               _seconds(now_ms - (expires - ttl_ms)) + " ago"]
        if wide:
            address = f"{a.get('host')}:{a.get('port')}" if a.get("host") else "-"
            row += [address, ",".join(a.get("capabilities") or []) or "-"]
        rows.append(row)
    return rows


def table(rows: list[list[str]]) -> str:
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    return "\n".join("  ".join(cell.ljust(w) for cell, w in zip(r, widths)).rstrip() for r in rows)


def run_agents(args: argparse.Namespace) -> int:
    import httpx

    from swarm.foreign_http import http_status_error, http_transport_error

    url, headers = _connection(args)
    params = {k: v for k, v in (("status", args.status), ("role", args.role)) if v}
    try:
        response = httpx.get(url + "/agents", params=params, headers=headers, timeout=10)
    except httpx.HTTPError as exc:
        raise http_transport_error(exc, f"GET {url}/agents") from exc
    if response.status_code != 200:
        raise http_status_error(response, f"GET {url}/agents")
    agents: list[dict[str, Any]] = response.json()["agents"]
    if args.output == "json":
        print(json.dumps(agents, indent=2))
    elif not agents:
        print("no live registrations", file=sys.stderr)
    else:
        print(paint_lines(table(agent_rows(agents, int(time.time() * 1000), args.output == "wide"))))
    return EXIT_OK


def event_line(event: str, event_id: str, data: dict[str, Any]) -> str:
    """``<id> <event> <agent> <details>``: one line per watch event."""
    if event == "reset":
        return f"{event_id} reset: snapshot of {len(data.get('agents', []))} agent(s) (events were trimmed)"
    if event == "catalog-changed":
        return f"{event_id} catalog-changed revision {data.get('revision')} digest {str(data.get('digest'))[:12]}"
    agent = data.get("agent_id", "?")
    details = []
    for key in ("status", "version", "role"):
        if data.get(key) is not None:
            details.append(f"{key}={data[key]}")
    return f"{event_id} {event} {agent}" + (" " + " ".join(details) if details else "")


def run_events(args: argparse.Namespace) -> int:
    import httpx

    from swarm.foreign_http import http_status_error, http_transport_error

    url, headers = _connection(args)
    since = args.since or (None if args.follow else "0-0")
    if since:
        headers["Last-Event-ID"] = since
    idle = None if args.follow else 1.0  # without --follow: stop once the backlog is out
    try:
        with httpx.stream("GET", url + "/agents/watch", headers=headers,
                          timeout=httpx.Timeout(10.0, read=idle)) as response:
            if response.status_code != 200:
                response.read()
                raise http_status_error(response, f"GET {url}/agents/watch")
            fields: dict[str, str] = {}
            for line in response.iter_lines():
                if line == "":
                    if "data" in fields:
                        _print_event(fields, args.output)
                    fields = {}
                elif not line.startswith(":"):
                    name, _, value = line.partition(":")
                    value = value[1:] if value.startswith(" ") else value
                    # several data lines make one value, joined by newlines (the SSE rule; the
                    # reset snapshot puts each batch of agents on a data line of its own)
                    fields[name] = fields[name] + "\n" + value if name == "data" and "data" in fields else value
    except httpx.ReadTimeout:
        return EXIT_OK  # the backlog is printed
    except KeyboardInterrupt:
        return EXIT_OK
    except httpx.HTTPError as exc:
        raise http_transport_error(exc, f"GET {url}/agents/watch") from exc
    return EXIT_OK


def _print_event(fields: dict[str, str], output: str) -> None:
    try:
        data = json.loads(fields["data"])
    except ValueError:
        data = {"raw": fields["data"]}
    event, event_id = fields.get("event", "message"), fields.get("id", "")
    if output == "json":
        print(json.dumps({"id": event_id, "event": event, "data": data}), flush=True)
    else:
        print(event_line(event, event_id, data if isinstance(data, dict) else {}), flush=True)


def run_topics(args: argparse.Namespace) -> int:
    import asyncio

    from swarm.bus.inspect import gather_topics
    from swarm.desired import desired_from_spec
    from swarm.foreign import REDIS_ERRORS, redis_error
    from swarm.redis_auth import password_from_env, with_password
    from swarm.redis_conn import async_client
    from swarm.spec.loader import load_spec_full

    loaded = load_spec_full(args.spec or "specs", args.env)
    bus = desired_from_spec(loaded.spec, loaded.digest).bus
    url = with_password(args.redis_url or bus.settings.redis_url, password_from_env())

    async def gather() -> dict[str, Any]:
        client: Any = async_client(url, swarm=bus.swarm, decode_responses=True, socket_timeout=5,
                                   socket_connect_timeout=3)
        try:
            return await gather_topics(client, bus)
        finally:
            await client.aclose()

    try:
        doc = asyncio.run(gather())
    except REDIS_ERRORS as exc:
        raise redis_error(exc, "read the bus") from exc
    topics: list[dict[str, Any]] = doc["topics"]
    inboxes: list[dict[str, Any]] = doc["inboxes"]
    if args.output == "json":
        print(json.dumps({"swarm": bus.swarm, "topics": topics, "inboxes": inboxes}, indent=2))
        return EXIT_OK
    rows = [["TOPIC", "LENGTH", "DEAD", "PUBLISHERS", "SUBSCRIBERS"]]
    rows += [[t["topic"], str(t["length"]), str(t["dead_letters"]), ",".join(t["publishers"]) or "-",
              ",".join(t["subscribers"]) or "-"] for t in topics]
    print(paint_lines(table(rows)))
    if inboxes:
        rows = [["INBOX", "WAITING", "DELIVERED-UNACKED", "LAG", "DEAD"]]
        rows += [[i["agent"], str(i["waiting"]), str(i["pending"]), "-" if i["lag"] is None else str(i["lag"]),
                  str(i["dead_letters"])] for i in inboxes]
        print()
        print(paint_lines(table(rows)))
    return EXIT_OK
