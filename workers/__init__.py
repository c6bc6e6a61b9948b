"""Background processes: `tollgate worker` ingests documents (`workers.ingestion`). In the
embedded mode the API process runs the same ingestion loop itself."""
