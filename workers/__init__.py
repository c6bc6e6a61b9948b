"""Background processes (document ingestion, usage writer). In the embedded mode these jobs run
inside the API process; `tollgate worker` arrives with the model gateway and RAG issues."""
