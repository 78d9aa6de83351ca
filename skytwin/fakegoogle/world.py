"""The fake Google's state: accounts with a mailbox and a calendar, OAuth grants, faults, a log.

Everything is in memory and synchronous; the ASGI app in `app.py` reads and
changes it, and tests (or the demo generator) script it directly. Time comes
from two places, like at Google: `trio.current_time()` for token lifetimes,
outages and the request log, and the injectable wall clock `now()` for the
dates inside the data (a message's internalDate, an event's `updated`).
"""

from __future__ import annotations

import bisect
import random
from collections import Counter, deque
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from email.utils import format_datetime
from typing import Any

import trio

from skytwin.fakegoogle.faults import APIS, Fault, FaultPlan

GMAIL_MODIFY_SCOPE = "https://www.googleapis.com/auth/gmail.modify"
CALENDAR_EVENTS_SCOPE = "https://www.googleapis.com/auth/calendar.events"
FULL_SCOPES = frozenset({GMAIL_MODIFY_SCOPE, CALENDAR_EVENTS_SCOPE})
DEFAULT_CLIENT_ID = "skytwin-fake.apps.googleusercontent.com"
DEFAULT_CLIENT_SECRET = "fake-client-secret"
FIRST_HISTORY_ID = 1000
SYSTEM_LABELS = frozenset(
    {
        "CHAT", "SENT", "INBOX", "IMPORTANT", "TRASH", "DRAFT", "SPAM", "STARRED", "UNREAD",
        "CATEGORY_FORUMS", "CATEGORY_UPDATES", "CATEGORY_PERSONAL", "CATEGORY_PROMOTIONS",
        "CATEGORY_SOCIAL",
    }
)  # fmt: skip
AUTH_CODE_TTL_S = 600.0  # Google's authorization codes live ten minutes


def utc_now() -> datetime:
    """The real wall clock, in UTC."""
    return datetime.now(UTC)


def rfc3339(moment: datetime) -> str:
    """Format like Google's `updated`/`created`: UTC with milliseconds and a Z."""
    moment = moment.astimezone(UTC)
    return moment.strftime("%Y-%m-%dT%H:%M:%S.") + f"{moment.microsecond // 1000:03d}Z"


def event_time(moment: datetime | date) -> dict[str, str]:
    """An event start/end as Google renders it: `date` for all-day, else `dateTime`."""
    if not isinstance(moment, datetime):
        return {"date": moment.isoformat()}
    if moment.tzinfo is None:
        raise ValueError("event times must be timezone-aware")
    if moment.utcoffset() == timedelta(0):
        return {"dateTime": moment.strftime("%Y-%m-%dT%H:%M:%SZ"), "timeZone": "UTC"}
    return {"dateTime": moment.isoformat(timespec="seconds")}


# ---- state ----


@dataclass(slots=True)
class Message:
    """One Gmail message, with just the metadata the API returns."""

    id: str
    thread_id: str
    labels: list[str]
    internal_ms: int
    headers: list[tuple[str, str]]
    snippet: str
    history_id: int
    size: int


@dataclass(frozen=True, slots=True)
class HistoryRecord:
    """One mailbox change, as `users.history.list` reports it."""

    id: int
    kind: str  # messageAdded | messageDeleted | labelAdded | labelRemoved
    message_id: str
    thread_id: str
    message_labels: tuple[str, ...]
    changed_labels: tuple[str, ...] = ()


@dataclass(slots=True)
class CalendarEvent:
    """One event of an account's primary calendar; `seq` orders its versions."""

    id: str
    seq: int
    resource: dict[str, Any]


@dataclass(frozen=True, slots=True)
class AccessGrant:
    """What an access token stands for."""

    email: str
    expires_at: float
    scopes: frozenset[str]


@dataclass(frozen=True, slots=True)
class AuthCode:
    """A pending authorization code from the consent screen."""

    email: str
    client_id: str
    redirect_uri: str
    code_challenge: str | None
    challenge_method: str
    scopes: frozenset[str]
    offline: bool
    expires_at: float


@dataclass(slots=True)
class Account:
    """One Google account: grants, mailbox with history, primary calendar."""

    email: str
    scopes: frozenset[str]
    refresh_tokens: set[str] = field(default_factory=set)
    labels: dict[str, str] = field(default_factory=dict)  # user label id -> name
    messages: dict[str, Message] = field(default_factory=dict)
    # (internalDate ms, id), ascending: messages.list walks it backwards (newest first).
    message_order: list[tuple[int, str]] = field(default_factory=list)
    history: deque[HistoryRecord] = field(default_factory=deque)
    history_id: int = FIRST_HISTORY_ID
    # Records with id <= history_floor are gone; a startHistoryId below it gets 404.
    history_floor: int = FIRST_HISTORY_ID
    events: dict[str, CalendarEvent] = field(default_factory=dict)
    # (seq, event id) for every version ever written; stale entries are skipped on read.
    event_log: list[tuple[int, str]] = field(default_factory=list)
    calendar_seq: int = 0
    sync_generation: int = 0
    last_updated_ms: int = 0


@dataclass(frozen=True, slots=True)
class RequestRecord:
    """One request the fake answered, for assertions."""

    at: float
    method: str
    path: str
    api: str
    operation: str
    account: str | None
    resource: str | None
    query: dict[str, list[str]]
    status: int  # 0 when no complete answer was sent (dropped, or the client hung up)
    note: str = ""  # "fault" (injected), "dropped", "client-gone", or "" for a real answer
    body: bytes = b""  # kept for POST/PATCH to the APIs only (not the token endpoint)


# ---- the world ----


class World:
    """Every account the fake Google knows, and the knobs tests turn."""

    def __init__(
        self,
        *,
        now: Callable[[], datetime] = utc_now,
        seed: int = 0,
        client_id: str = DEFAULT_CLIENT_ID,
        client_secret: str = DEFAULT_CLIENT_SECRET,
        access_token_ttl_s: float = 3600.0,
        history_retention: int | None = None,
        log_limit: int | None = None,
        rotate_refresh_tokens: bool = False,
    ) -> None:
        self.now = now
        # Like Google for some clients: each refresh returns a new refresh token, the old dies.
        self.rotate_refresh_tokens = rotate_refresh_tokens
        self.client_id = client_id
        self.client_secret = client_secret
        self.access_token_ttl_s = access_token_ttl_s
        self.history_retention = history_retention
        self.accounts: dict[str, Account] = {}
        self.access_tokens: dict[str, AccessGrant] = {}
        self.refresh_tokens: dict[str, str] = {}  # refresh token -> email
        self.auth_codes: dict[str, AuthCode] = {}
        self.log: deque[RequestRecord] = deque(maxlen=log_limit)
        # (operation, resource or account) -> handled requests; faults are not counted.
        self.calls: Counter[tuple[str, str]] = Counter()
        self.errors: list[str] = []
        # Every token and code handed out, so tests can look for leaks in logs.
        self.secrets_issued: list[str] = [client_secret]
        # Separate generators so minting a token never shifts the fault sequence.
        self.fault_rng = random.Random(seed)
        self._token_rng = random.Random(f"tokens-{seed}")
        self._plans: dict[tuple[str, str | None], FaultPlan] = {}
        self._hooks: list[tuple[str, Callable[[World], None]]] = []
        self._next_id = 0

    # ---- accounts and grants ----

    def add_account(self, email: str, *, scopes: Iterable[str] = FULL_SCOPES) -> str:
        """Create an account that has consented; returns a refresh token for it."""
        email = email.lower()
        if email in self.accounts:
            raise ValueError(f"account {email} exists")
        self.accounts[email] = Account(email=email, scopes=frozenset(scopes))
        return self.issue_refresh_token(email)

    def account(self, email: str) -> Account:
        """The account for `email`; KeyError if unknown."""
        return self.accounts[email.lower()]

    def issue_refresh_token(self, email: str) -> str:
        """Mint another refresh token for an account (a new consent)."""
        account = self.account(email)
        token = f"1//fake-{self._token_rng.getrandbits(128):032x}"
        self.secrets_issued.append(token)
        account.refresh_tokens.add(token)
        self.refresh_tokens[token] = account.email
        return token

    def mint_access_token(self, email: str, scopes: frozenset[str]) -> str:
        """Mint an access token valid for `access_token_ttl_s` of trio time."""
        token = f"ya29.fake-{self._token_rng.getrandbits(128):032x}"
        self.secrets_issued.append(token)
        expires_at = trio.current_time() + self.access_token_ttl_s
        self.access_tokens[token] = AccessGrant(email.lower(), expires_at, scopes)
        return token

    def revoke(self, email: str) -> None:
        """Revoke every grant of an account: refresh gets invalid_grant, API calls 401."""
        account = self.account(email)
        for token in account.refresh_tokens:
            self.refresh_tokens.pop(token, None)
        account.refresh_tokens.clear()
        self._drop_access_tokens(account.email)

    def expire_access_tokens(self, email: str) -> None:
        """Make every access token of an account expire now (API calls get 401)."""
        self._drop_access_tokens(email.lower())

    def _drop_access_tokens(self, email: str) -> None:
        for token in [t for t, g in self.access_tokens.items() if g.email == email]:
            del self.access_tokens[token]

    def grant_for(self, access_token: str) -> AccessGrant | None:
        """The live grant behind an access token, or None if unknown or expired."""
        grant = self.access_tokens.get(access_token)
        if grant is None or trio.current_time() >= grant.expires_at:
            return None
        return grant

    def _new_id(self, prefix: str = "") -> str:
        self._next_id += 1
        return f"{prefix}{self._next_id:016x}"

    def new_auth_code(self, code: AuthCode) -> str:
        """Store an authorization code and return its value."""
        value = f"4/fake-{self._token_rng.getrandbits(96):024x}"
        self.secrets_issued.append(value)
        self.auth_codes[value] = code
        return value

    # ---- gmail ----

    def add_message(
        self,
        email: str,
        *,
        sender: str,
        subject: str,
        snippet: str = "",
        labels: Sequence[str] = ("INBOX", "UNREAD"),
        received_at: datetime | None = None,
        thread_id: str | None = None,
        to: str | None = None,
    ) -> str:
        """Deliver a message to an account's mailbox; returns its id."""
        account = self.account(email)
        received_at = received_at or self.now()
        message_id = self._new_id()
        internal_ms = int(received_at.timestamp() * 1000)
        headers = [
            ("From", sender),
            ("To", to or account.email),
            ("Subject", subject),
            ("Date", format_datetime(received_at.astimezone(UTC))),
        ]
        message = Message(
            id=message_id,
            thread_id=thread_id or message_id,
            labels=list(labels),
            internal_ms=internal_ms,
            headers=headers,
            snippet=snippet,
            history_id=0,
            size=512 + len(subject) + len(snippet),
        )
        account.messages[message_id] = message
        bisect.insort(account.message_order, (internal_ms, message_id))
        self._record(account, "messageAdded", message)
        return message_id

    def delete_message(self, email: str, message_id: str) -> None:
        """Delete a message for good (as users.messages.delete would)."""
        account = self.account(email)
        message = account.messages.pop(message_id)
        account.message_order.remove((message.internal_ms, message_id))
        self._record(account, "messageDeleted", message)

    def modify_labels(
        self, email: str, message_id: str, add: Iterable[str] = (), remove: Iterable[str] = ()
    ) -> Message:
        """Change a message's labels, recording history only for real changes."""
        account = self.account(email)
        message = account.messages[message_id]
        added = [label for label in add if label not in message.labels]
        message.labels.extend(added)
        if added:
            self._record(account, "labelAdded", message, tuple(added))
        removed = [label for label in remove if label in message.labels]
        message.labels[:] = [label for label in message.labels if label not in removed]
        if removed:
            self._record(account, "labelRemoved", message, tuple(removed))
        return message

    def add_label(self, email: str, name: str) -> str:
        """Create a user label (as users.labels.create would); returns its id."""
        account = self.account(email)
        if any(existing.lower() == name.lower() for existing in account.labels.values()):
            raise ValueError(f"label {name!r} exists")
        label_id = f"Label_{len(account.labels) + 1}"
        account.labels[label_id] = name
        return label_id

    def expire_history(self, email: str) -> None:
        """Forget all history: any older startHistoryId now gets 404."""
        account = self.account(email)
        account.history.clear()
        account.history_floor = account.history_id

    def _record(
        self, account: Account, kind: str, message: Message, changed: tuple[str, ...] = ()
    ) -> None:
        account.history_id += 1
        message.history_id = account.history_id
        account.history.append(
            HistoryRecord(
                account.history_id,
                kind,
                message.id,
                message.thread_id,
                tuple(message.labels),
                changed,
            )
        )
        if self.history_retention is not None:
            while len(account.history) > self.history_retention:
                account.history_floor = account.history.popleft().id

    # ---- calendar ----

    def add_event(
        self,
        email: str,
        *,
        summary: str,
        start: datetime | date,
        end: datetime | date,
        organizer: str | None = None,
        attendees: Sequence[str] = (),
        response: str | None = None,
        status: str = "confirmed",
        event_id: str | None = None,
    ) -> str:
        """Put an event on an account's primary calendar; returns its id.

        With `organizer` set to someone else the account is an invited attendee
        whose answer is `response` (default needsAction); otherwise the account
        organizes the event and `attendees` are its guests.
        """
        account = self.account(email)
        event_id = event_id or self._new_id("ev")
        created = self._stamp(account)
        invited = organizer is not None and organizer.lower() != account.email
        organizer_email = organizer.lower() if organizer is not None else account.email
        resource: dict[str, Any] = {
            "kind": "calendar#event",
            "id": event_id,
            "status": status,
            "htmlLink": f"https://www.google.com/calendar/event?eid={event_id}",
            "created": created,
            "updated": created,
            "summary": summary,
            "creator": {"email": organizer_email},
            "organizer": {"email": organizer_email},
            "start": event_time(start),
            "end": event_time(end),
            "iCalUID": f"{event_id}@google.com",
            "sequence": 0,
            "eventType": "default",
        }
        if not invited:
            resource["creator"]["self"] = True
            resource["organizer"]["self"] = True
        guests: list[dict[str, Any]] = []
        if invited:
            guests.append(
                {"email": organizer_email, "organizer": True, "responseStatus": "accepted"}
            )
            guests.extend({"email": a, "responseStatus": "needsAction"} for a in attendees)
            guests.append(
                {"email": account.email, "self": True, "responseStatus": response or "needsAction"}
            )
        elif attendees:
            guests.append(
                {
                    "email": account.email,
                    "organizer": True,
                    "self": True,
                    "responseStatus": response or "accepted",
                }
            )
            guests.extend({"email": a, "responseStatus": "needsAction"} for a in attendees)
        if guests:
            resource["attendees"] = guests
        self._write_event(account, event_id, resource)
        return event_id

    def update_event(
        self,
        email: str,
        event_id: str,
        *,
        summary: str | None = None,
        start: datetime | date | None = None,
        end: datetime | date | None = None,
        status: str | None = None,
    ) -> None:
        """Change an event as its organizer would; makes a new version."""
        account = self.account(email)
        resource = dict(account.events[event_id].resource)
        if summary is not None:
            resource["summary"] = summary
        if start is not None:
            resource["start"] = event_time(start)
        if end is not None:
            resource["end"] = event_time(end)
        if status is not None:
            resource["status"] = status
        resource["sequence"] = int(resource.get("sequence", 0)) + 1
        self.patch_event(account, event_id, resource)

    def cancel_event(self, email: str, event_id: str) -> None:
        """Cancel (delete) an event; syncs then see it as status=cancelled."""
        self.update_event(email, event_id, status="cancelled")

    def set_response(self, email: str, event_id: str, attendee: str, response: str) -> None:
        """Record an attendee's answer (e.g. a guest accepting the account's meeting)."""
        account = self.account(email)
        resource = dict(account.events[event_id].resource)
        resource["attendees"] = [
            {**a, "responseStatus": response} if a["email"] == attendee.lower() else dict(a)
            for a in resource.get("attendees", [])
        ]
        self.patch_event(account, event_id, resource)

    def invalidate_sync_tokens(self, email: str) -> None:
        """Make every sync token issued so far for this calendar answer 410."""
        self.account(email).sync_generation += 1

    def event(self, email: str, event_id: str) -> dict[str, Any]:
        """The current full resource of an event (a copy)."""
        return dict(self.account(email).events[event_id].resource)

    def patch_event(
        self, account: Account, event_id: str, changes: dict[str, Any]
    ) -> CalendarEvent:
        """Merge top-level fields into an event; a no-op patch makes no new version."""
        current = account.events[event_id].resource
        merged = {**current, **changes}
        if merged == current:
            return account.events[event_id]
        merged["updated"] = self._stamp(account)
        return self._write_event(account, event_id, merged)

    def _write_event(
        self, account: Account, event_id: str, resource: dict[str, Any]
    ) -> CalendarEvent:
        account.calendar_seq += 1
        resource["etag"] = f'"{account.calendar_seq:016d}"'
        event = CalendarEvent(event_id, account.calendar_seq, resource)
        account.events[event_id] = event
        account.event_log.append((event.seq, event_id))
        return event

    def _stamp(self, account: Account) -> str:
        # Versions of an event must differ even when the clock stands still (tests).
        now_ms = int(self.now().timestamp() * 1000)
        account.last_updated_ms = max(now_ms, account.last_updated_ms + 1)
        return rfc3339(datetime.fromtimestamp(account.last_updated_ms / 1000, UTC))

    # ---- faults, hooks, log ----

    def faults(self, api: str, email: str | None = None) -> FaultPlan:
        """The fault plan of one API for one account, or for every account when email is None."""
        if api not in APIS:
            raise ValueError(f"unknown api {api!r}; expected one of {APIS}")
        key = (api, email.lower() if email is not None else None)
        plan = self._plans.get(key)
        if plan is None:
            plan = self._plans[key] = FaultPlan()
        return plan

    def take_fault(
        self, api: str, email: str | None, operation: str, resource: str | None
    ) -> Fault | None:
        """The fault for one request: the all-accounts plan first, then the account's."""
        if not self._plans:
            return None
        now = trio.current_time()
        keys = [(api, None)] if email is None else [(api, None), (api, email)]
        for key in keys:
            plan = self._plans.get(key)
            if plan is not None:
                fault = plan.take(operation, resource, now, self.fault_rng)
                if fault is not None:
                    return fault
        return None

    def on_next(self, operation: str, callback: Callable[[World], None]) -> None:
        """Run `callback(world)` right after the next handled request of `operation`."""
        self._hooks.append((operation, callback))

    def run_hooks(self, operation: str) -> None:
        """Fire (and forget) the hooks waiting for `operation`."""
        if not self._hooks:
            return
        due = [cb for op, cb in self._hooks if op == operation]
        self._hooks = [(op, cb) for op, cb in self._hooks if op != operation]
        for callback in due:
            callback(self)

    def requests(
        self, operation: str | None = None, *, account: str | None = None
    ) -> list[RequestRecord]:
        """Logged requests, optionally only those of one operation and/or account."""
        return [
            r
            for r in self.log
            if (operation is None or r.operation == operation)
            and (account is None or r.account == account.lower())
        ]
