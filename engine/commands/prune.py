"""`interlink prune [--dry-run]`: what retention removes, and removing it now.

The dry run reads the store directly (safe while the engine runs) and prints, per
channel, the messages whose contents would go, the content rows and their bytes. A real
run goes through the running engine's API, so its writer stays the only one appending to
the audit chain; with no engine answering, the command prunes the store itself.
"""

from __future__ import annotations

import argparse
import json
import sys
import urllib.error
import urllib.request
from typing import Any

from engine.commands.common import add_config_option, load_or_exit
from engine.commands.control import api_url, credentials, open_api
from engine.commands.progress import Progress
from engine.config import EngineConfig
from engine.retention.prune import Policy, Tally, audit_detail, prune_step, reclaim_space

TIMEOUT_S = 3600.0


def register(sub: Any) -> None:
    """Add `prune`."""
    parser = sub.add_parser("prune", help="prune old message contents (metadata and audit stay)")
    add_config_option(parser)
    parser.add_argument("--dry-run", action="store_true",
                        help="only say what would be removed, per channel")
    parser.set_defaults(handler=handle)


def file_policy(config: EngineConfig) -> Policy:
    """Days per channel from the channel files, and the engine file's default."""
    from channels.catalog import load_catalog

    catalog = load_catalog(config.channels_dir)
    return Policy(config.retention.content_days, {
        name: loaded.config.retention.content_days
        for name, loaded in catalog.channels.items()})


def walk(store: Any, policy: Policy, now: int, batch: int, *, dry_run: bool,
         progress: Progress | None = None) -> Tally:
    """Every batch from the start; the total of what went (or would go)."""
    total, after = Tally(), 0
    while True:
        step = prune_step(store, policy, now, after, batch=batch, dry_run=dry_run)
        total.merge(step.tally)
        if progress is not None:
            progress.advance(step.tally.messages)
        after = step.after_id
        if step.done:
            return total


def print_tally(tally: Tally, verb: str) -> None:
    """A table of messages, content rows and bytes per channel."""
    print(f"{'CHANNEL':20} {'MESSAGES':>10} {'CONTENTS':>10} {'BYTES':>14}")
    for name, c in sorted(tally.channels.items()):
        print(f"{name:20} {c['messages']:>10} {c['contents']:>10} {c['bytes']:>14}")
    print(f"{verb}: contents of {tally.messages} messages; metadata and audit are kept")


def through_engine(config: EngineConfig, total: int) -> dict[str, Any] | None:
    """Ask the running engine to prune, following its progress; None if none answers."""
    request = urllib.request.Request(api_url(config, "retention/prune"), data=b"",
                                     method="POST", headers=credentials(config))
    progress = Progress("pruned", total)
    last: dict[str, Any] = {}
    try:
        with open_api(request, TIMEOUT_S, config) as answer:
            for line in answer:
                last = json.loads(line)
                progress.advance(last["messages"] - progress.done)
    except urllib.error.HTTPError as error:
        reason = json.loads(error.read() or b"null")
        print(f"interlink prune: the engine answered {error.code}: "
              f"{reason.get('error') if isinstance(reason, dict) else reason}", file=sys.stderr)
        raise SystemExit(1) from None
    except (urllib.error.URLError, ConnectionRefusedError):
        return None
    finally:
        progress.close()
    if not last.get("done"):
        print("interlink prune: the engine's answer ended early", file=sys.stderr)
        raise SystemExit(1)
    return last


def handle(args: argparse.Namespace) -> int:
    """Dry run, or prune through the engine (or the store itself when none runs)."""
    config = load_or_exit(args)
    from engine.audit import AuditEvent
    from engine.retention.job import ACTOR
    from engine.store.ownership import engine_holds, is_embedded
    from engine.store.store import now_us, open_store

    policy = file_policy(config)
    if policy.latest_cutoff(now_us()) is None:
        print("no retention configured: retention.content_days is set neither in the engine "
              "file nor in any channel file")
        return 0
    store = open_store(config.store_url())
    try:
        plan = walk(store, policy, now_us(), config.retention.batch_size, dry_run=True,
                    progress=Progress("counting"))
        if args.dry_run:
            print_tally(plan, "would remove")
            return 0
        answer = through_engine(config, plan.messages)
        if answer is not None:
            done = Tally({k: dict(v) for k, v in answer["channels"].items()})
            print_tally(done, "removed by the running engine")
            return 0
        if is_embedded(config.store_url()) and engine_holds(config.data_dir):
            print("interlink prune: an engine is running on this store but its admin API did "
                  "not answer; prune through it (pruning beside it would fork the audit "
                  "chain)", file=sys.stderr)
            return 1
        progress = Progress("pruned", plan.messages)
        try:
            done = walk(store, policy, now_us(), config.retention.batch_size, dry_run=False,
                        progress=progress)
        finally:
            progress.close()
        store.append_audit([AuditEvent(now_us(), ACTOR, "retention.pruned",
                                       detail=audit_detail(policy, done))])
        reclaim_space(store)
        print_tally(done, "removed")
        return 0
    finally:
        store.close()

