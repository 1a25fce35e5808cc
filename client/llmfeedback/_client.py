"""The friendly, typed client: plain Python arguments in, generated protobuf messages out."""

from __future__ import annotations

import os
import weakref
from collections.abc import Generator, Iterable, Iterator, Mapping, Sequence
from typing import TYPE_CHECKING, Any, Literal, Protocol, TypeVar

import grpc

from ._batch import BatchResult, IngestResult, ItemResult, deliver, split_batches
from ._batcher import EventBatcher, OnFull
from ._closing import Closing
from ._connection import (
    authorization_metadata,
    channel_credentials,
    has_tls_arguments,
    resolve_tls,
)
from ._conversions import to_timestamp
from ._errors import FeedbackError, error_from_rpc_error, error_from_status
from ._items import (
    EVENTS,
    FEEDBACK,
    INTERACTIONS,
    EventItem,
    FeedbackItem,
    HistoricItem,
    IngestItem,
    InteractionItem,
    coerce_items,
    kind_of,
)
from ._kinds import Kind
from ._listing import (
    EventFilters,
    ExportChunk,
    FeedbackFilters,
    InteractionFilters,
    Order,
    UserRecord,
    filter_fields,
    list_request,
    order_by,
    user_records,
    watch_filter_fields,
)
from ._retry import (
    DEFAULT_RETRY_POLICY,
    RetryPolicy,
    call_with_retry,
    deadline_of,
    time_left,
    wait_or_raise,
)
from ._watch import Watch
from ._watch import progress_interval as progress_interval_of
from .proto.feedback.v1 import (
    feedback_pb2,
    feedback_service_pb2,
    feedback_service_pb2_grpc,
    privacy_pb2,
)

if TYPE_CHECKING:
    from collections.abc import Callable
    from datetime import datetime
    from pathlib import Path
    from typing import Unpack

    from google.protobuf.message import Message

    from .proto.feedback.v1 import batch_pb2, event_pb2, interaction_pb2

__all__ = ["DEFAULT_ADDRESS", "DEFAULT_TIMEOUT", "FeedbackClient"]

DEFAULT_ADDRESS = "127.0.0.1:50051"
"""Where the service listens when run locally with its defaults."""

DEFAULT_TIMEOUT = 10.0
"""Seconds a call may take, retries included, unless the client or the call says otherwise."""

_RequestT = TypeVar("_RequestT")
_ResponseT = TypeVar("_ResponseT")
_RecordT = TypeVar("_RecordT")
_ExportRequestT = TypeVar(
    "_ExportRequestT",
    feedback_service_pb2.ExportFeedbackRequest,
    feedback_service_pb2.ExportInteractionsRequest,
    feedback_service_pb2.ExportEventsRequest,
)
_ExportResponseT = TypeVar("_ExportResponseT", bound="_ExportResponse")
_ListRequestT = TypeVar(
    "_ListRequestT",
    feedback_service_pb2.ListFeedbackRequest,
    feedback_service_pb2.ListInteractionsRequest,
    feedback_service_pb2.ListEventsRequest,
    feedback_service_pb2.ListErasuresRequest,
)
_PageT = TypeVar("_PageT", bound="_Page")
_ItemRequestT = TypeVar("_ItemRequestT", bound="Message")
_ItemT = TypeVar("_ItemT", InteractionItem, FeedbackItem, EventItem)


class FeedbackClient(Closing):
    """Synchronous client of feedback.v1.FeedbackService; thread-safe, so share one instance.

    Use it as a context manager, or call `close()`, to release the channel it opened. Every method
    raises a `FeedbackError` subclass when the call fails, `ValueError`/`TypeError` before any call
    when the arguments cannot form a valid request.

    Idempotent writes: every write carries a request_id (AIP-155), made once per call before the
    first attempt, or once per batch item when the item is made, and sent again unchanged by every
    retry. A write the server stored although its answer was lost (the connection dropped, the
    attempt timed out) is therefore not stored twice when retried: the server answers with the
    record it stored the first time, so at-least-once delivery becomes exactly-once storage.
    Writes that report when they happened also carry sent_time, fresh on each attempt, so the
    server can correct this machine's clock skew.

    When the client gives up on a write with DEADLINE_EXCEEDED, UNAVAILABLE or CANCELLED, the
    write may have been stored: call again with `request_id=error.request_id` (each item of a
    failed batch: `error.request_ids`) and it is stored at most once, the retry returning the
    stored record.

    Opted-out users: a write about a user who opted out (`opt_out_user`) is answered but not
    stored, and it is not an error. `record_interaction`, `submit_feedback` and `log_event` then
    return an empty record, whose id is 0 (`is_suppressed(record)` says so); in a batch the item's
    ItemResult has `suppressed` set and counts in `suppressed_count`, neither accepted nor
    rejected; `ingest` and `import_history` count such items in `suppressed_count`; an
    EventBatcher counts them in `stats.suppressed`. Nothing suppressed is retried: it would be
    suppressed again. `opt_in_user` takes the user's writes again.
    """

    def __init__(
        self,
        address: str = DEFAULT_ADDRESS,
        *,
        api_key: str | None = None,
        tls: bool | None = None,
        ca_file: str | Path | None = None,
        client_cert_file: str | Path | None = None,
        client_key_file: str | Path | None = None,
        timeout: float | None = DEFAULT_TIMEOUT,
        retry: RetryPolicy = DEFAULT_RETRY_POLICY,
        channel_options: Sequence[tuple[str, Any]] | None = None,
        metadata: Mapping[str, str] | Sequence[tuple[str, str]] | None = None,
        credentials: grpc.ChannelCredentials | None = None,
        channel: grpc.Channel | None = None,
    ) -> None:
        """Connect to `address` (host:port), with an API key, over plaintext, TLS or mutual TLS.

        `api_key` (default: $FEEDBACK_API_KEY) is sent as `authorization: Bearer <key>` metadata
        with every call, retries and batcher calls included, on any channel; it is stripped of
        surrounding whitespace, and an empty key, or one with spaces or non-ASCII characters,
        raises ValueError. `tls=True` connects over TLS trusting the system's roots, `ca_file`
        (PEM) trusts that CA instead, and `client_cert_file` with `client_key_file` (PEM, both or
        neither) adds a client certificate for mutual TLS; a CA file or certificate implies TLS,
        and `tls=False` forces plaintext. Each falls back to its variable when None:
        $FEEDBACK_TLS=1, $FEEDBACK_CA_FILE, $FEEDBACK_CLIENT_CERT, $FEEDBACK_CLIENT_KEY (arguments
        win; empty variables count as unset). To reach a server whose certificate names another
        host, pass `channel_options=[("grpc.ssl_target_name_override", "its-name")]`.

        `credentials` replaces the TLS arguments with channel credentials of your own. `timeout`
        bounds each call in seconds, retries included (None: no deadline). `metadata` is sent
        with every call; an authorization entry in it and an `api_key` together are a ValueError.
        Pass an existing `channel` to share it; the client then leaves closing it to you.
        """
        tls_arguments = has_tls_arguments(tls, ca_file, client_cert_file, client_key_file)
        if channel is not None and (
            channel_options is not None or credentials is not None or tls_arguments
        ):
            raise ValueError(
                "channel_options, credentials and the TLS arguments configure a new channel; "
                "not with channel"
            )
        if credentials is not None and tls_arguments:
            raise ValueError("give credentials or the TLS arguments (tls, ca_file, ...); not both")
        self._timeout = timeout
        self._retry = retry
        self._metadata: tuple[tuple[str, str], ...] = authorization_metadata(
            _metadata_pairs(metadata), api_key, os.environ
        )
        self._owns_channel = channel is None
        if channel is None:
            if credentials is None:
                tls_files = resolve_tls(
                    tls=tls,
                    ca_file=ca_file,
                    client_cert_file=client_cert_file,
                    client_key_file=client_key_file,
                    environ=os.environ,
                )
                if tls_files is not None:
                    credentials = channel_credentials(tls_files)
            options = list(channel_options or ())
            if credentials is None:
                channel = grpc.insecure_channel(address, options=options)
            else:
                channel = grpc.secure_channel(address, credentials, options=options)
        self._channel: grpc.Channel = channel
        self._stub = feedback_service_pb2_grpc.FeedbackServiceStub(channel)
        self._batchers: weakref.WeakSet[EventBatcher] = weakref.WeakSet()
        self._closed = False

    def close(self) -> None:
        """Close open event batchers, then the channel if this client opened it.

        Each open batcher gets the client's timeout to send what it holds (see
        `EventBatcher.close`). Later calls raise RuntimeError.
        """
        if self._closed:
            return
        for batcher in list(self._batchers):
            batcher.close(timeout=self._timeout)
        self._closed = True
        if self._owns_channel:
            self._channel.close()

    def record_interaction(
        self,
        conversation_id: str,
        *,
        message_id: str | None = None,
        user_id: str | None = None,
        model: str | None = None,
        input_text: str | None = None,
        input_hash: str | None = None,
        output_text: str | None = None,
        output_hash: str | None = None,
        latency_ms: float | None = None,
        prompt_tokens: int | None = None,
        completion_tokens: int | None = None,
        total_tokens: int | None = None,
        metadata: Mapping[str, Any] | None = None,
        occur_time: datetime | None = None,
        request_id: str | None = None,
        timeout: float | None = None,
    ) -> interaction_pb2.Interaction:
        """Record one chat turn so later feedback can link to it; returns it as stored.

        Give the input and the output each as text (the server hashes it and stores only the hash)
        or as a hash from `compute_hash`, not both. `request_id` (a UUID string, random by default)
        is sent on every retry, so the turn is stored once; see "Idempotent writes" on the class.
        When the turn's user opted out, nothing is stored and the Interaction returned is empty
        (id 0, `is_suppressed`); see "Opted-out users" on the class.
        """
        request = INTERACTIONS.request(INTERACTIONS.arguments(locals()))
        response = self._write(self._stub.RecordInteraction, INTERACTIONS, request, timeout)
        return response.interaction

    def submit_feedback(
        self,
        conversation_id: str | None = None,
        *,
        message_id: str | None = None,
        user_id: str | None = None,
        score: int | None = None,
        thumb: bool | None = None,
        label: str | None = None,
        text: str | None = None,
        latency_ms: float | None = None,
        tokens_used: int | None = None,
        input_hash: str | None = None,
        output_hash: str | None = None,
        metadata: Mapping[str, Any] | None = None,
        model: str | None = None,
        request_id: str | None = None,
        timeout: float | None = None,
    ) -> feedback_pb2.Feedback:
        """Submit one rating of an AI answer; returns it as stored, linked to its interaction.

        Rate with exactly one of `score` (1-5), `thumb` (True for up, False for down) or `label`.
        Name the answer by `conversation_id`, `message_id`, or both. `model` defaults to the rated
        interaction's; a different one fails with FailedPreconditionError (MODEL_MISMATCH).
        `request_id` works as in `record_interaction`. When the voter (given, or the rated
        interaction's user) opted out, nothing is stored and the Feedback returned is empty (id 0,
        `is_suppressed`).
        """
        request = FEEDBACK.request(FEEDBACK.arguments(locals()))
        response = self._write(self._stub.SubmitFeedback, FEEDBACK, request, timeout)
        return response.feedback

    def log_event(
        self,
        user_id: str,
        event_type: str,
        *,
        details: Mapping[str, Any] | None = None,
        event_time: datetime | None = None,
        event_id: str | None = None,
        request_id: str | None = None,
        timeout: float | None = None,
    ) -> event_pb2.Event:
        """Log one product analytics event, such as a page view; returns it as stored.

        `event_id` is your own identifier of the event, unique across the service: an event whose
        event_id is already stored is not stored again, and the stored one is returned.
        `request_id` works as in `record_interaction`. When `user_id` opted out, nothing is stored
        and the Event returned is empty (id 0, `is_suppressed`).
        """
        request = EVENTS.request(EVENTS.arguments(locals()))
        response = self._write(self._stub.LogEvent, EVENTS, request, timeout)
        return response.event

    def get_stats(
        self,
        *,
        conversation_id: str | None = None,
        user_id: str | None = None,
        message_id: str | None = None,
        start_time: datetime | None = None,
        end_time: datetime | None = None,
        model: str | None = None,
        event_type: str | None = None,
        bucket: TimeBucket | None = None,
        group_by: StatsGroupBy | None = None,
        top_n: int = 0,
        compare_previous: bool = False,
        timeout: float | None = None,
    ) -> feedback_service_pb2.GetStatsResponse:
        """Aggregate feedback, interactions and events, overall or for the given filters.

        The time range includes `start_time` and excludes `end_time`. `bucket` ("hour", "day",
        "week" or "month") also splits it into UTC buckets (`response.buckets`); `group_by`
        ("model", "event_type", "conversation" or "user") returns the `top_n` largest groups
        (0: the server's default, 10); `compare_previous` adds the period of the same length just
        before (`response.previous`, `response.change`). Buckets and the comparison need both times.
        """
        request = feedback_service_pb2.GetStatsRequest(
            conversation_id=conversation_id or "",
            user_id=user_id or "",
            message_id=message_id or "",
            model=model or "",
            event_type=event_type or "",
            top_n=top_n,
            compare_previous=compare_previous,
        )
        if start_time is not None:
            request.start_time.CopyFrom(to_timestamp(start_time, name="start_time"))
        if end_time is not None:
            request.end_time.CopyFrom(to_timestamp(end_time, name="end_time"))
        if bucket is not None:
            request.bucket = _enum_value(request, "bucket", "TIME_BUCKET_", bucket)
        if group_by is not None:
            request.group_by = _enum_value(request, "group_by", "STATS_GROUP_BY_", group_by)
        return self._call(self._stub.GetStats, request, timeout)

    def list_feedback(
        self,
        *,
        page_size: int = 0,
        page_token: str = "",
        order: Order | None = None,
        timeout: float | None = None,
        **filters: Unpack[FeedbackFilters],
    ) -> feedback_service_pb2.ListFeedbackResponse:
        """Fetch one page of feedback, newest first; see `iter_feedback` to walk every page.

        The filters are those of `FeedbackFilters`. `page_size` 0 lets the server choose (50;
        at most 1000); pass the response's `next_page_token` with the same filters and order to
        get the following page. Rows stored meanwhile never make pages skip or repeat an entry.
        """
        request = list_request(
            feedback_service_pb2.ListFeedbackRequest,
            FeedbackFilters,
            filters,
            page_size=page_size,
            page_token=page_token,
            order=order,
        )
        return self._call(self._stub.ListFeedback, request, timeout)

    def list_feedback_history(
        self, message_id: str, user_id: str, *, timeout: float | None = None
    ) -> list[feedback_pb2.Feedback]:
        """The votes `user_id` gave on `message_id`, oldest first, the current one last.

        One vote per user per message counts: a newer one replaces the older, which is kept with
        `replace_time` and `replaced_by_id` set. At most the newest 1000 are returned; no vote
        gives an empty list.
        """
        request = feedback_service_pb2.ListFeedbackHistoryRequest(
            message_id=message_id, user_id=user_id
        )
        response = self._call(self._stub.ListFeedbackHistory, request, timeout)
        return list(response.feedback)

    def list_interactions(
        self,
        *,
        page_size: int = 0,
        page_token: str = "",
        order: Order | None = None,
        timeout: float | None = None,
        **filters: Unpack[InteractionFilters],
    ) -> feedback_service_pb2.ListInteractionsResponse:
        """Fetch one page of recorded chat turns, newest first; paging as in `list_feedback`."""
        request = list_request(
            feedback_service_pb2.ListInteractionsRequest,
            InteractionFilters,
            filters,
            page_size=page_size,
            page_token=page_token,
            order=order,
        )
        return self._call(self._stub.ListInteractions, request, timeout)

    def list_events(
        self,
        *,
        page_size: int = 0,
        page_token: str = "",
        order: Order | None = None,
        timeout: float | None = None,
        **filters: Unpack[EventFilters],
    ) -> feedback_service_pb2.ListEventsResponse:
        """Fetch one page of analytics events, newest first; paging as in `list_feedback`."""
        request = list_request(
            feedback_service_pb2.ListEventsRequest,
            EventFilters,
            filters,
            page_size=page_size,
            page_token=page_token,
            order=order,
        )
        return self._call(self._stub.ListEvents, request, timeout)

    def iter_feedback(
        self,
        *,
        page_size: int = 0,
        order: Order | None = None,
        timeout: float | None = None,
        **filters: Unpack[FeedbackFilters],
    ) -> Iterator[feedback_pb2.Feedback]:
        """Yield every matching feedback, newest first, fetching pages as the loop needs them.

        `timeout` applies to each page fetch. Stop iterating early to avoid fetching more pages.
        Arguments are checked before the first fetch.
        """
        request = list_request(
            feedback_service_pb2.ListFeedbackRequest,
            FeedbackFilters,
            filters,
            page_size=page_size,
            order=order,
        )
        return self._walk_pages(
            self._stub.ListFeedback, request, timeout, lambda page: page.feedback
        )

    def iter_interactions(
        self,
        *,
        page_size: int = 0,
        order: Order | None = None,
        timeout: float | None = None,
        **filters: Unpack[InteractionFilters],
    ) -> Iterator[interaction_pb2.Interaction]:
        """Yield every matching interaction, newest first, as `iter_feedback` does."""
        request = list_request(
            feedback_service_pb2.ListInteractionsRequest,
            InteractionFilters,
            filters,
            page_size=page_size,
            order=order,
        )
        return self._walk_pages(
            self._stub.ListInteractions, request, timeout, lambda page: page.interactions
        )

    def iter_events(
        self,
        *,
        page_size: int = 0,
        order: Order | None = None,
        timeout: float | None = None,
        **filters: Unpack[EventFilters],
    ) -> Iterator[event_pb2.Event]:
        """Yield every matching event, newest first, as `iter_feedback` does."""
        request = list_request(
            feedback_service_pb2.ListEventsRequest,
            EventFilters,
            filters,
            page_size=page_size,
            order=order,
        )
        return self._walk_pages(self._stub.ListEvents, request, timeout, lambda page: page.events)

    def export_feedback(
        self,
        *,
        order: Order | None = None,
        resume_token: str = "",
        timeout: float | None = None,
        **filters: Unpack[FeedbackFilters],
    ) -> Generator[ExportChunk[feedback_pb2.Feedback], None, None]:
        """Stream every matching feedback in chunks of up to 1000, oldest first by default.

        Each `ExportChunk` carries the token that resumes right after it: pass it back as
        `resume_token` (same filters and order) to continue an interrupted export with no gap
        and no repeat. A transient failure (UNAVAILABLE) is retried from the last chunk under
        the client's RetryPolicy, so the records never repeat. `timeout` bounds the whole
        export; by default it has none. Close the generator (or stop iterating it and drop it)
        to cancel the stream.
        """
        request = feedback_service_pb2.ExportFeedbackRequest(
            **filter_fields(filters, FeedbackFilters), order_by=order_by(order)
        )
        return self._export(
            self._stub.ExportFeedback, request, resume_token, timeout, lambda r: r.feedback
        )

    def export_interactions(
        self,
        *,
        order: Order | None = None,
        resume_token: str = "",
        timeout: float | None = None,
        **filters: Unpack[InteractionFilters],
    ) -> Generator[ExportChunk[interaction_pb2.Interaction], None, None]:
        """Stream every matching interaction in chunks, as `export_feedback` does."""
        request = feedback_service_pb2.ExportInteractionsRequest(
            **filter_fields(filters, InteractionFilters), order_by=order_by(order)
        )
        return self._export(
            self._stub.ExportInteractions, request, resume_token, timeout, lambda r: r.interactions
        )

    def export_events(
        self,
        *,
        order: Order | None = None,
        resume_token: str = "",
        timeout: float | None = None,
        **filters: Unpack[EventFilters],
    ) -> Generator[ExportChunk[event_pb2.Event], None, None]:
        """Stream every matching event in chunks, as `export_feedback` does."""
        request = feedback_service_pb2.ExportEventsRequest(
            **filter_fields(filters, EventFilters), order_by=order_by(order)
        )
        return self._export(
            self._stub.ExportEvents, request, resume_token, timeout, lambda r: r.events
        )

    def watch_feedback(
        self,
        *,
        start_position: str = "",
        start_page_token: str = "",
        progress_interval: float | None = None,
        **filters: Unpack[FeedbackFilters],
    ) -> Watch[feedback_pb2.Feedback]:
        """Follow feedback as it is committed, on any replica, in commit order.

        Iterate the returned `Watch` for `WatchedRecord`s (the record and the position after
        it); it blocks until the next one comes, reconnects by itself and resumes from its
        last position. Without a start it begins now; `start_position` (a record's or a
        watch's `position`) continues right after it; `start_page_token` continues after a
        list page or export chunk fetched oldest first with the same filters. The filters are
        those of `FeedbackFilters` but the time range. `progress_interval` (1 s to 1 h, 10 s
        by default) is how often an idle watch's position moves on.
        """
        request = feedback_service_pb2.WatchFeedbackRequest(
            **watch_filter_fields(filters, FeedbackFilters),
            progress_interval=progress_interval_of(progress_interval),
        )
        return self._watch(
            self._stub.WatchFeedback, request, start_position, start_page_token, "feedback"
        )

    def watch_interactions(
        self,
        *,
        start_position: str = "",
        start_page_token: str = "",
        progress_interval: float | None = None,
        **filters: Unpack[InteractionFilters],
    ) -> Watch[interaction_pb2.Interaction]:
        """Follow recorded chat turns as they are committed, as `watch_feedback` does."""
        request = feedback_service_pb2.WatchInteractionsRequest(
            **watch_filter_fields(filters, InteractionFilters),
            progress_interval=progress_interval_of(progress_interval),
        )
        return self._watch(
            self._stub.WatchInteractions,
            request,
            start_position,
            start_page_token,
            "interactions",
        )

    def watch_events(
        self,
        *,
        start_position: str = "",
        start_page_token: str = "",
        progress_interval: float | None = None,
        **filters: Unpack[EventFilters],
    ) -> Watch[event_pb2.Event]:
        """Follow analytics events as they are committed, as `watch_feedback` does."""
        request = feedback_service_pb2.WatchEventsRequest(
            **watch_filter_fields(filters, EventFilters),
            progress_interval=progress_interval_of(progress_interval),
        )
        return self._watch(
            self._stub.WatchEvents, request, start_position, start_page_token, "events"
        )

    def _watch(
        self,
        method: Any,
        request: Any,
        start_position: str,
        start_page_token: str,
        records_field: str,
    ) -> Watch[Any]:
        """A Watch whose every (re)connection sends `request` from where it stands."""
        self._check_open()

        def open_stream(position: str, page_token: str) -> Any:
            self._check_open()
            request.start_position = position
            request.start_page_token = page_token
            return method(request, metadata=self._metadata)

        return Watch(
            open_stream,
            lambda response: getattr(response, records_field),
            self._retry,
            start_position=start_position,
            start_page_token=start_page_token,
        )

    def record_interactions(
        self,
        interactions: Iterable[InteractionItem | Mapping[str, Any]],
        *,
        timeout: float | None = None,
    ) -> BatchResult:
        """Record many chat turns with RecordInteractions; one result per item, in input order.

        Items are `InteractionItem`s or mappings of their fields. Splitting, retries and errors
        work as for `log_events`.
        """
        return self._write_batches(INTERACTIONS, interactions, timeout)

    def submit_feedback_batch(
        self,
        feedback: Iterable[FeedbackItem | Mapping[str, Any]],
        *,
        timeout: float | None = None,
    ) -> BatchResult:
        """Submit many ratings with SubmitFeedbackBatch; one result per item, in input order.

        Items are `FeedbackItem`s or mappings of their fields. Splitting, retries and errors work
        as for `log_events`.
        """
        return self._write_batches(FEEDBACK, feedback, timeout)

    def log_events(
        self,
        events: Iterable[EventItem | Mapping[str, Any]],
        *,
        timeout: float | None = None,
    ) -> BatchResult:
        """Log many analytics events with LogEvents; one result per item, in input order.

        Items are `EventItem`s or mappings of their fields (`{"user_id": ..., "event_type": ...}`);
        all are built and checked first, so a bad one raises ValueError/TypeError before any call.
        Inputs of more than 1000 items (or about 3.5 MiB) are sent in several calls, one after the
        other; result indices always refer to the input. `timeout` bounds each of those calls,
        retries included.

        A call failing with UNAVAILABLE or RESOURCE_EXHAUSTED (with RetryInfo) is retried under the
        client's RetryPolicy; of a call that succeeded, only the items rejected with those codes
        are sent again, within the same attempts. Each item keeps its request_id throughout, so an
        item stored by an attempt whose answer was lost comes back as a duplicate
        (`ItemResult.duplicate`, counted in `duplicate_count`), accepted, not stored twice. Passing
        the same items again after a failure is just as safe. Other rejections are final: each
        rejected item's result carries the FeedbackError the single-item method would have raised.
        Items about users who opted out are suppressed: answered, not stored, never sent again
        (`ItemResult.suppressed`, counted in `suppressed_count`, not in `rejected_count`).
        When a call fails for good, its FeedbackError is raised with `batch_result` holding the
        outcome of every item settled so far; the others may not be stored.
        """
        return self._write_batches(EVENTS, events, timeout)

    def ingest(
        self,
        items: Iterable[IngestItem],
        *,
        timeout: float | None = None,
    ) -> IngestResult:
        """Bulk-load interactions, feedback and events of any number on one Ingest stream.

        Items are read lazily, on a gRPC thread, as the stream has room for them; the server
        commits as it goes and answers with totals and the first 1000 rejections once the input is
        exhausted. `timeout` bounds the whole stream; by default it has none (the client's timeout
        does not apply to a bulk load). Nothing is retried: if the stream breaks, the FeedbackError
        is raised with `sent_count` saying how many items were sent, of which the server may have
        stored some. If reading the input raises (or yields something that is not an item), the
        stream is ended there, and the exception is raised with a note giving the server's totals
        for the items before it. Items carry their request_ids, so loading the same items again
        after a broken stream stores only those that were missing; the others count as duplicates.
        Items about users who opted out are not stored and count in `suppressed_count`, not as
        rejections.
        """
        return self._load(
            items,
            _ingest_item,
            feedback_service_pb2.IngestRequest,
            self._stub.Ingest,
            "ingest",
            timeout,
        )

    def import_history(
        self,
        items: Iterable[HistoricItem],
        *,
        timeout: float | None = None,
    ) -> IngestResult:
        """Load another system's history with its original times (ImportHistory, admin scope).

        Each HistoricItem lands in the buckets of its own create_time, never after the server's
        clock; the items' times are taken as they are, with no clock-skew correction. Streams,
        answers and fails like `ingest`. Give each item a request_id derived from its source
        record (uuid.uuid5 of the record's key) so that an import sent again stores only what is
        missing; send each voter's votes oldest first (an older vote is rejected).
        """
        return self._load(
            items,
            _import_item,
            feedback_service_pb2.ImportHistoryRequest,
            self._stub.ImportHistory,
            "import",
            timeout,
        )

    def erase_user(self, user_id: str, *, timeout: float | None = None) -> privacy_pb2.Erasure:
        """Erase everything stored about one user (EraseUser, admin scope); returns the finished
        erasure log entry, whose `erased` counts the records removed.

        Every interaction, current and replaced feedback and event whose user_id is `user_id`
        goes, with its share of every aggregate: `get_stats` then answers as if it had never
        been written. From the erasure's start until it finishes, writes about the user are
        refused with FailedPreconditionError (reason ERASURE_IN_PROGRESS). The server deletes in
        short transactions and answers once nothing is left, which for a user with many records
        can take longer than the client's timeout: pass a larger `timeout` (a client made with
        `timeout=None` sets no deadline).

        A call that timed out or lost its connection can simply be made again: the erasure goes
        on without the caller (or, if the server stopped, resumes), and the repeated call waits
        for it and returns the counts of every run. If it finished in between, the repeated
        call makes a new log entry that removes what was written since, usually nothing. Being
        safe to repeat, the call is retried on UNAVAILABLE, CANCELLED and RESOURCE_EXHAUSTED
        with RetryInfo (the server erasing 4 other subjects) like any other.
        """
        request = feedback_service_pb2.EraseUserRequest(user_id=user_id)
        return self._call(self._stub.EraseUser, request, timeout).erasure

    def erase_conversation(
        self, conversation_id: str, *, timeout: float | None = None
    ) -> privacy_pb2.Erasure:
        """Erase one conversation's interactions and current and replaced feedback
        (EraseConversation, admin scope), as `erase_user` does for a user; returns the finished
        erasure log entry. Events name no conversation and stay. A call that timed out can
        simply be made again, as with `erase_user`.
        """
        request = feedback_service_pb2.EraseConversationRequest(conversation_id=conversation_id)
        return self._call(self._stub.EraseConversation, request, timeout).erasure

    def list_erasures(
        self,
        *,
        user_id: str | None = None,
        conversation_id: str | None = None,
        page_size: int = 0,
        page_token: str = "",
        timeout: float | None = None,
    ) -> feedback_service_pb2.ListErasuresResponse:
        """Fetch one page of the erasure log (ListErasures, admin scope), newest first: finished
        erasures and those under way (`finish_time` unset); see `iter_erasures` for every page.

        The log holds each subject as a hash, never its id: give `user_id` or `conversation_id`
        (not both) to get the entries of that subject only. `page_size` 0 lets the server choose
        (100; at most 1000); pass the response's `next_page_token` with the same filter to get
        the next, older page.
        """
        request = feedback_service_pb2.ListErasuresRequest(
            user_id=user_id or "",
            conversation_id=conversation_id or "",
            page_size=page_size,
            page_token=page_token,
        )
        return self._call(self._stub.ListErasures, request, timeout)

    def iter_erasures(
        self,
        *,
        user_id: str | None = None,
        conversation_id: str | None = None,
        page_size: int = 0,
        timeout: float | None = None,
    ) -> Iterator[privacy_pb2.Erasure]:
        """Yield every entry of the erasure log, newest first, as `iter_feedback` does."""
        request = feedback_service_pb2.ListErasuresRequest(
            user_id=user_id or "", conversation_id=conversation_id or "", page_size=page_size
        )
        return self._walk_pages(
            self._stub.ListErasures, request, timeout, lambda page: page.erasures
        )

    def export_user_data(
        self, user_id: str, *, timeout: float | None = None
    ) -> Generator[UserRecord, None, None]:
        """Stream everything stored about one user, for an access request (ExportUserData, admin
        scope), as `UserRecord(kind, record)` tuples.

        First the user's interactions (kind "interaction", `Interaction` records), then their
        current feedback ("feedback", `Feedback`), the votes newer ones replaced
        ("replaced_vote", `Feedback` with `replace_time` and `replaced_by_id` set), and their
        events ("event", `Event`), each in id order. Texts sent only to be hashed were never
        stored and are not in it; redacted values come as stored. Records written or erased
        during the export may or may not appear.

        The stream has no resume token: a failure before the first record is retried under the
        client's RetryPolicy, one after it raises its FeedbackError, and the caller starts the
        export again from the beginning. `timeout` bounds the whole export; by default it has
        none. Close the generator (or stop iterating it and drop it) to cancel the stream.
        """
        request = feedback_service_pb2.ExportUserDataRequest(user_id=user_id)
        return self._export_user_data(request, timeout)

    def opt_out_user(
        self, user_id: str, *, erase_past_data: bool = False, timeout: float | None = None
    ) -> feedback_service_pb2.OptOutUserResponse:
        """Opt a user out (OptOutUser, admin scope): from then on, writes about them are answered
        but not stored, on every server sharing the database; returns `opt_out` (the user's hash,
        when they opted out, who asked) and, with `erase_past_data`, the finished `erasure`.

        What was stored before is kept, unless `erase_past_data` is set: the user is then erased
        as `erase_user` does (writes meanwhile are suppressed, not refused), which can take
        longer than the client's timeout: pass a larger `timeout`, as for `erase_user`. The
        opt-out holds even when that erasure fails; call again to finish it.

        Safe to repeat, and retried like any call: opting out an opted-out user keeps the first
        opt-out's time (and erases again if asked). Each call adds a choice to the user's record
        of choices (`get_opt_out`), so a retried call may appear there twice.
        """
        request = feedback_service_pb2.OptOutUserRequest(
            user_id=user_id, erase_past_data=erase_past_data
        )
        return self._call(self._stub.OptOutUser, request, timeout)

    def opt_in_user(self, user_id: str, *, timeout: float | None = None) -> bool:
        """Take a user's writes again (OptInUser, admin scope); returns whether they had opted
        out. A user who never did is left as is, the choice recorded all the same. What was
        suppressed while they were opted out was never stored and does not come back.
        """
        request = feedback_service_pb2.OptInUserRequest(user_id=user_id)
        return self._call(self._stub.OptInUser, request, timeout).was_opted_out

    def get_opt_out(
        self, user_id: str, *, timeout: float | None = None
    ) -> feedback_service_pb2.GetOptOutResponse:
        """A user's opt-out state and record of choices (GetOptOut, admin scope).

        `opt_out` is set while the user is opted out (`response.HasField("opt_out")`); `choices`
        holds their newest 100 choices, newest first, each an `OptOutChoice` with its action
        (OPT_OUT_ACTION_OPT_OUT or OPT_OUT_ACTION_OPT_IN), time, requester and whether it asked
        to erase the past. The server keeps the user as a hash only, as in the erasure log.
        """
        request = feedback_service_pb2.GetOptOutRequest(user_id=user_id)
        return self._call(self._stub.GetOptOut, request, timeout)

    def _export_user_data(
        self, request: feedback_service_pb2.ExportUserDataRequest, timeout: float | None
    ) -> Generator[UserRecord, None, None]:
        """Stream one user's data, retrying only until the first record arrives."""
        self._check_open()
        policy = self._retry
        deadline = deadline_of(policy, timeout)
        failures = 0
        while True:
            call = self._stub.ExportUserData(
                request, timeout=time_left(policy, deadline), metadata=self._metadata
            )
            received = 0
            try:
                for response in call:
                    for record in user_records(response):
                        received += 1
                        yield record
                return
            except grpc.RpcError as rpc_error:
                if received:
                    # Starting again would repeat the records already yielded.
                    error = error_from_rpc_error(rpc_error)
                    error.add_note(
                        f"the export of the user's data broke after {received} records; it "
                        "cannot be resumed: export it again from the start"
                    )
                    raise error from rpc_error
                failures += 1
                wait_or_raise(policy, failures, rpc_error, deadline)
            finally:
                # Ends the stream when the caller stops early; a no-op once it is over.
                call.cancel()  # type: ignore[no-untyped-call]

    def _load(
        self,
        items: Iterable[Any],
        wrap: Callable[[Any], Any],
        message_type: Callable[[], Any],
        call: Callable[..., Any],
        what: str,
        timeout: float | None,
    ) -> IngestResult:
        """Stream items to a bulk-load RPC, many per message, and read its totals."""
        self._check_open()
        sent = 0
        input_failures: list[Exception] = []

        def stream() -> Iterator[Any]:
            # Many items per message: the server pays far more per message than per item.
            nonlocal sent
            message = message_type()
            size = 0
            try:
                for item in items:
                    wrapped = wrap(item)
                    if message.items and (
                        len(message.items) >= _INGEST_ITEMS_PER_MESSAGE
                        or size + wrapped.ByteSize() > _INGEST_BYTES_PER_MESSAGE
                    ):
                        sent += len(message.items)
                        yield message
                        message, size = message_type(), 0
                    message.items.append(wrapped)
                    size += wrapped.ByteSize()
            except Exception as error:  # raised again in the caller's thread below
                input_failures.append(error)
            if message.items:
                sent += len(message.items)
                yield message

        try:
            response = call(stream(), timeout=timeout, metadata=self._metadata)
        except grpc.RpcError as rpc_error:
            error = error_from_rpc_error(rpc_error)
            error.sent_count = sent
            error.add_note(
                f"the {what} stream broke after {sent} items were sent; "
                "the server may have stored some of them"
            )
            if input_failures:
                raise input_failures[0] from error
            raise error from rpc_error
        result = IngestResult(
            received_count=response.received_count,
            accepted_count=response.accepted_count + response.duplicate_count,
            duplicate_count=response.duplicate_count,
            rejected_count=response.rejected_count,
            suppressed_count=response.suppressed_count,
            rejections=tuple(
                ItemResult(
                    rejection.index, accepted=False, error=error_from_status(rejection.error)
                )
                for rejection in response.rejections
            ),
        )
        if input_failures:
            failure = input_failures[0]
            suppressed = (
                f" (and suppressed {result.suppressed_count})" if result.suppressed_count else ""
            )
            failure.add_note(
                f"{what} stopped at item {sent}; of the {result.received_count} items before it "
                f"the server stored {result.accepted_count} and rejected {result.rejected_count}"
                + suppressed
            )
            raise failure
        return result

    def event_batcher(
        self,
        *,
        max_batch: int = 500,
        flush_interval: float = 0.5,
        max_queue: int = 10_000,
        on_full: OnFull = "block",
        on_drop: Callable[[EventItem], object] | None = None,
        on_rejected: Callable[[EventItem, FeedbackError], object] | None = None,
        block_timeout: float | None = None,
        retry: RetryPolicy | None = None,
    ) -> EventBatcher:
        """Start an EventBatcher: `log()` queues events that a daemon thread sends in batches.

        A batch leaves when `max_batch` events wait or the oldest has waited `flush_interval`
        seconds. At most `max_queue` events wait or fly; when full, `on_full` "block" waits (up to
        `block_timeout` seconds), "raise" raises QueueFullError, "drop" hands the event to
        `on_drop` (required then). Events the server rejects, or that still fail after the retries
        (`retry`, default the client's policy; each attempt bounded by the client's timeout), go to
        `on_rejected(item, error)`, or are logged without it. Events about users who opted out
        are neither: they count in `stats.suppressed`. See EventBatcher for the guarantees.
        Closing the client closes its batchers.
        """
        self._check_open()
        batcher = EventBatcher(
            self._start_log_events,
            retry=self._retry if retry is None else retry,
            attempt_timeout=self._timeout,
            max_batch=max_batch,
            flush_interval=flush_interval,
            max_queue=max_queue,
            on_full=on_full,
            on_drop=on_drop,
            on_rejected=on_rejected,
            block_timeout=block_timeout,
        )
        self._batchers.add(batcher)
        return batcher

    def _start_log_events(
        self, request: feedback_service_pb2.LogEventsRequest, timeout: float | None
    ) -> grpc.CallFuture[feedback_service_pb2.LogEventsResponse]:
        """Start one LogEvents call for an EventBatcher, which waits on (or cancels) it."""
        return self._stub.LogEvents.future(request, timeout=timeout, metadata=self._metadata)

    def _write(
        self,
        method: grpc.UnaryUnaryMultiCallable[_ItemRequestT, _ResponseT],
        kind: Kind[Any, _ItemRequestT],
        request: _ItemRequestT,
        timeout: float | None,
    ) -> _ResponseT:
        """Make one write of `kind`, with a fresh sent_time on every attempt."""
        return self._call(
            method,
            request,
            timeout,
            before_attempt=lambda: kind.stamp_sent_time((request,)),
            request_id=_request_id(request),
        )

    def _write_batches(
        self,
        kind: Kind[_ItemT, Any],
        values: Iterable[_ItemT | Mapping[str, Any]],
        timeout: float | None,
    ) -> BatchResult:
        """Send items of `kind` in as many batch calls as the limits need, one after the other."""
        items = coerce_items(values, kind.item_type)
        call = getattr(self._stub, kind.batch_method)

        def send(
            requests: list[Message], remaining: float | None
        ) -> Sequence[batch_pb2.BatchItemResult]:
            request = kind.batch_request(requests)
            kind.stamp_sent_time(getattr(request, kind.batch_field))
            response = call(request, timeout=remaining, metadata=self._metadata)
            results: Sequence[batch_pb2.BatchItemResult] = response.results
            return results

        self._check_open()
        requests: list[Message] = [item._request for item in items]
        results: list[ItemResult] = []
        for first_index, chunk in split_batches(requests):
            settled, failure = deliver(
                chunk,
                send,
                policy=self._retry,
                first_index=first_index,
                timeout=self._timeout if timeout is None else timeout,
            )
            results.extend(settled)
            if failure is not None:
                failure.batch_result = BatchResult(tuple(results))
                failure.request_ids = tuple(_request_id(request) for request in requests)
                raise failure
        return BatchResult(tuple(results))

    def _walk_pages(
        self,
        method: grpc.UnaryUnaryMultiCallable[_ListRequestT, _PageT],
        request: _ListRequestT,
        timeout: float | None,
        records: Callable[[_PageT], Sequence[_RecordT]],
    ) -> Iterator[_RecordT]:
        """Yield the records of every page, fetching the next page only when the loop needs it."""
        while True:
            page = self._call(method, request, timeout)
            yield from records(page)
            if not page.next_page_token:
                return
            request.page_token = page.next_page_token

    def _export(
        self,
        method: grpc.UnaryStreamMultiCallable[_ExportRequestT, _ExportResponseT],
        request: _ExportRequestT,
        resume_token: str,
        timeout: float | None,
        records: Callable[[_ExportResponseT], Sequence[_RecordT]],
    ) -> Generator[ExportChunk[_RecordT], None, None]:
        """Stream one export, resuming after the last chunk when a transient failure breaks it."""
        self._check_open()
        policy = self._retry
        deadline = deadline_of(policy, timeout)
        failures = 0
        while True:
            request.resume_token = resume_token
            call = method(request, timeout=time_left(policy, deadline), metadata=self._metadata)
            try:
                for response in call:
                    failures = 0
                    resume_token = response.resume_token
                    yield ExportChunk(records(response), resume_token)
                return
            except grpc.RpcError as rpc_error:
                failures += 1
                wait_or_raise(policy, failures, rpc_error, deadline)
            finally:
                # Ends the stream when the caller stops early; a no-op once it is over.
                call.cancel()  # type: ignore[no-untyped-call]

    def _check_open(self) -> None:
        if self._closed:
            raise RuntimeError("the FeedbackClient is closed")

    def _call(
        self,
        method: grpc.UnaryUnaryMultiCallable[_RequestT, _ResponseT],
        request: _RequestT,
        timeout: float | None,
        *,
        before_attempt: Callable[[], None] | None = None,
        request_id: str | None = None,
    ) -> _ResponseT:
        """Invoke one RPC under the retry policy, translating failures into FeedbackError.

        Every attempt sends the same request, so a write's request_id never changes;
        `before_attempt` may refresh what should change, such as sent_time. The error of a write
        carries its `request_id`, so the caller can retry it safely after the client gave up.
        """
        self._check_open()

        def attempt(remaining: float | None) -> _ResponseT:
            if before_attempt is not None:
                before_attempt()
            return method(request, timeout=remaining, metadata=self._metadata)

        try:
            return call_with_retry(
                attempt,
                policy=self._retry,
                timeout=self._timeout if timeout is None else timeout,
            )
        except FeedbackError as error:
            error.request_id = request_id
            raise


class _ExportResponse(Protocol):
    resume_token: str


class _Page(Protocol):
    next_page_token: str


_INGEST_ITEMS_PER_MESSAGE = 500
_INGEST_BYTES_PER_MESSAGE = 1024 * 1024
"""A quarter of the server's default message limit, so any stream message fits."""


def _ingest_item(item: IngestItem) -> feedback_service_pb2.IngestItem:
    """Wrap an item for the stream, stamped with sent_time, refusing anything that is not an item.

    Wrapping copies the item's request, so the stamp never changes the item itself.
    """
    kind = kind_of(item)
    wrapped = feedback_service_pb2.IngestItem()
    member = getattr(wrapped, kind.name)
    member.CopyFrom(item._request)
    kind.stamp_sent_time((member,))
    return wrapped


def _import_item(item: HistoricItem) -> feedback_service_pb2.ImportItem:
    """Wrap a historic item for the stream; its create_time says when it happened."""
    if not isinstance(item, HistoricItem):
        raise TypeError(f"import_history takes HistoricItem objects, not {type(item).__name__}")
    kind = kind_of(item.item)
    wrapped = feedback_service_pb2.ImportItem()
    getattr(wrapped, kind.name).CopyFrom(item.item._request)
    wrapped.create_time.FromDatetime(item.create_time)
    return wrapped


def _request_id(request: Message) -> str:
    """The idempotency key of a write request (every batch item request has one)."""
    return str(getattr(request, "request_id", ""))


def _metadata_pairs(
    metadata: Mapping[str, str] | Sequence[tuple[str, str]] | None,
) -> tuple[tuple[str, str], ...]:
    """Normalize call metadata to the tuple of pairs gRPC expects."""
    if metadata is None:
        return ()
    pairs = metadata.items() if isinstance(metadata, Mapping) else metadata
    return tuple((str(key), str(value)) for key, value in pairs)


TimeBucket = Literal["hour", "day", "week", "month"]
"""Sizes of GetStats time buckets (UTC; weeks start on Monday)."""

StatsGroupBy = Literal["model", "event_type", "conversation", "user"]
"""Keys GetStats can group by."""


def _enum_value(request: Message, field_name: str, prefix: str, name: str) -> Any:
    """The number of the enum value `prefix + NAME` of a request field; ValueError if none.

    Typed Any: the generated stubs type each enum field with its own int subtype.
    """
    enum = request.DESCRIPTOR.fields_by_name[field_name].enum_type
    assert enum is not None
    value = enum.values_by_name.get(prefix + name.upper())
    if value is None or value.number == 0:
        choices = ", ".join(
            repr(v.name.removeprefix(prefix).lower()) for v in enum.values if v.number
        )
        raise ValueError(f"{field_name} must be one of {choices}, not {name!r}")
    return value.number
