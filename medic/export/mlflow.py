"""Export a run to MLflow: one MLflow run per medic run, found again by its tag ``medic.run_id``.

    params     the run's options (``medic.resume.<option>`` tags for those a resume changed:
               MLflow params cannot change)
    metrics    every epoch column, step = epoch, timestamped by the row
    artifacts  the analysis figures and reports (made afresh), and with ``--checkpoint best``
               (or ``last``) that checkpoint

The MLflow run itself records what it holds: tags ``medic.epochs`` (rows written) and
``medic.epoch_digest`` (their digest). A new export appends the new rows when the first ones are
unchanged; when a resume cut rows and trained them again, the MLflow run is deleted and made again
(MLflow cannot delete metric points). ``medic.pending`` is set while rows are being written, so an
export killed half-way is redone from scratch rather than leaving a step twice.

The URI is a ``file:`` folder (or a plain path), a ``sqlite:`` database, or a tracking server's
URL. A server is asked once, with no retries and a short timeout, before anything is written.
"""

from __future__ import annotations

import logging
import os
import re
import tempfile
from pathlib import Path
from urllib.parse import urlparse

from medic.errors import MedicError
from medic.export.source import RunSource, number, parse_time, prepare_dir
from medic.store import columns as C

# MLflow's HTTP client retries for minutes by default; one try and a short timeout answer in seconds
HTTP_ENV = {"MLFLOW_HTTP_REQUEST_MAX_RETRIES": "0", "MLFLOW_HTTP_REQUEST_TIMEOUT": "10",
            "MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR": "0"}
# the status table (medic.store.status) in MLflow's words
STATUS = {"starting": "RUNNING", "queued": "RUNNING", "running": "RUNNING", "completed": "FINISHED",
          "failed": "FAILED", "stopped": "KILLED", "interrupted": "KILLED", "timeout": "KILLED"}
CHECKPOINTS = {"best": "best_model.pth", "last": "last.pth"}
_BATCH = 1000  # MLflow takes at most 1000 metrics and 100 params or tags per log_batch
_KEY_RE = re.compile(r"[^\w\-. /]")


def store_uri(uri: str) -> tuple[str, Path | None]:
    """The tracking URI MLflow gets, and the local folder it writes (a ``file:`` store's, or the
    folder of a ``sqlite:`` database), which must be creatable."""
    parsed = urlparse(uri)
    if parsed.scheme in ("", "file") or re.fullmatch(r"[A-Za-z]", parsed.scheme):
        path = Path(parsed.path if parsed.scheme == "file" else uri).expanduser().resolve()
        return path.as_uri(), path
    if parsed.scheme == "sqlite":
        db = uri.split("sqlite:///", 1)[-1]
        return uri, Path(db).expanduser().resolve().parent if db and db != ":memory:" else None
    return uri, None


def _ms(seconds: float | None) -> int | None:
    return int(seconds * 1000) if seconds is not None else None


class MlflowTarget:
    """The MLflow export into one experiment of one tracking store."""

    label = "MLflow"

    def __init__(self, uri: str, experiment: str = "medic", checkpoint: str | None = None):
        self.uri, folder = store_uri(uri)
        self.checkpoint = checkpoint
        for key, value in HTTP_ENV.items():
            os.environ.setdefault(key, value)
        if self.uri.startswith("file:"):
            # recent MLflow refuses file stores unless told; medic's export asks for one
            os.environ["MLFLOW_ALLOW_FILE_STORE"] = "true"
        for name in ("mlflow", "alembic"):
            logging.getLogger(name).setLevel(logging.WARNING)
        if folder is not None:
            prepare_dir(folder, "MLflow store")
        from mlflow.tracking import MlflowClient  # lazy: medic export without MLflow needs no MLflow
        self.client = MlflowClient(tracking_uri=self.uri)
        try:
            found = self.client.get_experiment_by_name(experiment)
            if found is None:
                location = (folder / "mlartifacts").as_uri() if uri.startswith("sqlite:") and folder else None
                self.experiment_id = self.client.create_experiment(experiment, artifact_location=location)
            elif found.lifecycle_stage != "active":
                raise MedicError(f"the MLflow experiment {experiment!r} at {uri} is deleted "
                                 "(restore it, or pass --experiment NAME)")
            else:
                self.experiment_id = found.experiment_id
        except MedicError:
            raise
        except Exception as err:  # connection refused, timeout, bad database: MLflow's own words
            message = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
            raise MedicError(f"cannot use the MLflow tracking store {uri}: {message[:300]}") from err

    def find(self, run_id: str):
        from mlflow.entities import ViewType
        runs = self.client.search_runs([self.experiment_id], f"tags.`medic.run_id` = '{run_id}'",
                                       run_view_type=ViewType.ACTIVE_ONLY, max_results=5)
        return runs[0] if runs else None

    def sync(self, source: RunSource) -> str:
        from mlflow.entities import Metric, Param, RunTag
        rows = source.epochs
        run, what = self.find(source.run_id), "written"
        if run is not None:
            tags = run.data.tags
            try:
                done = int(tags.get("medic.epochs", "-1"))
            except ValueError:
                done = -1
            if tags.get("medic.pending") == "1" or done < 0 or not rows.kept(done, tags.get("medic.epoch_digest")):
                self.client.delete_run(run.info.run_id)
                run, what = None, "replaced (the run's earlier rows changed)"
            elif done == len(rows.rows) and self._options_logged(run, source):
                return f"{source.run_id}: up to date ({done} epochs)"
        if run is None:
            run = self.client.create_run(self.experiment_id, start_time=_ms(source.start_time()),
                                         run_name=source.run_id,
                                         tags={"medic.run_id": source.run_id, "medic.pending": "1"})
            params, start = {}, 0
        else:
            self.client.set_tag(run.info.run_id, "medic.pending", "1")
            params, start = run.data.params, int(run.data.tags["medic.epochs"])
        options = {k: str(v) for k, v in source.options().items()}
        new_params = [Param(k, v) for k, v in options.items() if k not in params]
        resumed = [RunTag(f"medic.resume.{k}", v) for k, v in options.items() if k in params and params[k] != v]
        metrics = []
        for row in rows.dicts(start):
            epoch, stamp = number(row.get(C.EPOCH)), _ms(parse_time(row.get(C.TIMESTAMP, "")))
            if epoch is None:
                continue
            metrics += [Metric(_KEY_RE.sub("_", k), v, stamp or 0, int(epoch)) for k, v in
                        ((k, number(c)) for k, c in row.items()) if k not in (C.EPOCH, C.TIMESTAMP) and v is not None]
        for i in range(0, len(metrics), _BATCH):
            self.client.log_batch(run.info.run_id, metrics=metrics[i:i + _BATCH])
        for i in range(0, len(new_params), 100):
            self.client.log_batch(run.info.run_id, params=new_params[i:i + 100])
        done = [RunTag("medic.epochs", str(len(rows.rows))), RunTag("medic.epoch_digest", rows.digests[-1]),
                RunTag("medic.monitor", source.monitor), RunTag("medic.pending", "0")]
        for i in range(0, len(resumed), 90):
            self.client.log_batch(run.info.run_id, tags=resumed[i:i + 90])
        self.client.log_batch(run.info.run_id, tags=done)
        self.mlflow_run_id = run.info.run_id
        return (f"{source.run_id}: {len(rows.rows) - start} epoch rows {what} ({len(rows.rows)} epochs in all)"
                f" -> MLflow run {run.info.run_id} in {self.uri}")

    def _options_logged(self, run, source: RunSource) -> bool:
        params, tags = run.data.params, run.data.tags
        return all(params.get(k) == str(v) or tags.get(f"medic.resume.{k}") == str(v)
                   for k, v in source.options().items())

    def finish(self, source: RunSource) -> list[str]:
        """The artifacts and the run's end. Returns the artifact paths logged."""
        run = self.find(source.run_id)
        if run is None:
            return []
        run_id, logged = run.info.run_id, []
        # the analysis is drawn again only when the rows changed since it was last uploaded
        made_from = f"{source.epochs.digests[-1]}:{source.batches.digests[-1]}"
        if run.data.tags.get("medic.analysis_of") != made_from:
            with tempfile.TemporaryDirectory(prefix="medic-export-") as tmp:
                for path in _analysis_files(source, Path(tmp)):
                    self.client.log_artifact(run_id, str(path), "analysis")
                    logged.append(f"analysis/{path.name}")
            self.client.set_tag(run_id, "medic.analysis_of", made_from)
        if self.checkpoint:
            path = source.project.checkpoint_dir(source.run_id) / CHECKPOINTS[self.checkpoint]
            self.client.log_artifact(run_id, str(path), "checkpoints")
            logged.append(f"checkpoints/{path.name}")
        status = STATUS.get(source.status)
        if status == "RUNNING" or status is None:
            self.client.update_run(run_id, status="RUNNING")
        else:
            end = _ms(parse_time(str(source.sidecar.get("end_time") or "")))
            self.client.set_terminated(run_id, status, end_time=end)
        return logged


def _analysis_files(source: RunSource, folder: Path) -> list[Path]:
    """``medic analyze`` of the run (and of its batch CSV), made into ``folder``."""
    from medic.analysis.outputs import analyze_batches, analyze_epochs
    if not source.epochs.rows:
        return []
    paths = list(analyze_epochs(source.project.epoch_csv(source.run_id), root=folder)[0].values())
    if source.batches.rows:
        paths += analyze_batches(source.project.batch_csv(source.run_id), root=folder)[0].values()
    return paths
