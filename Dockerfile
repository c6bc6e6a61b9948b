# Tollgate's image: the API (`tollgate serve`), the ingestion worker (`tollgate worker`) and
# the one-shot migration (`tollgate db upgrade`) all run from it. Built by compose/compose.yml.
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

WORKDIR /app

# An unprivileged user: the code stays root-owned, so the server cannot rewrite it. Its one
# writable folder is the usage journal's (settings.usage_journal_path), owned by it here so that
# a fresh named volume mounted there starts with that owner.
RUN useradd --system --uid 10001 --home-dir /app --shell /usr/sbin/nologin tollgate \
    && mkdir -p /var/lib/tollgate/usage-journal && chown -R tollgate /var/lib/tollgate
ENV TOLLGATE_SETTINGS__USAGE_JOURNAL_PATH=/var/lib/tollgate/usage-journal

COPY pyproject.toml README.md ./
COPY api ./api
COPY workers ./workers
COPY migrations ./migrations
# Editable, not `pip install .`: api/db/migrate.py finds the Alembic scripts in migrations/
# next to the api/ package, and the wheel does not carry migrations/.
RUN pip install -e .

USER tollgate
# No config.yml in the image: every setting comes from TOLLGATE_* variables (compose/compose.yml),
# or mount a file and set TOLLGATE_CONFIG.
EXPOSE 8000
CMD ["tollgate", "serve", "--host", "0.0.0.0", "--port", "8000"]
