"""beam_etl.io.cloud without services: path and storage-block checks, how a block becomes
Beam's pipeline options, conflicts between entries, secrets kept out of messages, azure://."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from beam_etl.errors import SinkError, SourceError, SpecError
from beam_etl.io import cloud
from beam_etl.io.cloud import StorageOptions, beam_path, check_storage, configure_pipeline, scheme_of
from beam_etl.spec import load_spec

SECRET = "s3cr3t-value-never-printed"
AZURITE = (
    "DefaultEndpointsProtocol=http;AccountName=devstoreaccount1;AccountKey="
    "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw==;"
    "BlobEndpoint=http://127.0.0.1:1/devstoreaccount1;"  # nothing listens on port 1
)


@pytest.fixture()
def no_preflight(monkeypatch: pytest.MonkeyPatch) -> None:
    """Configuration logic only: skip the listing that needs a reachable store."""
    monkeypatch.setattr(cloud, "_preflight", lambda *args, **kwargs: None)


@pytest.mark.parametrize(
    "path, scheme, beam",
    [
        ("s3://bucket/key.csv", "s3", "s3://bucket/key.csv"),
        ("gs://bucket/dir/", "gs", "gs://bucket/dir/"),
        ("azure://acct/box/x.parquet", "azure", "azure://acct/box/x.parquet"),
        ("azfs://acct/box/x.parquet", "azure", "azure://acct/box/x.parquet"),
        ("data/x.csv", None, "data/x.csv"),
        ("/abs/x.csv", None, "/abs/x.csv"),
        ("hdfs://nn/x", "hdfs", "hdfs://nn/x"),
    ],
)
def test_scheme_and_beam_path(path: str, scheme: str | None, beam: str) -> None:
    assert scheme_of(path) == scheme
    assert beam_path(path) == beam


@pytest.mark.parametrize(
    "paths, storage, message",
    [
        (["s3://b/x.csv"], {"endpoint_url": "http://h:1", "region": "eu-west-1", "aws_secret_access_key": SECRET}, None),
        (["gs://b/x/"], {"endpoint_url": "http://h:1"}, None),
        (["azure://acct/box/x/"], {"connection_string": SECRET}, None),
        (["azure://acct/box/x/"], {"account_url": "https://acct.blob.core.windows.net", "managed_identity_client_id": "id"}, None),
        (["data/x.csv"], {"region": "eu-west-1"}, "is not one: remove the storage block"),
        (["s3://b/x.csv", "gs://b/y.csv"], {"region": "eu-west-1"}, "split them into one entry per store"),
        (["s3://b/x.csv", "data/y.csv"], {"region": "eu-west-1"}, "split them into one entry per store"),
        (["gs://b/x/"], {"region": "eu-west-1"}, "region do not apply to gs:// paths; gs accepts endpoint_url"),
        (["s3://b/x/"], {"connection_string": SECRET}, "connection_string do not apply to s3:// paths"),
        (["azure://acct/box/x/"], {"connection_string": SECRET, "account_url": "https://a"}, "connection_string or account_url, not both"),
        (["azure://Acct/box/x/"], None, "azure://<storage-account>/<container>/<path>"),
        (["azure://acct/"], None, "azure://<storage-account>/<container>/<path>"),
        (["s3://"], None, "names no bucket; write s3://<bucket>/<path>"),
        (["gs:///x"], None, "names no bucket"),
        (["data/x.csv", "s3://b/y"], None, None),
    ],
)
def test_check_storage(paths: list[str], storage: dict | None, message: str | None) -> None:
    model = StorageOptions.model_validate(storage) if storage is not None else None
    if message is None:
        check_storage(paths, model)
        return
    with pytest.raises(ValueError) as info:
        check_storage(paths, model)
    assert message in str(info.value)
    assert SECRET not in str(info.value)


def _spec(source_storage: dict | None = None, sink_storage: dict | None = None, sink2_storage: dict | None = None, source_path: str = "s3://raw/a/*.csv") -> dict:
    spec = {
        "name": "cloud",
        "sources": {"a": {"type": "csv", "path": source_path, "schema": {"id": "int64"}}},
        "sinks": {"out": {"type": "parquet", "input": "a", "path": "s3://lake/out/"}},
    }
    if source_storage is not None:
        spec["sources"]["a"]["storage"] = source_storage
    if sink_storage is not None:
        spec["sinks"]["out"]["storage"] = sink_storage
    if sink2_storage is not None:
        spec["sinks"]["copy"] = {"type": "ndjson", "input": "a", "path": "s3://lake/copy/", "storage": sink2_storage}
    return spec


def test_spec_storage_block_interpolates_env_and_hides_secrets() -> None:
    block = {"endpoint_url": "${env:S3_URL}", "aws_access_key_id": "key", "aws_secret_access_key": "${env:S3_SECRET}"}
    spec = load_spec(_spec(source_storage=block), env={"S3_URL": "http://127.0.0.1:5000", "S3_SECRET": SECRET})
    storage = spec.sources["a"].storage
    assert storage.values()["aws_secret_access_key"] == SECRET
    assert storage.endpoint_url == "http://127.0.0.1:5000"
    for text in (repr(spec.sources["a"]), str(spec.sources["a"].model_dump()), str(spec.raw)):
        assert SECRET not in text
    # remote paths: only the declared columns are known before the run, so no column check fails
    assert spec.schemas["a"] is None
    # an empty value (an unset variable with an empty default) means "not configured"
    empty = load_spec(_spec(source_storage={"endpoint_url": "${env:S3_URL:-}", "region": ""}), env={})
    assert empty.sources["a"].storage.values() == {}


@pytest.mark.parametrize(
    "storage, path, message",
    [
        ({"endpont_url": "http://x"}, "sources.a.storage.endpont_url", "unknown field 'endpont_url'"),
        ({"connection_string": "x"}, "sources.a", "connection_string do not apply to s3:// paths"),
    ],
)
def test_spec_storage_errors_have_paths(storage: dict, path: str, message: str) -> None:
    with pytest.raises(SpecError) as info:
        load_spec(_spec(source_storage=storage))
    assert any(issue.path == path and message in str(issue) for issue in info.value.issues), str(info.value)


def test_block_becomes_pipeline_options_and_equal_blocks_agree(no_preflight: None) -> None:
    import apache_beam as beam
    from apache_beam.io.filesystems import FileSystems
    from apache_beam.options.pipeline_options import S3Options

    block = StorageOptions(endpoint_url="http://127.0.0.1:5000", region="eu-west-1", aws_access_key_id="k", aws_secret_access_key=SECRET, verify=False)
    pipeline = beam.Pipeline(argv=["--runner=DirectRunner"])
    configure_pipeline(pipeline, ["s3://raw/a.csv"], block)
    configure_pipeline(pipeline, ["s3://lake/out/"], block)  # the same block again: fine
    configure_pipeline(pipeline, ["s3://lake/dlq/"], None)  # no block: uses what is set
    s3 = pipeline.options.view_as(S3Options)
    assert (s3.s3_endpoint_url, s3.s3_region_name, s3.s3_access_key_id, s3.s3_secret_access_key, s3.s3_verify) == (
        "http://127.0.0.1:5000", "eu-west-1", "k", SECRET, False
    )
    # what travels to workers with the pipeline, and what driver-side listing uses
    assert pipeline.options.get_all_options()["s3_endpoint_url"] == "http://127.0.0.1:5000"
    assert FileSystems._pipeline_options is pipeline.options


@pytest.mark.parametrize(
    "argv, first, second",
    [
        ([], {"endpoint_url": "http://a:1"}, {"endpoint_url": "http://b:2"}),
        ([], {"aws_secret_access_key": SECRET}, {"aws_secret_access_key": SECRET + "-other"}),
        (["--s3_region_name=us-east-1"], {"region": "eu-west-1"}, None),
    ],
)
def test_conflicting_configuration_is_refused_without_printing_values(
    tmp_path, no_preflight: None, argv: list[str], first: dict, second: dict | None
) -> None:
    (tmp_path / "a.csv").write_text("id\n1\n")
    spec = load_spec(_spec(sink_storage=first, sink2_storage=second, source_path=str(tmp_path / "a.csv")))
    with pytest.raises(SinkError) as info:
        from beam_etl.run import run_spec

        run_spec(spec, ["--runner=DirectRunner", *argv], output_dir=str(tmp_path), record_state=False)  # fails while building
    message = str(info.value)
    assert "differs from the s3:// " in message and "give every entry on this store the same storage block" in message
    for value in (SECRET, "http://a:1", "http://b:2", "eu-west-1", "us-east-1"):
        assert value not in message


def test_azure_connection_string_and_account_url_conflict(no_preflight: None) -> None:
    import apache_beam as beam

    pipeline = beam.Pipeline(argv=["--blob_service_endpoint=https://acct.blob.core.windows.net"])
    with pytest.raises(SinkError, match="both a connection string and an account URL"):
        configure_pipeline(pipeline, ["azure://acct/box/x/"], StorageOptions(connection_string=SECRET), error=SinkError)


def test_gcs_endpoint_goes_to_the_emulator_variable(no_preflight: None, monkeypatch: pytest.MonkeyPatch) -> None:
    import apache_beam as beam
    import os

    monkeypatch.setenv("STORAGE_EMULATOR_HOST", "")
    pipeline = beam.Pipeline(argv=[])
    configure_pipeline(pipeline, ["gs://b/x/"], StorageOptions(endpoint_url="http://127.0.0.1:9023"))
    assert os.environ["STORAGE_EMULATOR_HOST"] == "http://127.0.0.1:9023"
    configure_pipeline(pipeline, ["gs://b/y/"], StorageOptions(endpoint_url="http://127.0.0.1:9023/"))
    with pytest.raises(SinkError, match="one GCS endpoint per process"):
        configure_pipeline(pipeline, ["gs://b/z/"], StorageOptions(endpoint_url="http://127.0.0.1:9999"), error=SinkError)


def test_azure_scheme_is_served_with_azure_paths() -> None:
    from apache_beam.io.filesystems import FileSystems

    from beam_etl.io import files_read  # noqa: F401  (registers azure://)

    filesystem = FileSystems.get_filesystem("azure://acct/box/x.csv")
    assert filesystem.scheme() == "azure"
    assert FileSystems.join("azure://acct/box/dir", "part-0.csv") == "azure://acct/box/dir/part-0.csv"
    assert FileSystems.split("azure://acct/box/dir/part-0.csv") == ("azure://acct/box/dir", "part-0.csv")
    # Beam's own azfs:// filesystem is still there for Beam's transforms
    assert FileSystems.get_filesystem("azfs://acct/box/x.csv").scheme() == "azfs"


def test_ptransforms_validate_storage_eagerly() -> None:
    from beam_etl.io.files import ReadFromFiles, WriteToFiles

    with pytest.raises(ValueError, match="do not apply to gs:// paths"):
        ReadFromFiles("gs://b/x/", "csv", storage={"region": "eu-west-1"})
    with pytest.raises(ValidationError):
        WriteToFiles("s3://b/x/", "csv", storage={"no_such_key": 1})
    with pytest.raises(ValueError, match="not an Azure Blob path"):
        WriteToFiles("azfs://UPPER/box/x/", "csv")


@pytest.mark.parametrize(
    "path, storage, message",
    [
        (
            "s3://bucket/in/*.csv",
            {"endpoint_url": "http://127.0.0.1:1", "aws_access_key_id": "k", "aws_secret_access_key": SECRET, "region": "us-east-1"},
            "source 'orders': cannot list s3://bucket/in/ (EndpointConnectionError: ",
        ),
        ("azure://devstoreaccount1/box/in/", {"connection_string": AZURITE}, "source 'orders': cannot list azure://devstoreaccount1/box/in/ (ServiceRequestError: "),
        ("azure://otheraccount/box/in/", {"connection_string": AZURITE}, "names storage account 'otheraccount' but the connection is to account 'devstoreaccount1'"),
        ("azure://devstoreaccount1/box/in/", None, "has no connection configured; set storage.connection_string"),
    ],
)
def test_unreachable_or_misconfigured_store_fails_at_build_in_seconds(
    monkeypatch: pytest.MonkeyPatch, path: str, storage: dict | None, message: str
) -> None:
    """Beam's own listing would retry these with backoff for minutes."""
    import time

    import apache_beam as beam

    monkeypatch.delenv("AZURE_STORAGE_CONNECTION_STRING", raising=False)
    started = time.monotonic()
    with pytest.raises(SourceError) as info:
        configure_pipeline(beam.Pipeline(argv=[]), [path], StorageOptions.model_validate(storage) if storage else None, name="orders", error=SourceError)
    assert message in str(info.value)
    assert SECRET not in str(info.value)
    assert time.monotonic() - started < 30
