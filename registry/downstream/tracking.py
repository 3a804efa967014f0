"""How synthreg talks to MLflow: the one place that names tags, dataset inputs and the store.

Conventions every run logged by ``synthreg train`` follows, and that ``trace`` and ``impact`` read:

- dataset input: name ``NAME@X.Y.Z`` (or ``NAME@working`` for an unreleased filtered manifest),
  digest = the first 36 hex characters of the manifest's sha256 (MLflow stores at most 36 characters
  for a dataset digest, ``MAX_DATASET_DIGEST_SIZE``; its default digest would hash only the first
  10,000 rows), with the full sha256 in the input's profile and in the ``synthreg.manifest_sha256``
  tag; source = ``synthreg://releases/NAME/X.Y.Z?git=<commit>``, context ``training``;
- the input's profile (``registry.downstream.track.DatasetProfile``): the whole sha256, the DVC md5,
generators,
  recipe digest, sources and policy status, so a working manifest can be found again by content;
- tags ``synthreg.dataset`` (= the input name), ``synthreg.manifest_sha256``, ``synthreg.dvc_md5``,
  ``synthreg.policy_report_sha256``, ``synthreg.git_commit``, ``synthreg.synthetic_share`` (the share
  used) and ``synthreg.synthetic_share_asked``; ``synthreg.samples.NAME.VERSION`` with the artifact
  ``synthreg/samples/NAME/VERSION.txt`` listing the sample ids drawn (``registry.downstream.track``);
- the default store is SQLite in the workspace (``mlflow.db``); ``MLFLOW_TRACKING_URI`` overrides it
  (a team shares ``mlflow server`` on PostgreSQL, docs/guide/scale.md); a database URI is tried once,
  with a timeout, before MLflow's minutes of retries, and its password never appears in a message;
- for an http(s) server, MLflow's retries are capped (``HTTP_RETRIES``) unless the environment sets
  ``MLFLOW_HTTP_REQUEST_MAX_RETRIES`` / ``MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR``: MLflow's own defaults
  (7 retries, backoff factor 2) keep a command waiting for minutes on a server that is down. They are
  set in ``os.environ`` (MLflow reads them there at each request), so they hold for the whole process.

MLflow is imported inside the functions, so the CLI starts fast.
"""

from __future__ import annotations

import contextlib
import os
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from registry.core.errors import TrackingError
from registry.downstream.mlflow_tables import open_tables

TAG_DATASET = "synthreg.dataset"
TAG_MANIFEST = "synthreg.manifest_sha256"
TAG_POLICY = "synthreg.policy_report_sha256"
TAG_GIT = "synthreg.git_commit"
TAG_SHARE = "synthreg.synthetic_share"  # the share the run really used
TAG_SHARE_ASKED = "synthreg.synthetic_share_asked"
TAG_DVC_MD5 = "synthreg.dvc_md5"  # md5 of the manifest: its name in the DVC cache and remote
# The run parameter `train` logs to say what its metrics were measured on: "real held-out" or "synthetic".
PARAM_EVAL_SPLIT = "evaluation_split"
# The MLflow input contexts that mean "evaluated on this", as a user's own script logs them (log_dataset).
EVAL_CONTEXTS = ("evaluation", "eval", "validation", "test", "testing")
WORKING = "working"
DATABASES = ("postgresql", "mysql", "mssql")  # SQLAlchemy stores MLflow can use without a server
DB_CONNECT_TIMEOUT_S = 5
HTTP_RETRIES = {"MLFLOW_HTTP_REQUEST_MAX_RETRIES": "2", "MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR": "1"}


def tracking_uri(ws: Path) -> str:
    uri = os.environ.get("MLFLOW_TRACKING_URI")
    if uri:
        if "://" not in uri and not uri.startswith(("file:", "databricks")):
            raise TrackingError(
                f"MLFLOW_TRACKING_URI {uri!r} is not a URI; use e.g. sqlite:///mlflow.db or http://host:5000"
            )
        return uri
    return f"sqlite:///{(ws / 'mlflow.db').resolve()}"


def dataset_source(name: str, version: str, git_commit: str) -> str:
    return f"synthreg://releases/{name}/{version}?git={git_commit}"


def shown(uri: str) -> str:
    """The URI as messages may print it: a database password is masked."""
    if "@" not in uri or uri.split(":", 1)[0].split("+")[0] not in DATABASES:
        return uri
    from sqlalchemy.engine import make_url

    return make_url(uri).render_as_string(hide_password=True)


def check_database(uri: str) -> None:
    """Connect once, with a timeout, to a database store (``postgresql://...``, MLflow's server-less mode).

    MLflow retries a refused database ten times over about 100 s and then raises a raw SQLAlchemy
    error; one try with a clear message serves a person better."""
    scheme = uri.split(":", 1)[0].split("+")[0]
    if scheme not in DATABASES:
        return
    import sqlalchemy
    from sqlalchemy.pool import NullPool

    args = {"connect_timeout": DB_CONNECT_TIMEOUT_S} if scheme == "postgresql" else {}
    try:
        with sqlalchemy.create_engine(uri, connect_args=args, poolclass=NullPool).connect():
            pass
    except ImportError as e:
        raise TrackingError(
            f"MLflow store {shown(uri)} needs a database driver ({e.name}); pip install 'synthreg[server]'"
        ) from None
    except sqlalchemy.exc.SQLAlchemyError as e:
        reason = str(getattr(e, "orig", None) or e).strip().splitlines()[0]
        raise TrackingError(
            f"MLflow store {shown(uri)} refuses connections ({reason}); "
            "start the database or fix MLFLOW_TRACKING_URI"
        ) from None


_CLIENTS: dict[str, Any] = {}  # tracking URI -> MlflowClient: each store is opened once a process


def client(ws: Path):
    """The MlflowClient of the workspace's store, made (and the store opened) on first use in a process;
    a later call with the same URI returns it again without a second connection test or store open."""
    import mlflow

    uri = tracking_uri(ws)
    c = _CLIENTS.get(uri)
    if c is None:
        from mlflow.tracking import MlflowClient

        check_database(uri)
        if uri.startswith(("http://", "https://")):
            for k, v in HTTP_RETRIES.items():
                os.environ.setdefault(k, v)  # read by MLflow at each request
        c = _CLIENTS[uri] = MlflowClient(tracking_uri=uri, registry_uri=uri)
    mlflow.set_tracking_uri(uri)  # the fluent API (mlflow.start_run) of the caller uses the same store
    mlflow.set_registry_uri(uri)
    return c


_READERS: dict[tuple[str, int, int], Any] = {}  # (URI, device, inode of a SQLite file) -> reader


def reader(ws: Path):
    """What ``trace`` and ``impact`` read runs and models through: the store's own tables
    (:mod:`registry.downstream.mlflow_tables`, no ``import mlflow``) when its schema is the one the
    installed MLflow expects, else the MlflowClient of :func:`client`. Opened once a process for a
    store file (a file replaced at the same path is opened again)."""
    uri = tracking_uri(ws)
    try:
        st = os.stat(uri.removeprefix("sqlite:///")) if uri.startswith("sqlite:///") else None
    except OSError:
        st = None
    key = (uri, st.st_dev, st.st_ino) if st else (uri, 0, 0)
    r = _READERS.get(key)
    if r is None:
        r = open_tables(uri, lambda: client(ws))
        if r is None:
            return client(ws)  # MLflow's client; it may create the store, so nothing is kept here
        if st is None:
            return r  # a store not there yet (NoStore): a later call may find one
        _READERS[key] = r
    return r


@contextlib.contextmanager
def mlflow_errors(uri: str) -> Iterator[None]:
    """MLflow's errors as a TrackingError naming the store. An MlflowException can only have been
    raised once MLflow is imported, so nothing is imported here (trace and impact may never need it)."""
    try:
        yield
    except Exception as e:
        exceptions = sys.modules.get("mlflow.exceptions")
        if exceptions is None or not isinstance(e, exceptions.MlflowException):
            raise
        raise TrackingError(f"MLflow at {uri}: {e.message.strip()}") from e
