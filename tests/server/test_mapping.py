"""The fast Struct conversion of lists and exports builds what Struct.update builds."""

from __future__ import annotations

from typing import Any

import pytest
from google.protobuf import struct_pb2
from hypothesis import given

from server.mapping import dict_to_struct, struct_to_dict
from tests.storage.test_properties import json_objects


@given(value=json_objects)
def test_dict_to_struct_equals_struct_update(value: dict[str, Any]) -> None:
    expected = struct_pb2.Struct()
    expected.update(value)

    assert dict_to_struct(value) == expected
    assert struct_to_dict(dict_to_struct(value)) == struct_to_dict(expected)


def test_a_value_json_cannot_hold_is_refused() -> None:
    with pytest.raises(ValueError, match="not a JSON value"):
        dict_to_struct({"when": object()})
