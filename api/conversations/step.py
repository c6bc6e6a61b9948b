"""Conversation records as a step of the call pipeline: after the data policies (what is kept is
what they let through, redacted), left once the answer is known."""

from __future__ import annotations

import copy
import logging
from typing import Any

from api.calls.call import Call
from api.conversations.keeper import ConversationKeeper

logger = logging.getLogger("tollgate.conversations")


class KeepConversations:
    def __init__(self, keeper: ConversationKeeper) -> None:
        self._keeper = keeper

    async def enter(self, call: Call) -> None:
        body: Any = getattr(call.operation, "body", None)
        if call.principal.keep_conversations and call.principal.user_id is not None and isinstance(body, dict):
            call.kept_request = copy.deepcopy(body)  # as the policies left it, before a search adds to it

    async def leave(self, call: Call) -> None:
        request = call.kept_request
        if request is None or call.status != 200:
            return
        answer = call.answer if call.stream is None else call.streamed_answer
        answer = None if answer is None else {field: value for field, value in answer.items() if field != "usage"}
        metadata = request.get("metadata")
        name = metadata.get("session") if isinstance(metadata, dict) and isinstance(metadata.get("session"), str) else None
        assert call.principal.user_id is not None
        try:
            await self._keeper.keep(call.principal.user_id, call.principal.organization_id, call.request_id, call.path,
                                    call.model, request, answer, name[:255] if name else None)
        except Exception:  # noqa: BLE001 - a record not kept must not fail the call it records
            logger.exception("the conversation record of %s was not kept", call.request_id)
