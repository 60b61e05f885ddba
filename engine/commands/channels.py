"""`interlink channels …`: list, deploy, pause, resume, undeploy and reload channels of a
running engine, without restarting it."""

from __future__ import annotations

import argparse
from typing import Any

from engine.commands.common import add_config_option, load_or_exit
from engine.commands.control import call, report

ACTIONS = ("deploy", "pause", "resume", "undeploy")


def register(sub: Any) -> None:
    """Add `channels list|reload|deploy|pause|resume|undeploy`."""
    parser = sub.add_parser("channels", help="manage the channels of a running engine")
    actions = parser.add_subparsers(dest="action", required=True, metavar="ACTION")
    lst = actions.add_parser("list", help="deployed channels, their state and queues")
    add_config_option(lst)
    lst.add_argument("--json", action="store_true", help="print the API's JSON")
    lst.set_defaults(handler=handle_list)
    reload = actions.add_parser("reload", help="re-read channel files (as SIGHUP does)")
    add_config_option(reload)
    reload.set_defaults(handler=handle_reload)
    for action in ACTIONS:
        p = actions.add_parser(action, help=f"{action} one channel")
        add_config_option(p)
        p.add_argument("name")
        p.set_defaults(handler=handle_action, verb=action)


def handle_list(args: argparse.Namespace) -> int:
    code, answer = call(load_or_exit(args), "GET", "channels")
    if args.json or code != 200:
        return report(code, answer)
    print(f"{'CHANNEL':20} {'STATE':9} {'SOURCE':7} {'DESTINATION':16} {'QUEUED':>7} "
          f"{'SENT':>7} {'ERROR':>6}")
    for channel in answer["channels"]:
        rows = channel["destinations"] or [{}]
        for dest in rows:
            print(f"{channel['name']:20} {channel['state']:9} {channel['source'] or '-':7} "
                  f"{dest.get('name', '-'):16} {dest.get('queued', 0):>7} "
                  f"{dest.get('sent', 0):>7} {dest.get('dead_lettered', 0):>6}")
    return 0


def handle_reload(args: argparse.Namespace) -> int:
    return report(*call(load_or_exit(args), "POST", "channels/reload"))


def handle_action(args: argparse.Namespace) -> int:
    return report(*call(load_or_exit(args), "POST", f"channels/{args.name}/{args.verb}"))
