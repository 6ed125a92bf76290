"""The floor of a decide request in one Python process (issue #16): uvicorn with httptools and
uvloop, an ASGI app that parses the same decide body with orjson, builds the candidates x
features rows, predicts with the same LightGBM model and answers the choice. No validation, no
logging, no Redis, no exploration: what no decision service can go below in Python.

    python bench/_floor_server.py MODEL_FILE PORT
"""

from __future__ import annotations

import sys
from typing import Any

import lightgbm as lgb
import numpy as np
import orjson
import uvicorn
from _setup import CANDIDATE, CONTEXT

BOOSTER = lgb.Booster(model_file=sys.argv[1])
JSON = [(b"content-type", b"application/json")]


async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
    if scope["type"] != "http":
        return
    body = b""
    more = True
    while more:
        message = await receive()
        body += message.get("body", b"")
        more = message.get("more_body", False)
    request = orjson.loads(body)
    context = request.get("context") or {}
    candidates = request["candidates"]
    rows = np.empty((len(candidates), len(CONTEXT) + len(CANDIDATE)))
    rows[:, : len(CONTEXT)] = [context.get(name, np.nan) for name in CONTEXT]
    for i, candidate in enumerate(candidates):
        features = candidate.get("features") or {}
        rows[i, len(CONTEXT) :] = [features.get(name, np.nan) for name in CANDIDATE]
    scores = BOOSTER.predict(rows, num_threads=1)
    answer = orjson.dumps({"choice": candidates[int(np.argmax(scores))]["id"]})
    await send({"type": "http.response.start", "status": 200, "headers": JSON})
    await send({"type": "http.response.body", "body": answer})


if __name__ == "__main__":
    uvicorn.run(
        app,
        host="127.0.0.1",
        port=int(sys.argv[2]),
        http="httptools",
        loop="uvloop",
        log_level="warning",
        access_log=False,
    )
