// Declarations of scale.js's public API (hand-written; scale.js is the implementation).

/** Options of a client: the store's token (when it was started with --token), the connect timeout. */
export interface ClientOptions {
  token?: string;
  /** How long a request or the stream may take to get an answer's head (10,000 ms). */
  connectTimeoutMs?: number;
}

/** What the store holds under a key. Revisions are store-wide and strictly increasing. */
export interface Entry<T = unknown> {
  key: string;
  value: T;
  revision: number;
  timestampMs: number;
}

/** One change seen by a watch; an erase has `erased: true` and `value: null`. */
export interface Change<T = unknown> extends Entry<T> {
  erased: boolean;
}

export interface WatchOptions {
  /** The first revision to deliver; 0 or omitted: changes from now on. */
  from?: number;
  /** Receives Compacted and any other error that ends the watch (then it is no longer active). */
  onError?: (error: ScaleError) => void;
}

export interface EventOptions {
  /** Receives an error that ends the subscription (e.g. Unauthorized). */
  onError?: (error: ScaleError) => void;
}

/** What watch, on and onPrefix return at once. */
export class Subscription {
  /** Resolves once in place (nothing written or emitted later is missed); rejects when it fails first. */
  readonly ready: Promise<void>;
  /** True until cancelled or failed. */
  readonly active: boolean;
  /** Stops every later call of the handler; safe from inside it and more than once. */
  cancel(): void;
}

export class ScaleError extends Error {
  /** The HTTP status, when the store answered. */
  readonly status?: number;
  /** The store's error type (`KeyNotFound`, `Error`, ...), when it answered. */
  readonly type?: string;
}
export class KeyNotFound extends ScaleError {
  readonly key: string;
}
export class TypeMismatch extends ScaleError {
  readonly key: string;
  readonly stored: string;
  readonly requested: string;
}
export class Conflict extends ScaleError {}
export class Compacted extends ScaleError {
  readonly requested: number;
  readonly oldestKept: number;
}
export class ConnectionError extends ScaleError {
  /** The store's URL. */
  readonly url: string;
}
export class Unauthorized extends ScaleError {}

/** Versioned keys in a scale-store (C++: scale::SharedMemory). */
export class SharedMemory {
  constructor(url: string, options?: ClientOptions);
  readonly url: string;
  /** Writes every key of `object` in one step with one revision; resolves to it. */
  set(object: Record<string, unknown>): Promise<number>;
  /** Writes one key; resolves to its revision. */
  set(key: string, value: unknown): Promise<number>;
  /** The value of `key`; rejects with KeyNotFound when it is not set. */
  get<T = unknown>(key: string): Promise<T>;
  /** The entry of `key`, or null when it is not set. */
  entry<T = unknown>(key: string): Promise<Entry<T> | null>;
  /** Removes `key`; true when it was there. */
  erase(key: string): Promise<boolean>;
  /** Writes `value` only while `key` is at `revision` (0: absent); true when it wrote. */
  compareAndSet(key: string, revision: number, value: unknown): Promise<boolean>;
  /** Adds `by` (1) to an integer key (a missing one counts from 0); the new value. */
  increment(key: string, by?: number): Promise<number>;
  /** Every entry whose key starts with `prefix`, sorted by key. */
  list<T = unknown>(prefix?: string): Promise<Entry<T>[]>;
  /** Calls `handler` for each change under `prefix`, in revision order. */
  watch<T = unknown>(prefix: string, handler: (change: Change<T>) => void, options?: WatchOptions): Subscription;
}

/** Named events through a scale-store (C++: scale::SharedEventEmitter). Events have no history. */
export class SharedEventEmitter {
  constructor(url: string, options?: ClientOptions);
  readonly url: string;
  /** Delivers `payload` (null when omitted) to every current subscriber of `name`. */
  emit(name: string, payload?: unknown): Promise<void>;
  /** Calls `handler` for every later emit of exactly `name`. */
  on<T = unknown>(name: string, handler: (payload: T) => void, options?: EventOptions): Subscription;
  /** Calls `handler` with the payload and the name of every later emit whose name starts with `prefix` ("" for every event). */
  onPrefix<T = unknown>(prefix: string, handler: (payload: T, name: string) => void, options?: EventOptions): Subscription;
  /** The payload of the next emit of `name`. */
  once<T = unknown>(name: string): Promise<T>;
}
