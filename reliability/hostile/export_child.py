"""`python -m reliability.hostile.export_child ADDRESS KIND`: an export client to be killed.

It prints "chunk N" after each chunk it takes, then pauses, with BDP probing off so the channel's
window stays at 64 KiB: the server is still streaming (not done and waiting in a socket buffer)
when the parent sends SIGKILL or SIGINT. A failed call prints "error CODE DETAIL,DETAIL".
"""

from __future__ import annotations

import sys
import time
from collections.abc import Sequence

import grpc

from llmfeedback.proto.feedback.v1 import feedback_service_pb2 as pb
from llmfeedback.proto.feedback.v1 import feedback_service_pb2_grpc as pb_grpc
from reliability.hostile.raw_h2 import detail_kinds, details_from_metadata

SLOW_READER_OPTIONS = (("grpc.http2.bdp_probe", 0),)
"""Without BDP probing the window does not grow past 64 KiB, less than one chunk of 1000 rows."""
CHUNK_PAUSE_SECONDS = 0.2


def main(argv: Sequence[str] | None = None) -> int:
    """Export `KIND` (events or feedback) from `ADDRESS`, slowly, saying how far it got."""
    address, kind = list(sys.argv[1:] if argv is None else argv)
    with grpc.insecure_channel(address, options=SLOW_READER_OPTIONS) as channel:
        stub = pb_grpc.FeedbackServiceStub(channel)
        chunks = (
            stub.ExportEvents(pb.ExportEventsRequest())
            if kind == "events"
            else stub.ExportFeedback(pb.ExportFeedbackRequest())
        )
        try:
            for number, _ in enumerate(chunks, start=1):
                print(f"chunk {number}", flush=True)
                time.sleep(CHUNK_PAUSE_SECONDS)
        except grpc.RpcError as error:
            call: grpc.Call = error  # type: ignore[assignment]
            details = details_from_metadata(call.trailing_metadata())
            kinds = "" if details is None else ",".join(sorted(detail_kinds(details)))
            print(f"error {call.code().name} {kinds}", flush=True)
            return 1
    print("done", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
