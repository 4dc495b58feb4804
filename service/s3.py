"""The S3 back end of `service.storage.Store`: any endpoint boto3 reaches (AWS,
MinIO, SeaweedFS, R2 ...).

Callers only ever see `StorageError`: a worker retries on it and the API turns
it into a clean message, whereas a stray botocore exception would crash a task
or leak a traceback. Messages name the operation and key, never a secret.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any, NoReturn

import boto3
from botocore.config import Config
from botocore.exceptions import BotoCoreError, ClientError

from service.errors import ObjectMissing, StorageError, one_line
from service.storage import check_key

if TYPE_CHECKING:
    from service.config import Settings

log = logging.getLogger(__name__)

#: S3 refuses user metadata over 2 KB (keys + values, in bytes); stay well
#: below so that the x-amz-meta- prefixes and other stores' stricter limits fit.
METADATA_BUDGET = 1800
#: A value truncated to fewer characters than this is noise: skip it instead.
_MIN_TRUNCATED = 16
#: SigV4 presigned URLs live at most 7 days.
MAX_PRESIGN_S = 7 * 24 * 3600

_NOT_FOUND_CODES = frozenset({"404", "NoSuchKey", "NotFound", "NoSuchBucket"})


def _clean_key(name: str) -> str:
    # Header names: S3 lowercases them; anything but [a-z0-9-_] breaks some
    # gateways or comes back mangled.
    return "".join(ch for ch in name.lower() if ch.isascii() and (ch.isalnum() or ch in "-_"))


def _clean_value(value: str) -> str:
    # HTTP headers are ASCII; botocore refuses other characters outright.
    return "".join(ch if " " <= ch <= "~" else "?" for ch in str(value)).strip()


def fit_metadata(metadata: dict[str, str] | None, budget: int = METADATA_BUDGET) -> dict[str, str]:
    """Metadata that S3 will accept: printable ASCII, keys + values within
    `budget` bytes. Entries keep the caller's order (put the important ones
    first); a value that does not fit is truncated, or dropped if too little
    of it would remain. The full record belongs in the JSON sidecar."""
    out: dict[str, str] = {}
    left = budget
    dropped: list[str] = []
    for raw_key, raw_value in (metadata or {}).items():
        key = _clean_key(raw_key)
        if not key or key in out:
            dropped.append(raw_key)
            continue
        value = _clean_value(raw_value)
        room = left - len(key)
        if len(value) > room:
            if room < min(_MIN_TRUNCATED, len(value)):
                dropped.append(raw_key)
                continue
            value = value[:room]
        out[key] = value
        left -= len(key) + len(value)
    if dropped:
        log.warning("S3 metadata over %d bytes or invalid: dropped %s", budget, ", ".join(map(repr, dropped)))
    return out


def _code(e: ClientError) -> str:
    err = e.response.get("Error", {})
    code = str(err.get("Code") or "")
    if not code:
        status = e.response.get("ResponseMetadata", {}).get("HTTPStatusCode")
        code = str(status or "")
    return code


def _status(e: ClientError) -> int | None:
    status = e.response.get("ResponseMetadata", {}).get("HTTPStatusCode")
    return int(status) if status is not None else None


def _is_not_found(e: BaseException) -> bool:
    return isinstance(e, ClientError) and (_status(e) == 404 or _code(e) in _NOT_FOUND_CODES)


class S3Store:
    """A bucket. Objects are written whole by PutObject, so readers never see
    half an object; the worker writes the PNG first and the sidecar last."""

    #: keys per ListObjectsV2 page (S3's maximum); tests lower it.
    list_page_size: int = 1000

    def __init__(
        self,
        bucket: str,
        *,
        endpoint_url: str | None = None,
        region: str = "us-east-1",
        access_key_id: str | None = None,
        secret_access_key: str | None = None,
        path_style: bool = True,
        create_bucket: bool = False,
        connect_timeout: float = 5,
        read_timeout: float = 30,
        max_attempts: int = 2,
        public_endpoint_url: str | None = None,
    ) -> None:
        """`max_attempts` is botocore's retries setting (retries after the
        first try, standard mode); workers retry on top with their own backoff.
        Credentials left as None come from boto3's usual chain (env, profile,
        instance role)."""
        self.bucket = bucket
        self.endpoint_url = endpoint_url
        self.region = region
        config = Config(
            signature_version="s3v4",
            region_name=region,
            s3={"addressing_style": "path" if path_style else "auto"},
            retries={"max_attempts": max_attempts, "mode": "standard"},
            connect_timeout=connect_timeout,
            read_timeout=read_timeout,
        )
        # A session per store: boto3's default session is not thread-safe to
        # build clients from, and clients (thread-safe) are reused per store.
        try:
            session = boto3.session.Session(
                aws_access_key_id=access_key_id,
                aws_secret_access_key=secret_access_key,
                region_name=region,
            )
            self._client: Any = session.client("s3", endpoint_url=endpoint_url, config=config)
            # Presigned URLs name the host clients will use (e.g. a public
            # name), which may differ from the one workers reach (`s3:8333`
            # inside compose). Signing is local: the second client connects nowhere.
            self._presigner: Any = (
                session.client("s3", endpoint_url=public_endpoint_url, config=config)
                if public_endpoint_url
                else self._client
            )
        except (BotoCoreError, ValueError) as e:  # botocore says "Invalid endpoint" with a ValueError
            raise StorageError(
                one_line(f"S3 client for bucket {bucket!r} at {endpoint_url!r}, region {region!r}: {e}")
            ) from e
        if create_bucket:
            self.ensure_bucket()

    @classmethod
    def from_settings(cls, settings: Settings) -> S3Store:
        """The store the deployment's DREAMFARM_S3_* settings describe (this
        creates the bucket when s3_create_bucket is set, its default)."""
        key_id = settings.s3_access_key_id
        secret = settings.s3_secret_access_key
        return cls(
            settings.s3_bucket,
            endpoint_url=settings.s3_endpoint_url,
            region=settings.s3_region,
            access_key_id=key_id.get_secret_value() if key_id is not None else None,
            secret_access_key=secret.get_secret_value() if secret is not None else None,
            path_style=settings.s3_path_style,
            create_bucket=settings.s3_create_bucket,
            public_endpoint_url=settings.s3_public_endpoint_url,
        )

    def __repr__(self) -> str:
        return f"S3Store(bucket={self.bucket!r}, endpoint_url={self.endpoint_url!r})"

    def _fail(self, op: str, key: str | None, e: BaseException) -> NoReturn:
        where = f"s3://{self.bucket}/{key}" if key is not None else f"bucket {self.bucket!r}"
        if isinstance(e, ClientError):
            err = e.response.get("Error", {})
            detail = f"{_code(e)}: {err.get('Message') or 'no message'}"
        else:
            detail = f"{type(e).__name__}: {e}"
        raise StorageError(one_line(f"S3 {op} {where} failed ({detail})")) from e

    def put(self, key: str, data: bytes, content_type: str, metadata: dict[str, str] | None = None) -> None:
        """Metadata is best effort (trimmed to fit S3's limit); the object is not."""
        check_key(key)
        try:
            self._client.put_object(
                Bucket=self.bucket,
                Key=key,
                Body=data,
                ContentType=content_type,
                Metadata=fit_metadata(metadata),
            )
        except (BotoCoreError, ClientError) as e:
            self._fail("put", key, e)

    def get(self, key: str) -> bytes:
        """A missing object is an error, as for LocalStore: use exists() to ask."""
        check_key(key)
        try:
            resp = self._client.get_object(Bucket=self.bucket, Key=key)
            body: bytes = resp["Body"].read()
        except ClientError as e:
            if _is_not_found(e) and _code(e) != "NoSuchBucket":
                raise ObjectMissing(f"no object {key!r} in bucket {self.bucket!r}") from e
            self._fail("get", key, e)
        except BotoCoreError as e:
            self._fail("get", key, e)
        return body

    def delete(self, key: str) -> None:
        """Remove an object; one that is not there is not an error."""
        check_key(key)
        try:
            self._client.delete_object(Bucket=self.bucket, Key=key)
        except ClientError as e:
            if not (_is_not_found(e) and _code(e) != "NoSuchBucket"):
                self._fail("delete", key, e)
        except BotoCoreError as e:
            self._fail("delete", key, e)

    def exists(self, key: str) -> bool:
        """Only a 404 means absent: any other failure raises, so an outage
        is never taken for "not rendered yet" (and re-rendered). A HEAD has no
        error body, so a missing bucket also reads as absent: ping() at start-up."""
        check_key(key)
        try:
            self._client.head_object(Bucket=self.bucket, Key=key)
        except ClientError as e:
            if _status(e) == 404 or _code(e) in ("404", "NoSuchKey", "NotFound"):
                return False
            self._fail("exists", key, e)
        except BotoCoreError as e:
            self._fail("exists", key, e)
        return True

    def list(self, prefix: str) -> Iterator[str]:
        """Keys under `prefix`, in S3's (lexicographic) order, page by page.
        Keys that check_key would refuse (written by other tools) are skipped:
        everything listed can be read back with get()."""
        try:
            pages = self._client.get_paginator("list_objects_v2").paginate(
                Bucket=self.bucket, Prefix=prefix, PaginationConfig={"PageSize": self.list_page_size}
            )
            for page in pages:
                for obj in page.get("Contents", ()):
                    key = obj["Key"]
                    try:
                        check_key(key)
                    except StorageError:
                        log.debug("skipping unsafe key %r in bucket %r", key, self.bucket)
                        continue
                    yield key
        except (BotoCoreError, ClientError) as e:
            self._fail("list", prefix or "(all)", e)

    def url(self, key: str, expires_s: int = 3600) -> str:
        """A presigned GET: clients fetch renders without holding credentials.
        Signing is local, so this works (and cannot tell) if the object is gone."""
        check_key(key)
        if not 1 <= expires_s <= MAX_PRESIGN_S:
            raise StorageError(f"presigned URL lifetime {expires_s} s out of range, expected 1..{MAX_PRESIGN_S}")
        try:
            url: str = self._presigner.generate_presigned_url(
                "get_object", Params={"Bucket": self.bucket, "Key": key}, ExpiresIn=expires_s
            )
        except (BotoCoreError, ClientError) as e:
            self._fail("presign", key, e)
        return url

    def ensure_bucket(self) -> None:
        """Create the bucket if missing; safe to call from every process at
        start-up (a concurrent creator is not an error)."""
        try:
            self._client.head_bucket(Bucket=self.bucket)
            return
        except ClientError as e:
            if not _is_not_found(e):
                self._fail("head-bucket", None, e)
        except BotoCoreError as e:
            self._fail("head-bucket", None, e)
        kwargs: dict[str, Any] = {"Bucket": self.bucket}
        if self.region != "us-east-1":
            kwargs["CreateBucketConfiguration"] = {"LocationConstraint": self.region}
        try:
            self._client.create_bucket(**kwargs)
        except ClientError as e:
            if _code(e) == "BucketAlreadyOwnedByYou":
                return
            if _code(e) == "BucketAlreadyExists":
                # Ours if we can reach it (some gateways say this for their
                # own buckets); someone else's otherwise.
                self.ping()
                return
            self._fail("create-bucket", None, e)
        except BotoCoreError as e:
            self._fail("create-bucket", None, e)

    def ping(self) -> None:
        """Readiness: the endpoint answers, the credentials sign, the bucket
        exists and is ours. Raises StorageError otherwise."""
        try:
            self._client.head_bucket(Bucket=self.bucket)
        except ClientError as e:
            if _is_not_found(e):
                raise StorageError(f"S3 bucket {self.bucket!r} does not exist") from e
            self._fail("ping", None, e)
        except BotoCoreError as e:
            self._fail("ping", None, e)
