"""Validate parley protocol frames against proto/schema/*.json.

Used by the integration tests (harness.py) on every JSON frame the server
sends:

    import schema_check
    schema_check.validate_server_frame(obj)    # raises on mismatch
    schema_check.validate_client_request(obj)  # for requests a test builds

Both accept a parsed object, or the frame as str/bytes (parsed here, with
duplicate keys refused). On mismatch they raise schema_check.FrameError (an
AssertionError, so unittest reports it as a failure) naming the frame and the
first offending path.

Run as a script, it checks the schemas themselves, then every example frame
in proto/PROTOCOL.md (``json server`` blocks must validate as server frames,
``json client`` blocks as requests, ``json client invalid`` blocks must not
validate), then a set of built-in frames that must be refused. It exits
non-zero if anything disagrees.

Uses Debian's python3-jsonschema (4.x; draft 2020-12).
"""

import json
import os
import re
import sys

import jsonschema

SOURCE = os.environ.get("PARLEY_SOURCE") or os.path.dirname(
    os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
SCHEMA_DIR = os.path.join(SOURCE, "proto", "schema")
PROTOCOL_MD = os.path.join(SOURCE, "proto", "PROTOCOL.md")


class FrameError(AssertionError):
    """A frame that does not match the protocol schema."""


def _load_validator(name):
    with open(os.path.join(SCHEMA_DIR, name), encoding="utf-8") as f:
        schema = json.load(f)
    cls = jsonschema.validators.validator_for(schema)
    cls.check_schema(schema)
    return cls(schema)


_validators = {}


def _validator(name):
    v = _validators.get(name)
    if v is None:
        v = _validators[name] = _load_validator(name)
    return v


def _no_duplicates(pairs):
    d = {}
    for k, v in pairs:
        if k in d:
            raise FrameError(f"duplicate key {k!r} in frame")
        d[k] = v
    return d


def _as_object(frame):
    if isinstance(frame, (bytes, bytearray)):
        frame = bytes(frame).decode("utf-8")
    if isinstance(frame, str):
        try:
            return json.loads(frame, object_pairs_hook=_no_duplicates)
        except ValueError as e:
            raise FrameError(f"frame is not JSON ({e}): {frame[:200]!r}") from None
    return frame


def _check(name, frame):
    obj = _as_object(frame)
    err = jsonschema.exceptions.best_match(_validator(name).iter_errors(obj))
    if err is not None:
        where = "/".join(str(p) for p in err.absolute_path) or "(top level)"
        text = json.dumps(obj, ensure_ascii=False)
        if len(text) > 300:
            text = text[:300] + "..."
        raise FrameError(f"{name}: {where}: {err.message}\n  frame: {text}")
    return obj


def validate_server_frame(frame):
    """Raise FrameError unless frame is a valid server frame; return the object."""
    return _check("server.json", frame)


def validate_client_request(frame):
    """Raise FrameError unless frame is a valid client request; return the object."""
    return _check("client.json", frame)


def examples_from_protocol(path=PROTOCOL_MD):
    """(kind, line number, text) for each line of the fenced ``json ...`` blocks."""
    out = []
    kind = None
    with open(path, encoding="utf-8") as f:
        for n, line in enumerate(f, 1):
            s = line.rstrip("\n")
            m = re.match(r"^```json (client invalid|client|server)\s*$", s)
            if kind is None and m:
                kind = m.group(1)
            elif kind is not None and s.startswith("```"):
                kind = None
            elif kind is not None and s.strip():
                out.append((kind, n, s))
    return out


# Frames the schema must refuse: each names what is wrong with it.
_BAD_SERVER = [
    ("not an object", [1]),
    ("no type", {"room": "general"}),
    ("unknown type", {"type": "nope"}),
    ("extra field", {"type": "pong", "extra": 1}),
    ("null ref", {"type": "pong", "ref": None}),
    ("real ref", {"type": "pong", "ref": 1.5}),
    ("seq 0 in a message", {"type": "message", "room": "r", "seq": 0, "from": "a",
                            "text": "x", "ts": 1}),
    ("empty text", {"type": "message", "room": "r", "seq": 1, "from": "a", "text": "",
                    "ts": 1}),
    ("bad user", {"type": "presence", "room": "r", "user": "a b", "event": "join"}),
    ("bad event", {"type": "presence", "room": "r", "user": "a", "event": "joined"}),
    ("bad room", {"type": "left", "room": "#r"}),
    ("dm room in rooms", {"type": "rooms", "rooms": [{"name": "dm:a:b", "members": 1,
                                                      "seq": 0}]}),
    ("unknown error code", {"type": "error", "code": "oops", "message": "x"}),
    ("negative retry", {"type": "error", "code": "rate_limited", "message": "x",
                        "retry_after_ms": -1}),
    ("protocol 2", {"type": "welcome", "user": "a", "session": "s", "protocol": 2,
                    "limits": {"max_text": 1, "max_frame": 1, "rate": 0, "burst": 0}}),
    ("missing limits", {"type": "welcome", "user": "a", "session": "s", "protocol": 1}),
    ("more not bool", {"type": "history", "room": "r", "messages": [], "more": 1}),
    ("message without type", {"type": "joined", "room": "r", "seq": 1, "members": [],
                              "history": [{"room": "r", "seq": 1, "from": "a", "text": "x",
                                           "ts": 1}]}),
    ("duplicate member", {"type": "members", "room": "r", "users": ["a", "a"]}),
    ("string seq", {"type": "ack", "room": "r", "seq": "1"}),
]


def selftest():
    failures = 0
    counts = {"server": 0, "client": 0, "client invalid": 0}
    for name in ("server.json", "client.json"):
        _validator(name)  # check_schema runs on load
    for kind, n, text in examples_from_protocol():
        counts[kind] += 1
        try:
            if kind == "server":
                validate_server_frame(text)
            elif kind == "client":
                validate_client_request(text)
            else:
                try:
                    validate_client_request(text)
                except FrameError:
                    continue
                raise FrameError("an invalid example validated")
        except FrameError as e:
            failures += 1
            print(f"PROTOCOL.md:{n}: {kind} example: {e}", file=sys.stderr)
    for what, frame in _BAD_SERVER:
        try:
            validate_server_frame(frame)
        except FrameError:
            continue
        failures += 1
        print(f"schema accepted a bad server frame ({what}): {frame!r}", file=sys.stderr)
    try:
        validate_server_frame('{"type":"pong","type":"pong"}')
        failures += 1
        print("duplicate keys were accepted", file=sys.stderr)
    except FrameError:
        pass
    if counts["server"] < 10 or counts["client"] < 10:
        failures += 1
        print(f"too few examples found in PROTOCOL.md: {counts}", file=sys.stderr)
    print(f"schema_check: {counts['server']} server, {counts['client']} client and "
          f"{counts['client invalid']} invalid examples, {len(_BAD_SERVER) + 1} refusals; "
          f"{failures} failure(s)")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(selftest())
