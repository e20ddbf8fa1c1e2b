"""Analysis of a run's CSVs: statistics (``stats``, ``batches``), figures, text reports, comparison, and on
top the orchestration that reads, computes, draws and writes ``analysis/`` (``outputs``).

    from medic import analysis
    from medic.analysis import figures
    summary = analysis.summarize_epochs(run.epochs, run.sidecar)
    paths, text = analysis.analyze_epochs("metrics/epoch_metrics_20251106_103015.csv")
"""

from medic.analysis.outputs import analyze_batches, analyze_epochs, output_paths, sidecar_for
from medic.analysis.batches import SPIKE_Z, BatchAnalysis, analyze_batch_arrays, analyze_batch_file
from medic.analysis.stats import (MAX_POINTS, EpochSummary, best_of, downsample, extra_metrics, metric_mode,
                                  monitor_of, summarize_epochs)

__all__ = ["MAX_POINTS", "SPIKE_Z", "BatchAnalysis", "EpochSummary", "analyze_batch_arrays", "analyze_batch_file",
           "analyze_batches", "analyze_epochs", "best_of", "downsample", "extra_metrics", "metric_mode",
           "monitor_of", "output_paths", "sidecar_for", "summarize_epochs"]
