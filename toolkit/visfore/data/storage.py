"""Where datasets live: local paths or fsspec URLs (``s3://``, ``gs://``, ``memory://`` ...).

A *location* is either a local path (``str`` or ``os.PathLike``) or an fsspec URL with a
protocol: ``s3://bucket/name.zarr``, ``gs://bucket/name.zarr``, ``az://container/...``,
``memory://name.zarr``. ``file://`` URLs are local paths (``file:///abs/x.zarr`` is
``/abs/x.zarr``), so everything local (directory sizes, resume, ``mkdir`` of parents)
behaves exactly as for a plain path. :func:`normalize` returns a :class:`pathlib.Path`
for local locations and the URL string for remote ones; never pass a URL through
``Path`` (``Path("s3://b/x")`` is ``s3:/b/x``).

Zarr 3 opens a URL with :class:`zarr.storage.FsspecStore` (:func:`zarr_store`), which needs
an async fsspec filesystem (s3fs, gcsfs and adlfs are; others are wrapped by zarr). The
filesystem package is an optional dependency: ``s3://`` needs ``s3fs``
(``pip install 'visfore[s3]'``), ``gs://`` ``gcsfs``, ``az://`` / ``abfs://`` ``adlfs``;
a missing one is a one-line :class:`~visfore.core.errors.VisforeError` naming the package.

Credentials and endpoints come from the usual environment of each library; nothing is
read from the command line. For S3 (s3fs on aiobotocore/botocore): ``AWS_ACCESS_KEY_ID``
/ ``AWS_SECRET_ACCESS_KEY`` / ``AWS_SESSION_TOKEN``, ``AWS_PROFILE`` with
``~/.aws/credentials`` and ``~/.aws/config``, instance roles, ``AWS_DEFAULT_REGION``,
``AWS_MAX_ATTEMPTS`` / ``AWS_RETRY_MODE``. A non-AWS endpoint (MinIO, Ceph, moto) is set
with ``AWS_ENDPOINT_URL_S3`` or ``AWS_ENDPOINT_URL`` (in that order of precedence, as in
botocore). botocore >= 1.31 reads those variables itself, but :func:`storage_options`
also passes the value explicitly as s3fs's ``endpoint_url``: s3fs then disables its
bucket-region cache (which would ask AWS for each bucket's region) and fsspec's cache of
filesystem instances, keyed by these options, never hands back a client bound to another
endpoint. ``AWS_IGNORE_CONFIGURED_ENDPOINT_URLS=true`` turns this off, as in botocore.
Any other filesystem option can be given through fsspec's own configuration, e.g.
``FSSPEC_S3='{"anon": true}'`` or ``FSSPEC_S3_REQUESTER_PAYS=true``
(https://filesystem-spec.readthedocs.io/en/latest/features.html#configuration).

Errors of the storage layer (unreachable endpoint, missing bucket, missing or refused
credentials) become one-line :class:`~visfore.core.errors.VisforeError` s through
:func:`storage_errors`, never a botocore traceback.
"""

from __future__ import annotations

import contextlib
import os
import re
from pathlib import Path
from typing import Any, Iterator, Union

from visfore.core.errors import VisforeError

__all__ = [
    "Location",
    "bucket_of",
    "check_bucket",
    "display_name",
    "exists",
    "filesystem",
    "is_storage_error",
    "is_url",
    "normalize",
    "protocol_of",
    "resolve",
    "same_location",
    "size_on_disk",
    "storage_errors",
    "storage_options",
    "zarr_store",
]

#: A dataset location as accepted by the public functions: a path or a URL string.
Location = Union[str, "os.PathLike[str]"]

# "proto://..." or a chained "proto::proto://..." URL (fsspec's URL chaining).
_URL = re.compile(r"^(?P<protocol>[A-Za-z][A-Za-z0-9+.\-]*)(?:://|::)")
#: Protocols whose first path component is a bucket / container that must exist.
_BUCKET_PROTOCOLS = ("s3", "s3a", "gs", "gcs", "az", "abfs", "abfss", "adl", "oci", "oss")
#: pip requirement to suggest for a missing filesystem package, by protocol.
_INSTALL_HINT = {"s3": "'visfore[s3]'", "s3a": "'visfore[s3]'"}


# -- what a location is ------------------------------------------------------------------
def protocol_of(location: str | os.PathLike[str]) -> str | None:
    """The URL protocol of ``location`` (lower case: ``"s3"``, ``"gs"`` ...), or None for a
    local path. A chained URL (``simplecache::s3://...``) gives its first protocol."""
    if not isinstance(location, str):
        return None
    match = _URL.match(location)
    return match.group("protocol").lower() if match else None


def is_url(location: str | os.PathLike[str]) -> bool:
    """True when ``location`` is a remote fsspec URL (any protocol but ``file``)."""
    protocol = protocol_of(location)
    return protocol is not None and protocol not in ("file", "local")


def normalize(location: str | os.PathLike[str]) -> Path | str:
    """``location`` as a :class:`~pathlib.Path` (local) or a URL string without trailing ``/``.

    ``file:///abs/x.zarr`` and ``file://rel/x.zarr`` become ``Path("/abs/x.zarr")`` and
    ``Path("rel/x.zarr")``; ``s3://bucket/x.zarr/`` becomes ``"s3://bucket/x.zarr"``.

    Raises:
        VisforeError: ``location`` is empty, is a URL with nothing after the protocol, or
            is not a str / PathLike.
    """
    if isinstance(location, os.PathLike):
        return Path(location)
    if not isinstance(location, str):
        raise VisforeError(f"a dataset location must be a path or a URL string, got {type(location).__name__}")
    if not location.strip():
        raise VisforeError("empty dataset location")
    protocol = protocol_of(location)
    if protocol in ("file", "local"):
        rest = location.split("://", 1)[1] if "://" in location else location.split("::", 1)[1]
        if rest.startswith("localhost/"):
            rest = rest[len("localhost") :]
        return Path(rest)
    if protocol is None:
        return Path(location)
    stripped = location.rstrip("/")
    if re.fullmatch(r"[^:]*(:|::[^:]*:)", stripped):
        raise VisforeError(f"{location!r} names no bucket or path after the protocol")
    return stripped


def display_name(location: str | os.PathLike[str]) -> str:
    """``location`` for messages: the path, or the URL with any ``user:password@`` removed."""
    loc = normalize(location)
    if isinstance(loc, Path):
        return str(loc)
    return re.sub(r"(://)[^/@]*@", r"\1", loc)


def resolve(location: str | os.PathLike[str]) -> str:
    """A stable string for ``location`` (config records): an absolute local path, or the URL."""
    loc = normalize(location)
    return str(loc.resolve()) if isinstance(loc, Path) else loc


def same_location(a: str | os.PathLike[str], b: str | os.PathLike[str]) -> bool:
    """Whether two locations name the same dataset (:func:`resolve` of both equal)."""
    return resolve(a) == resolve(b)


def bucket_of(location: str | os.PathLike[str]) -> str | None:
    """The bucket / container of a URL of an object store (``s3://b/x.zarr`` -> ``"b"``),
    None for local paths and for protocols without buckets (``memory://``)."""
    loc = normalize(location)
    if isinstance(loc, Path) or protocol_of(loc) not in _BUCKET_PROTOCOLS:
        return None
    rest = loc.split("://", 1)[1] if "://" in loc else ""
    rest = re.sub(r"^[^/@]*@", "", rest)
    bucket = rest.split("/", 1)[0]
    return bucket or None


# -- filesystems ------------------------------------------------------------------------
def storage_options(location: str | os.PathLike[str]) -> dict[str, Any]:
    """fsspec options visfore adds for ``location``'s protocol (see the module docstring).

    For ``s3://`` / ``s3a://``: ``{"endpoint_url": ...}`` from ``AWS_ENDPOINT_URL_S3`` or
    ``AWS_ENDPOINT_URL`` when one is set (and ``AWS_IGNORE_CONFIGURED_ENDPOINT_URLS`` is
    not true); otherwise, and for other protocols, ``{}`` (each library reads its own
    environment and fsspec's ``FSSPEC_<PROTOCOL>...`` variables).
    """
    options: dict[str, Any] = {}
    if protocol_of(location) in ("s3", "s3a"):
        ignore = os.environ.get("AWS_IGNORE_CONFIGURED_ENDPOINT_URLS", "").strip().lower()
        endpoint = os.environ.get("AWS_ENDPOINT_URL_S3") or os.environ.get("AWS_ENDPOINT_URL")
        if endpoint and ignore != "true":
            options["endpoint_url"] = endpoint
    return options


def _check_protocol(location: str) -> None:
    """Raise VisforeError when fsspec does not know the protocol or its package is missing."""
    import fsspec  # lazy: fsspec is needed only for URLs (with the optional visfore[s3] extra)

    protocol = protocol_of(location)
    assert protocol is not None
    try:
        fsspec.get_filesystem_class(protocol)
    except ImportError:
        from fsspec.registry import known_implementations

        cls = known_implementations.get(protocol, {}).get("class", "")
        package = cls.split(".", 1)[0] if cls else f"an fsspec implementation of {protocol}://"
        hint = _INSTALL_HINT.get(protocol, package)
        raise VisforeError(
            f"{display_name(location)}: {protocol}:// URLs need the package {package}; "
            f"install it with pip install {hint}"
        ) from None
    except ValueError:
        raise VisforeError(
            f"{display_name(location)}: unknown storage protocol {protocol!r} (fsspec has no "
            "implementation of it); use a local path or a URL such as s3://bucket/name.zarr"
        ) from None


def filesystem(location: str | os.PathLike[str]) -> tuple[Any, str]:
    """A synchronous fsspec filesystem for the URL ``location`` and the path inside it.

    The filesystem's listing cache is cleared for that path, so :func:`exists` and
    :func:`size_on_disk` see what other filesystem instances (Zarr's async one) wrote.

    Raises:
        VisforeError: ``location`` is a local path, or its protocol's package is missing.
    """
    loc = normalize(location)
    if isinstance(loc, Path):
        raise VisforeError(f"{loc} is a local path, not a URL")
    _check_protocol(loc)
    import fsspec  # lazy: as in _check_protocol

    with storage_errors(loc, "open"):
        fs, path = fsspec.url_to_fs(loc, **storage_options(loc))
    fs.invalidate_cache()
    return fs, path


def zarr_store(location: str | os.PathLike[str], *, read_only: bool) -> Any:
    """A :class:`zarr.storage.FsspecStore` for the URL ``location``.

    Built with ``FsspecStore.from_url(url, storage_options=storage_options(url),
    read_only=read_only)`` (zarr >= 3.0), which makes the filesystem asynchronous.

    Raises:
        VisforeError: as :func:`filesystem`.
    """
    loc = normalize(location)
    if isinstance(loc, Path):
        raise VisforeError(f"{loc} is a local path, not a URL")
    _check_protocol(loc)
    from zarr.storage import FsspecStore  # lazy: the fsspec backend, only for URLs

    with storage_errors(loc, "open"):
        store = FsspecStore.from_url(loc, storage_options=storage_options(loc), read_only=read_only)
    store.fs.invalidate_cache()  # fsspec reuses instances: drop listings of earlier calls
    return store


# -- questions about a location ---------------------------------------------------------
def exists(location: str | os.PathLike[str]) -> bool:
    """Whether anything is stored at ``location``.

    Local: the path exists (or is a dangling symlink). URL: at least one object has
    this prefix (object stores have no directories).

    Raises:
        VisforeError: the storage cannot be reached or refuses access (one line).
    """
    loc = normalize(location)
    if isinstance(loc, Path):
        return loc.exists() or loc.is_symlink()
    fs, path = filesystem(loc)
    with storage_errors(loc, "check"):
        return bool(fs.exists(path))


def check_bucket(location: str | os.PathLike[str]) -> None:
    """Raise VisforeError when the bucket / container of URL ``location`` does not exist.

    Nothing is checked for local paths and protocols without buckets.
    """
    bucket = bucket_of(location)
    if bucket is None:
        return
    loc = normalize(location)
    fs, _ = filesystem(loc)
    with storage_errors(loc, "check"):
        try:
            found = bool(fs.exists(bucket))
        except FileNotFoundError:
            found = False
    if not found:
        raise VisforeError(
            f"bucket {bucket!r} of {display_name(loc)} does not exist (or these credentials "
            "cannot see it); create it first, e.g. aws s3 mb "
            f"{protocol_of(loc)}://{bucket}"
        )


def size_on_disk(location: str | os.PathLike[str]) -> int:
    """Bytes stored under ``location``: the sum of its files' sizes (local, ``os.walk``) or
    of its objects' sizes (URL, fsspec ``du``).

    Raises:
        VisforeError: the storage cannot be reached (URL).
    """
    loc = normalize(location)
    if isinstance(loc, Path):
        total = 0
        for root, _, files in os.walk(loc):
            for name in files:
                total += os.path.getsize(os.path.join(root, name))
        return total
    fs, path = filesystem(loc)
    with storage_errors(loc, "measure"):
        return int(fs.du(path, total=True))


# -- errors ------------------------------------------------------------------------------
def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def _endpoint_hint(location: str) -> str:
    endpoint = storage_options(location).get("endpoint_url")
    return f" at {endpoint}" if endpoint else ""


@contextlib.contextmanager
def storage_errors(location: str | os.PathLike[str], action: str = "access") -> Iterator[None]:
    """Turn storage-layer exceptions raised inside the block into one-line VisforeErrors.

    Only for URLs; for local paths the block runs unchanged. ``action`` is a verb for the
    message (``"open"``, ``"write to"`` ...). Kinds told apart: missing credentials
    (botocore ``NoCredentialsError`` and friends), refused access (``PermissionError``,
    which s3fs raises for 403), unreachable endpoint (botocore ``EndpointConnectionError``,
    aiohttp connection errors, timeouts), missing bucket (``FileNotFoundError`` with
    "bucket" in its message); anything else is reported with its first line.
    :class:`VisforeError`, ``KeyboardInterrupt`` and zarr's errors about the store's
    contents pass through.
    """
    loc = normalize(location)
    if isinstance(loc, Path):
        yield
        return
    name = display_name(loc)
    try:
        yield
    except VisforeError:
        raise
    except ImportError as exc:
        raise VisforeError(f"cannot {action} {name}: {_first_line(exc)}") from None
    except Exception as exc:
        kind = _classify(exc)
        if kind is None:
            raise
        if kind == "credentials":
            message = (
                f"no credentials for {name} ({_first_line(exc)}): set AWS_ACCESS_KEY_ID and "
                "AWS_SECRET_ACCESS_KEY, or AWS_PROFILE"
                if protocol_of(loc) in ("s3", "s3a")
                else f"no credentials for {name} ({_first_line(exc)})"
            )
        elif kind == "denied":
            message = f"access to {name} denied{_endpoint_hint(loc)} ({_first_line(exc)}); check the credentials"
        elif kind == "unreachable":
            message = f"cannot reach the storage of {name}{_endpoint_hint(loc)}: {_first_line(exc)}"
        elif kind == "bucket":
            bucket = bucket_of(loc)
            message = f"bucket {bucket!r} of {name} does not exist ({_first_line(exc)})"
        else:
            message = f"cannot {action} {name}: {type(exc).__name__}: {_first_line(exc)}"
        raise VisforeError(message) from None


def is_storage_error(exc: BaseException) -> bool:
    """Whether ``exc`` comes from the storage layer (network, credentials, bucket, s3fs /
    botocore / aiohttp) rather than from Zarr or visfore: the exceptions that
    :func:`storage_errors` turns into one-line messages."""
    return _classify(exc) is not None


def _classify(exc: BaseException) -> str | None:
    """``"credentials"``, ``"denied"``, ``"unreachable"``, ``"bucket"``, ``"other"`` for
    storage-layer exceptions (following ``__cause__``), None for anything else (zarr's own
    errors, programming errors) which must propagate unchanged."""
    seen: set[int] = set()
    chain: list[BaseException] = []
    e: BaseException | None = exc
    while e is not None and id(e) not in seen:
        seen.add(id(e))
        chain.append(e)
        e = e.__cause__ or e.__context__
    names = {cls.__name__ for err in chain for cls in type(err).__mro__}
    modules = {type(err).__module__.split(".", 1)[0] for err in chain}
    if names & {
        "NoCredentialsError",
        "PartialCredentialsError",
        "CredentialRetrievalError",
        "InvalidConfigError",
        "ProfileNotFound",
        "DefaultCredentialsError",
    }:
        return "credentials"
    if names & {
        "EndpointConnectionError",
        "ConnectTimeoutError",
        "ReadTimeoutError",
        "ClientConnectorError",
        "ServerDisconnectedError",
        "ConnectionError",
        "TimeoutError",
        "FSTimeoutError",
        "ProxyConnectionError",
        "SSLError",
    }:
        return "unreachable"
    if isinstance(exc, PermissionError):
        return "denied"
    if isinstance(exc, FileNotFoundError) and "bucket" in str(exc).lower():
        return "bucket"
    if modules & {"botocore", "aiobotocore", "aiohttp", "s3fs", "gcsfs", "adlfs", "google"}:
        return "other"
    if isinstance(exc, OSError) and not isinstance(exc, (FileNotFoundError, FileExistsError)):
        return "other"
    return None
