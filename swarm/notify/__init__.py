"""Notifications of the reconcile daemon (Argo CD-style triggers) to JSON webhooks and Slack.

:mod:`swarm.notify.rules` decides which notifications to send and renders them (pure);
:mod:`swarm.notify.sender` queues and posts them (httpx, background threads, retries);
:mod:`swarm.notify.follow` feeds the registry's events into the sender (async Redis).
"""
