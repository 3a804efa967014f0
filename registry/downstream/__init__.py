"""Models trained on the data: the MLflow conventions (tracking), logging a dataset input (track),
the MLflow dataset source (mlflow_source, an entry point MLflow imports), the default training
(train, and the small CNN it fits: classifier), the files around a run (run_files: its DVC metrics and
plots, the report it logs), and the model index (model_index).

The public modules are named in ``__all__``; importing the package imports none of them.
"""

__all__ = [
    "classifier",
    "mlflow_source",
    "model_index",
    "run_files",
    "track",
    "tracking",
    "train",
]
