"""Models trained on the data: the MLflow conventions (tracking), logging a dataset input (track),
the MLflow dataset source (mlflow_source, an entry point MLflow imports), the read-only view of a
current SQLite store's tables that trace and impact use (mlflow_tables), the default training (train,
and the small CNN it fits: classifier), the files around a run (run_files: its DVC metrics and
plots, the report it logs), and the model index (model_index).

The public modules are named in ``__all__``; importing the package imports none of them.
"""

__all__ = [
    "classifier",
    "mlflow_source",
    "mlflow_tables",
    "model_index",
    "run_files",
    "track",
    "tracking",
    "train",
]
