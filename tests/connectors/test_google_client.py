"""The shared Google client: no cookie crosses from one account's answer to another's request."""

from __future__ import annotations

import httpx
import pytest

from skytwin.connectors.api import make_google_client


async def test_a_cookie_google_sets_is_never_sent_back() -> None:
    seen: list[str | None] = []

    def google(request: httpx.Request) -> httpx.Response:
        seen.append(request.headers.get("cookie"))
        return httpx.Response(
            200, json={}, headers={"set-cookie": "NID=abc; Domain=example.test; Path=/"}
        )

    client = make_google_client(transport=httpx.MockTransport(google))
    try:
        for _ in range(2):
            response = await client.get("https://www.example.test/gmail/v1/users/me/profile")
            assert response.status_code == 200
        assert seen == [None, None]
        assert len(client.cookies) == 0
    finally:
        await client.aclose()


def test_the_client_refuses_cookies_given_up_front() -> None:
    with pytest.raises(ValueError, match="no cookies"):
        type(make_google_client())(cookies={"NID": "abc"})
