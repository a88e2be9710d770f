"""Refresh the extract of Twilio's OpenAPI spec that the emulator's contract tests check it against.

``tests/zingyconn/twilio/twilio_messages_oai.json`` holds the Messages paths of Twilio's REST API v2010 and every
schema they reference, copied unchanged from `twilio-oai <https://github.com/twilio/twilio-oai>`_ (MIT licence,
Copyright Twilio, Inc.: ``tests/zingyconn/twilio/TWILIO_OAI_LICENSE``). To move to another release of the spec::

    python scripts/refresh_twilio_spec.py --tag 2.6.7                 # downloads spec/json/twilio_api_v2010.json
    python scripts/refresh_twilio_spec.py --tag 2.6.7 --spec FILE     # from a copy of that file already on disk

then run ``python -m pytest tests/zingyconn/twilio`` to see whether the emulator still answers the contract.
"""

from __future__ import annotations

import argparse
import json
import re
import urllib.request
from pathlib import Path
from typing import Any, Final

ROOT: Final = Path(__file__).resolve().parent.parent
EXTRACT_PATH: Final = ROOT / "tests" / "zingyconn" / "twilio" / "twilio_messages_oai.json"
#: The paths the emulator implements (create, list, fetch, update, delete of Messages).
MESSAGES_PATHS: Final = (
    "/2010-04-01/Accounts/{AccountSid}/Messages.json",
    "/2010-04-01/Accounts/{AccountSid}/Messages/{Sid}.json",
)
SPEC_URL: Final = "https://raw.githubusercontent.com/twilio/twilio-oai/{tag}/spec/json/twilio_api_v2010.json"
#: Where the extract says it came from (kept in its ``info``, beside Twilio's own fields).
NOTE_FIELD: Final = "x-zingyconn-extract"
_SCHEMA_REF: Final = re.compile(r'"#/components/schemas/([^"]+)"')


def extract(spec: dict[str, Any], *, note: str) -> dict[str, Any]:
    """Return the Messages paths of *spec* with the schemas they reference (transitively), and *note* in ``info``."""
    paths = {path: spec["paths"][path] for path in MESSAGES_PATHS}
    schemas = spec["components"]["schemas"]
    wanted: set[str] = set()
    pending = set(_SCHEMA_REF.findall(json.dumps(paths)))
    while pending:
        name = pending.pop()
        wanted.add(name)
        pending |= set(_SCHEMA_REF.findall(json.dumps(schemas[name]))) - wanted
    return {
        "openapi": spec["openapi"],
        "info": {**{key: value for key, value in spec["info"].items() if key != NOTE_FIELD}, NOTE_FIELD: note},
        "servers": spec["servers"],
        "paths": paths,
        "components": {
            "securitySchemes": spec["components"]["securitySchemes"],
            "schemas": {name: schemas[name] for name in sorted(wanted)},
        },
    }


def source_note(tag: str) -> str:
    """Say where an extract of *tag* comes from and under which licence."""
    return (
        f"Messages paths and the schemas they reference, copied unchanged from twilio-oai tag {tag} "
        "(https://github.com/twilio/twilio-oai, spec/json/twilio_api_v2010.json; MIT licence, Copyright Twilio, Inc., "
        "see TWILIO_OAI_LICENSE beside this file). Refresh with: python scripts/refresh_twilio_spec.py --tag TAG"
    )


def main() -> None:
    """Read the spec of the given tag (downloaded, or from --spec) and write the extract."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tag", required=True, help="The twilio-oai release tag, e.g. 2.6.7.")
    parser.add_argument("--spec", type=Path, help="twilio_api_v2010.json of that tag, already downloaded.")
    args = parser.parse_args()
    if args.spec is not None:
        text = args.spec.read_text(encoding="utf-8")
    else:
        with urllib.request.urlopen(SPEC_URL.format(tag=args.tag), timeout=60) as response:  # noqa: S310  # fixed https URL
            text = response.read().decode("utf-8")
    document = extract(json.loads(text), note=source_note(args.tag))
    EXTRACT_PATH.write_text(json.dumps(document, indent=1, ensure_ascii=False) + "\n", encoding="utf-8")
    print(f"wrote {EXTRACT_PATH.relative_to(ROOT)}: {len(document['components']['schemas'])} schemas")


if __name__ == "__main__":
    main()
