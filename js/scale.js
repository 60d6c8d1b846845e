// scale.js: SharedMemory and SharedEventEmitter of a scale-store, for browsers and Node >= 18.
//
// One ES module with no dependencies. Every call is a fetch() to the store's HTTP API
// (docs/http-api.md); watches and event subscriptions of one store (URL and token) share one
// Server-Sent Events stream, GET /v1/stream, read from the fetch response body, the same code
// in browsers and in Node (no EventSource: it cannot send a header and hides the HTTP status).
// Why one stream: a browser opens at most six connections per host, and each stream holds one.
// Errors are classes mapped from the store's JSON `type` (and the HTTP status for 401, 409 and
// 413), never from a message's text. docs/js.md describes the module.

/** The base of every error this module throws; `message` is the store's own when it answered. */
export class ScaleError extends Error {
  constructor(message, fields = {}) {
    super(message);
    this.name = new.target.name;
    /** The HTTP status, when the store answered. */
    this.status = fields.status;
    /** The store's error type (`KeyNotFound`, `Error`, ...), when it answered. */
    this.type = fields.type;
  }
}
/** A key that is not set (get). */
export class KeyNotFound extends ScaleError {
  constructor(message, fields = {}) {
    super(message, fields);
    this.key = fields.key;
  }
}
/** A stored value of another type than asked (increment of a non-integer). */
export class TypeMismatch extends ScaleError {
  constructor(message, fields = {}) {
    super(message, fields);
    this.key = fields.key;
    this.stored = fields.stored;
    this.requested = fields.requested;
  }
}
/** The store's state refuses the write (409 other than TypeMismatch: an increment that overflows). */
export class Conflict extends ScaleError {}
/** A watch from a revision older than the store's kept history: read the state with list() and watch on. */
export class Compacted extends ScaleError {
  constructor(message, fields = {}) {
    super(message, fields);
    this.requested = fields.requested;
    this.oldestKept = fields.oldest_kept;
  }
}
/** The store could not be reached (or did not answer within the connect timeout); names the URL. */
export class ConnectionError extends ScaleError {
  constructor(message, fields = {}) {
    super(message, fields);
    this.url = fields.url;
  }
}
/** A store started with --token refused the token (or its absence). */
export class Unauthorized extends ScaleError {}

/** The error class of a store's JSON error answer. */
function errorFromWire(wire, status) {
  const message = typeof wire?.error === 'string' ? wire.error : `scale-store answered HTTP ${status}`;
  const fields = { ...wire, status, type: wire?.type };
  switch (wire?.type) {
    case 'KeyNotFound':
      return new KeyNotFound(message, fields);
    case 'TypeMismatch':
      return new TypeMismatch(message, fields);
    case 'Compacted':
      return new Compacted(message, fields);
    case 'Conflict':
      return new Conflict(message, fields);
  }
  if (status === 401) return new Unauthorized(message, fields);
  if (status === 409) return new Conflict(message, fields);
  return new ScaleError(message, fields);
}

const DEFAULT_CONNECT_TIMEOUT_MS = 10_000;
const BACKOFF_FIRST_MS = 100;
const BACKOFF_MAX_MS = 5_000;
/** Parts one stream may carry (the store's limit, GET /v1/stream). */
const MAX_PARTS = 64;

const noop = () => {};

function storeBase(url) {
  if (typeof url !== 'string' || !/^https?:\/\//.test(url))
    throw new TypeError(`scale.js needs the store's URL, like "http://127.0.0.1:12345", not ${JSON.stringify(url)}`);
  return url.replace(/\/+$/, '');
}

/** A percent-encoded key or event name for a path ('/' too: the store decodes it). */
const encodeName = (name) => {
  if (typeof name !== 'string' || name === '') throw new TypeError(`a key or event name must be a non-empty string`);
  return encodeURIComponent(name);
};

/** The HTTP side of one store: requests with the token and the connect timeout. */
class Http {
  constructor(url, options = {}) {
    this.url = storeBase(url);
    this.token = options.token ?? '';
    this.connectTimeoutMs = options.connectTimeoutMs ?? DEFAULT_CONNECT_TIMEOUT_MS;
  }

  headers(extra = {}) {
    const headers = { ...extra };
    if (this.token) headers.authorization = `Bearer ${this.token}`;
    return headers;
  }

  /** The answer's JSON; a 4xx/5xx as its typed error; `accept` lists statuses that are answers. */
  async request(method, path, { body, headers = {}, accept = [] } = {}) {
    const controller = new AbortController();
    const timer = setTimeout(() => controller.abort(), this.connectTimeoutMs);
    let response;
    try {
      response = await fetch(this.url + path, {
        method,
        headers: this.headers(body === undefined ? headers : { 'content-type': 'application/json', ...headers }),
        body,
        signal: controller.signal,
      });
    } catch (error) {
      const why = controller.signal.aborted
        ? `no answer within ${this.connectTimeoutMs} ms`
        : (error?.cause?.code ?? error?.cause?.message ?? error?.message ?? String(error));
      throw new ConnectionError(`cannot reach scale-store at ${this.url} (${method} ${path}): ${why}`, { url: this.url });
    } finally {
      clearTimeout(timer);
    }
    let text;
    try {
      text = await response.text();
    } catch (error) {
      throw new ConnectionError(`scale-store at ${this.url} closed the connection during ${method} ${path}`, {
        url: this.url,
      });
    }
    let json = null;
    if (text !== '') {
      try {
        json = JSON.parse(text);
      } catch {
        json = { error: text };
      }
    }
    if (response.ok || accept.includes(response.status)) return { status: response.status, json };
    throw errorFromWire(json, response.status);
  }
}

function toEntry(json) {
  return { key: json.key, value: json.value, revision: json.revision, timestampMs: json.timestamp_ms };
}

function toChange(json) {
  return { ...toEntry(json), erased: json.erased === true };
}

function jsonBody(value, what) {
  if (value === undefined) throw new TypeError(`${what} needs a value (undefined is not JSON; use null)`);
  return JSON.stringify(value);
}

/**
 * What a watch or an event subscription returns at once: `ready` resolves once it is in place
 * (nothing written or emitted after that is missed) and rejects when it fails first (Compacted,
 * Unauthorized, ConnectionError for a store it never reached); `cancel()` stops every later call.
 */
export class Subscription {
  constructor(part) {
    this._part = part;
    this.ready = new Promise((resolve, reject) => {
      part.resolveReady = resolve;
      part.rejectReady = reject;
    });
    this.ready.catch(noop); // a ready nobody awaits is not an unhandled rejection
  }
  /** True until cancelled or failed. */
  get active() {
    return this._part.active;
  }
  /** Stops every later call of the handler; safe to call from inside it, and more than once. */
  cancel() {
    this._part.stream.remove(this._part);
  }
}

/**
 * The one SSE stream of a store for every watch and subscription made through it. The stream is
 * reopened when parts are added (at most once per turn of the event loop) and after a broken
 * connection (with backoff); each watch resumes where it was, events sent meanwhile are missed.
 * A cancel does not reopen it: the cancelled part's messages are dropped until the next reopen.
 */
class SharedStream {
  static registry = new Map();

  static of(http) {
    const key = `${http.url}\n${http.token}`;
    let stream = SharedStream.registry.get(key);
    if (!stream) {
      stream = new SharedStream(http);
      SharedStream.registry.set(key, stream);
    }
    return stream;
  }

  constructor(http) {
    this.http = http;
    this.parts = []; // watches and event parts, in the order added
    this.controller = null; // the open stream's
    this.running = false;
    this.reopen = false;
    this.scheduled = false;
  }

  add(part) {
    const count = this.parts.filter((p) => p.active).length;
    if (count >= MAX_PARTS) {
      part.active = false;
      part.stream = this;
      const sub = new Subscription(part);
      part.rejectReady(
        new ScaleError(
          `one client streams at most ${MAX_PARTS} watches and event subscriptions; cancel some or make another client`,
        ),
      );
      return sub;
    }
    part.stream = this;
    part.active = true;
    part.readySettled = false;
    const sub = new Subscription(part);
    part.sub = sub;
    this.parts.push(part);
    this.changed();
    return sub;
  }

  remove(part) {
    if (!part.active) return;
    part.active = false;
    this.parts = this.parts.filter((p) => p !== part);
    // NOTE: the open stream keeps the part (its messages are dropped here) until the stream is
    // reopened for another reason: reopening for a cancel would make the client's other
    // subscriptions miss the events emitted meanwhile. With no part left, the stream closes.
    if (this.parts.length === 0) this.changed();
  }

  /** Resolves once every part added so far has settled its ready (an emit waits for the client's own `on`). */
  async settled() {
    await Promise.all(this.parts.filter((p) => !p.readySettled).map((p) => p.sub?.ready.catch(noop)));
  }

  changed() {
    if (this.scheduled) return;
    this.scheduled = true;
    queueMicrotask(() => {
      this.scheduled = false;
      if (this.running) {
        this.reopen = true;
        this.controller?.abort();
        this.wake?.(); // a loop waiting out its backoff reopens at once
      } else if (this.parts.length > 0) {
        this.running = true;
        this.run().catch((error) => console.error('scale.js: the stream loop stopped:', error));
      }
    });
  }

  fail(part, error) {
    if (!part.readySettled) {
      part.readySettled = true;
      part.rejectReady(error);
    }
    if (part.active) {
      this.remove(part);
      if (part.onError) part.onError(error);
    }
  }

  target(parts) {
    const query = [];
    const from = [];
    for (const part of parts) {
      if (part.kind === 'watch') {
        query.push(`watch=${encodeURIComponent(part.prefix)}`);
        from.push(part.resumeFrom());
      } else if (part.kind === 'prefix') {
        query.push(`event_prefix=${encodeURIComponent(part.prefix)}`);
      } else {
        query.push(`event=${encodeURIComponent(part.name)}`);
      }
    }
    if (from.length > 0) query.push(`from=${from.join(',')}`);
    if (this.http.token) query.push(`token=${encodeURIComponent(this.http.token)}`);
    return `${this.http.url}/v1/stream?${query.join('&')}`;
  }

  async run() {
    let backoff = BACKOFF_FIRST_MS;
    while (this.parts.length > 0) {
      const parts = this.parts.slice();
      const watches = parts.filter((p) => p.kind === 'watch');
      const controller = new AbortController();
      this.controller = controller;
      this.reopen = false;
      let connected = false;
      try {
        const timer = setTimeout(() => controller.abort(), this.http.connectTimeoutMs);
        let response;
        try {
          response = await fetch(this.target(parts), {
            headers: { accept: 'text/event-stream' },
            signal: controller.signal,
            cache: 'no-store',
          });
        } finally {
          clearTimeout(timer);
        }
        if (!response.ok) {
          const text = await response.text();
          let wire = null;
          try {
            wire = JSON.parse(text);
          } catch {
            wire = { error: text };
          }
          const error = errorFromWire(wire, response.status);
          // A refused stream is refused again on retry: every part gets the error.
          if (response.status >= 400 && response.status < 500) {
            for (const part of parts) this.fail(part, error);
            continue;
          }
          throw error;
        }
        connected = true;
        await this.read(response.body, parts, watches, () => {
          backoff = BACKOFF_FIRST_MS;
        });
      } catch (error) {
        if (!this.reopen && !connected) {
          // Never reached: a part that never was ready says so (it stays and is retried).
          const unreachable =
            error instanceof ScaleError
              ? error
              : new ConnectionError(`cannot reach scale-store at ${this.http.url} (its stream): ${error?.cause?.code ?? error?.message}`, {
                  url: this.http.url,
                });
          for (const part of parts)
            if (!part.readySettled) {
              part.readySettled = true;
              part.rejectReady(unreachable);
            }
        }
      } finally {
        controller.abort();
        this.controller = null;
      }
      if (this.reopen || this.parts.length === 0) continue;
      await new Promise((resolve) => {
        this.wake = resolve;
        setTimeout(resolve, backoff * (0.5 + Math.random() / 2));
      });
      this.wake = null;
      backoff = Math.min(backoff * 2, BACKOFF_MAX_MS);
    }
    this.running = false;
    if (this.parts.length > 0) this.changed();
  }

  /** Reads the stream's events until it ends; `onReady` once the store says it is in place. */
  async read(body, parts, watches, onReady) {
    const reader = body.getReader();
    const decoder = new TextDecoder();
    let buffer = '';
    let event = '';
    let data = null;
    let id = null;
    for (;;) {
      const { value, done } = await reader.read();
      if (done) return;
      buffer += decoder.decode(value, { stream: true });
      let newline;
      while ((newline = buffer.indexOf('\n')) >= 0) {
        let line = buffer.slice(0, newline);
        buffer = buffer.slice(newline + 1);
        if (line.endsWith('\r')) line = line.slice(0, -1);
        if (line === '') {
          if (id !== null) this.advance(watches, id);
          if (data !== null) this.dispatch(event || 'message', data, parts);
          event = '';
          data = null;
          id = null;
          continue;
        }
        if (line.startsWith(':')) {
          if (line === ': ready') {
            onReady();
            for (const part of parts)
              if (part.active && !part.readySettled) {
                part.readySettled = true;
                part.resolveReady();
              }
          }
          continue;
        }
        const colon = line.indexOf(':');
        const field = colon < 0 ? line : line.slice(0, colon);
        let text = colon < 0 ? '' : line.slice(colon + 1);
        if (text.startsWith(' ')) text = text.slice(1);
        if (field === 'event') event = text;
        else if (field === 'data') data = data === null ? text : `${data}\n${text}`;
        else if (field === 'id') id = text;
      }
    }
  }

  /** An id lists, per watch, the revision it has delivered through. */
  advance(watches, id) {
    const revisions = id.split(',').map(Number);
    revisions.forEach((revision, k) => watches[k]?.through(revision));
  }

  dispatch(event, data, parts) {
    let message;
    try {
      message = JSON.parse(data);
    } catch {
      return;
    }
    const part = parts[message.part];
    if (!part || !part.active) return;
    if (event === 'change' && part.kind === 'watch') part.deliver(toChange(message));
    else if (event === 'event' && part.kind === 'event') part.deliver(message.payload);
    else if (event === 'event' && part.kind === 'prefix') part.deliver(message.payload, message.name);
    else if (event === 'compacted' || event === 'error') this.fail(part, errorFromWire(message, 0));
  }
}

/** A watch's place: what it delivered, so that a reopened stream resumes without gap or repeat. */
class WatchPart {
  constructor(prefix, handler, { from = 0, onError } = {}) {
    if (typeof prefix !== 'string') throw new TypeError('watch needs a prefix string ("" for every key)');
    if (typeof handler !== 'function') throw new TypeError('watch needs a handler function');
    if (!Number.isInteger(from) || from < 0)
      throw new TypeError(`watch's "from" must be a revision (an integer >= 0), not ${from}`);
    this.kind = 'watch';
    this.prefix = prefix;
    this.handler = handler;
    this.onError = onError;
    this.from = from; // until the store names where it starts
    // NOTE: a write of several keys has one revision, and a stream may break between its changes:
    // `last` is the newest revision delivered and `keysAtLast` what of it was, so a resume
    // re-reads that revision and skips those keys. An id past `last` means all of it was seen.
    this.last = null;
    this.keysAtLast = new Set();
  }
  resumeFrom() {
    if (this.last === null) return this.from;
    return this.keysAtLast.size > 0 ? this.last : this.last + 1;
  }
  through(revision) {
    if (this.last === null || revision > this.last) {
      this.last = revision;
      this.keysAtLast.clear();
    }
  }
  deliver(change) {
    if (this.last !== null && (change.revision < this.last || (change.revision === this.last && this.keysAtLast.has(change.key))))
      return; // already delivered before the stream was reopened
    if (this.last === null || change.revision > this.last) {
      this.last = change.revision;
      this.keysAtLast = new Set();
    }
    this.keysAtLast.add(change.key);
    call(this, this.handler, change);
  }
}

class EventPart {
  constructor(name, handler, { onError } = {}) {
    encodeName(name);
    if (typeof handler !== 'function') throw new TypeError('on needs a handler function');
    this.kind = 'event';
    this.name = name;
    this.handler = handler;
    this.onError = onError;
  }
  deliver(payload) {
    call(this, this.handler, payload);
  }
}

/** Every event whose name starts with a prefix ('' for every event), delivered with its name. */
class PrefixPart {
  constructor(prefix, handler, { onError } = {}) {
    if (typeof prefix !== 'string') throw new TypeError('onPrefix needs a prefix string ("" for every event)');
    if (typeof handler !== 'function') throw new TypeError('onPrefix needs a handler function');
    this.kind = 'prefix';
    this.prefix = prefix;
    this.handler = handler;
    this.onError = onError;
  }
  deliver(payload, name) {
    call(this, this.handler, payload, name);
  }
}

/** Runs a handler; what it throws goes to its onError (or the console), never into the stream. */
function call(part, handler, ...values) {
  try {
    handler(...values);
  } catch (error) {
    if (part.onError) part.onError(error);
    else console.error('scale.js: a handler threw:', error);
  }
}

/** Versioned keys in a scale-store: the HTTP form of C++'s scale::SharedMemory. */
export class SharedMemory {
  /** `url` like "http://127.0.0.1:12345"; `token` when the store has one; `connectTimeoutMs` (10 s). */
  constructor(url, options = {}) {
    this._http = new Http(url, options);
  }
  /** The store's URL. */
  get url() {
    return this._http.url;
  }

  /** set(object): every key in one write with one revision; set(key, value): one key. Resolves to the revision. */
  async set(keyOrObject, value) {
    if (typeof keyOrObject === 'string' && arguments.length >= 2) {
      const { json } = await this._http.request('PUT', `/v1/kv/${encodeName(keyOrObject)}`, {
        body: jsonBody(value, 'set(key, value)'),
      });
      return json.revision;
    }
    if (keyOrObject === null || typeof keyOrObject !== 'object' || Array.isArray(keyOrObject))
      throw new TypeError('set needs a plain object of keys to values, or set(key, value)');
    const { json } = await this._http.request('POST', '/v1/kv', { body: JSON.stringify(keyOrObject) });
    return json.revision;
  }

  /** The value of `key`; rejects with KeyNotFound when it is not set. */
  async get(key) {
    const { json } = await this._http.request('GET', `/v1/kv/${encodeName(key)}`);
    return json.value;
  }

  /** `{key, value, revision, timestampMs}`, or null when the key is not set. */
  async entry(key) {
    try {
      const { json } = await this._http.request('GET', `/v1/kv/${encodeName(key)}`);
      return toEntry(json);
    } catch (error) {
      if (error instanceof KeyNotFound) return null;
      throw error;
    }
  }

  /** Removes `key`: true when it was there. */
  async erase(key) {
    try {
      await this._http.request('DELETE', `/v1/kv/${encodeName(key)}`);
      return true;
    } catch (error) {
      if (error instanceof KeyNotFound) return false;
      throw error;
    }
  }

  /** Writes `value` only while `key` is at `revision` (0: absent); true when it wrote. */
  async compareAndSet(key, revision, value) {
    if (!Number.isInteger(revision) || revision < 0)
      throw new TypeError(`compareAndSet needs a revision (an integer >= 0; 0 means absent), not ${revision}`);
    const condition = revision === 0 ? { 'if-none-match': '*' } : { 'if-match': String(revision) };
    const { status } = await this._http.request('PUT', `/v1/kv/${encodeName(key)}`, {
      body: jsonBody(value, 'compareAndSet'),
      headers: condition,
      accept: [412],
    });
    return status === 200;
  }

  /** Adds `by` (1) to an integer key, a missing key counting from 0; resolves to the new value, a Number. */
  async increment(key, by = 1) {
    if (!Number.isSafeInteger(by)) throw new TypeError(`increment needs an integer, not ${by}`);
    const { json } = await this._http.request('POST', `/v1/increment/${encodeName(key)}`, {
      body: JSON.stringify({ by }),
    });
    return Number(json.value);
  }

  /** Every entry whose key starts with `prefix`, sorted by key (read page by page). */
  async list(prefix = '') {
    const entries = [];
    let after = null;
    for (;;) {
      const query = `prefix=${encodeURIComponent(prefix)}&limit=10000${after === null ? '' : `&after=${encodeURIComponent(after)}`}`;
      const { json } = await this._http.request('GET', `/v1/kv?${query}`);
      for (const entry of json.entries) entries.push(toEntry(entry));
      if (json.next === null || json.next === undefined) return entries;
      after = json.next;
    }
  }

  /**
   * Calls `handler({key, value, revision, timestampMs, erased})` for every change to keys under
   * `prefix`, from revision `from` (0 or omitted: from now on) in revision order; `onError`
   * receives Compacted and any other error that ends the watch.
   */
  watch(prefix, handler, options = {}) {
    return SharedStream.of(this._http).add(new WatchPart(prefix, handler, options));
  }
}

/** Named events through a scale-store: the HTTP form of C++'s scale::SharedEventEmitter. */
export class SharedEventEmitter {
  constructor(url, options = {}) {
    this._http = new Http(url, options);
  }
  get url() {
    return this._http.url;
  }

  /** Delivers `payload` (any JSON value; omitted: null) to every current subscriber of `name`. */
  async emit(name, payload = null) {
    const path = `/v1/events/${encodeName(name)}`;
    // NOTE: an emit waits for this client's own subscriptions made before it to be in place, so
    // `events.once(n)` followed by `events.emit(n)` is never missed.
    await SharedStream.of(this._http).settled();
    await this._http.request('POST', path, { body: jsonBody(payload, 'emit') });
  }

  /** Calls `handler(payload)` for every later emit of `name` (exactly that name). */
  on(name, handler, options = {}) {
    return SharedStream.of(this._http).add(new EventPart(name, handler, options));
  }

  /**
   * Calls `handler(payload, name)` for every later emit whose name starts with `prefix` ('' for
   * every event); a Subscription like on's, sharing the same stream.
   */
  onPrefix(prefix, handler, options = {}) {
    return SharedStream.of(this._http).add(new PrefixPart(prefix, handler, options));
  }

  /** Resolves with the payload of the next emit of `name`. */
  once(name) {
    return new Promise((resolve, reject) => {
      const sub = this.on(
        name,
        (payload) => {
          sub.cancel();
          resolve(payload);
        },
        { onError: reject },
      );
      sub.ready.catch(reject);
    });
  }
}
