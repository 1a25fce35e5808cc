"""User opt-out: from an opt-out on, writes about the user are suppressed (answered, not stored),
until the user opts back in; erasing what was stored before is the caller's explicit choice.

The opt-out commits under the erasure gate (storage.rows.opt_outs), so every write committed
after it is suppressed; with `erase`, the user's erasure (server.service.erasure) then removes
what was committed before, while writes about the user keep being suppressed rather than refused.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime

from server.service.erasure import MAX_REQUESTER_CHARS, ErasureService
from server.service.ports import ErasureUnit
from server.service.subjects import USER
from storage.records import ErasureRecord, OptOutEventRecord, OptOutRecord

MAX_CHOICES_SHOWN = 100
"""A user's newest choices that GetOptOut returns."""


@dataclass(frozen=True, slots=True)
class OptOutState:
    """Whether a user is opted out now, and their newest choices, newest first."""

    opt_out: OptOutRecord | None
    choices: list[OptOutEventRecord]


class OptOutService:
    """Marks users opted out or back in, and erases their past when asked to."""

    def __init__(
        self,
        erasures: ErasureService,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        """Run units of work through `erasures`, which erases past data when asked to."""
        self._erasures = erasures
        self._clock = clock

    async def opt_out(
        self, user_id: str, requested_by: str, *, erase: bool
    ) -> tuple[OptOutRecord, ErasureRecord | None]:
        """Opt the user out (again is fine: the first opt-out's time is kept); with `erase`,
        erase everything stored about them too and return that erasure. Raises as
        ErasureService.erase does."""
        user = self._erasures.subject(USER, user_id)
        requested_by = requested_by[:MAX_REQUESTER_CHARS]
        now = self._clock()
        opt_out = await self._erasures.run_write(
            lambda unit: unit.opt_outs.opt_out(user, requested_by, now, erase=erase)
        )
        erasure = await self._erasures.erase(USER, user_id, requested_by) if erase else None
        return opt_out, erasure

    async def opt_in(self, user_id: str, requested_by: str) -> bool:
        """Take the user's writes again; whether they had opted out."""
        user = self._erasures.subject(USER, user_id)
        now = self._clock()
        return await self._erasures.run_write(
            lambda unit: unit.opt_outs.opt_in(user, requested_by[:MAX_REQUESTER_CHARS], now)
        )

    async def state(self, user_id: str) -> OptOutState:
        """The user's opt-out, if any, and their newest choices."""
        user = self._erasures.subject(USER, user_id)

        def read(unit: ErasureUnit) -> OptOutState:
            return OptOutState(
                unit.opt_outs.get(user), unit.opt_outs.events(user, MAX_CHOICES_SHOWN)
            )

        return await self._erasures.run_read(read)
