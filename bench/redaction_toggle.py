"""`python -m bench.redaction_toggle`: what redaction costs one server, everything else equal.

Rounds of durable SubmitFeedback at c=64 against one server in this process (see
bench.toggle_rounds), redaction switched off and on between them, for two comments: one without
personal data (the common case: every text is still scanned) and one with an e-mail address, a
phone number and a card number to replace.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Sequence

from bench import payloads
from bench.toggle_rounds import Toggle, cost, parse_arguments, run
from server.app import FeedbackServer
from server.service.privacy import Privacy

TEXTS = {
    "plain": "Clear and concise answer, but the second paragraph repeated the first one.",
    "personal": "Wrong refund: mail me at jane.roe@example.com or call (415) 555-2671, "
    "card 4111 1111 1111 1111.",
}
"""The comments of the two measurements."""


def _switch(server: FeedbackServer, on: bool) -> None:
    # A measurement switch production code has no reason to offer: the service's privacy step.
    service = server._service
    if not hasattr(service, "bench_privacy"):
        service.bench_privacy = service._privacy  # type: ignore[attr-defined]
    service._privacy = service.bench_privacy if on else Privacy()  # type: ignore[attr-defined]


def toggle(text: str) -> Toggle:
    """The redaction toggle for SubmitFeedback carrying `text`."""
    call = payloads.UNARY_CALLS[0]
    request = payloads.submit_feedback_request()
    request.text = text
    return Toggle(
        arguments=("--log-level", "WARNING", "--accept-unknown-conversations"),
        prepare=lambda _data: None,
        switch=_switch,
        headers=lambda _on: [],
        body=payloads.grpc_frame(request.SerializeToString()),
        path=call.path,
    )


def main(argv: Sequence[str] | None = None) -> int:
    """Run both comments' rounds and print what redaction costs; exit 0 (informative)."""
    args = parse_arguments("python -m bench.redaction_toggle", __doc__, 8, argv)
    summaries = {}
    for name, text in TEXTS.items():
        summary = summaries[name] = run(toggle(text), args.rounds, args.requests)
        print(
            f"{name} comment: redaction on / off {summary['ratio']:.3f}x req/s; "
            f"{cost(summary, args.requests)}",
            flush=True,
        )
    if args.json is not None:
        args.json.write_text(json.dumps(summaries))
    return 0


if __name__ == "__main__":
    sys.exit(main())
