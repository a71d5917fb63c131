"""A local S3-compatible server for the storage tests: moto's server mode on 127.0.0.1, on a
free port, started and stopped by the test that uses it. Nothing else is contacted."""

from __future__ import annotations

import logging
import os
import socket
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

BUCKET = "wgen-test"
# Test credentials moto accepts; set only where the user has not set them, and the metadata
# service (an EC2 credential lookup) skipped so pyarrow never waits on it.
TEST_ENV = {
    "AWS_ACCESS_KEY_ID": "testing",
    "AWS_SECRET_ACCESS_KEY": "testing",
    "AWS_EC2_METADATA_DISABLED": "true",
}


@dataclass(frozen=True)
class S3Server:
    port: int

    @property
    def query(self) -> str:
        """The URI query that points pyarrow at this server."""
        return f"endpoint_override=127.0.0.1:{self.port}&scheme=http&region=us-east-1"

    def uri(self, path: str, bucket: str = BUCKET, keys: bool = False) -> str:
        """``keys``: the access key in the URI itself (``KEY:SECRET@``), so Ray workers started
        before the test (without its AWS_* variables) sign their requests too."""
        who = (
            f"{TEST_ENV['AWS_ACCESS_KEY_ID']}:{TEST_ENV['AWS_SECRET_ACCESS_KEY']}@" if keys else ""
        )
        return f"s3://{who}{bucket}/{path}?{self.query}"

    def filesystem(self):
        import pyarrow.fs as pafs

        return pafs.FileSystem.from_uri(self.uri(""))[0]

    def files(self, path: str) -> dict[str, int]:
        """``{path relative to bucket/path: size}`` of every object under ``path``."""
        import pyarrow.fs as pafs

        root = f"{BUCKET}/{path}"
        infos = self.filesystem().get_file_info(
            pafs.FileSelector(root, allow_not_found=True, recursive=True)
        )
        return {i.path[len(root) + 1 :]: i.size for i in infos if i.type == pafs.FileType.File}


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@contextmanager
def moto_s3() -> Iterator[S3Server]:
    """A moto S3 server with the bucket `BUCKET`, for the block."""
    import pyarrow.fs as pafs
    from moto.server import ThreadedMotoServer

    logging.getLogger("werkzeug").setLevel(logging.ERROR)  # one line per request otherwise
    saved = {k: os.environ.get(k) for k in TEST_ENV}
    for key, value in TEST_ENV.items():
        os.environ.setdefault(key, value)
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=free_port(), verbose=False)
    server.start()
    try:
        s3 = S3Server(server.get_host_and_port()[1])
        creator = pafs.FileSystem.from_uri(f"s3://{BUCKET}?{s3.query}&allow_bucket_creation=true")
        creator[0].create_dir(BUCKET)
        yield s3
    finally:
        server.stop()
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


@contextmanager
def credentials_checked() -> Iterator[None]:
    """moto refuses requests whose access key it does not know (IAM auth on) in the block."""
    from moto import settings

    saved = settings.INITIAL_NO_AUTH_ACTION_COUNT
    settings.INITIAL_NO_AUTH_ACTION_COUNT = 0
    try:
        yield
    finally:
        settings.INITIAL_NO_AUTH_ACTION_COUNT = saved
