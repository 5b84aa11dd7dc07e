"""The ``redis:`` and ``cluster:`` settings: absent means one node; file, environment and command line merge."""

from __future__ import annotations

import argparse
from pathlib import Path

import pytest

from control.config import ClusterSettings, ConfigError, RedisSettings, load_settings


def settings(tmp_path: Path, yaml: str = "", env: dict[str, str] | None = None, **args: object) -> object:
    path = tmp_path / "c.yaml"
    path.write_text(yaml)
    return load_settings(argparse.Namespace(config=str(path), **args), env or {})


def test_without_redis_the_node_is_alone(tmp_path: Path) -> None:
    s = settings(tmp_path)
    assert s.redis is None and s.cluster == ClusterSettings()  # type: ignore[attr-defined]


def test_file_environment_and_command_line(tmp_path: Path) -> None:
    yaml = ("redis: {address: 10.0.0.5:6379, db: 2, password: pw, use_tls: true}\n"
            "cluster: {node_selector: cpuload, ttl_s: 3, spread_nodes: always}\n")
    s = settings(tmp_path, yaml)
    assert s.redis == RedisSettings(address="10.0.0.5:6379", db=2, password="pw", use_tls=True)  # type: ignore
    assert s.cluster == ClusterSettings(node_selector="cpuload", ttl_s=3.0,  # type: ignore[attr-defined]
                                        spread_nodes="always")
    s = settings(tmp_path, yaml, {"MEDIAROUTER_REDIS_DB": "4", "MEDIAROUTER_REDIS_USE_TLS": "0",
                                  "MEDIAROUTER_CLUSTER_NODE_SELECTOR": "any",
                                  "MEDIAROUTER_CLUSTER_SPREAD_NODES": "Auto"}, redis_address="/run/redis.sock")
    assert s.redis == RedisSettings(address="/run/redis.sock", db=4, password="pw")  # type: ignore[attr-defined]
    assert s.cluster.node_selector == "any"  # type: ignore[attr-defined]
    assert s.cluster.spread_nodes == "auto"  # type: ignore[attr-defined]
    s = settings(tmp_path, "", {"MEDIAROUTER_REDIS_SENTINEL_MASTER_NAME": "mymaster",
                                "MEDIAROUTER_REDIS_SENTINEL_ADDRESSES": "10.0.0.1:26379, 10.0.0.2:26379"})
    assert s.redis.sentinel_addresses == ("10.0.0.1:26379", "10.0.0.2:26379")  # type: ignore[attr-defined]


@pytest.mark.parametrize("yaml, env, message", [
    ("redis: {adress: x:1}\n", {}, "unknown setting 'adress'"),
    ("", {"MEDIAROUTER_REDIS_ADRESS": "x:1"}, "unknown environment variable MEDIAROUTER_REDIS_ADRESS"),
    ("redis: {sentinel_master_name: m}\n", {}, "needs redis.sentinel_addresses"),
    ("redis: {address: 'x:1', db: -1}\n", {}, "redis.db -1 out of range"),
    ("cluster: {node_selector: random}\n", {}, "cluster.node_selector must be one of"),
    ("cluster: {ttl_s: 0}\n", {}, "cluster.ttl_s must be"),
    ("cluster: {spread_nodes: sometimes}\n", {}, "cluster.spread_nodes must be one of"),
])
def test_bad_values_are_refused(tmp_path: Path, yaml: str, env: dict[str, str], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        settings(tmp_path, yaml, env)
