"""`interlink schema`: the JSON Schema of channel files (or of the engine file), for editors.

Point an editor's YAML language server at the output to get completion and checking while
typing, e.g. ``interlink schema > .schemas/channel.json``.
"""

from __future__ import annotations

import argparse
import json
from typing import Any

from channels.model import channel_schema
from engine.config import EngineConfig

DRAFT = "https://json-schema.org/draft/2020-12/schema"


def engine_schema() -> dict[str, Any]:
    """The JSON Schema of the engine file (`conf/interlink.yaml`)."""
    schema = EngineConfig.model_json_schema()
    schema["$schema"] = DRAFT
    schema["title"] = "Interlink engine"
    return schema


def register(sub: Any) -> None:
    """Add the `schema` subcommand."""
    parser = sub.add_parser("schema", help="print the JSON Schema of channel files")
    parser.add_argument("--engine", action="store_true",
                        help="print the engine file's schema instead")
    parser.set_defaults(handler=handle)


def handle(args: argparse.Namespace) -> int:
    """Print the schema as indented JSON."""
    schema = engine_schema() if args.engine else channel_schema()
    print(json.dumps(schema, indent=2))
    return 0
