"""Arbitrary well-formed requests to every method: precise statuses, exact rows, still SERVING."""

from __future__ import annotations

from typing import Any

import grpc
from hypothesis import event, given
from hypothesis import strategies as st

from tests.fuzz.harness import (
    METHODS,
    RowCounter,
    added,
    assert_precise,
    assert_rows_match,
    call,
    fuzz_settings,
    item_count,
)
from tests.fuzz.strategies import messages

_requests = st.sampled_from(METHODS).flatmap(
    lambda method: st.tuples(
        st.just(method),
        st.lists(messages(method.input_type), max_size=3)
        if method.client_streaming
        else messages(method.input_type),
    )
)


@fuzz_settings(default_examples=800)
@given(method_and_request=_requests)
def test_any_request_gets_a_precise_answer_and_exact_rows(
    channel: grpc.Channel, rows: RowCounter, method_and_request: tuple[Any, Any]
) -> None:
    method, request = method_and_request
    before = rows.counts()

    outcome = call(channel, method, request)

    event(f"{method.name}: {outcome.code.name}")
    assert_precise(method, outcome)
    assert_rows_match(method, outcome, added(before, rows.counts()), item_count(method, request))
