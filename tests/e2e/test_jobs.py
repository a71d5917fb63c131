"""Stages as Ray jobs: `ray job submit` to a local head with token authentication on.

The test starts its own head (`ray start --head --block` with the job server on 127.0.0.1,
its own temp dir, ``HOME`` and token) and stops it by process group and pid at the end:
never a broad `ray stop`, and no token file is left in the real ``~/.ray``. A submission
without the token is refused, one with a wrong token too; with it, a tiny `pairs` job and
then a `collect` job run to SUCCEEDED and write their outputs.
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

import pytest

from rayjobs import check_job_out

ROOT = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent
pytestmark = [pytest.mark.slow, pytest.mark.timeout(1800)]


def test_a_job_refuses_a_relative_out():
    assert check_job_out(["--out", "runs/x"], in_job=False) is None  # local: cli resolves it
    assert "relative" in check_job_out(["--out", "runs/x"], in_job=True)
    assert "required" in check_job_out(["--preset", "tiny"], in_job=True)
    assert check_job_out(["--out=/shared/runs/x"], in_job=True) is None
    assert check_job_out(["--out", "s3://bucket/run"], in_job=True) is None


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def kill_by_temp_dir(temp_dir: str) -> None:
    import psutil

    for process in psutil.process_iter(["pid", "cmdline"]):
        if temp_dir in " ".join(process.info["cmdline"] or []) and process.pid != os.getpid():
            try:
                process.kill()
            except psutil.Error:
                pass


@pytest.fixture
def token_head(tmp_path):
    """A local head with token auth and the job server on 127.0.0.1; yields (address, token,
    base env for clients)."""
    token = secrets.token_hex(32)
    temp_dir = tempfile.mkdtemp(prefix="wgj", dir="/tmp")  # short: Ray's socket paths
    home = tmp_path / "home"  # Ray may write ~/.ray here, never in the real home
    home.mkdir()
    dashboard_port = free_port()
    env = {
        **os.environ,
        "HOME": str(home),
        "PATH": f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}",
        "RAY_AUTH_MODE": "token",
        "RAY_AUTH_TOKEN": token,
        "RAY_USAGE_STATS_ENABLED": "0",
        "RAY_TRAIN_HEALTH_CHECK_INTERVAL_S": "0.2",
        "HF_HUB_OFFLINE": "1",
    }
    env.pop("RAY_ADDRESS", None)
    log = (tmp_path / "head.log").open("wb")
    head = subprocess.Popen(
        [
            str(BIN / "ray"),
            "start",
            "--head",
            "--block",
            f"--port={free_port()}",
            "--node-ip-address=127.0.0.1",
            "--dashboard-host=127.0.0.1",
            f"--dashboard-port={dashboard_port}",
            # the node's agents on free ports: Ray's fixed default (52365) is taken when another
            # Ray runs on the machine (the session's shared one), and the head then never gets
            # a job agent ("No available agent to submit job")
            f"--dashboard-agent-listen-port={free_port()}",
            f"--dashboard-agent-grpc-port={free_port()}",
            f"--runtime-env-agent-port={free_port()}",
            f"--metrics-export-port={free_port()}",
            "--include-dashboard=true",
            "--num-cpus=4",
            "--num-gpus=0",
            f"--temp-dir={temp_dir}",
            "--disable-usage-stats",
        ],
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    address = f"http://127.0.0.1:{dashboard_port}"
    client_env = {k: v for k, v in env.items() if k not in ("RAY_AUTH_MODE", "RAY_AUTH_TOKEN")}
    try:
        deadline = time.time() + 300
        while True:  # the job server answers (401 without a token counts as up)
            try:
                urllib.request.urlopen(f"{address}/api/version", timeout=5)
                break
            except urllib.error.HTTPError:
                break
            except OSError:
                if head.poll() is not None or time.time() > deadline:
                    raise RuntimeError(
                        f"head did not start: {(tmp_path / 'head.log').read_text()[-3000:]}"
                    ) from None
                time.sleep(1)
        yield address, token, client_env
    finally:
        if head.poll() is None:
            os.killpg(head.pid, signal.SIGTERM)
            try:
                head.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(head.pid, signal.SIGKILL)
                head.wait()
        kill_by_temp_dir(temp_dir)
        log.close()
        shutil.rmtree(temp_dir, ignore_errors=True)


def ray_job(
    address: str, env: dict, command: str, *args: str, timeout: float = 120
) -> subprocess.CompletedProcess:
    # --address goes before the args: after a `--` it would be the entrypoint's, and the CLI
    # would look for a local cluster instead (and fail when the machine runs two)
    return subprocess.run(
        [str(BIN / "ray"), "job", command, "--address", address, *args],
        env=env,
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def submit(address: str, env: dict, stage: str, out: Path, submission_id: str):
    # env_vars that init_ray also passes: the job's runtime env must win without a conflict
    runtime_env = {
        "excludes": [".git", ".venv", "runs"],
        "env_vars": {"HF_HUB_OFFLINE": "1", "RAY_TRAIN_HEALTH_CHECK_INTERVAL_S": "0.2"},
    }
    return ray_job(
        address,
        env,
        "submit",
        "--no-wait",
        "--submission-id",
        submission_id,
        "--working-dir",
        ".",
        "--runtime-env-json",
        json.dumps(runtime_env),
        "--",
        "python",
        "-m",
        f"rayjobs.{stage}",
        "--preset",
        "tiny",
        "--out",
        str(out),
    )


def submit_when_an_agent_is_up(
    address: str, env: dict, stage: str, out: Path, submission_id: str, timeout: float = 300
):
    """`submit`, again while the head answers that no job agent has registered yet: the job
    server is up before the node's agent, and on a busy machine the agent takes a while
    (Ray's own answer is "No available agent to submit job, please try again later")."""
    deadline = time.time() + timeout
    while True:
        submitted = submit(address, env, stage, out, submission_id)
        busy = "No available agent" in submitted.stderr + submitted.stdout
        if submitted.returncode == 0 or not busy or time.time() > deadline:
            return submitted
        time.sleep(2)


def wait_for(address: str, token: str, submission_id: str, timeout: float) -> dict:
    from ray.job_submission import JobStatus, JobSubmissionClient

    client = JobSubmissionClient(address, headers={"Authorization": f"Bearer {token}"})
    deadline = time.time() + timeout
    while time.time() < deadline:
        info = client.get_job_info(submission_id)
        if info.status in (JobStatus.SUCCEEDED, JobStatus.FAILED, JobStatus.STOPPED):
            logs = client.get_job_logs(submission_id)
            return {"status": str(info.status), "logs": logs, "info": info}
        time.sleep(2)
    client.stop_job(submission_id)
    raise AssertionError(f"{submission_id} not finished after {timeout} s")


def test_stages_as_token_authenticated_jobs(token_head, tmp_path):
    address, token, client_env = token_head
    out = tmp_path / "run"
    timings = {}

    # 1. no token: refused by the job server (401), nothing submitted
    anonymous = {**client_env, "RAY_AUTH_MODE": "disabled"}
    refused = submit(address, anonymous, "pairs", out, "wgen-no-token")
    assert refused.returncode != 0
    assert "401" in refused.stderr + refused.stdout or "Authentication" in refused.stderr
    # 2. a wrong token: refused too (403)
    wrong = {**client_env, "RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN": secrets.token_hex(32)}
    refused = submit(address, wrong, "pairs", out, "wgen-wrong-token")
    assert refused.returncode != 0
    assert not out.exists()

    # 3. with the token: pairs, then collect, each polled to SUCCEEDED
    authorised = {**client_env, "RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN": token}
    for stage in ("pairs", "collect"):
        start = time.time()
        submitted = submit_when_an_agent_is_up(address, authorised, stage, out, f"wgen-{stage}")
        assert submitted.returncode == 0, submitted.stderr[-3000:]
        result = wait_for(address, token, f"wgen-{stage}", timeout=1200)
        timings[stage] = round(time.time() - start, 1)
        assert result["status"] == "SUCCEEDED", result["logs"][-4000:]
    print(f"\njob wall times (s): {timings}")

    assert (out / "pairs" / "_SUCCESS.json").exists()
    summary = json.loads((out / "weights" / "_SUCCESS.json").read_text())
    assert summary["selected"] == 4 and summary["converged"] >= 1
    assert (out / "base" / "base.json").exists()
    assert (out / "config.collect.yaml").exists() or any(out.glob("config.*.yaml"))

    # 4. a local command beside this running head starts a Ray of its own: Ray's own default
    #    would connect to the head it finds on the machine and then refuse num_cpus
    local = subprocess.run(
        [str(BIN / "wgen"), "pairs", "--preset", "tiny", "--out", str(tmp_path / "local")],
        env={k: v for k, v in client_env.items() if not k.startswith("RAY_AUTH")},
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert local.returncode == 0, local.stderr[-3000:]
    assert (tmp_path / "local" / "pairs" / "_SUCCESS.json").exists()
