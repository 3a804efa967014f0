"""Bytes on disk: manifests (Parquet, DuckDB), shards (tar), the synthetic-media marking, WebDataset
sidecars, the audit log, the publication journal, working manifests in the DVC cache, and the read
side of ``releases/`` (``releases``: references, versions, records).

The public modules are named in ``__all__``; importing the package imports none of them.
"""

__all__ = [
    "audit",
    "journal",
    "manifest",
    "marking",
    "releases",
    "shards",
    "unreleased",
    "webdataset",
]
