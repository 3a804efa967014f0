"""Models trained on the data: the MLflow conventions (tracking), logging a dataset input (track),
the MLflow dataset source (mlflow_source, an entry point MLflow imports), the default training
(train, and the small CNN it fits: classifier), and the model index (model_index).

The public modules are named in ``__all__``; importing the package imports none of them.
"""

__all__ = [
    "classifier",
    "mlflow_source",
    "model_index",
    "track",
    "tracking",
    "train",
]
