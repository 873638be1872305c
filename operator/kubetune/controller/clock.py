"""Kubernetes timestamps (RFC 3339 in UTC): the one place they are written and read. metav1.Time has whole
seconds (conditions, status times), metav1.MicroTime microseconds (a Lease's renewTime)."""

from datetime import UTC, datetime


def now() -> str:
    return time(datetime.now(UTC))


def time(moment: datetime) -> str:
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def micro_time(moment: datetime) -> str:
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def parse(timestamp: str) -> datetime:
    """Either kind, any offset; a timestamp without one is UTC."""
    moment = datetime.fromisoformat(timestamp)
    return moment if moment.tzinfo is not None else moment.replace(tzinfo=UTC)


def seconds_since(timestamp: str, at: datetime | None = None) -> float:
    return ((at or datetime.now(UTC)) - parse(timestamp)).total_seconds()
