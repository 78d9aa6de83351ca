"""A faithful fake Google (Gmail v1, Calendar v3, OAuth 2.0) that speaks real HTTP.

`World` holds the accounts, mail, events, grants, fault plans and the request
log; `serve(world)` runs it under Hypercorn on 127.0.0.1 and reports its base
URL; `GoogleEndpoints(base_url)` says where each service lives under it.

    world = World()
    refresh_token = world.add_account("ada@example.com")
    world.add_message("ada@example.com", sender="bob@example.com", subject="Hi")
    world.faults("gmail", "ada@example.com").add(Fault.error(503, retry_after="2"))
    async with trio.open_nursery() as nursery:
        base_url = await nursery.start(partial(serve, world, shutdown_trigger=stop.wait))
        ...  # point SKYTWIN_*_URL at GoogleEndpoints(base_url).as_env()

Every answered request lands in `world.log` (time, operation, query, account,
status); `world.calls` counts handled requests per (operation, resource).
"""

from skytwin.fakegoogle.app import ROUTES, make_app
from skytwin.fakegoogle.faults import Fault, FaultPlan
from skytwin.fakegoogle.server import GoogleEndpoints, serve
from skytwin.fakegoogle.world import (
    CALENDAR_EVENTS_SCOPE,
    DEFAULT_CLIENT_ID,
    DEFAULT_CLIENT_SECRET,
    FULL_SCOPES,
    GMAIL_MODIFY_SCOPE,
    RequestRecord,
    World,
)

__all__ = [
    "CALENDAR_EVENTS_SCOPE",
    "DEFAULT_CLIENT_ID",
    "DEFAULT_CLIENT_SECRET",
    "FULL_SCOPES",
    "GMAIL_MODIFY_SCOPE",
    "ROUTES",
    "Fault",
    "FaultPlan",
    "GoogleEndpoints",
    "RequestRecord",
    "World",
    "make_app",
    "serve",
]
