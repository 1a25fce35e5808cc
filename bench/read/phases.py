"""The measured phases on one loaded database, each next to plain SQL run in the same minute.

Calls go through a raw gRPC channel with requests serialized beforehand (less client overhead than
FeedbackClient), one at a time, so a latency is one call's. The orchestrating process runs on the
load core; the SQL references run on the server's core, where the server itself would run them.
"""

from __future__ import annotations

import random
import sqlite3
import threading
import time
from collections.abc import Callable, Sequence
from contextlib import nullcontext
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from functools import partial
from pathlib import Path

import grpc
from google.protobuf import json_format
from google.protobuf.timestamp_pb2 import Timestamp

from bench import payloads
from bench.cores import Pinning, pinned_thread
from bench.h2load import H2loadError, run_h2load
from bench.percentiles import percentile
from bench.read import aggregates, sql
from bench.read.dataset import Row, Shape, Year, conversation_id, sqlite_time, user_id
from bench.read.report import (
    ERROR,
    EXPORT_PHASE,
    UNAVAILABLE,
    WRITES_PHASE,
    Comparison,
    ReadReport,
)
from bench.results import Check
from bench.row_counts import count_rows
from bench.server_process import ServerProcess
from llmfeedback.proto.feedback.v1 import feedback_pb2, stats_pb2
from llmfeedback.proto.feedback.v1 import feedback_service_pb2 as pb
from storage.engines import JSON_SERIALIZER

GET_STATS = f"{payloads.SERVICE_PATH}/GetStats"
LIST_FEEDBACK = f"{payloads.SERVICE_PATH}/ListFeedback"
EXPORT_FEEDBACK = f"{payloads.SERVICE_PATH}/ExportFeedback"
PAGE_SIZE = 50
WALK_PAGE_SIZE = 1000
CALL_TIMEOUT_SECONDS = 120.0
WRITE_CONCURRENCY = 16
WRITE_WARM_UP_REQUESTS = 500
OLDEST_FIRST = "create_time asc"
DAY_RANGE_DAYS_BACK = 30
"""list-day-month-back lists the day that starts this many days before the year's end."""

Progress = Callable[[str], None]


@dataclass(frozen=True, slots=True)
class ReadProfile:
    """How much each phase does in one bench mode."""

    name: str
    sizes: tuple[int, ...]
    """Feedback rows of each database measured, ascending; each load extends the previous one."""
    calls: int
    """Measured calls per GetStats and ListFeedback phase."""
    warm_up_calls: int
    reference_runs: int
    """Runs of each SQL reference, fewer once reference_seconds are spent; the median counts."""
    reference_seconds: float
    walk_rows: int
    """How deep list-walked pages from the start (1000 rows a page), at most half the table."""
    export_rows: int
    """Rows exported (and read by SELECT *) per size: the whole table when it is smaller."""
    write_requests: int
    """SubmitFeedback calls per h2load run; two runs alone and two under stats load."""
    h2load_timeout_seconds: float


FULL = ReadProfile(
    name="full",
    sizes=(1_000_000, 10_000_000),
    calls=200,
    warm_up_calls=20,
    reference_runs=3,
    reference_seconds=10.0,
    walk_rows=100_000,
    export_rows=500_000,
    write_requests=3000,
    h2load_timeout_seconds=120.0,
)
QUICK = ReadProfile(
    name="quick",
    sizes=(20_000,),
    calls=30,
    warm_up_calls=5,
    reference_runs=2,
    reference_seconds=10.0,
    walk_rows=10_000,
    export_rows=20_000,
    write_requests=300,
    h2load_timeout_seconds=30.0,
)


class NotInCheckout(Exception):
    """The server lacks the RPC (UNIMPLEMENTED) or ignores the request field a phase needs."""


@dataclass(frozen=True, slots=True)
class ListCase:
    """One ListFeedback page to time: its request, the ids it must return and its depth."""

    request: pb.ListFeedbackRequest
    expected_ids: list[int]
    depth: int
    """Rows before the page in the default newest-first order: what OFFSET has to skip."""


class ReadPhases:
    """Every phase on one database size, against one running server."""

    def __init__(
        self,
        *,
        profile: ReadProfile,
        database: Path,
        year: Year,
        shape: Shape,
        pinning: Pinning,
        report: ReadReport,
        progress: Progress,
        workdir: Path,
    ) -> None:
        self._profile = profile
        self._database = database
        self._year = year
        self._shape = shape
        self._pinning = pinning
        self._report = report
        self._progress = progress
        self._workdir = workdir
        self._rng = random.Random(shape.feedback)
        self._stats_requests: dict[str, list[bytes]] = {}

    def run_all(self, server: ServerProcess, newest: Sequence[Row], *, stats: bool) -> None:
        """Read-back check, then stats, lists, export and writes under stats load."""
        with grpc.insecure_channel(server.address) as channel:
            self._check_read_back(channel, newest)
            if stats:
                for phase in ("stats-overall", "stats-conversation", "stats-user", "stats-daily"):
                    self._stats_phase(channel, phase)
            self._list_phases(channel)
            self._export_phase(channel)
        if stats:
            self._writes_phase(server)

    # Reading back what the loader wrote

    def _check_read_back(self, channel: grpc.Channel, newest: Sequence[Row]) -> None:
        """The server must read the loader's newest rows exactly as they were generated."""
        if not newest:
            return
        response = _Pages(channel).fetch(pb.ListFeedbackRequest(page_size=len(newest)))
        read = [stored_form(entry) for entry in reversed(response.feedback)]
        wrong = [f"{want} != {got}" for want, got in zip(newest, read, strict=False) if want != got]
        if len(read) != len(newest):
            wrong.insert(0, f"{len(read)} rows read, {len(newest)} expected")
        self._check("read-back", not wrong, "; ".join(wrong[:2]))

    # GetStats

    def _stats_phase(self, channel: grpc.Channel, phase: str) -> None:
        comparison = self._add(
            Comparison(self._shape.feedback, phase, "GetStats", "ms", "full scan")
        )
        selections = self._stats_selections(phase)
        requests = [self._stats_request(phase, selection) for selection in selections]
        self._stats_requests[phase] = [request.SerializeToString() for request in requests]
        reference = self._stats_reference(phase, selections)
        comparison.reference = reference.seconds * 1000
        try:
            latencies, answers = self._timed_calls(channel, GET_STATS, self._stats_requests[phase])
        except NotInCheckout as error:
            self._unavailable(comparison, str(error))
            return
        except grpc.RpcError as error:
            self._failed(comparison, error)
            return
        comparison.value, comparison.p99_ms = _p50_p99(latencies)
        responses = [pb.GetStatsResponse.FromString(answer) for answer in answers]
        if phase == "stats-daily" and not any(response.buckets for response in responses):
            self._unavailable(comparison, "GetStats ignores bucket (answers hold no buckets)")
            return
        wrong = self._stats_differences(phase, selections, responses, reference.value)
        self._check(
            f"{phase} at {self._shape.feedback:,} rows equals SQL",
            not wrong,
            "; ".join(wrong[:3]),
        )
        comparison.extra["distinct_requests"] = len(requests)
        self._progress(
            f"{phase}: p50 {comparison.value:.2f} ms, p99 {comparison.p99_ms:.2f} ms; "
            f"full scan {comparison.reference:,.0f} ms"
        )

    def _stats_selections(self, phase: str) -> list[sql.Selection]:
        calls = self._profile.calls
        if phase == "stats-conversation":
            indexes = self._rng.sample(range(self._shape.conversations), calls)
            return [sql.Selection(conversation_id=conversation_id(index)) for index in indexes]
        if phase == "stats-user":
            indexes = self._rng.sample(range(self._shape.users), min(calls, self._shape.users))
            return [sql.Selection(user_id=user_id(index)) for index in indexes]
        if phase == "stats-daily":
            year = self._year
            return [sql.Selection(start=sqlite_time(year.start), end=sqlite_time(year.end))]
        return [sql.Selection()]

    def _stats_request(self, phase: str, selection: sql.Selection) -> pb.GetStatsRequest:
        request = pb.GetStatsRequest(
            conversation_id=selection.conversation_id or "", user_id=selection.user_id or ""
        )
        if phase == "stats-daily":
            request.start_time.CopyFrom(_timestamp(self._year.start))
            request.end_time.CopyFrom(_timestamp(self._year.end))
            request.bucket = stats_pb2.TIME_BUCKET_DAY
        return request

    def _stats_reference(
        self, phase: str, selections: list[sql.Selection]
    ) -> sql.Timed[aggregates.Aggregate | dict[str, aggregates.Aggregate]]:
        """The full-scan SQL aggregate over feedback; per conversation or user, a new id a run."""
        runs, budget = self._profile.reference_runs, self._profile.reference_seconds
        chosen = iter(selections * runs)
        with pinned_thread(self._pinning.server_core), sql.connected(self._database) as db:
            if phase == "stats-daily":
                start, end = selections[0].start or "", selections[0].end or ""
                daily: sql.Timed[aggregates.Aggregate | dict[str, aggregates.Aggregate]] = (
                    sql.timed(lambda: sql.daily_feedback(db, start, end), runs, budget)
                )
                return daily
            return sql.timed(
                lambda: sql.aggregate(db, next(chosen), tables=("feedback",), indexed=False),
                runs,
                budget,
            )

    def _stats_differences(
        self,
        phase: str,
        selections: list[sql.Selection],
        responses: list[pb.GetStatsResponse],
        reference: aggregates.Aggregate | dict[str, aggregates.Aggregate],
    ) -> list[str]:
        """Each answer against SQL: the full scan's feedback figures, indexed SQL for the rest."""
        wrong: list[str] = []
        with sql.connected(self._database) as db:
            if phase == "stats-overall":
                assert isinstance(reference, aggregates.Aggregate)
                others = sql.aggregate(
                    db, sql.Selection(), tables=("interactions", "events"), indexed=True
                )
                expected = aggregates.combined(reference, others)
                return aggregates.differences(expected, aggregates.from_response(responses[0]))
            if phase == "stats-daily":
                assert isinstance(reference, dict)
                return self._daily_differences(db, reference, responses[0].buckets)
            for selection, response in zip(selections, responses, strict=False):
                expected = sql.aggregate(db, selection, indexed=True)
                found = aggregates.differences(expected, aggregates.from_response(response))
                wrong.extend(f"{selection}: {difference}" for difference in found)
        return wrong

    def _daily_differences(
        self,
        db: sqlite3.Connection,
        feedback_by_day: dict[str, aggregates.Aggregate],
        buckets: Sequence[stats_pb2.StatsBucket],
    ) -> list[str]:
        """Every bucket's feedback against the full scan; interactions and events on a few days."""
        answered = {
            bucket.start_time.ToDatetime(tzinfo=UTC): aggregates.from_bucket(bucket)
            for bucket in buckets
        }
        days = {moment.strftime("%Y-%m-%d"): moment for moment in answered}
        wrong = [f"day {day} has no bucket" for day in feedback_by_day if day not in days]
        for day, moment in sorted(days.items()):
            found = aggregates.differences(
                feedback_by_day.get(day, aggregates.Aggregate()),
                aggregates.restricted(answered[moment], "feedback."),
            )
            wrong.extend(f"{day}: {difference}" for difference in found)
        ordered = sorted(answered)
        sampled = {*ordered[:1], *ordered[-1:], *self._rng.sample(ordered, min(5, len(ordered)))}
        for moment in sorted(sampled):
            one_day = sql.Selection(
                start=sqlite_time(moment), end=sqlite_time(moment + timedelta(days=1))
            )
            expected = sql.aggregate(db, one_day, tables=("interactions", "events"), indexed=True)
            found = aggregates.differences(
                expected, aggregates.restricted(answered[moment], "interactions.", "events.")
            )
            wrong.extend(f"{moment:%Y-%m-%d}: {difference}" for difference in found)
        return wrong

    # ListFeedback

    def _list_phases(self, channel: grpc.Channel) -> None:
        """Pages at the start, in the middle and at the far end of the table, next to OFFSET."""
        builders: list[tuple[str, Callable[[_Pages], ListCase]]] = [
            ("list-newest", self._newest_case),
            ("list-middle-by-time", self._middle_by_time_case),
            ("list-day-month-back", self._day_month_back_case),
            ("list-oldest", self._oldest_case),
            ("list-walked", self._walked_case),
        ]
        pages = _Pages(channel)
        for phase, build in builders:
            self._list_phase(channel, phase, partial(build, pages))

    def _newest_case(self, pages: _Pages) -> ListCase:
        """The second page of the default order (newest first)."""
        first = pb.ListFeedbackRequest(page_size=PAGE_SIZE)
        second = _next_request(first, pages.fetch(first))
        with sql.connected(self._database) as db:
            return ListCase(second, sql.page_ids(db, offset=PAGE_SIZE, limit=PAGE_SIZE), PAGE_SIZE)

    def _middle_by_time_case(self, pages: _Pages) -> ListCase:
        """The second page of feedback stored before the middle of the year: a jump by date."""
        middle = self._year.start + (self._year.end - self._year.start) / 2
        first = pb.ListFeedbackRequest(page_size=PAGE_SIZE)
        first.end_time.CopyFrom(_timestamp(middle))
        answer = pages.fetch(first)
        if any(entry.create_time.ToDatetime(tzinfo=UTC) >= middle for entry in answer.feedback):
            raise NotInCheckout("ListFeedback ignores end_time")
        second = _next_request(first, answer)
        with sql.connected(self._database) as db:
            expected = sql.page_ids(
                db, offset=PAGE_SIZE, limit=PAGE_SIZE, before=sqlite_time(middle)
            )
            return ListCase(second, expected, sql.rows_after(db, expected[0]) if expected else 0)

    def _day_month_back_case(self, pages: _Pages) -> ListCase:
        """The second page, newest first, of one day's feedback a month back: a closed range far
        behind the newest rows (its rows all lie past the page's cursor in the id walk)."""
        day = self._year.end - timedelta(days=DAY_RANGE_DAYS_BACK)
        first = pb.ListFeedbackRequest(page_size=PAGE_SIZE)
        first.start_time.CopyFrom(_timestamp(day))
        first.end_time.CopyFrom(_timestamp(day + timedelta(days=1)))
        answer = pages.fetch(first)
        if any(entry.create_time.ToDatetime(tzinfo=UTC) < day for entry in answer.feedback):
            raise NotInCheckout("ListFeedback ignores start_time")
        second = _next_request(first, answer)
        with sql.connected(self._database) as db:
            rows = db.execute(
                "SELECT id FROM feedback WHERE create_time >= ? AND create_time < ?"
                " ORDER BY id DESC LIMIT ? OFFSET ?",
                (sqlite_time(day), sqlite_time(day + timedelta(days=1)), PAGE_SIZE, PAGE_SIZE),
            ).fetchall()
            expected = [int(row[0]) for row in rows]
            return ListCase(second, expected, sql.rows_after(db, expected[0]) if expected else 0)

    def _oldest_case(self, pages: _Pages) -> ListCase:
        """The second page oldest first: the far end of the default order."""
        first = pb.ListFeedbackRequest(page_size=PAGE_SIZE, order_by=OLDEST_FIRST)
        answer = pages.fetch(first)
        ids = [entry.id for entry in answer.feedback]
        if ids != sorted(ids):
            raise NotInCheckout("ListFeedback ignores order_by")
        second = _next_request(first, answer)
        with sql.connected(self._database) as db:
            expected = sql.page_ids(db, offset=PAGE_SIZE, limit=PAGE_SIZE, descending=False)
            return ListCase(second, expected, sql.rows_after(db, expected[-1]) if expected else 0)

    def _walked_case(self, pages: _Pages) -> ListCase:
        """A page deep in the default order, reached by paging 1000 rows at a time."""
        started = time.perf_counter()
        token, depth = "", 0
        while depth < min(self._profile.walk_rows, self._shape.feedback // 2):
            answer = pages.fetch(pb.ListFeedbackRequest(page_size=WALK_PAGE_SIZE, page_token=token))
            depth += len(answer.feedback)
            token = answer.next_page_token
            if not token:
                break
        self._progress(
            f"paged {depth:,} rows deep in {time.perf_counter() - started:.1f} s "
            f"({WALK_PAGE_SIZE} per page)"
        )
        with sql.connected(self._database) as db:
            expected = sql.page_ids(db, offset=depth, limit=PAGE_SIZE)
        return ListCase(
            pb.ListFeedbackRequest(page_size=PAGE_SIZE, page_token=token), expected, depth
        )

    def _list_phase(self, channel: grpc.Channel, phase: str, build: Callable[[], ListCase]) -> None:
        rows = self._shape.feedback
        comparison = self._add(Comparison(rows, phase, "ListFeedback", "ms", "OFFSET"))
        try:
            case = build()
            latencies, answers = self._timed_calls(
                channel, LIST_FEEDBACK, [case.request.SerializeToString()]
            )
        except NotInCheckout as error:
            self._unavailable(comparison, str(error))
            return
        except grpc.RpcError as error:
            self._failed(comparison, error)
            return
        comparison.value, comparison.p99_ms = _p50_p99(latencies)
        with pinned_thread(self._pinning.server_core), sql.connected(self._database) as db:
            offset = sql.timed(
                lambda: sql.offset_page(db, case.depth, PAGE_SIZE),
                self._profile.reference_runs,
                self._profile.reference_seconds,
            )
        comparison.reference = offset.seconds * 1000
        comparison.extra["depth"] = case.depth
        got = [entry.id for entry in pb.ListFeedbackResponse.FromString(answers[0]).feedback]
        self._check(
            f"{phase} at {rows:,} rows returns the SQL page",
            got == case.expected_ids,
            f"ids {got[:3]}... expected {case.expected_ids[:3]}...",
        )
        self._progress(
            f"{phase} ({case.depth:,} rows deep): p50 {comparison.value:.2f} ms, "
            f"p99 {comparison.p99_ms:.2f} ms; OFFSET {comparison.reference:,.1f} ms"
        )

    # ExportFeedback

    def _export_phase(self, channel: grpc.Channel) -> None:
        """Export the first export_rows rows (or all) oldest first, next to SELECT * in sqlite3."""
        rows = self._shape.feedback
        comparison = self._add(
            Comparison(rows, EXPORT_PHASE, "ExportFeedback", "rows/s", "SELECT *")
        )
        limit = min(self._profile.export_rows, count_rows(self._database, "feedback"))
        comparison.extra["rows_exported"] = limit
        try:
            export = _export(channel, limit)
        except NotInCheckout as error:
            self._unavailable(comparison, str(error))
            return
        except grpc.RpcError as error:
            self._failed(comparison, error)
            return
        comparison.value = export.rows / export.seconds
        with pinned_thread(self._pinning.server_core), sql.connected(self._database) as db:
            raw = sql.timed(lambda: sql.select_all(db, limit), 1, 0.0)
        count, last_id = raw.value
        comparison.reference = count / raw.seconds
        self._check(
            f"export at {rows:,} rows: the first {limit:,} rows in id order, none missing",
            export.rows == count and export.last_id == last_id and export.ordered,
            f"exported {export.rows} up to id {export.last_id} (in order: {export.ordered}); "
            f"SQL {count} up to id {last_id}",
        )
        self._progress(
            f"export: {comparison.value:,.0f} rows/s; SELECT * {comparison.reference:,.0f} rows/s"
        )

    # Writes under stats load

    def _writes_phase(self, server: ServerProcess) -> None:
        """Durable SubmitFeedback at c=16 alone, then with GetStats in a loop; twice each."""
        rows = self._shape.feedback
        comparison = self._add(
            Comparison(rows, WRITES_PHASE, "SubmitFeedback", "req/s", "writes alone")
        )
        call = payloads.UNARY_CALLS[0]
        body = self._workdir / "submit-feedback.body"
        body.write_bytes(call.grpc_body())
        stats_requests = _interleaved(list(self._stats_requests.values()))
        alone: list[float] = []
        loaded: list[float] = []
        stats_latencies: list[float] = []
        try:
            self._h2load(server, body, WRITE_WARM_UP_REQUESTS)
            for under_load in (False, True, False, True):
                before = count_rows(self._database, "feedback")
                loop = _StatsLoop(server.address, stats_requests) if under_load else None
                with loop if loop is not None else nullcontext():
                    requests_per_second, acknowledged = self._h2load(
                        server, body, self._profile.write_requests
                    )
                stored = count_rows(self._database, "feedback") - before
                self._check(
                    f"writes at {rows:,} rows: every acknowledged SubmitFeedback stored",
                    stored >= acknowledged,
                    f"{acknowledged} acknowledged, {stored} stored",
                )
                (loaded if under_load else alone).append(requests_per_second)
                if loop is not None:
                    if loop.error:
                        raise RuntimeError(f"GetStats loop failed: {loop.error}")
                    stats_latencies.extend(loop.latencies_ms)
        except (H2loadError, RuntimeError) as error:
            comparison.status = ERROR
            comparison.detail = str(error)
            self._progress(f"{WRITES_PHASE}: {error}")
            return
        comparison.value = sum(loaded) / len(loaded)
        comparison.reference = sum(alone) / len(alone)
        comparison.extra.update(
            alone_runs=alone,
            loaded_runs=loaded,
            stats_calls_during_writes=len(stats_latencies),
            stats_p50_ms_during_writes=_p50_p99(stats_latencies)[0] if stats_latencies else None,
        )
        self._progress(
            f"{WRITES_PHASE}: {comparison.value:,.0f} req/s with GetStats in a loop "
            f"({len(stats_latencies)} calls), {comparison.reference:,.0f} req/s alone"
        )

    def _h2load(self, server: ServerProcess, body: Path, requests: int) -> tuple[float, int]:
        """One h2load run of SubmitFeedback; its req/s and 2xx responses."""
        run = run_h2load(
            f"http://{server.address}{payloads.UNARY_CALLS[0].path}",
            body,
            requests=requests,
            concurrency=WRITE_CONCURRENCY,
            log_file=self._workdir / "h2load.log",
            pinning=self._pinning,
            timeout_seconds=self._profile.h2load_timeout_seconds,
        )
        return run.requests_per_second, run.summary.status_2xx

    # Plumbing

    def _timed_calls(
        self, channel: grpc.Channel, path: str, requests: Sequence[bytes]
    ) -> tuple[list[float], list[bytes]]:
        """Warm up, then `calls` sequential calls cycling through `requests`.

        Returns each call's latency in ms and the answer to each distinct request (from its first
        measured call). Raises NotInCheckout on UNIMPLEMENTED, RpcError on any other failure.
        """
        call = channel.unary_unary(path, None, None)
        try:
            for index in range(self._profile.warm_up_calls):
                call(requests[index % len(requests)], timeout=CALL_TIMEOUT_SECONDS)
            latencies: list[float] = []
            answers: list[bytes] = []
            for index in range(max(self._profile.calls, len(requests))):
                request = requests[index % len(requests)]
                started = time.perf_counter()
                answer = call(request, timeout=CALL_TIMEOUT_SECONDS)
                latencies.append((time.perf_counter() - started) * 1000)
                if index < len(requests):
                    answers.append(answer)
        except grpc.RpcError as error:
            if error.code() == grpc.StatusCode.UNIMPLEMENTED:
                raise NotInCheckout(f"{path.rsplit('/', 1)[1]} is UNIMPLEMENTED") from error
            raise
        return latencies, answers

    def _add(self, comparison: Comparison) -> Comparison:
        self._report.comparisons.append(comparison)
        return comparison

    def _check(self, name: str, passed: bool, detail: str = "") -> None:
        self._report.checks.append(Check(name, passed, detail))
        if not passed:
            self._progress(f"CHECK FAILED {name}: {detail}")

    def _unavailable(self, comparison: Comparison, detail: str) -> None:
        comparison.status = UNAVAILABLE
        comparison.detail = detail
        comparison.value = comparison.p99_ms = None
        self._progress(f"{comparison.phase}: not available in this checkout ({detail})")

    def _failed(self, comparison: Comparison, error: grpc.RpcError) -> None:
        comparison.status = ERROR
        comparison.detail = f"{error.code().name}: {error.details()}"
        self._progress(f"{comparison.phase}: {comparison.detail}")


def stored_form(entry: feedback_pb2.Feedback) -> Row:
    """A Feedback answer as the loader's row: FEEDBACK_COLUMNS order, values as stored."""
    kind = entry.WhichOneof("rating")
    return (
        entry.id,
        entry.conversation_id or None,
        entry.message_id or None,
        entry.user_id or None,
        entry.interaction_id or None,
        entry.model or None,
        kind,
        entry.score if kind == "score" else None,
        (1 if entry.thumb == feedback_pb2.THUMB_UP else 0) if kind == "thumb" else None,
        entry.label if kind == "label" else None,
        entry.text or None,
        entry.latency_ms if entry.HasField("latency_ms") else None,
        entry.tokens_used if entry.HasField("tokens_used") else None,
        entry.input_hash or None,
        entry.output_hash or None,
        JSON_SERIALIZER(json_format.MessageToDict(entry.metadata)),
        sqlite_time(entry.create_time.ToDatetime(tzinfo=UTC)),
    )


def _p50_p99(latencies: list[float]) -> tuple[float, float]:
    ordered = sorted(latencies)
    return percentile(ordered, 0.50), percentile(ordered, 0.99)


def _timestamp(moment: datetime) -> Timestamp:
    stamp = Timestamp()
    stamp.FromDatetime(moment)
    return stamp


class _Pages:
    """ListFeedback calls that return parsed pages, for reaching a depth before timing."""

    def __init__(self, channel: grpc.Channel) -> None:
        self._call = channel.unary_unary(LIST_FEEDBACK, None, pb.ListFeedbackResponse.FromString)

    def fetch(self, request: pb.ListFeedbackRequest) -> pb.ListFeedbackResponse:
        """One page; raises NotInCheckout on UNIMPLEMENTED."""
        try:
            answer: pb.ListFeedbackResponse = self._call(
                request.SerializeToString(), timeout=CALL_TIMEOUT_SECONDS
            )
        except grpc.RpcError as error:
            if error.code() == grpc.StatusCode.UNIMPLEMENTED:
                raise NotInCheckout("ListFeedback is UNIMPLEMENTED") from error
            raise
        return answer


def _next_request(
    first: pb.ListFeedbackRequest, answer: pb.ListFeedbackResponse
) -> pb.ListFeedbackRequest:
    """The request for the page after `answer`."""
    if not answer.next_page_token:
        raise RuntimeError("the table is too small for a second page")
    second = pb.ListFeedbackRequest()
    second.CopyFrom(first)
    second.page_token = answer.next_page_token
    return second


@dataclass(frozen=True, slots=True)
class _ExportRun:
    rows: int
    last_id: int
    ordered: bool
    seconds: float


def _export(channel: grpc.Channel, limit: int) -> _ExportRun:
    """Stream ExportFeedback until `limit` rows arrived, then cancel; checks the id order."""
    call = channel.unary_stream(EXPORT_FEEDBACK, None, None)
    stream = call(pb.ExportFeedbackRequest().SerializeToString(), timeout=CALL_TIMEOUT_SECONDS * 5)
    rows = last_id = 0
    ordered = True
    started = time.perf_counter()
    try:
        for chunk in stream:
            ids = [entry.id for entry in pb.ExportFeedbackResponse.FromString(chunk).feedback]
            taken = ids[: limit - rows]
            if taken:
                ordered = ordered and taken[0] > last_id and taken == sorted(set(taken))
                rows += len(taken)
                last_id = taken[-1]
            if rows >= limit:
                break
        seconds = time.perf_counter() - started
    except grpc.RpcError as error:
        if error.code() == grpc.StatusCode.UNIMPLEMENTED:
            raise NotInCheckout("ExportFeedback is UNIMPLEMENTED") from error
        raise
    finally:
        stream.cancel()  # type: ignore[no-untyped-call]
    return _ExportRun(rows, last_id, ordered, seconds)


class _StatsLoop:
    """A second client calling GetStats back to back in a thread while the block runs."""

    def __init__(self, address: str, requests: list[bytes]) -> None:
        self._address = address
        self._requests = requests
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="stats-loop", daemon=True)
        self.latencies_ms: list[float] = []
        self.error = ""

    def _run(self) -> None:
        with grpc.insecure_channel(self._address) as channel:
            call = channel.unary_unary(GET_STATS, None, None)
            index = 0
            while not self._stop.is_set():
                started = time.perf_counter()
                try:
                    call(self._requests[index % len(self._requests)], timeout=CALL_TIMEOUT_SECONDS)
                except grpc.RpcError as error:
                    self.error = f"{error.code().name}: {error.details()}"
                    return
                self.latencies_ms.append((time.perf_counter() - started) * 1000)
                index += 1

    def __enter__(self) -> _StatsLoop:
        self._thread.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self._stop.set()
        self._thread.join()


def _interleaved(groups: list[list[bytes]]) -> list[bytes]:
    """One of each group in turn: overall, a conversation, a user, daily, overall..."""
    longest = max((len(group) for group in groups), default=0)
    return [group[index % len(group)] for index in range(longest) for group in groups if group]
