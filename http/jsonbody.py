# Reading a JSON request body with Glance's rules.
# Invariants: the body is read whole only up to ServerConfig.max_json_body (TooLarge -> 413);
# every malformed input is a 400 with Glance's message, never a 500: absent body ->
# "Body expected in request.", undecodable or invalid JSON (including absurd nesting) ->
# "Malformed JSON in request body.", a top-level scalar -> "Unexpected body type. Expected
# list/dict.". Strings are real Unicode: an escaped lone surrogate (which no store can encode)
# is malformed JSON too ("... not valid Unicode text").
from __future__ import annotations

import json
import re
from typing import Any

from tessera.http.errors import HTTPError
from tessera.http.message import Request

NO_BODY = object()
_SURROGATE_ESCAPE = re.compile(rb"\\u[dD][89a-fA-F]")


async def read_json(request: Request, limit: int, *, required: bool = True) -> Any:
    """The decoded body (a dict or a list); NO_BODY when absent and not `required`."""
    if not request.body.present:
        if required:
            raise HTTPError(400, "Body expected in request.")
        return NO_BODY
    raw = await request.body.read_all(limit)
    try:
        value = json.loads(raw.decode("utf-8"))
    except (UnicodeError, ValueError, RecursionError):
        raise HTTPError(400, "Malformed JSON in request body.") from None
    if _SURROGATE_ESCAPE.search(raw) is not None:
        try:      # pairs decode to one character; a lone half stays a surrogate: refused
            json.dumps(value, ensure_ascii=False).encode("utf-8")
        except (UnicodeError, RecursionError):
            raise HTTPError(400, "Malformed JSON in request body: a string is not valid "
                                 "Unicode text (an unpaired surrogate).") from None
    if not isinstance(value, (dict, list)):
        raise HTTPError(400, "Unexpected body type. Expected list/dict.")
    return value
