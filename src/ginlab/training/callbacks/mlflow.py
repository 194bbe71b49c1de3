"""MLflow mirrors the run when a tracking URI is given (`-b mlflow.tracking_uri="http://host:5000"`).

The run folder stays the source of truth; MLflow gets the same config values (exactly as config.json has
them) and the same metrics. A reload continues the same MLflow run.
"""

from __future__ import annotations

import json

import gin

from ginlab.config import bad_value


@gin.configurable("mlflow", allowlist=["tracking_uri", "experiment"])
def mlflow_logger(run, tracking_uri: str | None = None, experiment: str = "ginlab"):
    """An MLFlowLogger for `run`, or None without a tracking URI (mlflow is then not even imported).

    Built before the run folder is written (a bad URI is a configuration error); a reload continues the MLflow
    run that meta.json names. `record_run_id` writes the id once the folder is open.

    Args:
        run: the RunFolder.
        tracking_uri: the MLflow server (mlflow.tracking_uri); None: no MLflow.
        experiment: the MLflow experiment's name (mlflow.experiment).
    """
    if tracking_uri is None:
        return None
    if not isinstance(tracking_uri, str) or not tracking_uri:
        raise bad_value("mlflow.tracking_uri", tracking_uri, "None or a URI such as 'http://127.0.0.1:5000'")
    if not run.writer:
        return None  # TensorBoard and MLflow are the run folder's: written by its owner only
    from mlflow.exceptions import MlflowException
    from pytorch_lightning.loggers import MLFlowLogger

    run_id = run.read_meta().get("mlflow_run_id") if run.meta.exists() else None
    try:
        return MLFlowLogger(
            experiment_name=experiment,
            tracking_uri=tracking_uri,
            run_name=run.path.name,
            run_id=run_id,
            tags={"run_folder": str(run.path.resolve())},
            synchronous=False,  # metrics are sent in the background: no HTTP wait in the loop
        )
    except MlflowException as error:
        raise bad_value(
            "mlflow.tracking_uri", tracking_uri, f"a tracking URI MLflow can use ({error})"
        ) from None


def record_run_id(run, logger) -> None:
    """meta.json remembers the MLflow run, so that a reload continues it."""
    import mlflow

    run_id = logger.run_id  # creates the run on the server (the logger sets mlflow's tracking URI to its own)
    run.update_meta(mlflow_run_id=run_id, mlflow_tracking_uri=mlflow.get_tracking_uri())


def log_config(logger, flat: dict) -> None:
    """The run's config as MLflow params (values exactly as config.json has them). MLflow params cannot change:
    on a reload, values that changed since they were logged (n_epochs, reload ...) go to the tag
    "ginlab.config_changes" instead, as JSON {key: new value}."""
    params = as_params(flat)
    logged = logger.experiment.get_run(logger.run_id).data.params
    changed = {key: value for key, value in params.items() if key in logged and logged[key] != value}
    logger.log_hyperparams({key: value for key, value in params.items() if key not in logged})
    if changed:
        logger.experiment.set_tag(logger.run_id, "ginlab.config_changes", json.dumps(changed))


def as_params(flat: dict) -> dict[str, str]:
    """Config values as MLflow params, each as config.json writes it: Lightning's own conversion would drop
    empty lists and split dicts into sub-keys, so every value is given as its JSON text (strings as they are)."""
    return {key: value if isinstance(value, str) else json.dumps(value) for key, value in flat.items()}
