"""Drives `streamlog serve` with the official KurrentDB Python client (kurrentdbclient).

Usage: python client_check.py HOST:PORT

Appends with each kind of expected version, reads back both ways, reads $all, runs a
catch-up subscription into live events, sets and gets stream metadata, and checks the
errors the client raises for conflicts and deleted streams. Exits non-zero on the first
failed check (a traceback says which).
"""

import json
import sys
import uuid

from kurrentdbclient import KurrentDBClient, NewEvent, StreamState
from kurrentdbclient.exceptions import (
    FailedPreconditionError,
    KurrentDBClientError,
    NotFoundError,
    StreamIsDeletedError,
    WrongCurrentVersionError,
)


def event(kind, n):
    return NewEvent(type=kind, data=json.dumps({"n": n}).encode())


def main(address):
    client = KurrentDBClient(uri=f"kurrentdb://{address}?Tls=false")
    checks = 0
    run = uuid.uuid4().hex[:8]
    order = f"py-order-{run}"

    # Appends with each expected-version kind; a conflict raises WrongCurrentVersionError.
    client.append_to_stream(order, current_version=StreamState.NO_STREAM, events=event("Placed", 0))
    try:
        client.append_to_stream(order, current_version=StreamState.NO_STREAM, events=event("Placed", 1))
        raise AssertionError("a second no-stream append must conflict")
    except WrongCurrentVersionError:
        checks += 1
    client.append_to_stream(
        order, current_version=0, events=[event("Paid", 1), event("Shipped", 2)]
    )
    try:
        client.append_to_stream(order, current_version=0, events=event("Shipped", 3))
        raise AssertionError("a stale exact version must conflict")
    except WrongCurrentVersionError:
        checks += 1
    client.append_to_stream(order, current_version=StreamState.EXISTS, events=event("Closed", 3))
    client.append_to_stream(order, current_version=StreamState.ANY, events=event("Archived", 4))
    assert client.get_current_version(order) == 4, client.get_current_version(order)
    checks += 1

    # Read back both ways, with the fields the client parses.
    forwards = client.get_stream(order)
    assert [e.stream_position for e in forwards] == [0, 1, 2, 3, 4], forwards
    assert [e.type for e in forwards] == ["Placed", "Paid", "Shipped", "Closed", "Archived"]
    assert [json.loads(e.data)["n"] for e in forwards] == [0, 1, 2, 3, 4]
    assert all(e.content_type == "application/json" for e in forwards)
    assert all(e.recorded_at is not None for e in forwards)
    positions = [e.commit_position for e in forwards]
    assert positions == sorted(positions) and len(set(positions)) == 5, positions
    backwards = client.get_stream(order, backwards=True, limit=2)
    assert [e.stream_position for e in backwards] == [4, 3], backwards
    from_two = client.get_stream(order, stream_position=2, limit=2)
    assert [e.stream_position for e in from_two] == [2, 3], from_two
    checks += 1

    # $all: every event of ours, in commit order, and backwards too.
    ours = [e for e in client.read_all() if e.stream_name == order]
    assert [e.stream_position for e in ours] == [0, 1, 2, 3, 4], ours
    last = list(client.read_all(backwards=True, limit=1))
    assert last[0].stream_name == order and last[0].stream_position == 4, last
    after = list(client.read_all(commit_position=ours[2].commit_position))
    assert after[0].id == ours[2].id, (after[0], ours[2])
    checks += 1

    # A catch-up subscription: the stored events, then a live one.
    other = f"py-other-{run}"
    subscription = client.subscribe_to_all(
        filter_include=[f"py-.*-{run}"], filter_by_stream_name=True
    )
    seen = []
    for e in subscription:
        seen.append((e.stream_name, e.stream_position))
        if len(seen) == 5:
            client.append_to_stream(other, current_version=StreamState.ANY, events=event("Live", 5))
        if len(seen) == 6:
            break
    subscription.stop()
    assert seen[:5] == [(order, n) for n in range(5)], seen
    assert seen[5] == (other, 0), seen
    stream_sub = client.subscribe_to_stream(order, stream_position=2)
    got = []
    for e in stream_sub:
        got.append(e.stream_position)
        if len(got) == 2:
            break
    stream_sub.stop()
    assert got == [3, 4], got
    checks += 1

    # Stream metadata through $$stream.
    meta, version = client.get_stream_metadata(order)
    assert meta == {} and version == StreamState.NO_STREAM, (meta, version)
    client.set_stream_metadata(order, metadata={"$maxCount": 2, "owner": "py"}, current_version=StreamState.NO_STREAM)
    meta, version = client.get_stream_metadata(order)
    assert meta == {"$maxCount": 2, "owner": "py"} and version == 0, (meta, version)
    assert [e.stream_position for e in client.get_stream(order)] == [3, 4]
    client.set_stream_metadata(order, metadata={}, current_version=0)
    assert len(client.get_stream(order)) == 5
    checks += 1

    # A delete or tombstone with a wrong expected version raises WrongCurrentVersionError,
    # and one of a stream that does not exist NotFoundError (the client parses the
    # server's message, as KurrentDB words it).
    for call in (client.delete_stream, client.tombstone_stream):
        try:
            call(other, current_version=7)
            raise AssertionError("a delete at a wrong version must conflict")
        except WrongCurrentVersionError:
            checks += 1
        try:
            call(f"py-none-{run}", current_version=3)
            raise AssertionError("a delete of no stream at a version must fail")
        except NotFoundError:
            checks += 1

    # A subscription to a metadata stream is refused, never left waiting for events that
    # cannot come.
    try:
        for _ in client.subscribe_to_stream(f"$${order}", timeout=10):
            break
        raise AssertionError("a subscription to $$S must be refused")
    except KurrentDBClientError as e:
        assert "not supported" in str(e), e
        checks += 1

    # Soft delete: the stream reads as not found; an append re-creates it.
    client.delete_stream(other, current_version=0)
    try:
        client.get_stream(other)
        raise AssertionError("a deleted stream must read as not found")
    except NotFoundError:
        checks += 1
    client.append_to_stream(other, current_version=StreamState.NO_STREAM, events=event("Again", 6))
    assert [e.stream_position for e in client.get_stream(other)] == [1]
    checks += 1

    # Hard delete: reads and appends raise StreamIsDeletedError.
    client.tombstone_stream(order, current_version=StreamState.ANY)
    try:
        client.get_stream(order)
        raise AssertionError("a tombstoned stream must not read")
    except StreamIsDeletedError:
        checks += 1
    # One event goes through Append, whose error the client reports as a failed
    # precondition (as with KurrentDB 24); several go through BatchAppend, whose error
    # detail names the deleted stream.
    try:
        client.append_to_stream(order, current_version=StreamState.ANY, events=event("Late", 9))
        raise AssertionError("a tombstoned stream must not take appends")
    except FailedPreconditionError as e:
        assert "deleted" in str(e), e
        checks += 1
    try:
        client.append_to_stream(
            order, current_version=StreamState.ANY, events=[event("Late", 9), event("Late", 10)]
        )
        raise AssertionError("a tombstoned stream must not take batch appends")
    except StreamIsDeletedError:
        checks += 1

    client.close()
    print(f"python client: {checks} checks passed")


if __name__ == "__main__":
    main(sys.argv[1])
