"""The one path every model call takes: an ordered list of steps.

Each step may act on the way in (`enter`, in list order) and on the way out (`leave`, in
reverse order, for every step whose `enter` completed), like nested `try/finally` blocks:

    Record -> ResolveRouter -> Authorise -> ApplyPolicies -> KeepConversations -> Prepare -> Admit
        -> AnswerFromCache -> Price -> Forward
    (out:)    Forward -> Price -> AnswerFromCache (keeps the answer) -> Admit (settle) -> ... -> Record

So a call refused anywhere is still settled and recorded, exactly once, with the status its
client gets. A step that answers the call itself (a cache, say) sets `call.answer`: the steps
after it are not entered. A call whose answer is a stream leaves once the stream is over
(`call.finish`, run by the relay), not when the pipeline returns.

A new concern is one `Step` added to the list (`build_steps`); it then applies to every
endpoint that calls a model.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence
from typing import Protocol, runtime_checkable

from api.calls.call import CLIENT_CLOSED, Call
from api.errors import DomainError, status_for
from api.outages import unavailable_error

logger = logging.getLogger("tollgate.errors")


class Step(Protocol):
    async def enter(self, call: Call) -> None:
        """On the way in. Raise a DomainError to refuse the call."""
        ...

    async def leave(self, call: Call) -> None:
        """On the way out, once `call.status` is known. Must not raise for a failed call's sake:
        the steps before it still have to leave."""
        ...


class StepBase:
    """A step with nothing to do on one side inherits that side from here, and the pipeline
    skips it: awaiting a coroutine that does nothing still costs a call, on every model call."""

    async def enter(self, call: Call) -> None:
        pass

    async def leave(self, call: Call) -> None:
        pass


def _acts(step: Step, side: str) -> bool:
    return getattr(type(step), side, None) is not getattr(StepBase, side)


@runtime_checkable
class WatchesStreams(Protocol):
    def stream_opened(self, call: Call) -> None:
        """The call's stream is open (its steps all entered): its client is about to get a 200
        and the first chunks, before the steps leave at the stream's end."""
        ...


class Pipeline:
    def __init__(self, steps: Sequence[Step]) -> None:
        self.steps = tuple(steps)
        # Per step: whether it acts on the way in, and on the way out.
        self._sides = tuple((step, _acts(step, "enter"), _acts(step, "leave")) for step in self.steps)
        self._stream_watchers = [step for step in self.steps if isinstance(step, WatchesStreams)]

    async def run(self, call: Call) -> Call:
        """Carry `call` through the steps. Raises the DomainError its client gets (an outage of
        the database or Redis becomes its 503); the call is recorded either way."""
        entered: list[Step] = []  # those that leave, of the steps entered
        try:
            for step, enters, leaves in self._sides:
                if call.answered:
                    break
                if enters:
                    await step.enter(call)
                if leaves:
                    entered.append(step)
        except asyncio.CancelledError:
            call.status = CLIENT_CLOSED
            await asyncio.shield(self._leave(call, entered))
            raise
        except DomainError as error:
            call.status = status_for(error)
            await self._leave(call, entered)
            raise
        except Exception as error:
            unavailable = unavailable_error(error)
            if unavailable is None:
                call.status = 500
                await self._leave(call, entered)
                raise
            logger.warning("%s: %s: %r", call.path, unavailable.detail, error)
            call.status = status_for(unavailable)
            await self._leave(call, entered)
            raise unavailable from error
        if call.stream is not None:
            # Left once the stream is over: the relay sets the status and tokens, then calls this.
            call.finish = lambda: self._leave(call, entered)
            for watcher in self._stream_watchers:
                watcher.stream_opened(call)
        else:
            call.status = 200
            await self._leave(call, entered)
        return call

    @staticmethod
    async def _leave(call: Call, entered: list[Step]) -> None:
        call.finish = _done
        for step in reversed(entered):
            await step.leave(call)


async def _done() -> None:
    """A call's steps leave once: a second `finish` does nothing."""
