// SkyTwin dashboard: plain JavaScript, no build step, no dependencies.
//
// What must stay true:
// - Server data reaches the page only as text (textContent, text nodes, attribute
//   values set through setAttribute); never as markup.
// - The API token lives in sessionStorage and is sent only in the Authorization
//   header of same-origin requests; it never appears in a URL.
// - Live updates are short polling: one refresh at a time, every POLL_MS, paused
//   while the tab is hidden.
"use strict";

(() => {
  const TOKEN_KEY = "skytwin.token";
  const POLL_MS = 3000;
  const FOLLOW_MS = 1000;
  const FOLLOW_MAX = 300; // stop following one execution after about five minutes
  const MAX_NOTES = 6;

  const $ = (id) => document.getElementById(id);
  let token = null;
  let timer = null;
  let refreshing = null;
  const pendingCards = new Map(); // approval id -> {li, busy}
  const lastRendered = {};        // section -> JSON of what it shows now

  // ---- DOM helpers (text only) ----

  function h(tag, attrs, ...children) {
    const el = document.createElement(tag);
    for (const [name, value] of Object.entries(attrs || {})) {
      if (value === null || value === undefined || value === false) continue;
      if (name === "class") el.className = value;
      else if (name.startsWith("on")) el.addEventListener(name.slice(2), value);
      else el.setAttribute(name, value === true ? "" : String(value));
    }
    for (const child of children.flat(Infinity)) {
      if (child === null || child === undefined || child === false) continue;
      el.append(child instanceof Node ? child : String(child)); // strings become text nodes
    }
    return el;
  }

  const relative = new Intl.RelativeTimeFormat(undefined, { numeric: "auto" });

  function ago(iso) {
    const seconds = (Date.parse(iso) - Date.now()) / 1000;
    const abs = Math.abs(seconds);
    if (abs < 45) return relative.format(Math.round(seconds), "second");
    if (abs < 2700) return relative.format(Math.round(seconds / 60), "minute");
    if (abs < 86400 * 1.5) return relative.format(Math.round(seconds / 3600), "hour");
    return relative.format(Math.round(seconds / 86400), "day");
  }

  // A <time> element: local date and time, with "in 4 minutes" / "2 hours ago".
  function when(iso, fallback = "never") {
    if (!iso || Number.isNaN(Date.parse(iso))) return h("span", { class: "muted" }, fallback);
    const local = new Date(iso).toLocaleString();
    return h("time", { datetime: iso, title: local }, `${local} (${ago(iso)})`);
  }

  function badge(text, kind) {
    return h("span", { class: `badge ${kind || ""}` }, text);
  }

  function clear(el) {
    el.replaceChildren();
    return el;
  }

  // ---- the API ----

  class Unauthorized extends Error {}

  async function api(path, { method = "GET", body } = {}) {
    const headers = { Accept: "application/json", Authorization: `Bearer ${token}` };
    if (body !== undefined) headers["Content-Type"] = "application/json";
    const response = await fetch(path, {
      method,
      headers,
      body: body === undefined ? undefined : JSON.stringify(body),
      cache: "no-store",
      credentials: "omit",
    });
    let data = null;
    try {
      data = await response.json();
    } catch {
      data = null;
    }
    if (response.status === 401) throw new Unauthorized((data && data.error) || "unauthorized");
    return { status: response.status, ok: response.ok, data };
  }

  function errorText(result) {
    const data = result.data || {};
    let text = data.error || `HTTP ${result.status}`;
    if (data.fields) {
      text += ": " + Object.entries(data.fields).map(([k, v]) => `${k} ${v}`).join("; ");
    }
    return text;
  }

  // ---- what an approval is about ----

  const ACTIONS = {
    "gmail.archive": () => "Archive the email",
    "gmail.mark_read": () => "Mark the email as read",
    "gmail.label": (p) => `Label the email “${p.label || "?"}”`,
    "calendar.respond": (p) =>
      p.response === "declined" ? "Decline the invitation"
        : p.response === "tentative" ? "Answer “maybe” to the invitation"
        : "Accept the invitation",
  };

  function actionLabel(action, params) {
    const describe = ACTIONS[action];
    return describe ? describe(params || {}) : action;
  }

  function about(signal) {
    const s = (signal && signal.summary) || {};
    return s.subject || s.title || signal.external_id || "";
  }

  function aboutDetail(signal) {
    const s = (signal && signal.summary) || {};
    const parts = [];
    if (s.from) parts.push(`from ${s.from}`);
    if (s.organizer) parts.push(`organised by ${s.organizer}`);
    if (s.startTime) parts.push(`starts ${new Date(s.startTime).toLocaleString()}`);
    return parts.join(" · ");
  }

  // ---- activity notes (results of what the user did) ----

  function note(text, kind) {
    const region = $("activity");
    const message = h("span", { class: "note-text" }, text);
    const item = h("div", { class: `note ${kind || ""}` }, message,
      h("button", { type: "button", class: "link", onclick: () => item.remove() }, "Dismiss"));
    region.prepend(item);
    while (region.children.length > MAX_NOTES) region.lastElementChild.remove();
    return {
      set(newText, newKind) {
        message.textContent = newText;
        item.className = `note ${newKind || ""}`;
      },
    };
  }

  function executionText(subject, execution) {
    const base = `Approved: ${subject} — execution #${execution.id}`;
    if (execution.status === "succeeded") return [`${base} succeeded.`, "ok"];
    if (execution.status === "failed") {
      return [`${base} failed${execution.error ? `: ${execution.error}` : ""}.`, "bad"];
    }
    return [`${base} is ${execution.status}…`, "busy"];
  }

  const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

  async function followExecution(execution, subject, shown) {
    let current = execution;
    for (let i = 0; i < FOLLOW_MAX; i++) {
      shown.set(...executionText(subject, current));
      if (current.status === "succeeded" || current.status === "failed") return;
      await sleep(FOLLOW_MS);
      try {
        const result = await api(`/api/executions/${encodeURIComponent(current.id)}`);
        if (result.ok && result.data) current = result.data;
      } catch (err) {
        if (err instanceof Unauthorized) return signOut(err.message);
      }
    }
  }

  // ---- pending approvals ----

  function pendingCard(item) {
    const titleId = `approval-${item.id}-title`;
    const status = h("p", { class: "card-status", role: "status", "aria-live": "polite" });
    const subject = `${actionLabel(item.action, item.params)} “${about(item.signal)}”`;
    const card = { li: null, busy: false };
    const approve = h("button", { type: "button", class: "primary" }, "Approve");
    const reject = h("button", { type: "button", class: "secondary" }, "Reject");
    approve.addEventListener("click", () => respond(item, card, "approve", subject, status));
    reject.addEventListener("click", () => respond(item, card, "reject", subject, status));
    card.buttons = [approve, reject];
    card.li = h("li", { class: "card approval", "aria-labelledby": titleId, "data-id": item.id },
      h("h3", { id: titleId }, actionLabel(item.action, item.params),
        h("span", { class: "subject" }, ` — ${about(item.signal)}`)),
      h("p", { class: "muted" }, aboutDetail(item.signal)),
      h("p", {}, item.reason),
      h("p", { class: "meta" },
        badge(`risk: ${item.risk}`, item.risk === "high" ? "bad" : item.risk === "medium" ? "warn" : ""),
        badge(`urgency: ${item.urgency}`, item.urgency === "high" ? "warn" : ""),
        h("span", {}, "expires ", when(item.expires_at))),
      h("div", { class: "actions" }, approve, reject),
      status);
    return card;
  }

  async function respond(item, card, action, subject, status) {
    card.busy = true;
    card.buttons.forEach((b) => { b.disabled = true; });
    status.textContent = action === "approve" ? "Approving…" : "Rejecting…";
    try {
      const result = await api(`/api/approvals/${encodeURIComponent(item.id)}/respond`,
        { method: "POST", body: { action } });
      if (result.status === 200 || result.status === 202) {
        forgetCard(item.id);
        if (result.data.execution) {
          const shown = note(`Approved: ${subject}`, "busy");
          followExecution(result.data.execution, subject, shown);
        } else {
          note(`Rejected: ${subject}.`, "");
        }
      } else if ([404, 409, 410].includes(result.status)) {
        forgetCard(item.id);
        note(`${subject}: ${errorText(result)}.`, "warn");
      } else {
        status.textContent = `Could not ${action}: ${errorText(result)}`;
        card.buttons.forEach((b) => { b.disabled = false; });
      }
    } catch (err) {
      if (err instanceof Unauthorized) return signOut(err.message);
      status.textContent = `Could not ${action}: SkyTwin did not answer. Try again.`;
      card.buttons.forEach((b) => { b.disabled = false; });
    } finally {
      card.busy = false;
      refreshSoon();
    }
  }

  function forgetCard(id) {
    const card = pendingCards.get(id);
    if (card) card.li.remove();
    pendingCards.delete(id);
    $("pending-empty").hidden = pendingCards.size > 0;
  }

  function renderPending(items) {
    const list = $("pending-list");
    const wanted = new Set(items.map((item) => item.id));
    for (const [id, card] of pendingCards) {
      if (!wanted.has(id) && !card.busy) forgetCard(id);
    }
    items.forEach((item, index) => {
      let card = pendingCards.get(item.id);
      if (!card) {
        card = pendingCard(item);
        pendingCards.set(item.id, card);
      }
      // Move a card only when it is out of place, so focus stays where it is.
      if (list.children[index] !== card.li) list.insertBefore(card.li, list.children[index] || null);
    });
    $("pending-empty").hidden = items.length > 0;
    $("count-pending").textContent = String(items.length);
  }

  // ---- history and signals ----

  function changed(section, data) {
    const json = JSON.stringify(data);
    if (lastRendered[section] === json) return false;
    lastRendered[section] = json;
    return true;
  }

  const ANSWERS = { approved: "ok", rejected: "", expired: "warn", pending: "warn" };
  const RUNS = { succeeded: "ok", failed: "bad", running: "busy", pending: "busy" };

  function renderHistory(items) {
    if (!changed("history", items)) return;
    const body = clear($("history-body"));
    for (const item of items) {
      const answered = item.responded_at || item.expires_at;
      const status = item.status === "pending" ? "expired" : item.status;
      body.append(h("tr", { "data-id": item.id },
        h("td", {}, when(answered)),
        h("td", {}, actionLabel(item.action, item.params)),
        h("td", {}, about(item.signal), h("div", { class: "muted" }, aboutDetail(item.signal))),
        h("td", {}, badge(status, ANSWERS[status]),
          item.response_reason ? h("div", { class: "muted" }, item.response_reason) : null),
        h("td", {}, item.execution
          ? badge(`#${item.execution.id} ${item.execution.status}`, RUNS[item.execution.status])
          : h("span", { class: "muted" }, "—"))));
    }
    $("history-table").hidden = items.length === 0;
    $("history-empty").hidden = items.length > 0;
  }

  function renderSignals(items) {
    if (!changed("signals", items)) return;
    const body = clear($("signals-body"));
    for (const signal of items) {
      const data = signal.data || {};
      body.append(h("tr", {},
        h("td", {}, when(signal.occurred_at)),
        h("td", {}, signal.source),
        h("td", {}, signal.type.replaceAll("_", " ")),
        h("td", {}, data.subject || data.title || signal.external_id,
          data.from ? h("div", { class: "muted" }, `from ${data.from}`) : null)));
    }
    $("signals-table").hidden = items.length === 0;
    $("signals-empty").hidden = items.length > 0;
  }

  // ---- accounts ----

  function fact(term, ...description) {
    return [h("dt", {}, term), h("dd", {}, ...description)];
  }

  function connectorFacts(connector) {
    const name = connector.connector === "gmail" ? "Gmail" : "Calendar";
    return fact(name,
      connector.synced ? "synced" : "not synced yet",
      connector.last_success_at ? [" · last success ", when(connector.last_success_at)] : null,
      connector.last_error
        ? h("div", { class: "error-text" }, `last error: ${connector.last_error} `,
          when(connector.last_error_at, ""))
        : null);
  }

  // The reconnect endpoint needs the bearer token, so it is fetched (never linked to)
  // and answers with Google's consent URL; only an https (or loopback http) URL is followed.
  const safeEndpoint = (url) => (typeof url === "string" && /^\/[A-Za-z0-9/_-]*$/.test(url) ? url : null);

  function isConsentUrl(url) {
    try {
      const parsed = new URL(url);
      return parsed.protocol === "https:" ||
        (parsed.protocol === "http:" && ["127.0.0.1", "localhost", "[::1]"].includes(parsed.hostname));
    } catch {
      return false;
    }
  }

  async function reconnect(endpoint, button, message) {
    button.disabled = true;
    message.textContent = "Asking Google…";
    try {
      const result = await api(endpoint);
      const url = result.ok && result.data && result.data.authorization_url;
      if (url && isConsentUrl(url)) {
        window.location.assign(url);
        return;
      }
      message.textContent = `Could not start reconnecting: ${errorText(result)}`;
    } catch (err) {
      if (err instanceof Unauthorized) return signOut(err.message);
      message.textContent = "Could not start reconnecting: SkyTwin did not answer.";
    }
    button.disabled = false;
  }

  function accountHeading(account) {
    return h("h3", {}, account.account_email, " ",
      account.needs_reauth ? badge("Needs re-authorization", "bad")
        : account.status === "active" ? badge("Active", "ok") : badge(account.status, "warn"));
  }

  function reauthBlock(account) {
    if (!account.needs_reauth) return null;
    const endpoint = safeEndpoint(account.reconnect_url);
    const message = h("span", { class: "card-status", role: "status" });
    const button = endpoint ? h("button", { type: "button" }, "Reconnect this account") : null;
    if (button) button.addEventListener("click", () => reconnect(endpoint, button, message));
    return h("div", { class: "reauth", role: "alert" },
      h("p", {}, "Google no longer accepts SkyTwin's access to this account",
        account.status_reason ? ` (${account.status_reason.replace(/[.\s]+$/, "")})` : "", "."),
      button, " ", message);
  }

  function accountFacts(account) {
    const sup = account.supervisor;
    const brk = account.breaker;
    const poll = account.polling;
    const facts = h("dl", { class: "facts" });
    facts.append(...fact("Poll task", sup
      ? [badge(sup.state, sup.state === "running" ? "ok" : sup.state === "failed" ? "bad" : "warn"),
        ` · ${sup.restarts} restart${sup.restarts === 1 ? "" : "s"}`,
        sup.last_error ? h("div", { class: "error-text" }, `last crash: ${sup.last_error}`) : null]
      : h("span", { class: "muted" },
        account.needs_reauth ? "stopped until the account is reconnected" : "not running")));
    facts.append(...fact("Circuit breaker", brk
      ? [badge(brk.state.replace("_", "-"), brk.state === "closed" ? "ok" : "bad"),
        brk.consecutive_failures ? ` · ${brk.consecutive_failures} failure(s) in a row` : "",
        brk.next_probe_at && brk.state !== "closed" ? [" · next probe ", when(brk.next_probe_at)] : null]
      : h("span", { class: "muted" }, "—")));
    facts.append(...fact("Last successful poll", when(account.last_success_at)));
    facts.append(...fact("Next poll", poll && poll.next_poll_at && !account.needs_reauth
      ? when(poll.next_poll_at) : h("span", { class: "muted" }, "—")));
    facts.append(...fact("Last error", account.last_error
      ? [h("span", { class: "error-text" }, account.last_error), " ", when(account.last_error_at, "")]
      : h("span", { class: "muted" }, "none")));
    if (poll) {
      facts.append(...fact("Polls",
        `${poll.cycles_ok} ok, ${poll.cycles_failed} failed · ${poll.signals_new} new signal(s)`));
    }
    for (const connector of account.connectors) facts.append(...connectorFacts(connector));
    return facts;
  }

  // One card per account, kept across refreshes: the facts (which hold nothing
  // focusable) are redrawn every time so relative times stay true; the heading and
  // the reconnect block only when they change, so a click in progress survives.
  const accountCards = new Map(); // connection id -> {li, heading, reauth, keys}

  function renderStatus(status) {
    $("whoami").textContent = `Signed in as ${status.user.email}`;
    const reauth = status.accounts.some((a) => a.needs_reauth);
    $("count-reauth").hidden = !reauth;
    $("tab-accounts").setAttribute("aria-label", reauth ? "Accounts (one needs attention)" : "Accounts");
    const list = $("accounts-list");
    const wanted = new Set(status.accounts.map((a) => a.connection_id));
    for (const [id, card] of accountCards) {
      if (!wanted.has(id)) {
        card.li.remove();
        accountCards.delete(id);
      }
    }
    status.accounts.forEach((account, index) => {
      let card = accountCards.get(account.connection_id);
      if (!card) {
        card = { li: h("li", { class: "card account", "data-connection": account.connection_id }),
          heading: null, reauth: null, facts: null, keys: {} };
        accountCards.set(account.connection_id, card);
      }
      const headingKey = JSON.stringify([account.account_email, account.status, account.needs_reauth]);
      if (card.keys.heading !== headingKey) {
        const heading = accountHeading(account);
        card.heading ? card.heading.replaceWith(heading) : card.li.prepend(heading);
        card.heading = heading;
        card.keys.heading = headingKey;
      }
      const reauthKey = JSON.stringify([account.needs_reauth, account.status_reason, account.reconnect_url]);
      if (card.keys.reauth !== reauthKey) {
        const block = reauthBlock(account);
        if (card.reauth) card.reauth.remove();
        if (block) card.heading.after(block);
        card.reauth = block;
        card.keys.reauth = reauthKey;
      }
      const facts = accountFacts(account);
      card.facts ? card.facts.replaceWith(facts) : card.li.append(facts);
      card.facts = facts;
      if (list.children[index] !== card.li) list.insertBefore(card.li, list.children[index] || null);
    });
    $("accounts-empty").hidden = status.accounts.length > 0;
  }

  // ---- refreshing ----

  async function refresh() {
    const [pending, history, status, signals] = await Promise.all([
      api("/api/approvals/pending?limit=100"),
      api("/api/approvals/history?limit=50"),
      api("/api/status"),
      api("/api/signals?limit=50"),
    ]);
    const failed = [pending, history, status, signals].find((r) => !r.ok);
    if (failed) throw new Error(errorText(failed));
    renderPending(pending.data.approvals);
    renderHistory(history.data.approvals);
    renderStatus(status.data);
    renderSignals(signals.data.signals);
    $("updated").textContent = `Updated ${new Date().toLocaleTimeString()}`;
  }

  async function tick() {
    timer = null;
    if (!token) return;
    if (refreshing) return refreshing;
    refreshing = (async () => {
      try {
        await refresh();
        setBanner("");
      } catch (err) {
        if (err instanceof Unauthorized) return signOut("Your token was not accepted; sign in again.");
        setBanner(`SkyTwin is not answering (${err.message}); retrying…`);
      } finally {
        refreshing = null;
        schedule(POLL_MS);
      }
    })();
    return refreshing;
  }

  function schedule(ms) {
    if (timer !== null) clearTimeout(timer);
    timer = token && !document.hidden ? setTimeout(tick, ms) : null;
  }

  function refreshSoon() {
    schedule(100);
  }

  function setBanner(text) {
    const banner = $("connection");
    banner.textContent = text;
    banner.hidden = !text;
  }

  // ---- signing in and out ----

  async function signIn(candidate) {
    token = candidate;
    const result = await api("/api/status"); // throws Unauthorized for a bad token
    if (!result.ok) throw new Error(errorText(result));
    sessionStorage.setItem(TOKEN_KEY, candidate);
    $("sign-in").hidden = true;
    $("app").hidden = false;
    $("session").hidden = false;
    renderStatus(result.data);
    await tick();
  }

  function signOut(message) {
    token = null;
    sessionStorage.removeItem(TOKEN_KEY);
    schedule(0);
    for (const id of [...pendingCards.keys()]) forgetCard(id);
    for (const key of Object.keys(lastRendered)) delete lastRendered[key];
    for (const card of accountCards.values()) card.li.remove();
    accountCards.clear();
    clear($("activity"));
    $("app").hidden = true;
    $("session").hidden = true;
    $("sign-in").hidden = false;
    $("sign-in-error").textContent = message || "";
    $("token").focus();
  }

  $("sign-in-form").addEventListener("submit", async (event) => {
    event.preventDefault();
    const input = $("token");
    const candidate = input.value.trim();
    const error = $("sign-in-error");
    if (!candidate) {
      error.textContent = "Enter your API token.";
      input.focus();
      return;
    }
    error.textContent = "Signing in…";
    try {
      await signIn(candidate);
      input.value = "";
      error.textContent = "";
    } catch (err) {
      token = null;
      error.textContent = err instanceof Unauthorized
        ? "That token was not accepted."
        : `SkyTwin did not answer: ${err.message}`;
      input.focus();
    }
  });

  $("sign-out").addEventListener("click", () => signOut("Signed out."));

  // ---- tabs ----

  const tabs = [...document.querySelectorAll('[role="tab"]')];

  function select(tab) {
    for (const other of tabs) {
      const selected = other === tab;
      other.setAttribute("aria-selected", String(selected));
      other.tabIndex = selected ? 0 : -1;
      $(other.getAttribute("aria-controls")).hidden = !selected;
    }
  }

  tabs.forEach((tab, index) => {
    tab.addEventListener("click", () => select(tab));
    tab.addEventListener("keydown", (event) => {
      const step = { ArrowRight: 1, ArrowLeft: -1 }[event.key];
      if (!step) return;
      const next = tabs[(index + step + tabs.length) % tabs.length];
      select(next);
      next.focus();
    });
  });

  document.addEventListener("visibilitychange", () => {
    if (!document.hidden && token) refreshSoon();
  });

  // ---- start ----

  setBanner("");
  // Back from Google's consent page (/oauth/google/callback sends the browser to /?connected=1).
  const params = new URLSearchParams(window.location.search);
  const connected = params.get("connected") === "1";
  if (params.toString()) history.replaceState(null, "", window.location.pathname);
  const saved = sessionStorage.getItem(TOKEN_KEY);
  if (saved) {
    signIn(saved)
      .then(() => {
        if (connected) note("Your Google account is connected; SkyTwin polls it again.", "ok");
      })
      .catch((err) =>
        signOut(err instanceof Unauthorized ? "Your token was not accepted; sign in again." : err.message));
  } else if (connected) {
    $("sign-in-error").textContent = "Your Google account is connected. Sign in to see it.";
  }
})();
