"""Remote paths (s3://, gs://, az://, hdfs://, http(s)://) through fsspec, torch-free.

Every user path (`--data.path`, `--model`, `--out`, predict inputs, `serve --model`, `--run_dir`)
may be an fsspec URL as well as a local path. What must be a local file (an ONNX model for ONNX
Runtime, an image folder, a DICOM tree, a table polars scans lazily) is fetched into a local
cache first (`localize`); outputs are written to a local temporary file and uploaded
(`upload_file`).

The cache is `$DEEPAPPS_CACHE/remote` (default `~/.cache/deepapps/remote`), laid out as
`<scheme>/<bucket or host>/<key>`. A cached file is fetched again when the remote object's size,
ETag or modification time changed; a cached folder also loses the files deleted remotely.

Credentials and endpoints are the filesystem's own: for S3 the AWS chain (`AWS_ACCESS_KEY_ID`,
`AWS_SECRET_ACCESS_KEY`, `AWS_PROFILE`, `AWS_ENDPOINT_URL` for MinIO/moto/Ceph, ...), for GCS
`GOOGLE_APPLICATION_CREDENTIALS`, for Azure `AZURE_STORAGE_ACCOUNT_NAME` with
`AZURE_STORAGE_ACCOUNT_KEY` (or a connection string); any fsspec option as JSON in
`FSSPEC_<PROTOCOL>` (e.g. `FSSPEC_S3='{"client_kwargs": {"endpoint_url": "http://..."}}'`).

Every failure is one line naming the URL: a missing bucket, object or folder is a DataError;
missing or refused credentials and a filesystem that is not installed are a ConfigError.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import tempfile
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from deepapps.core.errors import ConfigError, DataError, DeepappsError

_URL = re.compile(r"^([a-zA-Z][a-zA-Z0-9+.-]*)://")
# scheme -> (the fsspec implementation's package, the deepapps extra that installs it)
_PACKAGES = {
    "s3": ("s3fs", "s3"), "s3a": ("s3fs", "s3"), "gs": ("gcsfs", "gcs"), "gcs": ("gcsfs", "gcs"),
    "az": ("adlfs", "azure"), "abfs": ("adlfs", "azure"), "abfss": ("adlfs", "azure"), "adl": ("adlfs", "azure"),
    "hdfs": ("pyarrow", "hdfs"), "viewfs": ("pyarrow", "hdfs"),
    "http": ("aiohttp", "http"), "https": ("aiohttp", "http"),
}
_STAMP_KEYS = ("size", "ETag", "etag", "md5", "LastModified", "last_modified", "mtime", "updated")
_LOCAL_TO_URL: dict[str, str] = {}  # cache paths handed out -> their URLs (for messages)


def is_remote(path: object) -> bool:
    """Whether `path` is a URL with a scheme other than `file://` (a local path is not)."""
    match = _URL.match(str(path)) if isinstance(path, (str, os.PathLike)) else None
    return bool(match) and match.group(1).lower() != "file"


def cache_root() -> Path:
    """The folder remote files are cached in: `$DEEPAPPS_CACHE/remote` or `~/.cache/deepapps/remote`."""
    base = os.environ.get("DEEPAPPS_CACHE")
    return (Path(base) if base else Path.home() / ".cache" / "deepapps") / "remote"


def filesystem(url: str):
    """(the fsspec filesystem of `url`, the path inside it).

    Raises:
        ConfigError: the scheme's fsspec implementation is not installed, or the scheme is unknown.
    """
    scheme = _URL.match(url).group(1).lower()
    package, extra = _PACKAGES.get(scheme, (None, None))
    try:
        import fsspec
    except ImportError:
        how = f"pip install 'deepapps[{extra or 'http'}]'"
        raise ConfigError(f"{url}: remote paths need fsspec ({how})") from None
    try:
        return fsspec.core.url_to_fs(url)
    except ImportError:
        how = f"pip install 'deepapps[{extra}]'" if extra else f"pip install {package or 'the fsspec implementation'}"
        raise ConfigError(f"{url}: {scheme}:// needs {package or 'an fsspec implementation'} ({how})") from None
    except ValueError as exc:
        raise ConfigError(f"{url}: unknown URL scheme {scheme}:// ({_first_line(exc)})") from None
    except Exception as exc:  # noqa: BLE001 - a filesystem may fail at connect time (hdfs without libhdfs)
        raise _translate(url, exc) from None


def open_read(url: str | Path, mode: str = "rb"):
    """An open file of a local path or URL (a context manager), for streaming reads."""
    if not is_remote(url):
        return open(url, mode)
    fs, path = filesystem(str(url))
    with errors(str(url)):
        return fs.open(path, mode)


def localize(path: str | Path) -> str:
    """A local path for `path`: itself when local, else the cached copy of the remote file or folder.

    Raises:
        DataError: the bucket, object or folder does not exist (one line naming the URL).
        ConfigError: no usable credentials, or the filesystem is not installed.
    """
    if not is_remote(path):
        return str(path)
    url = str(path)
    fs, rpath = filesystem(url)
    with errors(url):
        info = fs.info(rpath)
    local = _fetch_tree(fs, url, rpath) if info.get("type") == "directory" else _fetch_file(fs, url, rpath, info)
    _LOCAL_TO_URL[str(local)] = url
    return str(local)


def cached_file(url: str) -> Path:
    """The cached local copy of the remote file `url` (fetched when new or changed).

    Raises:
        DataError: no such object, or `url` is a folder.
    """
    local = Path(localize(url))
    if not local.is_file():
        raise DataError(f"{url}: a folder, not a file")
    return local


def display(text: str) -> str:
    """`text` with the cache paths `localize` handed out written back as their URLs."""
    for local in sorted(_LOCAL_TO_URL, key=len, reverse=True):
        text = text.replace(local, _LOCAL_TO_URL[local])
    return text


def display_frame(table):
    """A polars table whose text columns have the cache paths of `localize` written back as URLs."""
    if not _LOCAL_TO_URL:
        return table
    import polars as pl

    texts = [name for name, dtype in table.schema.items() if dtype == pl.String]
    if not texts:
        return table
    exprs = []
    for name in texts:
        expr = pl.col(name)
        for local in sorted(_LOCAL_TO_URL, key=len, reverse=True):
            expr = expr.str.replace_all(local, _LOCAL_TO_URL[local], literal=True)
        exprs.append(expr.alias(name))
    return table.with_columns(exprs)


def upload_file(local: str | Path, url: str) -> str:
    """Upload a finished local file to `url`: to a hidden temporary object beside it, then moved.

    How atomic that is depends on the store. HDFS (and a local path) renames atomically: readers
    see the old file or the whole new one. S3 and GCS have no rename: a single PUT (or a completed
    multipart upload) is atomic per object, so the upload of the temporary object is all or
    nothing, and the 'move' is a server-side copy (atomic for the final key: it appears whole, never
    half written) followed by a delete of the temporary object. The move as a whole is not atomic:
    a crash between the copy and the delete leaves the hidden `.<name>.<id>.tmp` object behind
    (next to the final one, which is then complete); it is never a half-written final object.

    Raises:
        DataError / ConfigError: one line naming `url` (no bucket, no permission, no credentials).
    """
    fs, rpath = filesystem(url)
    parent, _, name = rpath.rpartition("/")
    tmp = f"{parent}/.{name}.{uuid.uuid4().hex[:12]}.tmp" if parent else f".{name}.{uuid.uuid4().hex[:12]}.tmp"
    with errors(url):
        fs.put_file(str(local), tmp)
        try:
            fs.mv(tmp, rpath)
        finally:
            try:
                if fs.exists(tmp):
                    fs.rm_file(tmp)
            except Exception:  # noqa: BLE001, S110 - best effort: the final object is what matters
                pass
    return url


def upload_tree(local: str | Path, url: str) -> str:
    """Upload every file under the local folder `local` to the folder `url` (each file via `upload_file`)."""
    root = Path(local)
    for file in sorted(p for p in root.rglob("*") if p.is_file()):
        upload_file(file, url.rstrip("/") + "/" + file.relative_to(root).as_posix())
    return url


def write_via_local(url: str, write, pending: set[Path]) -> str:
    """Call `write(tmp)` on a local temporary file, then `upload_file` it to `url`.

    `pending` tracks the temporary folder while the write runs (the CLI removes leftovers on exit).
    """
    name = url.rstrip("/").rsplit("/", 1)[-1] or "output"
    folder = Path(tempfile.mkdtemp(prefix=f".{name}.", suffix=".tmp"))
    pending.add(folder)
    try:
        tmp = folder / name
        tmp.touch()
        write(tmp)
        return upload_file(tmp, url)
    finally:
        shutil.rmtree(folder, ignore_errors=True)
        pending.discard(folder)


@contextmanager
def errors(url: str) -> Iterator[None]:
    """Turn a filesystem's exceptions into one-line DataError/ConfigError naming `url`."""
    try:
        yield
    except DeepappsError:
        raise
    except Exception as exc:  # noqa: BLE001 - fsspec implementations raise many types
        raise _translate(url, exc) from None


def _translate(url: str, exc: BaseException) -> DeepappsError:
    name, text = type(exc).__name__, _first_line(exc)
    lowered = text.lower()
    scheme = _URL.match(url).group(1).lower() if _URL.match(url) else ""
    if scheme in ("hdfs", "viewfs") and any(w in lowered for w in ("libjvm", "libhdfs", "java_home", "classpath")):
        return ConfigError(f"{url}: hdfs:// needs libhdfs and a Java/Hadoop setup (JAVA_HOME, HADOOP_HOME, "
                           f"CLASSPATH=$(hadoop classpath --glob); see the README's 'Remote data'): {text[:120]}")
    cause = exc.__cause__ or exc.__context__
    for link in (exc, cause, getattr(cause, "__cause__", None) or getattr(cause, "__context__", None)):
        kind = type(link).__name__ if link is not None else ""
        if any(w in kind for w in ("Connect", "DNSError", "gaierror", "Timeout")):
            return DataError(f"{url}: cannot connect ({kind}: {_first_line(link)[:120]})")
    if name in ("NoCredentialsError", "PartialCredentialsError", "CredentialRetrievalError",
                "DefaultCredentialsError", "ClientAuthenticationError") or "unable to locate credentials" in lowered:
        return ConfigError(f"{url}: no credentials found ({_credentials_hint(url)})")
    if isinstance(exc, PermissionError) or any(w in lowered for w in (
            "access denied", "accessdenied", "forbidden", "invalidaccesskeyid", "signaturedoesnotmatch",
            "not authorized", "authorizationfailure")):
        return ConfigError(f"{url}: access denied; check the credentials ({_credentials_hint(url)}): {text[:120]}")
    if isinstance(exc, FileNotFoundError) or "nosuchbucket" in lowered or "nosuchkey" in lowered:
        if "bucket" in lowered or "container" in lowered:
            return DataError(f"{url}: no such bucket")
        return DataError(f"{url}: no such file or folder")
    if isinstance(exc, ImportError):
        return ConfigError(f"{url}: {text}")
    return DataError(f"{url}: cannot read or write ({name}: {text[:160]})")


def _credentials_hint(url: str) -> str:
    scheme = _URL.match(url).group(1).lower() if _URL.match(url) else ""
    if scheme in ("s3", "s3a"):
        return "set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY, or AWS_PROFILE"
    if scheme in ("gs", "gcs"):
        return "set GOOGLE_APPLICATION_CREDENTIALS"
    if scheme in ("az", "abfs", "abfss", "adl"):
        return "set AZURE_STORAGE_ACCOUNT_NAME and AZURE_STORAGE_ACCOUNT_KEY or AZURE_STORAGE_CONNECTION_STRING"
    return "see the filesystem's credential settings"


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def _cache_path(url: str) -> Path:
    """Where `url` is cached: `<cache_root>/<scheme>/<bucket or host>/<key>` (odd characters -> `_`)."""
    scheme, rest = url.split("://", 1)
    parts = [re.sub(r"[^A-Za-z0-9._=+-]", "_", p) for p in rest.split("/") if p not in ("", ".", "..")]
    return cache_root().joinpath(scheme.lower(), *(parts or ["_"]))


def _stamp_file(local: Path) -> Path:
    return cache_root() / ".stamps" / local.relative_to(cache_root()).with_name(local.name + ".json")


def _stamp(info: dict) -> str:
    return json.dumps({k: str(info[k]) for k in _STAMP_KEYS if info.get(k) is not None}, sort_keys=True)


def _fresh(local: Path, info: dict) -> bool:
    stamp = _stamp_file(local)
    return local.is_file() and stamp.is_file() and stamp.read_text() == _stamp(info)


def _fetch_file(fs, url: str, rpath: str, info: dict, local: Path | None = None) -> Path:
    """Download one object to its cache path (through a temporary file) unless the cached copy is current."""
    local = local or _cache_path(url)
    if _fresh(local, info):
        return local
    stamp = _stamp_file(local)
    stamp.unlink(missing_ok=True)
    local.parent.mkdir(parents=True, exist_ok=True)
    tmp = local.with_name(f".{local.name}.{uuid.uuid4().hex[:8]}.part")
    try:
        with errors(url):
            fs.get_file(rpath, str(tmp))
        os.replace(tmp, local)
    finally:
        tmp.unlink(missing_ok=True)
    stamp.parent.mkdir(parents=True, exist_ok=True)
    stamp.write_text(_stamp(info))
    return local


def _fetch_tree(fs, url: str, rpath: str) -> Path:
    """Mirror the remote folder into the cache: fetch new or changed files, drop deleted ones."""
    root = _cache_path(url)
    with errors(url):
        fs.invalidate_cache()
        found = fs.find(rpath, detail=True)
    prefix = rpath.rstrip("/") + "/"
    files = {p[len(prefix):]: info for p, info in found.items()
             if p.startswith(prefix) and info.get("type") != "directory" and not p.endswith("/")}
    if not files:
        raise DataError(f"{url}: empty folder (no files under it)")
    for rel, info in files.items():
        _fetch_file(fs, url.rstrip("/") + "/" + rel, prefix + rel, info, root.joinpath(*rel.split("/")))
    if root.is_dir():
        wanted = {root.joinpath(*rel.split("/")) for rel in files}
        for stale in [p for p in root.rglob("*") if p.is_file() and p not in wanted]:
            stale.unlink()
    return root
