"""Ingestion jobs: parse, split and embed an uploaded document, then make it searchable.

A document waiting for ingestion is a `processing` row with its file beside it. A worker
claims it by setting `claimed_until` (a conditional UPDATE, so two workers never take the
same one) and keeps extending the claim while it makes progress. Its chunks are written
invisible to search; only when every chunk is in does one step make them visible, and then
the row `ready`. A worker that dies leaves the claim to expire: the next one deletes
whatever half was written and starts over, so nothing is lost and no chunk is duplicated.
"""

from __future__ import annotations

import asyncio
import logging
from datetime import UTC, datetime, timedelta

from sqlalchemy import and_, delete, or_, select, update
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from api.db.tables import Document, DocumentFile
from api.errors import (
    DomainError,
    InsufficientBudgetError,
    InvalidRequestError,
    NotFoundError,
    PermissionDeniedError,
    TooManyRequestsError,
)
from api.identity.authenticator import Authenticator
from api.rag import parsing
from api.rag.embedder import Embedder
from api.rag.schemas import DocumentStatus
from api.rag.vectors import NewChunk, VectorStore
from api.settings import RagSettings

log = logging.getLogger("tollgate.ingestion")

# Failures that retrying will not cure: the document is marked failed at once.
FINAL_ERRORS = (InvalidRequestError, InsufficientBudgetError, PermissionDeniedError, NotFoundError)


class DocumentGone(Exception):
    """The document was deleted while it was being ingested."""


class Stopped(Exception):
    """The process is stopping: the document is left for another one."""


class Ingestion:
    def __init__(
        self,
        session_factory: async_sessionmaker[AsyncSession],
        vectors: VectorStore,
        embedder: Embedder,
        authenticator: Authenticator,
        settings: RagSettings,
    ) -> None:
        self._session_factory = session_factory
        self._vectors = vectors
        self._embedder = embedder
        self._authenticator = authenticator
        self._settings = settings
        self._wake = asyncio.Event()
        self._stopping = False

    def notify(self) -> None:
        """A document was uploaded: look for work now rather than at the next poll."""
        self._wake.set()

    def stop(self) -> None:
        """Ask `run_forever` to end: each worker finishes the database call it is in, hands its
        document back unfinished (claimable at once by another process), and returns."""
        self._stopping = True
        self._wake.set()

    async def run_forever(self, concurrency: int, poll_seconds: float = 1.0) -> None:
        await asyncio.gather(*(self._work(poll_seconds) for _ in range(concurrency)))

    async def _work(self, poll_seconds: float) -> None:
        while not self._stopping:
            try:
                worked = await self.run_once()
            except Exception:  # noqa: BLE001  (a worker loop must survive anything and retry)
                log.exception("ingestion worker error")
                worked = False
            if not worked and not self._stopping:
                self._wake.clear()
                try:
                    async with asyncio.timeout(poll_seconds):
                        await self._wake.wait()
                except TimeoutError:
                    pass

    async def run_once(self) -> bool:
        """Claim one waiting document and ingest it; False when there was none."""
        document_id = await self._claim()
        if document_id is None:
            return False
        try:
            await self._ingest(document_id)
        except Stopped:
            await self._hand_back(document_id)
        return True

    def _lease(self) -> datetime:
        return datetime.now(UTC) + timedelta(seconds=self._settings.job_lease_seconds)

    async def _claim(self) -> int | None:
        now = datetime.now(UTC)
        free = and_(Document.status == DocumentStatus.processing.value,
                    or_(Document.claimed_until.is_(None), Document.claimed_until < now))
        async with self._session_factory() as session:
            candidates = (await session.execute(select(Document.id).where(free).order_by(Document.id).limit(5))).scalars().all()
            for document_id in candidates:
                claimed = (
                    await session.execute(
                        update(Document).where(Document.id == document_id, free)
                        .values(claimed_until=self._lease(), attempts=Document.attempts + 1)
                        .returning(Document.id)
                    )
                ).scalar_one_or_none()
                await session.commit()
                if claimed is not None:
                    return claimed
        return None

    async def _heartbeat(self, document_id: int, done: int, total: int) -> None:
        async with self._session_factory() as session:
            updated = (
                await session.execute(
                    update(Document).where(Document.id == document_id)
                    .values(claimed_until=self._lease(), progress_done=done, progress_total=total)
                    .returning(Document.id)
                )
            ).scalar_one_or_none()
            await session.commit()
        if updated is None:
            raise DocumentGone

    async def _ingest(self, document_id: int) -> None:
        async with self._session_factory() as session:
            row = (
                await session.execute(
                    select(Document, DocumentFile.content).join(DocumentFile, DocumentFile.document_id == Document.id)
                    .where(Document.id == document_id)
                )
            ).first()
        if row is None:
            await self._finish(document_id, DocumentStatus.failed, error="The uploaded file is missing")
            return
        document, content = row
        if document.attempts > self._settings.max_ingestion_attempts:
            await self._finish(document_id, DocumentStatus.failed, error=f"Gave up after {document.attempts - 1} attempts")
            return
        try:
            await self._vectors.delete(document.user_id, document_id=document_id)  # what an interrupted attempt left
            chunks = await asyncio.to_thread(self._chunks, content, document.options, self._embedder.chunk_tokens())
            await self._heartbeat(document_id, 0, len(chunks))
            caller = await self._authenticator.principal_for_user(document.user_id, key_name="ingestion")
            created = int(datetime.now(UTC).timestamp())
            await self._embed_all(caller, document.user_id, document.collection_id, document_id, chunks, created)
            await self._vectors.mark_ready(document.user_id, document.collection_id, document_id)
            await self._finish(document_id, DocumentStatus.ready, chunks=len(chunks))
        except DocumentGone:
            await self._vectors.delete(document.user_id, document_id=document_id)
        except FINAL_ERRORS as error:
            await self._vectors.delete(document.user_id, document_id=document_id)
            await self._finish(document_id, DocumentStatus.failed, error=error.detail)
        except DomainError as error:
            # Provider trouble: leave the claim to expire and try again (up to the attempt limit).
            log.warning("ingestion of document %s failed (attempt %s): %s", document_id, document.attempts, error.detail)
            await self._retry_later(document_id, document.attempts, error.detail)

    async def _embed_all(
        self, caller: object, owner: int, collection_id: int, document_id: int, chunks: list[NewChunk], created: int
    ) -> None:
        """Embed and store the chunks, batch by batch, with up to `embedding_concurrency` calls
        at once (each still waits for a slot under the provider's QoS), the document's progress
        moving on as each batch is stored. The first failure stops the others."""
        size = self._settings.embedding_batch_size
        batches = iter([chunks[start:start + size] for start in range(0, len(chunks), size)])
        done = 0

        failed = False

        async def embed_batches() -> None:
            nonlocal done, failed
            for batch in batches:  # shared: each takes the next batch left
                if failed or self._stopping:
                    return
                try:
                    vectors = await self._embed(caller, [chunk.content for chunk in batch])
                    await self._vectors.upsert(owner, collection_id, document_id, batch, vectors, ready=False, created=created)
                    done += len(batch)
                    await self._heartbeat(document_id, done, len(chunks))
                except BaseException:
                    failed = True
                    raise

        # The first failure stops the others once their batch is in (not cancelled in the
        # middle of a database call: see `api.runtime.background`).
        calls = min(self._settings.embedding_concurrency, -(-len(chunks) // size))
        tasks = [asyncio.create_task(embed_batches()) for _ in range(calls)]
        try:
            outcomes = await asyncio.gather(*tasks, return_exceptions=True)
        finally:
            for task in tasks:  # only if this worker itself was cancelled
                task.cancel()
        errors = [outcome for outcome in outcomes if isinstance(outcome, BaseException)]
        if errors:
            raise errors[0]
        if done < len(chunks):
            raise Stopped

    async def _embed(self, caller: object, texts: list[str]) -> list[list[float]]:
        while True:
            try:
                vectors, _ = await self._embedder.embed(caller, texts)  # type: ignore[arg-type]
                return vectors
            except TooManyRequestsError as error:  # the user's own limits: wait for the window
                if self._stopping:
                    raise Stopped from error
                await asyncio.sleep(min(error.retry_after, self._settings.job_lease_seconds / 2))

    @staticmethod
    def _chunks(content: bytes, options: dict[str, object], max_tokens: int | None) -> list[NewChunk]:
        split = parsing.SplitOptions(**{**options["split"], "separators": tuple(options["split"]["separators"])})  # type: ignore[index,arg-type]
        pieces = parsing.split(parsing.pages_of(content, str(options["kind"])), split, max_tokens)
        if not pieces:
            raise InvalidRequestError("No text could be extracted from the file")
        extra = options.get("metadata") or {}
        return [
            NewChunk(chunk_id, text, {**metadata, **extra})  # type: ignore[dict-item]
            for chunk_id, (text, metadata) in enumerate(pieces, start=1)
        ]

    async def _hand_back(self, document_id: int) -> None:
        """Unclaim a document this process stopped working on; the attempt is not counted."""
        async with self._session_factory() as session:
            await session.execute(
                update(Document).where(Document.id == document_id)
                .values(claimed_until=None, attempts=Document.attempts - 1)
            )
            await session.commit()

    async def _retry_later(self, document_id: int, attempts: int, error: str) -> None:
        # Backing off: a provider that is down is not hammered by every worker.
        retry_at = datetime.now(UTC) + timedelta(seconds=min(60, 5 * attempts))
        async with self._session_factory() as session:
            await session.execute(
                update(Document).where(Document.id == document_id).values(claimed_until=retry_at, error=error[:1000])
            )
            await session.commit()

    async def _finish(self, document_id: int, status: DocumentStatus, error: str | None = None, chunks: int = 0) -> None:
        async with self._session_factory() as session:
            values: dict[str, object] = {"status": status.value, "claimed_until": None, "error": error[:1000] if error else None}
            if status is DocumentStatus.ready:
                values.update(chunks=chunks, next_chunk_id=chunks + 1, progress_done=chunks, progress_total=chunks)
            await session.execute(update(Document).where(Document.id == document_id).values(**values))
            await session.execute(delete(DocumentFile).where(DocumentFile.document_id == document_id))
            await session.commit()
