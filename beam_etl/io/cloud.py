"""Cloud object stores for every file source and sink: ``s3://``, ``gs://`` and ``azure://``.

Reads and writes go through Beam's own filesystems (``apache_beam.io.aws``,
``apache_beam.io.gcp.gcsfilesystem``, ``apache_beam.io.azure``), so every file format, the
byte-range splits and the atomic temp-then-rename writes of :mod:`beam_etl.io.files` work on
them unchanged. This module only says how to reach the store, in one place:

1. a ``storage:`` block next to the ``path`` of a file source or sink (values may be
   ``${env:...}``/``${file:...}``; they are never logged and print as ``**********``)::

       sources:
         orders:
           type: csv
           path: s3://raw/orders/*.csv
           storage: {endpoint_url: "${env:S3_ENDPOINT}", region: eu-west-1,
                     aws_access_key_id: "${env:AWS_ACCESS_KEY_ID}",
                     aws_secret_access_key: "${env:AWS_SECRET_ACCESS_KEY}"}
       sinks:
         lake:  {type: parquet, input: orders, path: "gs://lake/orders/",
                 storage: {endpoint_url: "${env:GCS_EMULATOR:-}"}}
         azure: {type: parquet, input: orders, path: "azure://myaccount/curated/orders/",
                 storage: {connection_string: "${env:AZURE_STORAGE_CONNECTION_STRING}"}}

2. Beam's pipeline options, passed through unchanged: ``--s3_endpoint_url``,
   ``--s3_region_name``, ``--azure_connection_string``, ``--blob_service_endpoint`` ...
3. what the SDKs read from the environment themselves: ``AWS_ENDPOINT_URL_S3``,
   ``AWS_ACCESS_KEY_ID``, ``AWS_DEFAULT_REGION``, profiles and instance roles (boto3);
   Application Default Credentials and ``STORAGE_EMULATOR_HOST`` (GCS);
   ``AZURE_STORAGE_CONNECTION_STRING`` (Azure).

Beam builds one client configuration per scheme for a whole pipeline, so a ``storage:`` block
configures every path of its scheme in that pipeline; two entries that disagree are an error
(give them the same block, e.g. with a YAML anchor ``storage: &s3 {...}`` / ``storage: *s3``).

When a pipeline is built, each entry's bucket is listed once with short timeouts and no
retries, so a wrong endpoint, missing credentials, a missing bucket or a denied listing fail in
seconds with the fix (Beam's own listing retries such errors with backoff for minutes).

Paths: ``s3://<bucket>/<key>``, ``gs://<bucket>/<object>``,
``azure://<storage-account>/<container>/<blob>`` (Beam's own ``azfs://`` spelling is accepted
and read as ``azure://``). ``azure://`` is served by :func:`register_filesystems`: Beam's Azure
filesystem under that scheme, with ``exists()`` fixed (Beam 2.77's raises for a missing blob).

Example:
    >>> check_storage(["s3://raw/orders/"], StorageOptions(region="eu-west-1"))
    >>> beam_path("azfs://acct/box/data.csv")
    'azure://acct/box/data.csv'
    >>> scheme_of("gs://lake/x.parquet"), scheme_of("data/x.csv")
    ('gs', None)
"""

from __future__ import annotations

import importlib
import logging
import os
import re
import threading
from typing import Any, Iterable, Mapping

from pydantic import SecretStr, field_validator

from beam_etl.errors import BeamEtlError
from beam_etl.models import StrictModel

__all__ = [
    "CLOUD_SCHEMES",
    "StorageOptions",
    "scheme_of",
    "beam_path",
    "check_storage",
    "storage_options",
    "configure_pipeline",
    "register_filesystems",
]

log = logging.getLogger(__name__)

#: The object-store schemes this module configures.
CLOUD_SCHEMES = ("s3", "gs", "azure")

# storage key -> the Beam pipeline option it sets, per scheme. GCS has no endpoint option in
# Beam: its client library reads STORAGE_EMULATOR_HOST (see _use_gcs_endpoint).
_BEAM_OPTIONS: dict[str, dict[str, str]] = {
    "s3": {
        "endpoint_url": "s3_endpoint_url",
        "region": "s3_region_name",
        "aws_access_key_id": "s3_access_key_id",
        "aws_secret_access_key": "s3_secret_access_key",
        "aws_session_token": "s3_session_token",
        "verify": "s3_verify",
    },
    "gs": {"endpoint_url": "STORAGE_EMULATOR_HOST"},
    "azure": {
        "connection_string": "azure_connection_string",
        "account_url": "blob_service_endpoint",
        "managed_identity_client_id": "azure_managed_identity_client_id",
    },
}

# scheme -> (Beam filesystem module, client library module, beam-etl extra to install)
_EXTRAS: dict[str, tuple[str, str, str]] = {
    "s3": ("apache_beam.io.aws.s3filesystem", "boto3", "aws"),
    "gs": ("apache_beam.io.gcp.gcsfilesystem", "google.cloud.storage", "gcp"),
    "azure": ("apache_beam.io.azure.blobstoragefilesystem", "azure.storage.blob", "azure"),
}

_SCHEME = re.compile(r"^([a-zA-Z][-a-zA-Z0-9+.]*)://")
# Beam's own rules for azfs paths (storage account 3-24 lowercase letters/digits; container
# 3-63 of lowercase letters, digits and single dashes).
_AZURE_PATH = re.compile(r"^azure://([a-z0-9]{3,24})/([a-z0-9](?![a-z0-9-]*--[a-z0-9-]*)[a-z0-9-]{1,61}[a-z0-9])(/.*)?$")
_BUCKET_PATH = re.compile(r"^(s3|gs)://([^/*?\[\]]+)(/.*)?$")


# --------------------------------------------------------------------------- paths


def scheme_of(path: str) -> str | None:
    """``s3``, ``gs``, ``azure`` (also for ``azfs://``), another URL scheme, or None for a local path."""
    match = _SCHEME.match(path)
    if match is None:
        return None
    scheme = match.group(1).lower()
    return "azure" if scheme == "azfs" else scheme


def beam_path(path: str) -> str:
    """The path as Beam's filesystems here take it: ``azfs://`` is spelled ``azure://``."""
    return "azure://" + path[len("azfs://") :] if path.lower().startswith("azfs://") else path


def _check_path(path: str) -> None:
    scheme = scheme_of(path)
    if scheme == "azure":
        if not _AZURE_PATH.match(beam_path(path)):
            raise ValueError(
                f"'{path}' is not an Azure Blob path; write azure://<storage-account>/<container>/<path> "
                "(account: 3-24 lowercase letters or digits; container: 3-63 lowercase letters, digits or dashes)"
            )
    elif scheme in ("s3", "gs") and not _BUCKET_PATH.match(path):
        raise ValueError(f"'{path}' names no bucket; write {scheme}://<bucket>/<path>")


# --------------------------------------------------------------------------- the storage block


class StorageOptions(StrictModel):
    """Spec block ``storage:`` — how to reach the object store of an entry's ``path``.

    Which keys apply depends on the path's scheme:

    - ``s3://``: ``endpoint_url`` (MinIO, moto, LocalStack ...), ``region``,
      ``aws_access_key_id``, ``aws_secret_access_key``, ``aws_session_token``, ``verify``
      (false, or a CA bundle path);
    - ``gs://``: ``endpoint_url`` (an emulator such as gcp-storage-emulator; requests are then
      anonymous). Credentials are Google's Application Default Credentials;
    - ``azure://``: ``connection_string``, or ``account_url`` (with Azure's default credential
      chain, optionally ``managed_identity_client_id``).
    """

    endpoint_url: str | None = None
    region: str | None = None
    aws_access_key_id: str | None = None
    aws_secret_access_key: SecretStr | None = None
    aws_session_token: SecretStr | None = None
    verify: bool | str | None = None
    connection_string: SecretStr | None = None
    account_url: str | None = None
    managed_identity_client_id: str | None = None

    @field_validator("*", mode="before")
    @classmethod
    def _empty_is_unset(cls, value: Any) -> Any:
        # "${env:S3_ENDPOINT:-}" with the variable unset means "not configured", not "".
        return None if isinstance(value, str) and not value.strip() else value

    def values(self) -> dict[str, Any]:
        """The keys that are set, secrets revealed (for the clients only; never log this)."""
        out: dict[str, Any] = {}
        for key in type(self).model_fields:
            value = getattr(self, key)
            if value is None:
                continue
            out[key] = value.get_secret_value() if isinstance(value, SecretStr) else value
        return out


def check_storage(paths: Iterable[str], storage: StorageOptions | None) -> None:
    """Check the paths' shape and that ``storage`` fits their scheme; ValueError says the fix.

    Args:
        paths: the entry's path(s).
        storage: its ``storage:`` block, or None.
    """
    paths = list(paths)
    for path in paths:
        _check_path(path)
    if storage is None:
        return
    schemes = {scheme_of(path) for path in paths}
    cloud = sorted(s for s in schemes if s in CLOUD_SCHEMES)
    if not cloud:
        raise ValueError(
            f"storage applies to s3://, gs:// and azure:// paths, but {', '.join(repr(p) for p in paths)} "
            "is not one: remove the storage block"
        )
    if len(schemes) > 1:
        raise ValueError(
            f"storage is given for paths on several stores ({', '.join(sorted(str(s) for s in schemes))}); "
            "split them into one entry per store"
        )
    scheme = cloud[0]
    allowed = _BEAM_OPTIONS[scheme]
    unknown = sorted(set(storage.values()) - set(allowed))
    if unknown:
        raise ValueError(
            f"storage key(s) {', '.join(unknown)} do not apply to {scheme}:// paths; "
            f"{scheme} accepts {', '.join(allowed)}"
        )
    if storage.connection_string is not None and storage.account_url is not None:
        raise ValueError("storage: give connection_string or account_url, not both")


def storage_options(storage: StorageOptions | Mapping[str, Any] | None, paths: Iterable[str]) -> StorageOptions | None:
    """``storage`` as a :class:`StorageOptions` (a dict is validated), or None; the paths and
    the block are checked with :func:`check_storage`."""
    model = None
    if storage is not None:
        model = storage if isinstance(storage, StorageOptions) else StorageOptions.model_validate(dict(storage))
    check_storage(paths, model)
    return model


# --------------------------------------------------------------------------- configuring Beam


def configure_pipeline(
    pipeline: Any,
    paths: Iterable[str],
    storage: StorageOptions | None = None,
    *,
    name: str = "files",
    kind: str = "source",
    error: type[BeamEtlError] = BeamEtlError,
) -> None:
    """Make ``paths`` readable/writable in ``pipeline`` (and in this process, for build-time listing).

    Checks the Beam extra of each store is installed, applies ``storage`` to the pipeline's
    options (they travel to the workers with the pipeline), points GCS at an emulator when
    one is configured, registers ``azure://``, and lists one key of each bucket with short
    timeouts and no retries: a wrong endpoint, missing credentials, a missing bucket or a
    denied listing fail here in seconds, with the fix, where Beam's own listing would retry
    with backoff for minutes. Called by :class:`~beam_etl.io.files.ReadFromFiles`
    and :class:`~beam_etl.io.files.WriteToFiles` in ``expand``.

    Args:
        pipeline: a ``beam.Pipeline`` or its ``PipelineOptions``.
        paths: the entry's paths (already through :func:`beam_path`).
        storage: the entry's ``storage:`` block.
        name: the source or sink name, for messages.
        kind: ``source`` or ``sink``, for messages.
        error: the exception class to raise (``SourceError``/``SinkError``).

    Raises:
        ``error`` when an extra is missing, when ``storage`` disagrees with what another
        entry or a pipeline option already configured for the same store, or when the
        bucket cannot be listed.

    Example:
        >>> import apache_beam as beam  # doctest: +SKIP
        >>> p = beam.Pipeline()  # doctest: +SKIP
        >>> configure_pipeline(p, ["s3://raw/x.csv"], StorageOptions(endpoint_url="http://127.0.0.1:5000"))  # doctest: +SKIP
    """
    from apache_beam.io.filesystems import FileSystems
    from apache_beam.options.pipeline_options import PipelineOptions

    paths = list(paths)
    schemes = sorted({s for s in map(scheme_of, paths) if s in CLOUD_SCHEMES})
    if not schemes:
        return
    options = pipeline if isinstance(pipeline, PipelineOptions) else pipeline.options
    for scheme in schemes:
        _require_extra(scheme, name, kind, error)
    register_filesystems()
    if storage is not None:
        scheme = schemes[0]  # check_storage allows one store per storage block
        values = storage.values()
        if scheme == "gs":
            if "endpoint_url" in values:
                _set_gcs_endpoint(values["endpoint_url"], name, kind, error)
        else:
            _set_options(options, scheme, values, name, kind, error)
    if "gs" in schemes and os.environ.get("STORAGE_EMULATOR_HOST"):
        _use_anonymous_gcs_credentials()
    FileSystems.set_options(options)
    for path in paths:
        if scheme_of(path) in CLOUD_SCHEMES:
            _preflight(options, path, name, kind, error)


def _require_extra(scheme: str, name: str, kind: str, error: type[BeamEtlError]) -> None:
    beam_module, client_module, extra = _EXTRAS[scheme]
    for module in (beam_module, client_module):
        try:
            importlib.import_module(module)
        except ImportError as exc:
            raise error(
                f"{kind} '{name}': {scheme}:// paths need the {extra} extra ({exc}); "
                f"install it: pip install 'beam-etl[{extra}]'"
            ) from None


def _options_view(options: Any, scheme: str) -> Any:
    from apache_beam.options.pipeline_options import AzureOptions, S3Options

    return options.view_as(S3Options if scheme == "s3" else AzureOptions)


def _set_options(options: Any, scheme: str, values: Mapping[str, Any], name: str, kind: str, error: type[BeamEtlError]) -> None:
    view = _options_view(options, scheme)
    planned: dict[str, Any] = {}
    for key, value in values.items():
        option = _BEAM_OPTIONS[scheme][key]
        current = getattr(view, option)
        if current is not None and current != value:
            # Never print either value: they may be credentials.
            raise error(
                f"{kind} '{name}': storage.{key} differs from the {scheme}:// {key} this pipeline already uses "
                f"(set by another entry's storage block or by --{option}); Beam keeps one {scheme} configuration "
                "per pipeline, so give every entry on this store the same storage block "
                "(a YAML anchor helps: storage: &store {...} then storage: *store)"
            )
        planned[option] = value
    if scheme == "azure":
        connection = planned.get("azure_connection_string", view.azure_connection_string)
        endpoint = planned.get("blob_service_endpoint", view.blob_service_endpoint)
        if connection and endpoint:
            raise error(
                f"{kind} '{name}': azure:// has both a connection string and an account URL "
                "(--azure_connection_string and --blob_service_endpoint); keep one"
            )
    for option, value in planned.items():
        setattr(view, option, value)


def _set_gcs_endpoint(endpoint: str, name: str, kind: str, error: type[BeamEtlError]) -> None:
    # google-cloud-storage reads the emulator endpoint from the environment only; this reaches
    # this process and in-process workers (DirectRunner, Prism loopback). Remote workers need
    # STORAGE_EMULATOR_HOST in their own environment.
    current = os.environ.get("STORAGE_EMULATOR_HOST")
    if current and current.rstrip("/") != endpoint.rstrip("/"):
        raise error(
            f"{kind} '{name}': storage.endpoint_url for gs:// differs from the GCS endpoint already in use "
            "(STORAGE_EMULATOR_HOST or another entry's storage block); one GCS endpoint per process: "
            "give every gs:// entry the same endpoint_url"
        )
    os.environ["STORAGE_EMULATOR_HOST"] = endpoint


# --------------------------------------------------------------------------- preflight

_PREFLIGHT_TIMEOUT = 20  # seconds per request
_checked: set[tuple[str, str, str]] = set()  # (scheme, bucket, hash of the configuration) that listed fine


def _split_bucket(path: str) -> tuple[str, str, str]:
    """(scheme, bucket or account/container, listing prefix up to the first glob character)."""
    scheme = scheme_of(path) or ""
    rest = beam_path(path).split("://", 1)[1]
    parts = 2 if scheme == "azure" else 1
    pieces = rest.split("/", parts)
    bucket = "/".join(pieces[:parts])
    key = pieces[parts] if len(pieces) > parts else ""
    key = re.split(r"[*?\[]", key, maxsplit=1)[0]
    return scheme, bucket, key


def _preflight(options: Any, path: str, name: str, kind: str, error: type[BeamEtlError]) -> None:
    import hashlib

    scheme, bucket, prefix = _split_bucket(path)
    config = _config_fingerprint(options, scheme)
    key = (scheme, bucket, hashlib.sha256(config.encode()).hexdigest())
    if key in _checked:
        return
    try:
        {"s3": _list_s3, "gs": _list_gcs, "azure": _list_azure}[scheme](options, bucket, prefix)
    except BeamEtlError as exc:
        raise error(f"{kind} '{name}': {exc}") from None
    except Exception as exc:
        raise error(f"{kind} '{name}': cannot list {scheme}://{bucket}/{prefix} ({_describe(exc)}); {_hint(scheme, exc)}") from None
    _checked.add(key)


def _config_fingerprint(options: Any, scheme: str) -> str:
    if scheme == "gs":
        return os.environ.get("STORAGE_EMULATOR_HOST", "")
    view = _options_view(options, scheme)
    env = [os.environ.get(n, "") for n in ("AWS_ACCESS_KEY_ID", "AWS_PROFILE", "AWS_ENDPOINT_URL", "AWS_ENDPOINT_URL_S3", "AZURE_STORAGE_CONNECTION_STRING")]
    return repr([getattr(view, option, None) for option in _BEAM_OPTIONS[scheme].values()] + env)


def _describe(exc: BaseException) -> str:
    text = (str(exc).strip().splitlines() or [""])[0]
    return f"{type(exc).__name__}: {text}"[:500]


def _status(exc: BaseException) -> int | None:
    """The HTTP status of an SDK error (boto3, google-cloud, azure-core), if it has one."""
    for attribute in ("status_code", "code"):
        value = getattr(exc, attribute, None)
        if isinstance(value, int):
            return value
    response = getattr(exc, "response", None)
    if isinstance(response, dict):
        return response.get("ResponseMetadata", {}).get("HTTPStatusCode")
    return None


def _hint(scheme: str, exc: BaseException) -> str:
    status = _status(exc)
    text = f"{type(exc).__name__} {exc}".lower()
    if status == 401 or any(word in text for word in ("credential", "authenticat", "signature", "invalidaccesskey")):
        return {
            "s3": "set storage.aws_access_key_id and aws_secret_access_key (from ${env:...}), AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY, a profile or an instance role",
            "gs": "set up Application Default Credentials (gcloud auth application-default login, GOOGLE_APPLICATION_CREDENTIALS, a service account)",
            "azure": "set storage.connection_string (from ${env:...}) or AZURE_STORAGE_CONNECTION_STRING",
        }[scheme]
    if status == 404:
        return "create the bucket/container, or fix its name in the path"
    if status == 403:
        return "the credentials may not list this bucket: grant list and read/write access"
    return "check storage.endpoint_url (or the store's environment settings) and that the store is reachable"


def _list_s3(options: Any, bucket: str, prefix: str) -> None:
    import boto3
    from botocore.config import Config

    s3 = _options_view(options, "s3")
    client = boto3.session.Session().client(
        "s3",
        region_name=s3.s3_region_name,
        endpoint_url=s3.s3_endpoint_url,
        aws_access_key_id=s3.s3_access_key_id,
        aws_secret_access_key=s3.s3_secret_access_key,
        aws_session_token=s3.s3_session_token,
        verify=s3.s3_verify,
        use_ssl=not s3.s3_disable_ssl,
        config=Config(connect_timeout=5, read_timeout=_PREFLIGHT_TIMEOUT, retries={"max_attempts": 1}),
    )
    client.list_objects_v2(Bucket=bucket, Prefix=prefix, MaxKeys=1)


def _list_gcs(options: Any, bucket: str, prefix: str) -> None:
    from apache_beam.io.gcp import gcsio

    client = gcsio.create_storage_client(options)  # Beam's own client: same credentials and endpoint
    next(iter(client.list_blobs(bucket, prefix=prefix, max_results=1, timeout=_PREFLIGHT_TIMEOUT, retry=None)), None)


def _list_azure(options: Any, bucket: str, prefix: str) -> None:
    from apache_beam.io.azure import blobstorageio

    account, container = bucket.split("/", 1)
    view = _options_view(options, "azure")
    if not (view.azure_connection_string or view.blob_service_endpoint or os.environ.get("AZURE_STORAGE_CONNECTION_STRING")):
        raise BeamEtlError(
            f"azure://{account}/{container}/ has no connection configured; set storage.connection_string "
            "(from ${env:...}) or storage.account_url, --azure_connection_string, or AZURE_STORAGE_CONNECTION_STRING"
        )
    client = blobstorageio.BlobStorageIO(pipeline_options=options).client  # Beam's own client
    if client.account_name and client.account_name != account:
        # Beam copies (renames) blobs by a URL built from the path's account: they must agree.
        raise BeamEtlError(
            f"azure://{account}/{container}/ names storage account '{account}' but the connection is to "
            f"account '{client.account_name}'; write azure://{client.account_name}/{container}/..."
        )
    pages = client.get_container_client(container).list_blobs(
        name_starts_with=prefix, results_per_page=1, retry_total=0, timeout=_PREFLIGHT_TIMEOUT
    ).by_page()
    next(iter(pages), None)


_lock = threading.Lock()  # guards the one-time setups below


def _use_anonymous_gcs_credentials() -> None:
    """Requests to a GCS emulator are anonymous: skip Beam's credential lookup.

    Without credentials on the machine Beam retries ``google.auth.default()`` with backoff for
    ~20 s per process before it falls back to the same anonymous client. With an emulator
    endpoint set, record "no credentials" in Beam's credential cache up front (what its own
    lookup would end with). Credentials Beam already found are left alone.
    """
    with _lock:
        try:
            from apache_beam.internal.gcp import auth

            cache = auth._Credentials
            with cache._credentials_lock:
                if not cache._credentials_init:
                    cache._credentials = None
                    cache._credentials_init = True
        except (ImportError, AttributeError):  # a Beam without this cache: only slower
            log.debug("Beam's GCS credential cache not found; GCS emulator calls start slowly")


# --------------------------------------------------------------------------- azure://


_AZURE_FILESYSTEM: type | None = None


def register_filesystems() -> None:
    """Serve ``azure://<account>/<container>/<blob>`` paths in Beam's ``FileSystems``.

    Idempotent. Called when :mod:`beam_etl.io.files_read`/``files_write`` are imported, so
    workers that run their DoFns have the scheme too. A no-op without Beam's Azure module.
    """
    global _AZURE_FILESYSTEM
    if _AZURE_FILESYSTEM is None:
        with _lock:
            if _AZURE_FILESYSTEM is None:
                _AZURE_FILESYSTEM = _azure_filesystem_class()


def _to_azfs(path: str) -> str:
    return "azfs://" + path[len("azure://") :] if path.startswith("azure://") else path


def _to_azure(path: str) -> str:
    return "azure://" + path[len("azfs://") :] if path.startswith("azfs://") else path


def _azure_filesystem_class() -> type | None:
    """Beam's Azure filesystem under the ``azure`` scheme (defined on first use: Beam is heavy
    to import, and spec validation imports this module)."""
    try:
        from apache_beam.io.azure import blobstorageio
        from apache_beam.io.azure.blobstoragefilesystem import BlobStorageFileSystem
        from apache_beam.io.filesystem import BeamIOError, CompressionTypes, FileMetadata
    except ImportError:
        return None

    class AzureBlobFileSystem(BlobStorageFileSystem):
        """``azure://`` paths, delegated to Beam's ``azfs://`` filesystem.

        ``exists`` is re-done: Beam 2.77's turns the "blob not found" it expects into an error.
        """

        @classmethod
        def scheme(cls) -> str:
            return "azure"

        def join(self, basepath: str, *paths: str) -> str:
            return _to_azure(super().join(_to_azfs(basepath), *paths))

        def split(self, path: str) -> tuple[str, str]:
            head, tail = super().split(_to_azfs(path))
            return _to_azure(head), tail

        def _list(self, dir_or_prefix: str):
            for meta in super()._list(_to_azfs(dir_or_prefix)):
                yield FileMetadata(_to_azure(meta.path), meta.size_in_bytes, meta.last_updated_in_seconds)

        def create(self, path: str, mime_type: str = "application/octet-stream", compression_type: str = CompressionTypes.AUTO):
            return super().create(_to_azfs(path), mime_type, compression_type)

        def open(self, path: str, mime_type: str = "application/octet-stream", compression_type: str = CompressionTypes.AUTO):
            return super().open(_to_azfs(path), mime_type, compression_type)

        def copy(self, source_file_names: list[str], destination_file_names: list[str]):
            return super().copy([_to_azfs(p) for p in source_file_names], [_to_azfs(p) for p in destination_file_names])

        def rename(self, source_file_names: list[str], destination_file_names: list[str]) -> None:
            super().rename([_to_azfs(p) for p in source_file_names], [_to_azfs(p) for p in destination_file_names])

        def exists(self, path: str) -> bool:
            try:
                self._blobstorageIO().size(_to_azfs(path))
                return True
            except blobstorageio.BlobStorageError as exc:
                if exc.code == 404:
                    return False
                raise BeamIOError("Exists operation failed", {path: exc}) from exc
            except Exception as exc:
                if getattr(exc, "status_code", None) == 404:  # ResourceNotFoundError, if Beam stops wrapping it
                    return False
                raise BeamIOError("Exists operation failed", {path: exc}) from exc

        def size(self, path: str) -> int:
            return super().size(_to_azfs(path))

        def last_updated(self, path: str) -> float:
            return super().last_updated(_to_azfs(path))

        def checksum(self, path: str) -> str:
            return super().checksum(_to_azfs(path))

        def metadata(self, path: str):
            meta = super().metadata(_to_azfs(path))
            return FileMetadata(_to_azure(meta.path), meta.size_in_bytes, meta.last_updated_in_seconds)

        def delete(self, paths: list[str]) -> None:
            super().delete([_to_azfs(p) for p in paths])

        def report_lineage(self, path: str, lineage: Any) -> None:
            super().report_lineage(_to_azfs(path), lineage)

    return AzureBlobFileSystem
