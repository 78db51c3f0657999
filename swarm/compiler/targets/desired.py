"""The ``desired`` target, always emitted: the desired state of the registry and the bus
(``registry.json``, ``bus.json``) and the ACL table (``acl.json``, ``acl.md``). Pure."""

from __future__ import annotations

from swarm.compiler.templating import dump_json, environment
from swarm.desired import DesiredState
from swarm.spec.models import Spec


def render_desired(spec: Spec, desired: DesiredState, swarm_version: str) -> dict[str, bytes]:
    acl_md = environment("swarm.compiler").get_template("acl.md.j2").render(
        spec=spec,
        acl=desired.acl,
        bus=desired.bus,
        swarm_version=swarm_version,
    )
    return {
        "acl.json": dump_json(desired.acl.model_dump(mode="json")),
        "acl.md": acl_md.encode("utf-8"),
        "registry.json": dump_json(desired.registry.model_dump(mode="json")),
        "bus.json": dump_json(desired.bus.model_dump(mode="json")),
    }
