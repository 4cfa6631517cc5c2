"""``GET /ui``: one static page (HTML, CSS and vanilla JS in ``proxy/static/ui.html``) that reads
the audit API from the browser. No build step; nothing recorded is rendered on the server.

Browsers cannot send a Bearer header when they navigate to a page, so with ``--admin-token`` a
request for ``/ui`` without the token is answered ``401`` with the page itself: it holds no data,
asks for the token, keeps it in ``sessionStorage`` and sends it as Bearer on every fetch.
"""

from __future__ import annotations

import base64
import hashlib
import re
from dataclasses import dataclass
from importlib.resources import files

from aiohttp import web

__all__ = ["UI_PAGE", "UiPage", "add_routes", "page_response"]


@dataclass(frozen=True, slots=True)
class UiPage:
    body: bytes
    # Only the page's own inline script and style may run: recorded text can never inject any.
    csp: str

    @classmethod
    def load(cls) -> UiPage:
        body = files("proxy").joinpath("static/ui.html").read_bytes()

        def digest(tag: str) -> str:
            inline = re.search(rb"<" + tag.encode() + rb">(.*?)</" + tag.encode() + rb">", body, re.S)
            assert inline is not None, f"ui.html has no inline <{tag}>"
            return "'sha256-" + base64.b64encode(hashlib.sha256(inline.group(1)).digest()).decode() + "'"

        csp = (
            f"default-src 'none'; script-src {digest('script')}; style-src {digest('style')}; "
            "connect-src 'self'; img-src 'self' data:; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
        )
        return cls(body=body, csp=csp)


UI_PAGE = web.AppKey("ui_page", UiPage)


def page_response(app: web.Application, status: int = 200) -> web.Response:
    """The page, with its Content-Security-Policy; never cached, so a token prompt is never stale."""
    page = app[UI_PAGE]
    return web.Response(
        body=page.body,
        status=status,
        content_type="text/html",
        charset="utf-8",
        headers={"Content-Security-Policy": page.csp, "Cache-Control": "no-store", "X-Content-Type-Options": "nosniff"},
    )


async def ui(request: web.Request) -> web.Response:
    return page_response(request.app)


def add_routes(app: web.Application) -> None:
    app[UI_PAGE] = UiPage.load()
    app.router.add_get("/ui", ui)
