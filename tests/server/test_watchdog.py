"""The watchdog cancels a call whose client keeps it waiting, and only that one."""

from __future__ import annotations

import asyncio

from server.call_handlers import Call, Watchdog


def test_an_expired_wait_cancels_its_call_and_says_why() -> None:
    async def scenario() -> tuple[str | None, bool, bool]:
        watchdog = Watchdog()
        watchdog.start()

        async def waiting(seconds: float, reason: str) -> Call:
            call = Call("/m", "ipv4:127.0.0.1:1", "ipv4:127.0.0.1", asyncio.current_task())
            watchdog.expect(call, seconds, reason)
            try:
                await asyncio.sleep(2.0)
            except asyncio.CancelledError:
                return call
            finally:
                watchdog.done(call)
            return call

        stalled, patient = await asyncio.gather(waiting(0.3, "message"), waiting(5.0, "x"))
        await watchdog.stop()
        return stalled.expired, patient.expired is None, watchdog._deadlines == {}

    reason, other_untouched, nothing_left = asyncio.run(scenario())

    assert reason == "message"
    assert other_untouched
    assert nothing_left
