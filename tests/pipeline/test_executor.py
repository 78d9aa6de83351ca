"""The execution outbox worker in process: real HTTP, real PostgreSQL.

Two rigs. Through the API, SkyTwin's own ``run`` (the executor wired into
housekeeping exactly as in production) on the real clock, with the fake Google
in the same event loop. On virtual time, the pipeline rig with an ``Executor``
of its own, for backoff measured in minutes.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from functools import partial
from pathlib import Path
from typing import Any

import httpx
import trio
from psycopg.types.json import Jsonb
from trio.testing import MockClock

from skytwin.app import run as run_skytwin
from skytwin.config import Settings
from skytwin.connectors.oauth import StoredTokens
from skytwin.crypto import TokenCipher, load_or_create_key
from skytwin.fakegoogle import Fault, GoogleEndpoints, World, serve
from skytwin.pipeline.executor import Executor
from skytwin.pipeline.poller import PollSettings
from skytwin.store import Pool, transaction, users
from skytwin.store import approvals as store_approvals
from skytwin.store.connections import Account, upsert_connection
from tests.fakegoogle.harness import EPOCH, virtual_now

from .harness import PipelineRig, pipeline_rig

SECRET = "Zq7Lm2Vx9Tb4Nc8Rw1Hy6Kp3Jd5Gf0Ss"  # a test-only key, random-looking on purpose
MODIFY = "gmail.users.messages.modify"
PATCH = "calendar.events.patch"
NEWS_FROM = "news@shop.example"


# ---- SkyTwin's own run(), on the real clock ----


@dataclass
class Service:
    """A running SkyTwin (``skytwin.app.run``) and the fake Google it talks to."""

    base_url: str
    pool: Pool
    cipher: TokenCipher
    world: World

    async def new_user(self, email: str) -> tuple[int, str]:
        """A user whose Google account (same address) is connected; (user_id, API token)."""
        refresh_token = self.world.add_account(email)
        async with self.pool.connection() as conn:
            user = await users.create_user(conn, email, email.split("@")[0])
            token = await users.issue_token(conn, user.id)
            await upsert_connection(conn, self.cipher, user.id, email, StoredTokens(refresh_token))
        return user.id, token

    def client(self, token: str) -> httpx.AsyncClient:
        """An API client signed in with ``token``."""
        return httpx.AsyncClient(
            base_url=self.base_url, headers={"Authorization": f"Bearer {token}"}, timeout=15
        )


@asynccontextmanager
async def running_skytwin(database_url: str, tmp_path: Path) -> AsyncIterator[Service]:
    """The fake Google served on loopback and SkyTwin's ``run`` against it, until the block ends.

    Users are connected through ``Service.new_user`` after the start: discovery
    picks them up within its interval (the 0.05 s poll interval).
    """
    world = World(seed=5)
    stop_fake = trio.Event()
    # The block's end cancels SkyTwin (a hard stop) rather than asking it to stop.
    stop_skytwin = trio.CancelScope()
    skytwin_done = trio.Event()
    async with trio.open_nursery() as nursery:
        fake_url = await nursery.start(partial(serve, world, shutdown_trigger=stop_fake.wait))
        env = {
            "SKYTWIN_HOME": str(tmp_path / "home"),
            "SKYTWIN_BIND": "127.0.0.1:0",
            "SKYTWIN_DATABASE_URL": database_url,
            "SKYTWIN_SECRET_KEY": SECRET,
            "SKYTWIN_POLL_INTERVAL_S": "0.05",
            "SKYTWIN_GOOGLE_CLIENT_ID": world.client_id,
            "SKYTWIN_GOOGLE_CLIENT_SECRET": world.client_secret,
            **GoogleEndpoints(fake_url).as_env(),
        }
        settings = Settings.from_env(env)
        cipher = TokenCipher(load_or_create_key(settings.home, SECRET))
        pool = Pool(database_url, max_size=4)

        async def skytwin(*, task_status: trio.TaskStatus[list[str]]) -> None:
            try:
                with stop_skytwin:
                    await run_skytwin(
                        settings, poll=PollSettings(interval_s=0.05), task_status=task_status
                    )
            finally:
                skytwin_done.set()

        binds = await nursery.start(skytwin)
        try:
            yield Service(str(binds[0]), pool, cipher, world)
        finally:
            stop_skytwin.cancel()
            await skytwin_done.wait()
            stop_fake.set()
            await pool.close()
    assert world.errors == [], "the fake Google crashed:\n" + "\n".join(world.errors)


async def pending_approval(service: Service, token: str, action: str) -> dict[str, Any]:
    """The caller's pending approval for ``action``, once the poller has proposed it."""
    async with service.client(token) as client:
        with trio.fail_after(10):
            while True:
                response = await client.get("/api/approvals/pending")
                assert response.status_code == 200, response.text
                found = [a for a in response.json()["approvals"] if a["action"] == action]
                if found:
                    assert len(found) == 1, found
                    approval: dict[str, Any] = found[0]
                    return approval
                await trio.sleep(0.05)


async def approve(service: Service, token: str, approval_id: int) -> httpx.Response:
    """POST …/respond with ``approve``."""
    async with service.client(token) as client:
        return await client.post(
            f"/api/approvals/{approval_id}/respond", json={"action": "approve"}
        )


async def execution_row(pool: Pool, execution_id: int) -> dict[str, Any]:
    """The execution as stored."""
    async with pool.connection() as conn:
        cur = await conn.execute("select * from executions where id = %s", (execution_id,))
        row = await cur.fetchone()
    assert row is not None
    return dict(row)


def labels(world: World, email: str, message_id: str) -> list[str]:
    """A message's labels at the fake Google."""
    return list(world.account(email).messages[message_id].labels)


def own_response(world: World, email: str, event_id: str) -> str:
    """The account's own answer to an invite, at the fake Google."""
    attendees = world.event(email, event_id)["attendees"]
    return str(next(a["responseStatus"] for a in attendees if a.get("self")))


async def test_approving_answers_200_with_the_execution_succeeded(
    database_url: str, tmp_path: Path
) -> None:
    async with running_skytwin(database_url, tmp_path) as service:
        world = service.world
        _, token = await service.new_user("ann@example.com")
        message_id = world.add_message(
            "ann@example.com", sender=NEWS_FROM, subject="Weekly newsletter"
        )
        approval = await pending_approval(service, token, "gmail.archive")
        assert approval["params"] == {"messageId": message_id}

        response = await approve(service, token, approval["id"])

        # The executor ran while the request waited: 200 and the outcome, not 202.
        assert response.status_code == 200, response.text
        assert "location" not in response.headers
        body = response.json()
        assert body["status"] == "approved"
        execution = body["execution"]
        assert (execution["status"], execution["attempts"], execution["error"]) == (
            "succeeded",
            1,
            None,
        )
        assert "INBOX" not in execution["result"]["labels"]
        assert "INBOX" not in labels(world, "ann@example.com", message_id)
        assert world.calls[(MODIFY, message_id)] == 1
        assert [r.status for r in world.requests(MODIFY)] == [200]
        row = await execution_row(service.pool, execution["id"])
        assert row["status"] == "succeeded" and row["attempted_at"] is not None


async def test_an_action_acts_on_the_account_its_signal_came_from(
    database_url: str, tmp_path: Path
) -> None:
    async with running_skytwin(database_url, tmp_path) as service:
        world = service.world
        user_id, token = await service.new_user("ann@example.com")
        # Ann's second Google account; the newsletter lands there, not in the first.
        refresh_token = world.add_account("ann.work@example.com")
        async with service.pool.connection() as conn:
            await upsert_connection(
                conn, service.cipher, user_id, "ann.work@example.com",
                StoredTokens(refresh_token),
            )
        message_id = world.add_message(
            "ann.work@example.com", sender=NEWS_FROM, subject="Weekly newsletter"
        )
        approval = await pending_approval(service, token, "gmail.archive")
        response = await approve(service, token, approval["id"])
        assert response.status_code == 200, response.text
        assert response.json()["execution"]["status"] == "succeeded"
        assert "INBOX" not in labels(world, "ann.work@example.com", message_id)
        assert [r.account for r in world.requests(MODIFY)] == ["ann.work@example.com"]


async def test_a_protected_sender_is_refused_with_a_clear_error_and_no_call_to_google(
    database_url: str, tmp_path: Path
) -> None:
    async with running_skytwin(database_url, tmp_path) as service:
        world = service.world
        user_id, token = await service.new_user("ann@example.com")
        message_id = world.add_message(
            "ann@example.com", sender=f"Shop News <{NEWS_FROM}>", subject="Weekly newsletter"
        )
        approval = await pending_approval(service, token, "gmail.archive")
        # The user protects the sender's domain after the proposal was made:
        # the policy is checked again right before acting.
        async with service.pool.connection() as conn:
            await conn.execute(
                "update users set settings = %s where id = %s",
                (Jsonb({"protected_domains": ["Shop.Example"]}), user_id),
            )

        response = await approve(service, token, approval["id"])

        assert response.status_code == 200, response.text
        execution = response.json()["execution"]
        assert execution["status"] == "failed"
        assert execution["error"] == (
            "refused by policy: mail from shop.example is protected by the user's settings"
        )
        assert execution["result"] is None
        assert world.requests(MODIFY) == [] and world.calls[(MODIFY, message_id)] == 0
        assert "INBOX" in labels(world, "ann@example.com", message_id)


async def test_malformed_params_are_refused_before_any_call_to_google(
    database_url: str, tmp_path: Path
) -> None:
    async with running_skytwin(database_url, tmp_path) as service:
        world = service.world
        _, token = await service.new_user("ann@example.com")
        message_id = world.add_message(
            "ann@example.com", sender=NEWS_FROM, subject="Weekly newsletter"
        )
        approval = await pending_approval(service, token, "gmail.archive")
        # A decision row whose parameters lost their message id (the reference
        # system ran actions with empty parameters): the execution copies them.
        async with service.pool.connection() as conn:
            await conn.execute(
                "update decisions set params = %s where id = ("
                " select decision_id from approval_requests where id = %s)",
                (Jsonb({"messageId": ""}), approval["id"]),
            )

        response = await approve(service, token, approval["id"])

        assert response.status_code == 200, response.text
        execution = response.json()["execution"]
        assert (execution["status"], execution["params"]) == ("failed", {"messageId": ""})
        assert execution["error"] == "refused by policy: gmail actions need a messageId"
        assert execution["attempts"] == 1
        assert world.requests(MODIFY) == []
        assert "INBOX" in labels(world, "ann@example.com", message_id)


async def test_an_invite_cancelled_before_execution_fails_at_once_without_a_patch(
    database_url: str, tmp_path: Path
) -> None:
    """Retrying cannot make a cancelled event answerable: no deferral, no patch."""
    async with running_skytwin(database_url, tmp_path) as service:
        world = service.world
        _, token = await service.new_user("ann@example.com")
        start = datetime.now(UTC) + timedelta(days=2)
        event_id = world.add_event(
            "ann@example.com",
            summary="Planning",
            organizer="lead@work.example",
            start=start,
            end=start + timedelta(hours=1),
        )
        approval = await pending_approval(service, token, "calendar.respond")
        assert approval["params"] == {"eventId": event_id, "response": "accepted"}
        world.cancel_event("ann@example.com", event_id)

        response = await approve(service, token, approval["id"])

        assert response.status_code == 200, response.text
        execution = response.json()["execution"]
        assert (execution["status"], execution["attempts"]) == ("failed", 1)
        assert execution["error"] is not None and "event_cancelled" in execution["error"]
        assert world.requests(PATCH) == []
        assert own_response(world, "ann@example.com", event_id) == "needsAction"
        row = await execution_row(service.pool, execution["id"])
        assert row["status"] == "failed"


async def test_executions_of_different_users_never_cross(database_url: str, tmp_path: Path) -> None:
    async with running_skytwin(database_url, tmp_path) as service:
        world = service.world
        ann_id, ann = await service.new_user("ann@example.com")
        bob_id, bob = await service.new_user("bob@example.com")
        ann_first = world.add_message("ann@example.com", sender=NEWS_FROM, subject="Digest 1")
        bob_first = world.add_message("bob@example.com", sender=NEWS_FROM, subject="Digest 1")
        ann_approval = await pending_approval(service, ann, "gmail.archive")
        bob_approval = await pending_approval(service, bob, "gmail.archive")

        # Both approve at the same moment: each execution acts on its own user's mailbox.
        responses: dict[str, httpx.Response] = {}

        async def approve_as(name: str, token: str, approval_id: int) -> None:
            responses[name] = await approve(service, token, approval_id)

        async with trio.open_nursery() as nursery:
            nursery.start_soon(approve_as, "ann", ann, ann_approval["id"])
            nursery.start_soon(approve_as, "bob", bob, bob_approval["id"])
        for name in ("ann", "bob"):
            assert responses[name].status_code == 200, responses[name].text
            assert responses[name].json()["execution"]["status"] == "succeeded"

        # Bob's next proposal is rewritten to name a message in Ann's mailbox: his
        # token still only reaches his own account, so Google refuses (404).
        ann_second = world.add_message("ann@example.com", sender=NEWS_FROM, subject="Digest 2")
        bob_second = world.add_message("bob@example.com", sender=NEWS_FROM, subject="Digest 2")
        crossed = await pending_approval(service, bob, "gmail.archive")
        assert crossed["params"] == {"messageId": bob_second}
        async with service.pool.connection() as conn:
            await conn.execute(
                "update decisions set params = %s where id = ("
                " select decision_id from approval_requests where id = %s)",
                (Jsonb({"messageId": ann_second}), crossed["id"]),
            )
        response = await approve(service, bob, crossed["id"])

        assert response.status_code == 200, response.text
        execution = response.json()["execution"]
        assert execution["status"] == "failed" and "404" in execution["error"]
        done = {(r.account, r.resource, r.status) for r in world.requests(MODIFY)}
        assert done == {
            ("ann@example.com", ann_first, 200),
            ("bob@example.com", bob_first, 200),
            ("bob@example.com", ann_second, 404),
        }
        assert len(world.requests(MODIFY)) == 3
        assert "INBOX" in labels(world, "ann@example.com", ann_second)
        assert "INBOX" in labels(world, "bob@example.com", bob_second)
        async with service.pool.connection() as conn:
            cur = await conn.execute(
                "select e.user_id, a.user_id as approver from executions e"
                " join approval_requests a on a.id = e.approval_id order by e.id"
            )
            owners = [(r["user_id"], r["approver"]) for r in await cur.fetchall()]
        assert sorted(owners) == sorted([(ann_id, ann_id), (bob_id, bob_id), (bob_id, bob_id)])


# ---- an Executor of its own, on virtual time ----


async def proposed(rig: PipelineRig, account: Account, action: str) -> int:
    """Poll the account once (no poll loop runs) and return its pending approval for ``action``."""
    assert await rig.poller.cycle(account, rig.poller.status_for(account)) == "ok"
    async with rig.pool.connection() as conn:
        cur = await conn.execute(
            "select a.id from approval_requests a join decisions d on d.id = a.decision_id"
            " where a.user_id = %s and a.status = 'pending' and d.action = %s",
            (account.user_id, action),
        )
        rows = await cur.fetchall()
    assert len(rows) == 1, rows
    return int(rows[0]["id"])


async def approved(rig: PipelineRig, account: Account, approval_id: int) -> int:
    """Approve as the API would (on the rig's clock); return the execution id."""
    outcome = await transaction(
        rig.pool,
        partial(
            store_approvals.respond,
            user_id=account.user_id,
            approval_id=approval_id,
            approve=True,
            reason=None,
            now=virtual_now(),
        ),
    )
    assert outcome.result == "approved" and outcome.execution_id is not None
    return outcome.execution_id


@dataclass
class Finished:
    """Executions the executor reported finished, each as an event."""

    events: dict[int, trio.Event] = field(default_factory=dict)

    def report(self, execution_id: int) -> None:
        self.event(execution_id).set()

    def event(self, execution_id: int) -> trio.Event:
        return self.events.setdefault(execution_id, trio.Event())


async def test_an_outage_defers_the_execution_with_growing_backoff_then_it_succeeds_once(
    clock: MockClock, world: World, database_url: str, tmp_path: Path
) -> None:
    async with pipeline_rig(world, database_url, tmp_path) as rig:
        ann = await rig.connect("ann@example.com")
        message_id = world.add_message(
            ann.account_email, sender=NEWS_FROM, subject="Weekly newsletter"
        )
        approval_id = await proposed(rig, ann, "gmail.archive")
        # Gmail answers 503 to everything for 80 s: the first two attempts (the
        # second no earlier than 30 s after the first) fail, the third works.
        outage_ends = trio.current_time() + 80.0
        world.faults("gmail", ann.account_email).down_until = outage_ends
        execution_id = await approved(rig, ann, approval_id)
        finished = Finished()
        seen: list[dict[str, Any]] = []

        async def watch() -> None:
            """Every state the execution passes through, seen once a virtual second."""
            while True:
                row = await execution_row(rig.pool, execution_id)
                snapshot = {k: row[k] for k in ("status", "attempts", "not_before", "updated_at")}
                if not seen or seen[-1] != snapshot:
                    seen.append(snapshot)
                await trio.sleep(1.0)

        async with trio.open_nursery() as nursery:
            nursery.start_soon(watch)
            executor = Executor(rig.pool, rig.poller, on_finished=finished.report)
            await nursery.start(executor.run)
            with trio.fail_after(600):
                await finished.event(execution_id).wait()
            nursery.cancel_scope.cancel()

        row = await execution_row(rig.pool, execution_id)
        assert (row["status"], row["attempts"], row["error"]) == ("succeeded", 3, None)
        deferrals = [s for s in seen if s["status"] == "pending" and s["attempts"] > 0]
        assert [s["attempts"] for s in deferrals] == [1, 2]
        # Deferred 30 s, then 60 s: not_before grows, and no claim came before it.
        assert [(s["not_before"] - s["updated_at"]).total_seconds() for s in deferrals] == [
            30.0,
            60.0,
        ]
        assert deferrals[1]["not_before"] > deferrals[0]["not_before"]
        assert row["attempted_at"] >= deferrals[1]["not_before"]
        assert row["attempted_at"] >= EPOCH + timedelta(seconds=outage_ends)
        # Google refused every call during the outage; exactly one modify took effect.
        statuses = [r.status for r in world.requests(MODIFY)]
        assert statuses[-1] == 200 and set(statuses[:-1]) == {503} and len(statuses) >= 3
        assert world.calls[(MODIFY, message_id)] == 1
        assert "INBOX" not in labels(world, ann.account_email, message_id)


async def test_recovery_waits_on_google_without_holding_up_the_start(
    clock: MockClock, world: World, database_url: str, tmp_path: Path
) -> None:
    """A run interrupted between claim and result; at the restart Google is slow to answer."""
    async with pipeline_rig(world, database_url, tmp_path) as rig:
        ann = await rig.connect("ann@example.com")
        message_id = world.add_message(
            ann.account_email, sender=NEWS_FROM, subject="Weekly newsletter"
        )
        execution_id = await approved(rig, ann, await proposed(rig, ann, "gmail.archive"))
        # The earlier process claimed it (attempt committed) and died before acting.
        claimed = await transaction(
            rig.pool, partial(store_approvals.claim_execution, now=virtual_now())
        )
        assert claimed is not None and claimed.id == execution_id
        # Google takes 15 s to answer the check (within the client's 20 s read timeout).
        world.faults("gmail", ann.account_email).add(
            Fault.slow(15.0, operation="gmail.users.messages.get")
        )
        finished = Finished()

        async with trio.open_nursery() as nursery:
            starting = trio.current_time()
            executor = Executor(rig.pool, rig.poller, on_finished=finished.report)
            await nursery.start(executor.run)
            # Ready at once: the process (its web server included) must not wait on Google.
            assert trio.current_time() == starting
            with trio.fail_after(600):
                await finished.event(execution_id).wait()
            nursery.cancel_scope.cancel()

        # Recovery asked Google first (slowly), found the message still in the
        # inbox, handed the execution back to the queue; it then ran once.
        (verify,) = [
            r
            for r in world.requests("gmail.users.messages.get", account=ann.account_email)
            if r.query.get("format") == ["minimal"]
        ]
        assert (verify.resource, verify.status, verify.at) == (message_id, 200, starting)
        row = await execution_row(rig.pool, execution_id)
        assert (row["status"], row["attempts"], row["error"]) == ("succeeded", 2, None)
        (modify,) = world.requests(MODIFY)
        assert modify.status == 200 and modify.at >= starting + 15.0
        assert world.calls[(MODIFY, message_id)] == 1
        assert "INBOX" not in labels(world, ann.account_email, message_id)
