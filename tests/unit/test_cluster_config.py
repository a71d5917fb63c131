"""`cluster.yaml` and the jobs' runtime environment: valid for Ray's own launcher, and safe.

Ray's `prepare_config` + `validate_config` are what `ray up` runs before it contacts any
cloud, so the file is checked exactly as the launcher will read it (no cloud is contacted).
"""

from __future__ import annotations

import copy
import json
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
tomllib = pytest.importorskip("tomllib")  # Python >= 3.11
pytestmark = pytest.mark.timeout(120)


@pytest.fixture(scope="module")
def cluster() -> dict:
    return yaml.safe_load((ROOT / "cluster.yaml").read_text())


def all_commands(config: dict) -> list[str]:
    keys = [k for k in config if k.endswith("_commands")]
    return [command for key in keys for command in config[key]]


def test_ray_accepts_cluster_yaml(cluster):
    from ray.autoscaler._private.util import prepare_config, validate_config

    prepared = prepare_config(copy.deepcopy(cluster))
    validate_config(prepared)  # raises on any schema error
    assert prepared["head_node_type"] == "head"
    workers = prepared["available_node_types"]["gpu_worker"]
    assert 0 <= workers["min_workers"] < workers["max_workers"] <= prepared["max_workers"]
    assert workers["resources"].get("GPU", 0) >= 1  # the autoscaler can match GPU requests
    # Ray merged the common setup into the head's: the install runs on every node.
    assert any("pip install" in c and "wgen" in c for c in prepared["head_setup_commands"])
    assert any("pip install" in c and "wgen" in c for c in prepared["worker_setup_commands"])


def test_cluster_yaml_fails_on_a_failed_install_and_keeps_auth_and_the_dashboard_local(cluster):
    commands = all_commands(cluster)
    assert not [c for c in commands if "|| true" in c or "||true" in c]
    assert not [c for c in commands if "0.0.0.0" in c]
    head_start = " ".join(cluster["head_start_ray_commands"])
    assert "--dashboard-host=127.0.0.1" in head_start
    for key in ("head_start_ray_commands", "worker_start_ray_commands"):
        starts = [c for c in cluster[key] if "ray start" in c]
        assert starts and all("RAY_AUTH_MODE=token" in c for c in starts), key
    assert "~/.ray/auth_token" in cluster["cluster_synced_files"]


def test_runtime_env_installs_the_projects_pinned_dependencies():
    runtime_env = json.loads((ROOT / "rayjobs" / "runtime_env.json").read_text())
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    assert runtime_env["pip"]["packages"] == project["dependencies"]
    assert "torch==2.14.1" in runtime_env["pip"]["packages"]
    assert runtime_env["working_dir"] == "."
    assert ".venv" in runtime_env["excludes"]


def test_inside_a_job_init_ray_leaves_the_jobs_env_vars_to_the_job(monkeypatch):
    """Ray refuses ray.init's runtime env when it sets an env var the job's also sets."""
    from wgen.core.runtime import _job_runtime_env_vars

    monkeypatch.delenv("RAY_JOB_CONFIG_JSON_ENV_VAR", raising=False)
    assert _job_runtime_env_vars() == {}
    job = {"runtime_env": {"working_dir": "gcs://x.zip", "env_vars": {"HF_HUB_OFFLINE": "1"}}}
    monkeypatch.setenv("RAY_JOB_CONFIG_JSON_ENV_VAR", json.dumps(job))
    assert _job_runtime_env_vars() == {"HF_HUB_OFFLINE": "1"}
    monkeypatch.setenv("RAY_JOB_CONFIG_JSON_ENV_VAR", "not json")
    assert _job_runtime_env_vars() == {}
