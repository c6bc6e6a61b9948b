"""Collections: a user reads their own and the public ones, and writes only their own."""

from __future__ import annotations

from sqlalchemy import Select, func, or_, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from api.common.listing import PageRequest, fetch_page
from api.common.schemas import to_unix
from api.db.tables import Collection, Document, User
from api.errors import AuthenticationError, NotFoundError, PermissionDeniedError
from api.identity.principal import Principal
from api.identity.schemas import Permission
from api.rag.schemas import CollectionCreate, CollectionOut, CollectionUpdate, Visibility
from api.rag.vectors import VectorStore

ORDER_COLUMNS = {"id": Collection.id, "name": Collection.name, "created": Collection.created, "updated": Collection.updated}


def owner_of(caller: Principal) -> int:
    """The user a collection or document belongs to; the master key is nobody's."""
    if caller.user_id is None:
        raise PermissionDeniedError("The master key owns no documents: use a user's API key")
    return caller.user_id


def readable(caller: Principal) -> object:
    """SQL condition: collections the caller may read."""
    if caller.user_id is None:
        return Collection.visibility == Visibility.public.value
    return or_(Collection.user_id == caller.user_id, Collection.visibility == Visibility.public.value)


def _may_publish(caller: Principal) -> None:
    if Permission.create_public_collection not in caller.permissions and Permission.admin not in caller.permissions:
        raise PermissionDeniedError("Public collections need the create_public_collection permission")


def _listing() -> Select[tuple[Collection, str | None, str, int]]:
    documents = select(func.count(Document.id)).where(Document.collection_id == Collection.id).scalar_subquery()
    return select(Collection, User.name, User.email, documents).join(User, User.id == Collection.user_id)


def _out(collection: Collection, owner_name: str | None, owner_email: str, documents: int) -> CollectionOut:
    return CollectionOut(
        id=collection.id, name=collection.name, owner=owner_name or owner_email.split("@")[0],
        description=collection.description, visibility=Visibility(collection.visibility),
        created=to_unix(collection.created) or 0, updated=to_unix(collection.updated) or 0, documents=documents,
    )


async def create_collection(session: AsyncSession, caller: Principal, body: CollectionCreate) -> int:
    owner = owner_of(caller)
    if body.visibility is Visibility.public:
        _may_publish(caller)
    collection = Collection(user_id=owner, name=body.name, description=body.description, visibility=body.visibility.value)
    session.add(collection)
    try:
        await session.commit()
    except IntegrityError as error:
        # Its only reference is its owner: a user deleted since their key was checked (still
        # cached by a process that did not make the deletion). Their keys went with them.
        await session.rollback()
        raise AuthenticationError("Invalid API key") from error
    return collection.id


async def list_collections(
    session: AsyncSession, caller: Principal, page: PageRequest, name: str | None, visibility: Visibility | None
) -> tuple[list[CollectionOut], int]:
    query = _listing().where(readable(caller))  # type: ignore[arg-type]
    if name is not None:
        query = query.where(Collection.name == name)
    if visibility is not None:
        query = query.where(Collection.visibility == visibility.value)
    rows, total = await fetch_page(session, query, ORDER_COLUMNS[page.order_by], Collection.id, page)
    return [_out(*row) for row in rows], total


async def readable_collection(session: AsyncSession, caller: Principal, collection_id: int) -> Collection:
    collection = (
        await session.execute(select(Collection).where(Collection.id == collection_id, readable(caller)))  # type: ignore[arg-type]
    ).scalar_one_or_none()
    if collection is None:
        raise NotFoundError(f"Collection {collection_id} not found")
    return collection


async def writable_collection(session: AsyncSession, caller: Principal, collection_id: int) -> Collection:
    collection = await readable_collection(session, caller, collection_id)
    if collection.user_id != caller.user_id:
        raise PermissionDeniedError(f"Collection {collection_id} is not yours to change")
    return collection


async def readable_collection_ids(session: AsyncSession, caller: Principal) -> list[int]:
    return list((await session.execute(select(Collection.id).where(readable(caller)))).scalars())  # type: ignore[arg-type]


async def collection_owners(session: AsyncSession, collection_ids: list[int] | None = None) -> dict[int, int]:
    """Each collection's owner (of these collections, or of all): whose vector shard holds it."""
    query = select(Collection.id, Collection.user_id)
    if collection_ids is not None:
        query = query.where(Collection.id.in_(collection_ids))
    return {collection_id: owner for collection_id, owner in (await session.execute(query)).all()}


async def get_collection(session: AsyncSession, caller: Principal, collection_id: int) -> CollectionOut:
    row = (
        await session.execute(_listing().where(Collection.id == collection_id, readable(caller)))  # type: ignore[arg-type]
    ).first()
    if row is None:
        raise NotFoundError(f"Collection {collection_id} not found")
    return _out(*row)


async def update_collection(session: AsyncSession, caller: Principal, collection_id: int, body: CollectionUpdate) -> None:
    collection = await writable_collection(session, caller, collection_id)
    if body.visibility is Visibility.public and collection.visibility != Visibility.public.value:
        _may_publish(caller)
    if body.name is not None:
        collection.name = body.name
    if "description" in body.model_fields_set:
        collection.description = body.description
    if body.visibility is not None:
        collection.visibility = body.visibility.value
    await session.commit()


async def delete_vectors_of_user(session: AsyncSession, vectors: VectorStore, user_id: int) -> None:
    """Every vector of the user's collections, before the user is deleted: if that fails, the
    user is still there to delete again. (Left behind, they would reach whoever comes next:
    SQLite gives a deleted row's id to the next row made, the user's and their collections'.)"""
    ids = (await session.execute(select(Collection.id).where(Collection.user_id == user_id))).scalars().all()
    for collection_id in ids:
        await vectors.delete(user_id, collection_id=collection_id)


async def delete_collection(session: AsyncSession, vectors: VectorStore, caller: Principal, collection_id: int) -> None:
    """Delete the collection, its documents and every vector of theirs. Vectors go first: if
    that fails, the collection is still there to delete again, and nothing is orphaned."""
    collection = await writable_collection(session, caller, collection_id)
    await vectors.delete(collection.user_id, collection_id=collection_id)
    await session.delete(collection)
    await session.commit()
