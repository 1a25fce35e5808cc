"""Properties over generated values: times and JSON survive storage, time windows are half-open."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta, timezone
from typing import TYPE_CHECKING, Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from storage.records import FeedbackFilter, Keyset, StatsFilter
from tests.storage import full_scan
from tests.storage.factories import T0, insert_event, insert_feedback, new_event, new_feedback

if TYPE_CHECKING:
    from storage import Repository, Storage

# Function-scoped fixtures are shared by all examples; each example writes under its own
# user_id, so examples never see each other's rows.
PER_DATABASE = settings(
    max_examples=40,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)

fixed_offsets = st.integers(min_value=-(24 * 60 - 1), max_value=24 * 60 - 1).map(
    lambda minutes: timezone(timedelta(minutes=minutes))
)
"""Fixed offsets only: zones with DST make inter-zone == deliberately false for fold=1 times."""

aware_datetimes = st.datetimes(
    min_value=datetime(1, 1, 2), max_value=datetime(9999, 12, 30), timezones=fixed_offsets
)

storable_characters = st.characters(exclude_characters="\x00", exclude_categories=["Cs"])
"""PostgreSQL text cannot hold NUL; lone surrogates are not Unicode (protobuf rejects both)."""

json_scalars = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**63), max_value=2**63 - 1)
    # JSONB keeps numbers as numeric and prints them without an exponent: 1.2345678901234567e20
    # comes back as the int 123456789012345670000, a different number. Below 1e16 json.dumps
    # writes no exponent, so the text (and the float) survives. A known JSONB limit.
    | st.floats(min_value=-1e15, max_value=1e15, allow_nan=False, allow_infinity=False)
    | st.text(storable_characters, max_size=20)
)
json_objects = st.dictionaries(
    st.text(storable_characters, max_size=10),
    st.recursive(
        json_scalars,
        lambda children: (
            st.lists(children, max_size=4)
            | st.dictionaries(st.text(storable_characters, max_size=5), children, max_size=4)
        ),
        max_leaves=10,
    ),
    max_size=5,
)


def fresh_user() -> str:
    """A user id no other example uses."""
    return f"user-{uuid.uuid4()}"


@PER_DATABASE
@given(moment=aware_datetimes)
def test_any_aware_datetime_round_trips_to_the_microsecond_in_utc(
    storage: Storage, moment: datetime
) -> None:
    user_id = fresh_user()
    storage.write(
        lambda repository: insert_feedback(
            repository, new_feedback(user_id=user_id, create_time=moment)
        )
    )

    [read] = storage.read(
        lambda repository: repository.feedback_entries(FeedbackFilter(user_id=user_id), Keyset())
    )

    assert read.create_time == moment
    assert read.create_time.tzinfo is UTC
    assert read.create_time.replace(tzinfo=None) == moment.astimezone(UTC).replace(tzinfo=None)


@PER_DATABASE
@given(metadata=json_objects)
def test_any_json_object_round_trips(storage: Storage, metadata: dict[str, Any]) -> None:
    user_id = fresh_user()
    storage.write(
        lambda repository: insert_feedback(
            repository, new_feedback(user_id=user_id, metadata=metadata)
        )
    )

    [read] = storage.read(
        lambda repository: repository.feedback_entries(FeedbackFilter(user_id=user_id), Keyset())
    )

    assert read.metadata == metadata


# Microseconds around T0 make boundary equality likely; offsets write the same instants
# differently, so comparisons must be on instants rather than on how a time was written.
near_t0 = st.builds(
    lambda microseconds, zone: (T0 + timedelta(microseconds=microseconds)).astimezone(zone),
    st.integers(min_value=-3, max_value=3),
    fixed_offsets,
)


@PER_DATABASE
@given(
    event_times=st.lists(near_t0, max_size=8),
    start=st.none() | near_t0,
    end=st.none() | near_t0,
)
def test_time_windows_are_half_open(
    storage: Storage,
    event_times: list[datetime],
    start: datetime | None,
    end: datetime | None,
) -> None:
    user_id = fresh_user()

    def insert_all(repository: Repository) -> None:
        for moment in event_times:
            insert_event(repository, new_event(user_id=user_id, event_time=moment))

    storage.write(insert_all)

    stats = storage.read(
        lambda repository: full_scan.event_stats(
            repository, StatsFilter(user_id=user_id, start_time=start, end_time=end)
        )
    )

    expected = sum(
        1
        for moment in event_times
        if (start is None or start <= moment) and (end is None or moment < end)
    )
    assert stats.total_count == expected
