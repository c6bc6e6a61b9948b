"""Conversation records: each call's request and answer, kept (encrypted, after the data
policies' redaction) for the organizations, roles and keys that opt in, grouped into sessions
and threads."""
