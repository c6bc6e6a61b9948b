"""The OpenAI-compatible model endpoints: chat, embeddings, rerank, transcription, models."""
