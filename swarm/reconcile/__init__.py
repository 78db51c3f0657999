"""The reconciler: keeps the live registry and bus equal to the spec (GitOps: the spec in git is the truth).

Layers, lowest first (a module imports only from the ones above it):

* :mod:`~swarm.reconcile.state` — what is observed, and the two ports (pure);
* :mod:`~swarm.reconcile.plan` — desired + actual → ordered, typed actions (pure);
* :mod:`~swarm.reconcile.status` — the status document kept in Redis;
* :mod:`~swarm.reconcile.gitsource` — the spec of a git commit, the working tree's revision;
* :mod:`~swarm.reconcile.apply` — runs a plan through the ports in order;
* :mod:`~swarm.reconcile.lease` — one writer per swarm: the reconcile lease and its fencing token;
* :mod:`~swarm.reconcile.observe` — the real ports: registry over HTTP, bus in Redis;
* :mod:`~swarm.reconcile.heal` — re-create a swarm's missing Redis users from what Redis holds
  (for the registry, after it sees a Redis restart);
* :mod:`~swarm.reconcile.loop` — one pass (observe → plan → apply → verify → status)
  and the ``--watch`` loop;
* :mod:`~swarm.reconcile.up` — ``swarm up``: Redis, registry and the loop in one command.

Nothing is imported here, so ``import swarm.reconcile.plan`` stays free of redis/httpx.
"""
