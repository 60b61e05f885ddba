"""`interlink send HOST:PORT FILE…`: an MLLP client for analysts.

Files may hold several messages, with CR, LF or CRLF line ends (and batch header and
trailer lines, which are dropped). Prints each answer's MSA-1 and text; exits 1 if any
answer was not positive, 2 if the files could not be read or the peer not reached.
"""

from __future__ import annotations

import argparse
import contextlib
import re
import sys
from pathlib import Path
from typing import Any

POSITIVE = frozenset({"AA", "CA"})
_SEGMENT_END = re.compile(rb"\r\n|\n|\r")
_BATCH_LINES = (b"FHS", b"BHS", b"BTS", b"FTS")


def register(sub: Any) -> None:
    """Add the `send` subcommand."""
    parser = sub.add_parser("send", help="send HL7 v2 files over MLLP and show the ACKs")
    parser.add_argument("target", metavar="HOST:PORT")
    parser.add_argument("files", metavar="FILE", nargs="+", type=Path)
    parser.add_argument("--timeout", type=float, default=30.0,
                        help="seconds to wait for each answer (default 30)")
    parser.set_defaults(handler=handle)


def split_messages(data: bytes) -> list[bytes]:
    """Messages in a file as CR-terminated segments, one per MSH."""
    out: list[list[bytes]] = []
    for line in _SEGMENT_END.split(data.lstrip(b"\xef\xbb\xbf")):
        if not line.strip() or line[:3] in _BATCH_LINES:
            continue
        if line.startswith(b"MSH") or not out:
            out.append([])
        out[-1].append(line)
    return [b"\r".join(segments) + b"\r" for segments in out]


def summarize_answer(answer: bytes) -> tuple[str, str]:
    """MSA-1 and MSA-3 (or ERR text) of an answer, read without trusting its shape."""
    lines = _SEGMENT_END.split(answer)
    sep = answer[3:4] if answer.startswith(b"MSH") and len(answer) > 3 else b"|"
    code, text = "", ""
    for line in lines:
        fields = line.split(sep)
        if fields[0] == b"MSA":
            code = fields[1].decode("ascii", "replace") if len(fields) > 1 else ""
            text = fields[3].decode("utf-8", "replace") if len(fields) > 3 else ""
        elif fields[0] == b"ERR" and not text:
            text = b" ".join(f for f in fields[1:] if f).decode("utf-8", "replace")
    return code, text


def handle(args: argparse.Namespace) -> int:
    """Send every message of every file in order, one answer at a time."""
    host, _, port = args.target.rpartition(":")
    if not host or not port.isdigit():
        print(f"interlink send: target must be HOST:PORT, not {args.target!r}",
              file=sys.stderr)
        return 2
    labelled: list[tuple[str, bytes]] = []
    for path in args.files:
        try:
            messages = split_messages(path.read_bytes())
        except OSError as exc:
            print(f"interlink send: {path}: {exc.strerror}", file=sys.stderr)
            return 2
        labelled += [(f"{path}#{n}", m) for n, m in enumerate(messages, 1)]
    if not labelled:
        print("interlink send: no messages found", file=sys.stderr)
        return 2

    from twisted.internet import defer, task

    from mllp.client import send_messages

    result: dict[str, int] = {"code": 0}

    async def run(reactor: Any) -> None:
        try:
            answers = await send_messages(reactor, (host.strip("[]"), int(port)),
                                          [m for _, m in labelled], timeout=args.timeout)
        except Exception as exc:
            print(f"interlink send: {type(exc).__name__}: {exc}", file=sys.stderr)
            result["code"] = 2
            return
        for (label, _), answer in zip(labelled, answers, strict=False):
            code, text = summarize_answer(answer)
            print(f"{label}\t{code or '?'}\t{text}")
            if code not in POSITIVE:
                result["code"] = 1

    with contextlib.suppress(SystemExit):  # react() always exits; the code is ours
        task.react(lambda reactor: defer.ensureDeferred(run(reactor)))
    return result["code"]
