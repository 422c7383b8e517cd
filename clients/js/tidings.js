// tidings.js — the browser client of a Tidings gateway. One ES module, no dependencies, no build
// step; the gateway serves this file at GET /tidings.js.
//
//   import { connect } from "https://notify.example.com/tidings.js";
//   const feed = connect({ url: "https://notify.example.com", topics: ["news.eu"], share: true });
//   feed.on("order.updated", (data, meta) => render(data, meta.id));
//   feed.onReset((info) => reloadEverything());
//
// What it adds to a bare EventSource:
// - a fresh ticket for every connection (`ticket: async () => …`), so a reconnect never reuses a
//   spent one-time ticket; without `ticket` the `tidings_token` cookie is sent;
// - resume with the last id on every reconnect, whatever the transport, and no event twice;
// - backoff with jitter from the server's `retry:`, `Retry-After` on 503, and a clear end
//   (state "closed", onError) when the gateway refuses the identity (400/401/403);
// - `share: true`: one connection per browser for every tab of an origin that asks for the same
//   stream (the leading tab holds a Web Lock and relays through a BroadcastChannel; when it
//   closes or freezes another tab takes over from its own last id);
// - `transport: "auto"`: SSE, falling back to long polling when no byte arrives (a proxy that
//   buffers); "ws" uses the WebSocket, "poll" long polling.

const FATAL_STATUSES = new Set([400, 401, 403, 404, 405, 410, 422]);
const MAX_DELAY_MS = 30_000;

/** Opens a feed. See the README's "Client guide" for every option. */
export function connect(options = {}) {
  return new Feed(options);
}

/** An error the feed reports through onError: `status` and `problem` when the gateway answered. */
export class TidingsError extends Error {
  constructor(message, { status = 0, problem = null, fatal = false, retryAfterMs = null } = {}) {
    super(message);
    this.name = "TidingsError";
    this.status = status;
    this.problem = problem;
    this.fatal = fatal;
    this.retryAfterMs = retryAfterMs;
  }
}

/** Compares two decimal id strings without losing precision (ids may pass 2^53). */
export function compareIds(a, b) {
  if (a.length !== b.length) return a.length < b.length ? -1 : 1;
  return a < b ? -1 : a > b ? 1 : 0;
}

const isId = (value) => typeof value === "string" && /^[0-9]+$/.test(value);
const normalizeId = (value) => {
  if (value === undefined || value === null || value === "") return null;
  const text = String(value).replace(/^0+(?=[0-9])/, "");
  return isId(text) ? text : null;
};

function parseData(text) {
  try {
    return JSON.parse(text);
  } catch {
    return text;
  }
}

function reportHandlerError(error) {
  if (typeof globalThis.reportError === "function") globalThis.reportError(error);
  else setTimeout(() => { throw error; });
}

const sleep = (ms, signal) =>
  new Promise((resolve) => {
    if (signal?.aborted) return resolve();
    const timer = setTimeout(resolve, ms);
    signal?.addEventListener("abort", () => { clearTimeout(timer); resolve(); }, { once: true });
  });

async function problemOf(response) {
  try {
    const type = response.headers.get("content-type") || "";
    if (type.includes("json")) return await response.json();
    const text = await response.text();
    return text ? { detail: text.slice(0, 300) } : null;
  } catch {
    return null;
  }
}

async function httpError(response, what) {
  const problem = await problemOf(response);
  const status = response.status;
  const retryAfter = Number(response.headers.get("retry-after"));
  const reason = problem?.detail || problem?.title || response.statusText || "refused";
  return new TidingsError(`${what} answered ${status}: ${reason}`, {
    status,
    problem,
    fatal: FATAL_STATUSES.has(status),
    retryAfterMs: Number.isFinite(retryAfter) && retryAfter > 0 ? retryAfter * 1000 : null,
  });
}

class Feed {
  #options;
  #base;
  #topics;
  #transport;
  #handlers = new Map();
  #resetHandlers = new Set();
  #stateHandlers = new Set();
  #errorHandlers = new Set();
  #state = "connecting";
  #last = null; // the last id delivered to this tab
  #position = null; // where the stream stands (a poll answer may be ahead of #last)
  #retryMs;
  #closed = false;
  #hasOpened = false;
  #link = null; // AbortController of the running connection loop (leading or alone)
  #channel = null;
  #lockRequest = null;
  #releaseLock = null;
  #leading = false;
  #key;
  #lifecycle = [];

  constructor(options) {
    this.#options = options;
    const base = options.url ?? new URL(".", import.meta.url).href;
    this.#base = String(base).replace(/\/+$/, "") + "/";
    this.#topics = [...(options.topics ?? [])].map(String);
    this.#transport = options.transport ?? "sse";
    if (!["sse", "ws", "poll", "auto"].includes(this.#transport)) {
      throw new TypeError(`tidings: unknown transport "${this.#transport}"`);
    }
    this.#last = normalizeId(options.lastEventId);
    this.#position = this.#last;
    this.#retryMs = options.retry ?? 1000;
    const shareable = typeof BroadcastChannel === "function" && globalThis.navigator?.locks;
    // Start once the caller has registered its handlers (the same turn of the event loop).
    queueMicrotask(() => {
      if (this.#closed) return;
      if (options.share && shareable) this.#joinShared();
      else {
        this.#leading = true;
        this.#startLink();
      }
    });
  }

  /** The last id delivered to this tab's handlers (null before the first event with an id). */
  get lastEventId() { return this.#last; }

  /** "connecting" | "open" | "reconnecting" | "closed" */
  get state() { return this.#state; }

  /** True while this tab holds the shared connection (always true without `share`). */
  get leading() { return this.#leading; }

  /** Calls `handler(data, meta)` for each event of `type` ("*" for every event); returns an unsubscribe function. */
  on(type, handler) {
    if (!this.#handlers.has(type)) this.#handlers.set(type, new Set());
    this.#handlers.get(type).add(handler);
    return () => this.#handlers.get(type)?.delete(handler);
  }

  /** Calls `handler(info)` on `tidings.reset` (history this tab needed is gone: reload your state). */
  onReset(handler) {
    this.#resetHandlers.add(handler);
    return () => this.#resetHandlers.delete(handler);
  }

  /** Calls `handler(state)` at each change of state, and once now with the current state. */
  onState(handler) {
    this.#stateHandlers.add(handler);
    this.#call(handler, this.#state);
    return () => this.#stateHandlers.delete(handler);
  }

  /** Calls `handler(error)` with a TidingsError when a connection fails (`error.fatal`: the feed closed). */
  onError(handler) {
    this.#errorHandlers.add(handler);
    return () => this.#errorHandlers.delete(handler);
  }

  /** Ends the feed in this tab (another tab takes over a shared connection). */
  close() {
    if (this.#closed) return;
    this.#closed = true;
    this.#stopLink();
    this.#leaveShared();
    for (const [target, type, listener] of this.#lifecycle) target.removeEventListener(type, listener);
    this.#lifecycle = [];
    this.#setState("closed");
  }

  // ---- delivery ------------------------------------------------------------------------------

  #call(handler, ...args) {
    try {
      handler(...args);
    } catch (error) {
      reportHandlerError(error);
    }
  }

  /** Delivers one message to this tab's handlers; false when it was already delivered. */
  #deliver(message) {
    if (this.#closed) return false; // a handler closed the feed: nothing more, even from this chunk
    const id = normalizeId(message.id);
    const meta = { id, event: message.event };
    if (message.event === "tidings.reset") {
      // A reset moves the position wherever the gateway says (it may even go down: a position
      // the gateway cannot account for), and is never filtered.
      if (id !== null) { this.#last = id; this.#position = id; }
      const info = { ...(typeof message.data === "object" && message.data ? message.data : {}), id };
      for (const handler of [...this.#resetHandlers]) this.#call(handler, info);
      if (this.#closed) return true;
    } else if (id !== null) {
      if (this.#last !== null && compareIds(id, this.#last) <= 0) return false;
      this.#last = id;
      if (this.#position === null || compareIds(id, this.#position) > 0) this.#position = id;
    }
    for (const handler of [...(this.#handlers.get(message.event) ?? [])]) {
      if (!this.#closed) this.#call(handler, message.data, meta);
    }
    for (const handler of [...(this.#handlers.get("*") ?? [])]) {
      if (!this.#closed) this.#call(handler, message.data, meta);
    }
    return true;
  }

  /** A message from this tab's own connection: deliver, and relay to the other tabs. */
  #received(message) {
    if (this.#deliver(message) && this.#leading && this.#channel) {
      this.#post({ t: "event", message });
    }
  }

  #setState(state) {
    if (state === this.#state) return;
    this.#state = state;
    if (state === "open") this.#hasOpened = true;
    if (this.#leading && state !== "closed") this.#post({ t: "state", state });
    for (const handler of [...this.#stateHandlers]) this.#call(handler, state);
  }

  #error(error) {
    if (this.#leading && this.#channel) {
      this.#post({ t: "error", error: { message: error.message, status: error.status, problem: error.problem, fatal: error.fatal } });
    }
    for (const handler of [...this.#errorHandlers]) this.#call(handler, error);
  }

  // ---- sharing one connection between tabs -----------------------------------------------------

  #post(message) {
    try {
      this.#channel?.postMessage(message);
    } catch {
      // A data value that cannot be cloned; the other tabs get it from their own connection later.
    }
  }

  #joinShared() {
    const credential = this.#options.ticket ? "ticket" : "cookie";
    this.#key = "tidings:" + JSON.stringify([this.#base, [...this.#topics].sort(), this.#transport, credential]);
    this.#channel = new BroadcastChannel(this.#key);
    this.#channel.onmessage = (event) => this.#fromChannel(event.data);
    this.#post({ t: "hello" });
    this.#requestLock();
    const listen = (target, type, listener) => {
      target.addEventListener(type, listener);
      this.#lifecycle.push([target, type, listener]);
    };
    // A frozen or cached (back/forward) page cannot relay: hand the connection over.
    listen(document, "freeze", () => this.#abdicate());
    listen(document, "resume", () => this.#requestLock());
    listen(window, "pagehide", (event) => { if (event.persisted) this.#abdicate(); });
    listen(window, "pageshow", (event) => { if (event.persisted) this.#requestLock(); });
  }

  #requestLock() {
    if (this.#closed || this.#lockRequest) return;
    const abort = new AbortController();
    this.#lockRequest = abort;
    navigator.locks
      .request(this.#key, { signal: abort.signal }, () => {
        if (this.#closed || abort.signal.aborted) return undefined;
        this.#leading = true;
        this.#startLink();
        return new Promise((resolve) => { this.#releaseLock = resolve; });
      })
      .catch(() => {}) // aborted while waiting
      .finally(() => { if (this.#lockRequest === abort) this.#lockRequest = null; });
  }

  #abdicate() {
    if (this.#leading) this.#stopLink();
    this.#leading = false;
    this.#lockRequest?.abort();
    this.#lockRequest = null;
    this.#releaseLock?.();
    this.#releaseLock = null;
  }

  #leaveShared() {
    this.#abdicate();
    this.#channel?.close();
    this.#channel = null;
  }

  #fromChannel(message) {
    if (this.#closed || !message) return;
    if (this.#leading) {
      // A tab that just joined asks where the stream stands.
      if (message.t === "hello") this.#post({ t: "welcome", last: this.#last, state: this.#state });
      return;
    }
    switch (message.t) {
      case "welcome":
        // Start from the leader's position, so a later takeover resumes from there.
        if (this.#last === null && message.last) { this.#last = message.last; this.#position = message.last; }
        if (message.state !== "closed") this.#setState(message.state);
        break;
      case "event":
        this.#deliver(message.message);
        break;
      case "state":
        this.#setState(message.state === "closed" ? "reconnecting" : message.state);
        break;
      case "error":
        for (const handler of [...this.#errorHandlers]) {
          this.#call(handler, new TidingsError(message.error.message, message.error));
        }
        // The gateway refused the identity every tab here uses: end here too.
        if (message.error.fatal) this.close();
        break;
    }
  }

  // ---- the connection loop -------------------------------------------------------------------

  #startLink() {
    if (this.#link) return;
    const abort = new AbortController();
    this.#link = abort;
    this.#run(abort.signal).finally(() => { if (this.#link === abort) this.#link = null; });
  }

  #stopLink() {
    this.#link?.abort();
    this.#link = null;
  }

  async #run(signal) {
    let failures = 0;
    let transport = this.#transport === "auto" ? "sse" : this.#transport;
    while (!signal.aborted) {
      this.#setState(this.#hasOpened || failures > 0 ? "reconnecting" : "connecting");
      let opened = false;
      const onOpen = () => {
        opened = true;
        this.#hasOpened = true;
        failures = 0;
        this.#setState("open");
      };
      let wait = null;
      try {
        if (transport !== "poll" && this.#position === null) await this.#locate(signal);
        if (signal.aborted) break;
        if (transport === "sse") await this.#sse(signal, onOpen);
        else if (transport === "ws") await this.#ws(signal, onOpen);
        else await this.#poll(signal, onOpen);
      } catch (caught) {
        if (signal.aborted) break;
        if (caught?.name === "Stalled" && this.#transport === "auto") {
          // Connected, yet no byte came through: a proxy holds the stream back. Poll instead.
          transport = "poll";
          this.#error(new TidingsError("no byte of the event stream arrived: switching to long polling"));
          continue;
        }
        const error = caught instanceof TidingsError ? caught : new TidingsError(String(caught?.message ?? caught));
        this.#error(error);
        if (error.fatal) {
          this.close();
          return;
        }
        wait = error.retryAfterMs;
      }
      if (signal.aborted) break;
      if (!opened) failures += 1;
      const ceiling = Math.min(MAX_DELAY_MS, this.#retryMs * 2 ** Math.min(failures, 10));
      const delay = wait ?? ceiling / 2 + Math.random() * (ceiling / 2);
      this.#setState("reconnecting");
      await sleep(delay, signal);
    }
  }

  /** One `GET /poll`: its parsed answer, or `undefined` when the feed was stopped meanwhile. */
  async #pollOnce(query, signal) {
    let response;
    try {
      response = await fetch(this.#endpoint("poll", query), { credentials: "include", cache: "no-store", signal });
    } catch (error) {
      if (signal.aborted) return undefined;
      throw new TidingsError(`the gateway is unreachable (${error?.message ?? error})`);
    }
    if (!response.ok) throw await httpError(response, "GET /poll");
    try {
      return await response.json();
    } catch (error) {
      if (signal.aborted) return undefined;
      throw new TidingsError(`a poll answer was cut (${error?.message ?? error})`);
    }
  }

  /**
   * Where the stream stands now, before a first stream without a resume point opens: a poll
   * without one answers at once with the current position, and the stream resumes from there.
   * A stream that drops before its first event then still has an id to resume from, so nothing
   * published during the drop is lost. ("0" — a gateway that has delivered nothing yet — is not
   * used: it would mean "everything retained".)
   */
  async #locate(signal) {
    const body = await this.#pollOnce(await this.#query({ timeout: "0s" }), signal);
    if (body === undefined) return;
    const position = normalizeId(body.last_event_id);
    if (position !== null && position !== "0" && this.#position === null) this.#position = position;
  }

  /** The query of one connection: topics, a fresh ticket, the resume point. */
  async #query(extra = {}) {
    const query = new URLSearchParams();
    for (const topic of this.#topics) query.append("topic", topic);
    if (this.#options.ticket) {
      let ticket;
      try {
        ticket = await this.#options.ticket();
      } catch (error) {
        // A callback may say how its backend answered (`error.status`): 401/403 end the feed.
        const status = Number(error?.status) || 0;
        throw new TidingsError(`the ticket callback failed${status ? ` (${status})` : ""}: ${error?.message ?? error}`, {
          status,
          problem: error?.problem ?? null,
          fatal: error?.fatal ?? FATAL_STATUSES.has(status),
        });
      }
      if (ticket && typeof ticket === "object") ticket = ticket.ticket;
      if (typeof ticket !== "string" || ticket === "") throw new TidingsError("the ticket callback gave no ticket");
      query.set("ticket", ticket.trim());
    }
    const position = this.#position;
    if (position !== null) query.set("last_event_id", position);
    for (const [name, value] of Object.entries(extra)) query.set(name, value);
    return query;
  }

  #endpoint(path, query) {
    return new URL(`${path}?${query}`, this.#base);
  }

  /** One SSE connection, read with fetch (status codes visible, a fresh URL each time). */
  async #sse(signal, onOpen) {
    const query = await this.#query();
    const local = new AbortController();
    const stop = () => local.abort();
    signal.addEventListener("abort", stop, { once: true });
    const stallAfter = this.#options.fallbackAfter ?? 5000;
    const idleAfter = this.#options.idleTimeout ?? 45_000;
    let stalled = false;
    let timer = setTimeout(() => { stalled = true; local.abort(); }, this.#transport === "auto" ? stallAfter : idleAfter);
    const alive = () => {
      clearTimeout(timer);
      timer = setTimeout(() => local.abort(), idleAfter);
    };
    try {
      let response;
      try {
        response = await fetch(this.#endpoint("events", query), {
          credentials: "include",
          cache: "no-store",
          headers: { Accept: "text/event-stream" },
          signal: local.signal,
        });
      } catch (error) {
        if (stalled) throw Object.assign(new Error("stalled"), { name: "Stalled" });
        throw new TidingsError(`the gateway is unreachable (${error?.message ?? error})`);
      }
      if (!response.ok) throw await httpError(response, "GET /events");
      const reader = response.body.pipeThrough(new TextDecoderStream()).getReader();
      let buffer = "";
      let data = [];
      let event = "";
      let id = null;
      let first = true;
      const line = (text) => {
        if (text === "") {
          if (data.length > 0) this.#received({ id, event: event || "message", data: parseData(data.join("\n")) });
          data = [];
          event = "";
          id = null;
          return;
        }
        if (text.startsWith(":")) return;
        const colon = text.indexOf(":");
        const field = colon < 0 ? text : text.slice(0, colon);
        let value = colon < 0 ? "" : text.slice(colon + 1);
        if (value.startsWith(" ")) value = value.slice(1);
        if (field === "data") data.push(value);
        else if (field === "event") event = value;
        else if (field === "id" && !value.includes("\0")) id = value;
        else if (field === "retry" && /^[0-9]+$/.test(value)) this.#retryMs = Number(value);
      };
      for (;;) {
        let chunk;
        try {
          chunk = await reader.read();
        } catch (error) {
          if (stalled) throw Object.assign(new Error("stalled"), { name: "Stalled" });
          if (signal.aborted) return;
          throw new TidingsError(`the event stream broke (${error?.message ?? error})`);
        }
        if (chunk.done) throw new TidingsError("the gateway ended the event stream");
        if (first) { first = false; onOpen(); }
        alive();
        buffer += chunk.value;
        for (;;) {
          const end = buffer.search(/[\r\n]/);
          if (end < 0 || (buffer[end] === "\r" && end === buffer.length - 1)) break;
          const width = buffer[end] === "\r" && buffer[end + 1] === "\n" ? 2 : 1;
          line(buffer.slice(0, end));
          buffer = buffer.slice(end + width);
        }
      }
    } finally {
      clearTimeout(timer);
      signal.removeEventListener("abort", stop);
      local.abort();
    }
  }

  /** Long polling: one request after another, each passing the last position. */
  async #poll(signal, onOpen) {
    const timeout = this.#options.pollTimeout ?? "25s";
    for (;;) {
      const body = await this.#pollOnce(await this.#query({ timeout }), signal);
      if (body === undefined) return;
      if (this.#state !== "open") onOpen();
      for (const event of body.events ?? []) this.#received({ id: event.id ?? null, event: event.event, data: event.data });
      const position = normalizeId(body.last_event_id);
      if (position !== null && (this.#position === null || compareIds(position, this.#position) > 0)) this.#position = position;
      if (signal.aborted) return;
    }
  }

  /** One WebSocket connection. */
  async #ws(signal, onOpen) {
    const query = await this.#query();
    const url = this.#endpoint("ws", query);
    url.protocol = url.protocol === "https:" ? "wss:" : "ws:";
    await new Promise((resolve, reject) => {
      const socket = new WebSocket(url);
      let opened = false;
      const stop = () => socket.close(1000);
      signal.addEventListener("abort", stop, { once: true });
      socket.onopen = () => { opened = true; onOpen(); };
      socket.onmessage = (frame) => {
        let message;
        try {
          message = JSON.parse(frame.data);
        } catch {
          return;
        }
        if (message?.type === "event") this.#received({ id: message.id ?? null, event: message.event, data: message.data });
      };
      socket.onclose = (close) => {
        signal.removeEventListener("abort", stop);
        if (signal.aborted) return resolve();
        if (!opened) return reject(new TidingsError("the WebSocket was refused or the gateway is unreachable"));
        const reasons = { 1000: "closed", 1001: "the gateway shut down", 1008: "too slow", 4401: "the token expired" };
        reject(new TidingsError(`the WebSocket closed (${close.code}: ${reasons[close.code] ?? (close.reason || "dropped")})`));
      };
    });
  }
}
