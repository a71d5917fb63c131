"""`wgen.core.storage` against a real local S3 server (moto, started here): resolving --out,
pulling and pushing a staging copy, and a bad URI refused in one line before Ray starts."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from tests.s3server import credentials_checked, moto_s3
from wgen.cli import app
from wgen.core.errors import OutputError
from wgen.core.storage import STAGING_ENV, RunStorage, is_uri, redacted

pytestmark = pytest.mark.timeout(120)


@pytest.fixture(scope="module")
def s3():
    with moto_s3() as server:
        yield server


@pytest.fixture(autouse=True)
def staging(tmp_path, monkeypatch) -> Path:
    monkeypatch.setenv(STAGING_ENV, str(tmp_path / "staging"))
    return tmp_path / "staging"


def test_paths_and_uris_are_told_apart(tmp_path, monkeypatch):
    assert is_uri("s3://bucket/run") and is_uri("gs://b/r") and is_uri("hdfs://nn:8020/r")
    assert not is_uri("runs/demo") and not is_uri("/shared/run") and not is_uri("file:///x")
    monkeypatch.chdir(tmp_path)
    local = RunStorage.resolve("runs/demo")
    assert local.local == tmp_path / "runs" / "demo" and local.uri is None and not local.remote
    assert RunStorage.resolve(f"file://{tmp_path}/r").local == tmp_path / "r"
    assert redacted("s3://KEY:SECRET@b/run?x=1") == "s3://KEY:***@b/run?x=1"


def test_push_mirrors_a_folder_and_writes_success_last(s3):
    storage = RunStorage.resolve(s3.uri("mirror"))
    folder = storage.local / "weights"
    (folder / "_status").mkdir(parents=True)
    (folder / "c1.parquet").write_bytes(b"one")
    (folder / "_status" / "c1.json").write_text("{}")
    (folder / "_SUCCESS.json").write_text(json.dumps({"n": 1}))
    storage.push(["weights"])
    assert s3.files("mirror") == {
        "weights/c1.parquet": 3,
        "weights/_status/c1.json": 2,
        "weights/_SUCCESS.json": 8,
    }
    # _SUCCESS.json is the newest object: uploaded after the rest.
    infos = {i.path.rsplit("/", 1)[-1]: i.mtime_ns for i in _infos(s3, "mirror/weights")}
    assert infos["_SUCCESS.json"] >= max(infos.values())

    # A file removed here (--force, a damaged concept) is removed there; a new one added.
    (folder / "c1.parquet").unlink()
    (folder / "c2.parquet").write_bytes(b"two!")
    storage.push(["weights"])
    assert set(s3.files("mirror")) == {
        "weights/c2.parquet",
        "weights/_status/c1.json",
        "weights/_SUCCESS.json",
    }


def test_pull_replaces_the_staging_copy_and_merge_only_adds(s3, tmp_path):
    writer = RunStorage.resolve(s3.uri("pulled"))
    (writer.local / "weights").mkdir(parents=True)
    (writer.local / "weights" / "a.json").write_text("a")
    (writer.local / "concepts.jsonl").write_text("{}\n")
    writer.push(["weights", "concepts.jsonl"])

    # Another host: its own staging copy, with a stale file the URI does not have.
    other = RunStorage(tmp_path / "other", writer.uri)
    (other.local / "weights").mkdir(parents=True)
    (other.local / "weights" / "stale.json").write_text("old")
    other.pull(["weights", "concepts.jsonl", "generator"])
    assert sorted(p.name for p in (other.local / "weights").iterdir()) == ["a.json"]
    assert (other.local / "concepts.jsonl").read_text() == "{}\n"
    assert not (other.local / "generator").exists()

    (other.local / "weights" / "mine.json").write_text("m")
    writer_file = writer.local / "weights" / "b.json"
    writer_file.write_text("b")
    writer.upload([writer_file])  # a worker's finished concept
    other.pull(["weights"], merge=True)
    assert sorted(p.name for p in (other.local / "weights").iterdir()) == [
        "a.json",
        "b.json",
        "mine.json",
    ]

    # Missing pieces only, as a worker on a fresh node fetches them.
    fresh = RunStorage(tmp_path / "fresh", writer.uri)
    fresh.fetch_missing(["weights", "concepts.jsonl"])
    assert sorted(p.name for p in (fresh.local / "weights").iterdir()) == ["a.json", "b.json"]


def _infos(s3, path):
    import pyarrow.fs as pafs

    fs = s3.filesystem()
    return [
        i
        for i in fs.get_file_info(pafs.FileSelector(f"wgen-test/{path}", recursive=True))
        if i.type == pafs.FileType.File
    ]


@pytest.mark.parametrize(
    ("uri", "says"),
    [
        ("nosuchscheme://bucket/run", "no filesystem for this URI"),
        ("s3://no-such-bucket/run?{query}", "bucket 'no-such-bucket' does not exist"),
    ],
)
def test_a_bad_uri_is_one_line_before_ray_starts(s3, uri, says):
    import ray

    uri = uri.format(query=s3.query)
    ray_before = ray.is_initialized()  # another test in this process may have started it
    with pytest.raises(OutputError, match=says):
        RunStorage.resolve(uri)
    result = CliRunner().invoke(app, ["pairs", "--preset", "tiny", "--out", uri])
    assert result.exit_code == 2, result.output
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: --out ") and says in lines[0]
    assert ray.is_initialized() == ray_before, "the command started Ray"


def test_credentials_the_store_refuses_are_one_line(s3):
    with credentials_checked():
        result = CliRunner().invoke(
            app, ["collect", "--preset", "tiny", "--out", s3.uri("refused")]
        )
    assert result.exit_code == 2, result.output
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and "cannot be written" in lines[0] and "ACCESS_DENIED" in lines[0]
    assert "credentials" in lines[0]


def test_stages_without_uri_support_refuse_a_uri(s3):
    result = CliRunner().invoke(app, ["tune", "--preset", "tiny", "--out", s3.uri("tune")])
    assert result.exit_code == 2
    assert "runs on a local or shared folder only" in result.output
