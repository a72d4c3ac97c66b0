"""``/docs`` (Swagger UI) and ``/redoc`` (ReDoc) load every script, style and icon from the
API itself: no CDN, so the pages work without internet access (issue 11)."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Final

import httpx
import pytest

from ocs.api.asgi import create_app
from ocs.config import Settings

ASSET: Final = re.compile(r"""(?:src|href)=["']([^"']+)["']|url:\s*'([^']+)'""")
PAGES: Final = {
    "/docs": {"swagger-ui-bundle.js", "swagger-ui.css", "favicon.png"},
    "/redoc": {"redoc.standalone.js", "favicon.png"},
}


@pytest.mark.parametrize("page", sorted(PAGES))
async def test_docs_pages_load_their_assets_from_the_api(page: str, tmp_path: Path) -> None:
    app = create_app(Settings(data_dir=tmp_path, redis_url="redis://127.0.0.1:1/0"))
    transport = httpx.ASGITransport(app=app)  # no lifespan: these routes need no store
    async with httpx.AsyncClient(transport=transport, base_url="http://ocs.test") as http:
        html = await http.get(page)
        assert html.status_code == 200
        assert html.headers["content-type"].startswith("text/html")
        assert "://" not in html.text.replace("http://www.w3.org", "")  # no absolute URL
        urls = [a or b for a, b in ASSET.findall(html.text)]
        assert {u.rsplit("/", 1)[-1] for u in urls} >= PAGES[page]
        for url in urls:
            assert url.startswith("/"), url  # same origin
            got = await http.get(url)
            assert got.status_code == 200, url
            assert got.content, url
            if url.endswith(".js"):
                assert "javascript" in got.headers["content-type"]
            if url == "/openapi.json":
                assert got.json()["info"]["title"] == "ocs API"
