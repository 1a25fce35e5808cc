"""The context-manager protocol of the objects a caller must close: FeedbackClient, EventBatcher."""

from __future__ import annotations

from typing import TYPE_CHECKING, Self

if TYPE_CHECKING:
    from types import TracebackType

__all__ = ["Closing"]


class Closing:
    """Used in a `with` block, closed when the block ends, however it ends."""

    def close(self) -> object:
        """Release what the object holds; subclasses say how."""
        raise NotImplementedError

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc_value: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.close()
