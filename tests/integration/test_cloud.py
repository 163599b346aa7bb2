"""Object stores for file sources and sinks, against local emulators: S3 on moto
(scripts/services/moto.sh), GCS on gcp-storage-emulator (scripts/services/gcs.sh), Azure Blob on
Azurite (scripts/services/azurite.sh).

Per store: a spec reads a glob of CSV and a directory of Parquet, joins them, writes Parquet and
its DLQ to the store; the result matches DuckDB over the same files, no temp object is left, and
a failing rerun leaves the first run's output untouched. Faults: a TCP proxy between Beam and the
emulator cuts the connection in the middle of an upload (an S3 multipart part, a GCS resumable
chunk, an Azure put) — the client retries and the object is whole; an S3 upload that keeps
failing ends the run with one clear error and nothing under the final name.

The emulators' own clients (boto3, google-cloud-storage, azure-storage-blob) set up and inspect
the buckets, independently of Beam.
"""

from __future__ import annotations

import io
import json
import re
import select
import socket
import struct
import threading
import uuid
from pathlib import Path
from typing import Any

import duckdb
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from beam_etl.run import run_spec
from beam_etl.spec import load_spec

pytestmark = pytest.mark.integration

#: The in-process FnApiRunner: the quickest DirectRunner here, and the emulator endpoints of
#: this process reach its workers.
RUN_ARGS = ["--runner=DirectRunner", "--direct_num_workers=1"]
AZURE_ACCOUNT = "devstoreaccount1"  # Azurite's account


def env(name: str, script: str) -> str:
    import os

    value = os.environ.get(name)
    if not value:
        pytest.fail(f"{name} is not set: run scripts/services/{script} and export the line it prints")
    return value


def run(tmp_path: Path, spec: dict[str, Any]):
    return run_spec(load_spec(spec), RUN_ARGS, output_dir=str(tmp_path), record_state=False)


# --------------------------------------------------------------------------- stores


class Store:
    """One fresh bucket/container on an emulator, seen through the emulator's own SDK."""

    scheme: str
    root: str  # e.g. s3://bucket
    storage: dict[str, str]  # the spec block that reaches it (with ${env:...} where possible)
    target: tuple[str, int]  # the emulator's host and port, for a proxy in between

    def put(self, key: str, data: bytes) -> None:
        raise NotImplementedError

    def objects(self) -> dict[str, int]:
        """key -> size of every object in the bucket."""
        raise NotImplementedError

    def get(self, key: str) -> bytes:
        raise NotImplementedError

    def via(self, proxy: "DroppingProxy") -> dict[str, str]:
        """A storage block that goes through ``proxy``."""
        raise NotImplementedError


class S3Store(Store):
    scheme = "s3"

    def __init__(self) -> None:
        import boto3

        self.endpoint = env("BEAM_ETL_TEST_MOTO_URL", "moto.sh")
        self.client = boto3.client("s3", endpoint_url=self.endpoint, region_name="us-east-1", aws_access_key_id="test", aws_secret_access_key="test")
        self.bucket = f"beam-etl-{uuid.uuid4().hex[:10]}"
        self.client.create_bucket(Bucket=self.bucket)
        self.root = f"s3://{self.bucket}"
        self.storage = {
            "endpoint_url": "${env:BEAM_ETL_TEST_MOTO_URL}",
            "region": "us-east-1",
            "aws_access_key_id": "test",
            "aws_secret_access_key": "test",
        }
        self.target = _host_port(self.endpoint)

    def put(self, key: str, data: bytes) -> None:
        self.client.put_object(Bucket=self.bucket, Key=key, Body=data)

    def objects(self) -> dict[str, int]:
        pages = self.client.get_paginator("list_objects_v2").paginate(Bucket=self.bucket)
        return {item["Key"]: item["Size"] for page in pages for item in page.get("Contents", [])}

    def get(self, key: str) -> bytes:
        return self.client.get_object(Bucket=self.bucket, Key=key)["Body"].read()

    def via(self, proxy: "DroppingProxy") -> dict[str, str]:
        return {**self.storage, "endpoint_url": proxy.url}

    def pending_uploads(self) -> list[str]:
        return [u["Key"] for u in self.client.list_multipart_uploads(Bucket=self.bucket).get("Uploads", [])]


class GcsStore(Store):
    scheme = "gs"

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        from google.auth.credentials import AnonymousCredentials
        from google.cloud import storage

        self.endpoint = env("BEAM_ETL_TEST_GCS_ENDPOINT", "gcs.sh")
        # The spec's storage block must be what points Beam at the emulator: start without
        # STORAGE_EMULATOR_HOST, and have it removed again after the test.
        monkeypatch.setenv("STORAGE_EMULATOR_HOST", self.endpoint)
        monkeypatch.delenv("STORAGE_EMULATOR_HOST")
        self.client = storage.Client(project="beam-etl", credentials=AnonymousCredentials(), client_options={"api_endpoint": self.endpoint})
        self.bucket = self.client.create_bucket(f"beam-etl-{uuid.uuid4().hex[:10]}")
        self.root = f"gs://{self.bucket.name}"
        self.storage = {"endpoint_url": "${env:BEAM_ETL_TEST_GCS_ENDPOINT}"}
        self.target = _host_port(self.endpoint)

    def put(self, key: str, data: bytes) -> None:
        self.bucket.blob(key).upload_from_string(data)

    def objects(self) -> dict[str, int]:
        return {blob.name: blob.size for blob in self.client.list_blobs(self.bucket)}

    def get(self, key: str) -> bytes:
        return self.bucket.blob(key).download_as_bytes()

    def via(self, proxy: "DroppingProxy") -> dict[str, str]:
        return {"endpoint_url": proxy.url}


class AzureStore(Store):
    scheme = "azure"

    def __init__(self) -> None:
        from azure.storage.blob import BlobServiceClient

        self.connection_string = env("BEAM_ETL_TEST_AZURE_CONNECTION_STRING", "azurite.sh")
        self.service = BlobServiceClient.from_connection_string(self.connection_string)
        self.name = f"beam-etl-{uuid.uuid4().hex[:10]}"
        self.container = self.service.create_container(self.name)
        self.root = f"azure://{AZURE_ACCOUNT}/{self.name}"
        self.storage = {"connection_string": "${env:BEAM_ETL_TEST_AZURE_CONNECTION_STRING}"}
        endpoint = re.search(r"BlobEndpoint=(http://[^/;]+)", self.connection_string)
        assert endpoint, "the Azurite connection string has no BlobEndpoint=http://host:port/..."
        self.target = _host_port(endpoint.group(1))

    def put(self, key: str, data: bytes) -> None:
        self.container.upload_blob(key, data)

    def objects(self) -> dict[str, int]:
        return {blob.name: blob.size for blob in self.container.list_blobs()}

    def get(self, key: str) -> bytes:
        return self.container.download_blob(key).readall()

    def via(self, proxy: "DroppingProxy") -> dict[str, str]:
        host, port = self.target
        return {"connection_string": self.connection_string.replace(f"{host}:{port}", f"127.0.0.1:{proxy.port}")}


def _host_port(url: str) -> tuple[str, int]:
    match = re.match(r"^https?://([^:/]+):(\d+)", url)
    assert match, f"expected http://host:port, got {url}"
    return match.group(1), int(match.group(2))


@pytest.fixture(params=["s3", "gs", "azure"])
def store(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> Store:
    if request.param == "s3":
        return S3Store()
    if request.param == "gs":
        return GcsStore(monkeypatch)
    return AzureStore()


def temp_objects(store: Store) -> list[str]:
    return [key for key in store.objects() if ".beam_etl-temp-" in key]


def read_parquet_objects(store: Store, prefix: str) -> pa.Table:
    keys = sorted(key for key in store.objects() if key.startswith(prefix))
    return pa.concat_tables([pq.read_table(io.BytesIO(store.get(key))) for key in keys])


# --------------------------------------------------------------------------- a dropping proxy


class DroppingProxy:
    """A TCP proxy on 127.0.0.1 that resets connections in the middle of big requests.

    A connection that has sent more than ``drop_after`` bytes towards the server is reset
    (RST both ways, mid-request); the first ``skip`` such connections pass untouched, then at
    most ``drops`` are cut (None: every one).
    """

    def __init__(self, target: tuple[str, int], drop_after: int, drops: int | None = 1, skip: int = 0):
        self.target, self.drop_after, self.drops_left, self.skip = target, drop_after, drops, skip
        self.dropped = 0
        self._lock = threading.Lock()
        self._server = socket.create_server(("127.0.0.1", 0))
        self.port = self._server.getsockname()[1]
        threading.Thread(target=self._accept, daemon=True).start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def close(self) -> None:
        self._server.close()

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self._server.accept()
            except OSError:
                return
            threading.Thread(target=self._serve, args=(client,), daemon=True).start()

    def _decide(self, sent: int, decided: bool) -> tuple[bool, bool]:
        """(cut now, decided) for a connection that has sent ``sent`` bytes."""
        with self._lock:
            if decided or sent <= self.drop_after:
                return False, decided
            if self.skip > 0:
                self.skip -= 1
                return False, True
            if self.drops_left is not None:
                if self.drops_left <= 0:
                    return False, True
                self.drops_left -= 1
            self.dropped += 1
            return True, True

    def _serve(self, client: socket.socket) -> None:
        # One thread per connection, both directions in one select loop: closing a socket that
        # another thread is blocked reading from would not reset it.
        upstream = socket.create_connection(self.target)
        peers = {client: upstream, upstream: client}
        sent, decided = 0, False
        try:
            while True:
                readable, _, _ = select.select(list(peers), [], [], 120)
                if not readable:
                    return
                for sock in readable:
                    data = sock.recv(1 << 16)
                    if not data:
                        return
                    if sock is client:
                        sent += len(data)
                        cut, decided = self._decide(sent, decided)
                        if cut:
                            for end in (client, upstream):
                                end.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
                            return
                    peers[sock].sendall(data)
        except OSError:
            pass
        finally:
            client.close()
            upstream.close()


@pytest.fixture()
def proxies():
    made: list[DroppingProxy] = []

    def make(target: tuple[str, int], **kwargs: Any) -> DroppingProxy:
        made.append(DroppingProxy(target, **kwargs))
        return made[-1]

    yield make
    for proxy in made:
        proxy.close()


# --------------------------------------------------------------------------- read, write, atomic


def _inputs(local: Path, store: Store) -> None:
    """Two CSV files (one with an id that is not an int64), a non-CSV file the glob must skip,
    two Parquet files and a _SUCCESS marker the directory read must skip — locally and on the store.
    (Few files: Beam's S3 filesystem builds a new boto3 client, ~0.3 s here, per file operation.)"""
    rng = np.random.default_rng(7)
    (local / "orders").mkdir(parents=True)
    (local / "customers").mkdir(parents=True)
    files: dict[str, bytes] = {}
    order_id = 0
    for part in range(2):
        lines = ["id,customer,amount"]
        for _ in range(60):
            order_id += 1
            ident = "not-a-number" if order_id == 65 else str(order_id)
            lines.append(f"{ident},c{int(rng.integers(0, 12))},{rng.integers(1, 10_000) / 100}")
        files[f"orders/orders-{part}.csv"] = ("\n".join(lines) + "\n").encode()
    files["orders/notes.txt"] = b"not,a,csv\n"
    for part in range(2):
        table = pa.table({"customer": [f"c{i}" for i in range(part * 6, part * 6 + 6)], "country": [["US", "CA"][part]] * 6})
        buffer = io.BytesIO()
        pq.write_table(table, buffer)
        files[f"customers/part-{part}.parquet"] = buffer.getvalue()
    files["customers/_SUCCESS"] = b""
    for key, data in files.items():
        (local / key).write_bytes(data)
        store.put(f"in/{key}", data)


def _spec(store: Store, *, fail: bool = False) -> dict[str, Any]:
    steps: list[dict[str, Any]] = [{"name": "joined", "type": "join", "left": "orders", "right": "customers", "on": {"customer": "customer"}, "how": "inner"}]
    if fail:  # a second run whose rows break a rule: the run fails while writing
        steps.append({"name": "strict", "type": "validate", "input": "joined", "on_error": "fail", "rules": {"amount": {"max": 50}}})
    return {
        "name": f"cloud_{store.scheme}",
        "sources": {
            "orders": {"type": "csv", "path": f"{store.root}/in/orders/*.csv", "schema": {"id": "int64", "amount": "float64"}, "storage": store.storage},
            "customers": {"type": "parquet", "path": f"{store.root}/in/customers/", "storage": store.storage},
        },
        "steps": steps,
        # The sink repeats the block (Beam has one configuration per store and pipeline); the
        # DLQ has no block and uses the same configuration.
        "sinks": {"out": {"type": "parquet", "input": steps[-1]["name"], "path": f"{store.root}/out/", "storage": store.storage}},
        "dlq": {"type": "ndjson", "path": f"{store.root}/dlq/"},
    }


def test_reads_csv_glob_and_parquet_dir_writes_parquet_atomically(tmp_path: Path, store: Store) -> None:
    local = tmp_path / "local"
    _inputs(local, store)

    report = run(tmp_path / "run1", _spec(store))
    assert report.ok, report.error

    # The output equals DuckDB's join of the same files (the bad id row left through the DLQ).
    got = read_parquet_objects(store, "out/").select(["id", "customer", "amount", "country"]).to_pylist()
    oracle = duckdb.sql(
        f"""SELECT CAST(o.id AS BIGINT) AS id, o.customer, CAST(o.amount AS DOUBLE) AS amount, c.country
            FROM read_csv('{local}/orders/*.csv', all_varchar = true) o
            JOIN read_parquet('{local}/customers/*.parquet') c USING (customer)
            WHERE TRY_CAST(o.id AS BIGINT) IS NOT NULL"""
    ).fetchall()
    assert len(oracle) == 119
    assert sorted((r["id"], r["customer"], r["amount"], r["country"]) for r in got) == sorted(oracle)

    dlq_keys = [key for key in store.objects() if key.startswith("dlq/")]
    dlq = [json.loads(line) for key in dlq_keys for line in store.get(key).decode().splitlines() if line]
    assert [(row["error_type"], json.loads(row["record"])["id"]) for row in dlq] == [("schema.coerce", "not-a-number")]
    assert f"{store.root}/in/orders/orders-1.csv" in dlq[0]["source"]

    # Atomic: only final names are visible after success, no temp object is left anywhere.
    first = store.objects()
    outputs = {key: size for key, size in first.items() if key.startswith("out/")}
    assert outputs and all(re.fullmatch(r"out/part-\d{5}-of-\d{5}\.parquet", key) for key in outputs), outputs
    assert temp_objects(store) == []

    # A rerun that fails while writing (mode overwrite) leaves the first run's output as it was:
    # nothing renamed, nothing deleted; whatever it uploaded stays in its hidden temp directory.
    failed = run(tmp_path / "run2", _spec(store, fail=True))
    assert failed.status == "failed"
    assert failed.error.startswith("step 'strict' failed:") and "greater than max 50" in failed.error
    after = store.objects()
    assert {key: size for key, size in after.items() if key.startswith("out/") and ".beam_etl-temp-" not in key} == outputs
    assert read_parquet_objects(store, "out/part-").num_rows == 119


# --------------------------------------------------------------------------- faults


@pytest.fixture(scope="module")
def big_parquet(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, pa.Table]:
    """~25 MB of incompressible rows: an S3 upload of 5 MiB parts, two GCS 16 MiB chunks."""
    rng = np.random.default_rng(11)
    rows = 1_500_000
    table = pa.table({"id": np.arange(rows), "x": rng.random(rows)})
    path = tmp_path_factory.mktemp("big") / "big.parquet"
    pq.write_table(table, path, compression="none", row_group_size=500_000)
    return path, table


def _upload_spec(store: Store, source: Path, storage: dict[str, str]) -> dict[str, Any]:
    return {
        "name": f"upload_{store.scheme}",
        "sources": {"big": {"type": "parquet", "path": str(source)}},
        "sinks": {"out": {"type": "parquet", "input": "big", "path": f"{store.root}/out/", "num_shards": 1, "compression": "none", "storage": storage}},
    }


def test_dropped_connection_during_upload_is_retried_and_nothing_is_lost(tmp_path: Path, store: Store, big_parquet, proxies) -> None:
    source, table = big_parquet
    # S3: cut the second 5 MiB part of the multipart upload; GCS: the second 16 MiB chunk of the
    # resumable upload; Azure (one put below 64 MiB): the upload itself. The Azure SDK waits
    # ~15 s before its first retry.
    proxy = proxies(store.target, drop_after=2 << 20, drops=1, skip=0 if store.scheme == "azure" else 1)

    report = run(tmp_path, _upload_spec(store, source, store.via(proxy)))

    assert proxy.dropped == 1, "the proxy never cut an upload: the test did not test anything"
    assert report.ok, report.error
    objects = store.objects()
    assert list(objects) == ["out/part-00000-of-00001.parquet"], objects
    assert read_parquet_objects(store, "out/").sort_by("id").equals(table)
    if isinstance(store, S3Store):
        assert store.pending_uploads() == []


@pytest.mark.parametrize("store", ["s3"], indirect=True)
def test_s3_upload_that_keeps_failing_fails_clearly_with_nothing_under_the_final_name(
    tmp_path: Path, store: S3Store, big_parquet, proxies, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("AWS_MAX_ATTEMPTS", "2")  # boto3's own knob: give up after one retry
    source, _ = big_parquet
    proxy = proxies(store.target, drop_after=2 << 20, drops=None)

    report = run(tmp_path, _upload_spec(store, source, store.via(proxy)))

    assert report.status == "failed"
    assert proxy.dropped >= 2  # the part upload and boto3's retry of it
    error = report.error or ""
    assert error.startswith(f"sink 'out': writing a temp file under '{store.root}/out/.beam_etl-temp-"), error
    cause = re.search(r"' failed \((.*?)\); nothing was renamed into '" + re.escape(f"{store.root}/out/") + "'", error)
    assert cause and re.search(r"reset|disconnected|closed|aborted", cause.group(1), re.I), error  # the network, named
    assert "\n" not in error
    # Nothing under a final name; what the failed upload left (an unfinished multipart upload)
    # is under the hidden temp directory only, which readers skip.
    leftovers = list(store.objects()) + store.pending_uploads()
    assert leftovers and all(key.startswith("out/.beam_etl-temp-") for key in leftovers), leftovers


# --------------------------------------------------------------------------- the PTransforms


def test_ptransforms_configured_by_env_and_pipeline_options(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A hand-written pipeline: GCS found through STORAGE_EMULATOR_HOST, Azure through Beam's
    --azure_connection_string and Beam's own azfs:// spelling; no storage blocks."""
    import apache_beam as beam
    from apache_beam.options.pipeline_options import PipelineOptions
    from apache_beam.testing.util import assert_that, equal_to

    from beam_etl.io.files import ReadParquet, WriteToFiles

    gcs, azure = GcsStore(monkeypatch), AzureStore()
    monkeypatch.setenv("STORAGE_EMULATOR_HOST", gcs.endpoint)
    expected = pa.table({"id": list(range(30)), "name": [f"n{i}" for i in range(30)]})
    for part in range(3):
        buffer = io.BytesIO()
        pq.write_table(expected.slice(part * 10, 10), buffer)
        gcs.put(f"in/part-{part}.parquet", buffer.getvalue())

    options = PipelineOptions([*RUN_ARGS, f"--azure_connection_string={azure.connection_string}"])
    with beam.Pipeline(options=options) as pipeline:
        read = pipeline | ReadParquet(f"{gcs.root}/in/")
        written = read.main | WriteToFiles(f"azfs://{AZURE_ACCOUNT}/{azure.name}/copy/", "ndjson", num_shards=2)
        final = f"azure://{AZURE_ACCOUNT}/{azure.name}/copy/part-0000{{}}-of-00002.ndjson"
        assert_that(written.main, equal_to([final.format(0), final.format(1)]))

    rows = [json.loads(line) for key in azure.objects() for line in azure.get(key).decode().splitlines()]
    assert sorted(rows, key=lambda row: row["id"]) == expected.to_pylist()
    assert sorted(azure.objects()) == ["copy/part-00000-of-00002.ndjson", "copy/part-00001-of-00002.ndjson"]
