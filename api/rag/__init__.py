"""Collections, documents and chunks in Qdrant; ingestion, search and chat with search."""
