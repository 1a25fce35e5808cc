"""Asks a running server's gRPC health service, as a load balancer or Kubernetes probe would."""

from __future__ import annotations

import time

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

SERVING = "SERVING"
NOT_SERVING = "NOT_SERVING"
CHECKED_SERVICES = ("", "feedback.v1.FeedbackService")


def health_status(address: str, service: str = "") -> str:
    """SERVING, NOT_SERVING or UNREACHABLE for `service` ("" is the whole server)."""
    with grpc.insecure_channel(address) as channel:
        try:
            response = health_pb2_grpc.HealthStub(channel).Check(
                health_pb2.HealthCheckRequest(service=service), timeout=2
            )
        except grpc.RpcError:
            return "UNREACHABLE"
    return str(health_pb2.HealthCheckResponse.ServingStatus.Name(response.status))


def wait_for_health(address: str, expected: str, within: float) -> float:
    """Seconds until every checked service reports `expected`; fails after `within` seconds."""
    started = time.monotonic()
    while True:
        statuses = {service: health_status(address, service) for service in CHECKED_SERVICES}
        if set(statuses.values()) == {expected}:
            return time.monotonic() - started
        if time.monotonic() - started > within:
            raise AssertionError(f"health is {statuses} after {within} s, expected {expected}")
        time.sleep(0.05)


def stays(address: str, expected: str, seconds: float) -> None:
    """Fail unless every checked service reports `expected` for `seconds` seconds."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        for service in CHECKED_SERVICES:
            status = health_status(address, service)
            assert status == expected, f"health of {service!r} turned {status}"
        time.sleep(0.1)
