"""The baseline of ``bench.inbound``: a bare Starlette endpoint that parses the same form and answers the
same empty TwiML, served by uvicorn with the same settings as ``optline serve`` (one process, no access log).

``python -m bench._bare_inbound --port P`` — it prints ``listening`` once it accepts connections.
"""

from __future__ import annotations

import argparse

import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

EMPTY_TWIML = '<?xml version="1.0" encoding="UTF-8"?><Response/>'


async def sms(request: Request) -> Response:
    form = await request.form()
    if not form.get("From") or not form.get("Body"):  # read what optline reads, so the parse is not skipped
        return Response("bad request", status_code=400)
    return Response(EMPTY_TWIML, media_type="application/xml")


async def healthz(request: Request) -> Response:
    return Response("ok")


app = Starlette(routes=[Route("/webhooks/twilio/sms", sms, methods=["POST"]), Route("/healthz", healthz)])


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, required=True)
    args = parser.parse_args()
    uvicorn.run(app, host="127.0.0.1", port=args.port, log_level="warning", access_log=False)


if __name__ == "__main__":
    main()
