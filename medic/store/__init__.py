"""A run's files: what each column is (``columns``, the registry every view asks), where they live
(``paths``), the one atomic write (``files``), the CSV writer (``logger``), the sidecar, the
incremental tail reader, typed readers, a run's real status and the catalog of runs. Nothing here
imports torch: everything that reads a run starts fast."""
