"""Tollgate: a multi-tenant LLM gateway."""
