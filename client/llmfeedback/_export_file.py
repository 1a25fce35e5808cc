"""Export files for feedbackctl: records as JSON Lines or CSV rows, resumable after any crash.

Each chunk is appended and fsynced, and only then is its resume token recorded, atomically, in a
sidecar file (`FILE.resume`) with the file's length at that point. Resuming truncates the file to
that length, dropping whatever a crash left half-written after it, and continues from the token:
no row is lost or written twice, whenever the process died.
"""

from __future__ import annotations

import csv
import io
import json
import math
import os
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, BinaryIO, Literal

from .proto.feedback.v1 import feedback_pb2, privacy_pb2

if TYPE_CHECKING:
    from collections.abc import Callable, Iterable, Mapping, Sequence
    from pathlib import Path

    from google.protobuf import struct_pb2, timestamp_pb2
    from google.protobuf.message import Message


__all__ = ["COLUMNS", "ExportFile", "ExportFileError", "Format", "Kind", "rows", "sidecar_path"]

Kind = Literal["feedback", "interactions", "events"]
Format = Literal["jsonl", "csv"]

_SIDECAR_VERSION = 1
_MAX_EXACT_FLOAT_INT = 2**53


class ExportFileError(Exception):
    """The export file or its sidecar is not in a state the requested export can use."""


# ---- records as flat rows ----


COLUMNS: dict[Kind, tuple[str, ...]] = {
    "feedback": (
        "id",
        "create_time",
        "conversation_id",
        "message_id",
        "user_id",
        "interaction_id",
        "model",
        "rating_kind",
        "score",
        "thumb",
        "label",
        "text",
        "latency_ms",
        "tokens_used",
        "input_hash",
        "output_hash",
        "metadata",
        "input_hash_kind",
        "output_hash_kind",
        "redactions",
    ),
    "interactions": (
        "id",
        "occur_time",
        "create_time",
        "conversation_id",
        "message_id",
        "user_id",
        "model",
        "input_hash",
        "output_hash",
        "latency_ms",
        "prompt_tokens",
        "completion_tokens",
        "total_tokens",
        "metadata",
        "input_hash_kind",
        "output_hash_kind",
        "redactions",
    ),
    "events": (
        "id",
        "event_time",
        "receive_time",
        "user_id",
        "event_type",
        "details",
        "redactions",
    ),
}
"""The fields of each kind's rows, in order: the fixed CSV header and the JSON Lines keys."""


def rows(kind: Kind, records: Iterable[Message]) -> list[dict[str, Any]]:
    """Records as flat rows: absent values None, JSON objects as dicts, times RFC 3339."""
    columns = COLUMNS[kind]
    return [{column: _cell(record, column) for column in columns} for record in records]


def _cell(record: Message, column: str) -> Any:
    """One column of a record's row, read from the record's field of the same name.

    `rating_kind` is the member of the rating oneof that is set; a oneof member that is not set,
    an optional number that is absent and an empty string or zero id are None.
    """
    if column == "rating_kind":
        return record.WhichOneof("rating")
    descriptor = record.DESCRIPTOR.fields_by_name[column]
    value = getattr(record, column)
    oneof = descriptor.containing_oneof
    if oneof is not None and record.WhichOneof(oneof.name) != column:
        return None
    if descriptor.enum_type is not None and descriptor.enum_type.name == "Thumb":
        return "up" if value == feedback_pb2.THUMB_UP else "down"
    if descriptor.enum_type is not None and descriptor.enum_type.name == "HashKind":
        return _HASH_KINDS.get(value)
    if descriptor.message_type is not None and descriptor.message_type.GetOptions().map_entry:
        return dict(value)  # the redaction counts by entity type
    if descriptor.message_type is None:
        return value if oneof is not None else value or None
    if descriptor.message_type.full_name == "google.protobuf.Timestamp":
        return _time(value)
    return _json_object(value)


_HASH_KINDS = {
    privacy_pb2.HASH_KIND_SHA256: "sha256",
    privacy_pb2.HASH_KIND_HMAC_SHA256: "hmac-sha256",
}
"""How a hash was made, as the server's --text-hash names it; None when there is no hash."""


def _time(value: timestamp_pb2.Timestamp) -> str:
    return value.ToJsonString()


def _json_object(struct: struct_pb2.Struct) -> dict[str, Any]:
    """A Struct as plain JSON values; whole numbers come back as int, as they were sent."""
    return {key: _json_value(value) for key, value in struct.fields.items()}


def _json_value(value: struct_pb2.Value) -> Any:
    kind = value.WhichOneof("kind")
    if kind == "struct_value":
        return _json_object(value.struct_value)
    if kind == "list_value":
        return [_json_value(item) for item in value.list_value.values]
    if kind == "number_value":
        number = value.number_value
        if math.isfinite(number) and number.is_integer() and abs(number) <= _MAX_EXACT_FLOAT_INT:
            return int(number)
        return number
    if kind == "string_value":
        return value.string_value
    if kind == "bool_value":
        return value.bool_value
    return None


# ---- the file and its sidecar ----


def _jsonl(kind: Kind, records: Sequence[Message]) -> bytes:
    lines = [json.dumps(row, ensure_ascii=False) for row in rows(kind, records)]
    return ("\n".join(lines) + "\n").encode() if lines else b""


def _csv(kind: Kind, records: Sequence[Message]) -> bytes:
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    for row in rows(kind, records):
        writer.writerow(_csv_cell(value) for value in row.values())
    return buffer.getvalue().encode()


def _csv_cell(value: Any) -> Any:
    """JSON objects as compact JSON text; None as an empty cell (csv's own default)."""
    if isinstance(value, dict):
        return json.dumps(value, ensure_ascii=False, separators=(",", ":"))
    return value


def _csv_header(kind: Kind) -> bytes:
    return (",".join(COLUMNS[kind]) + "\n").encode()


_ENCODERS: dict[Format, Callable[[Kind, Sequence[Message]], bytes]] = {
    "jsonl": _jsonl,
    "csv": _csv,
}


@dataclass
class ExportFile:
    """An export being appended to `path`, its progress recorded in `path`.resume.

    `selection` is what makes two runs the same export (kind, format, filters, order), as JSON
    values; resuming with another selection is refused.
    """

    path: Path
    kind: Kind
    format: Format
    selection: Mapping[str, Any]
    rows_written: int
    resume_token: str
    _file: BinaryIO

    @property
    def sidecar(self) -> Path:
        """Where the resume token and the file's committed length are kept."""
        return sidecar_path(self.path)

    @classmethod
    def start(
        cls, path: Path, kind: Kind, format: Format, selection: Mapping[str, Any]
    ) -> ExportFile:
        """Create (or empty) the file for a new export; refuses to drop an interrupted one."""
        if sidecar_path(path).exists():
            raise ExportFileError(
                f"{sidecar_path(path)} exists: an earlier export to {path} was interrupted; "
                "pass --resume to continue it, or delete that file to start over"
            )
        file = path.open("wb")
        export = cls(path, kind, format, dict(selection), 0, "", file)
        if format == "csv":
            export._write(_csv_header(kind))
        export._record()
        return export

    @classmethod
    def resume(
        cls, path: Path, kind: Kind, format: Format, selection: Mapping[str, Any]
    ) -> ExportFile:
        """Reopen an interrupted export, cut back to its last recorded chunk."""
        try:
            state = json.loads(sidecar_path(path).read_text(encoding="utf-8"))
            recorded = (state["kind"], state["format"], state["selection"])
            length, rows_written, token = state["bytes"], state["rows"], state["resume_token"]
        except FileNotFoundError as error:
            raise ExportFileError(
                f"nothing to resume: {sidecar_path(path)} does not exist"
            ) from error
        except (OSError, ValueError, KeyError, TypeError) as error:
            raise ExportFileError(f"{sidecar_path(path)} is unreadable: {error}") from error
        if recorded != (kind, format, dict(selection)):
            raise ExportFileError(
                f"the interrupted export to {path} was of {recorded[0]} as {recorded[1]} with "
                f"filters {json.dumps(recorded[2], sort_keys=True)}; resume it with the same ones"
            )
        file = path.open("r+b")
        file.truncate(length)  # drops a chunk the crash left half-written
        file.seek(length)
        return cls(path, kind, format, dict(selection), rows_written, token, file)

    def append(self, records: Sequence[Message], resume_token: str) -> None:
        """Write one chunk durably, then record that the export resumes after it."""
        self._write(_ENCODERS[self.format](self.kind, records))
        self.rows_written += len(records)
        self.resume_token = resume_token
        self._record()

    def finish(self) -> None:
        """Close the complete file and drop the sidecar: there is nothing left to resume."""
        self._file.close()
        self.sidecar.unlink()

    def close(self) -> None:
        """Close the file, keeping the sidecar so the export can be resumed."""
        self._file.close()

    def discard(self) -> None:
        """Close and delete the file and its sidecar; a device or pipe (-o /dev/null) stays."""
        self._file.close()
        # Unlinking /dev/null as root would replace the device with the next file written there.
        if self.path.is_file() or self.path.is_symlink():
            self.path.unlink(missing_ok=True)
        self.sidecar.unlink(missing_ok=True)

    def _write(self, data: bytes) -> None:
        self._file.write(data)
        self._file.flush()
        os.fsync(self._file.fileno())

    def _record(self) -> None:
        """Replace the sidecar atomically: a crash leaves the old state or the new one."""
        state = {
            "version": _SIDECAR_VERSION,
            "kind": self.kind,
            "format": self.format,
            "selection": self.selection,
            "bytes": self._file.tell(),
            "rows": self.rows_written,
            "resume_token": self.resume_token,
        }
        temporary = self.sidecar.with_name(self.sidecar.name + ".tmp")
        with temporary.open("w", encoding="utf-8") as file:
            json.dump(state, file)
            file.flush()
            os.fsync(file.fileno())
        os.replace(temporary, self.sidecar)


def sidecar_path(path: Path) -> Path:
    """The resume file kept next to an export file."""
    return path.with_name(path.name + ".resume")
