"""Nodes that share a Redis: registry, room ownership, node selection and the signaling relay (docs/CLUSTER.md).

Nothing here is imported unless ``redis`` is set (control/app.py imports :mod:`control.cluster.node` lazily), so a
single node needs neither Redis nor the ``redis`` package at run time.
"""
