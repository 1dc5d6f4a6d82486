/** Protocol version this client speaks. */
export declare const PROTOCOL_VERSION = 1;
export type Request = import('./protocol.js').Request;
export type ServerFrame = import('./protocol.js').ServerFrame;
export type HelloFrame = import('./protocol.js').HelloFrame;
export type ErrorFrame = import('./protocol.js').ErrorFrame;
export type ErrorCode = import('./protocol.js').ErrorCode;
export type Limits = import('./protocol.js').Limits;
export type Settings = import('./protocol.js').Settings;
export type MessageView = import('./protocol.js').MessageView;
export type ConversationView = import('./protocol.js').ConversationView;
export type ConversationUpdate = import('./protocol.js').ConversationUpdate;
export type ReportTarget = import('./protocol.js').ReportTarget;
export type AckResult = import('./protocol.js').AckResult;
export type OkResult = import('./protocol.js').OkResult;
export type SentResult = import('./protocol.js').SentResult;
export type ConversationResult = import('./protocol.js').ConversationResult;
export type ConnectionResult = import('./protocol.js').ConnectionResult;
export type SettingsResult = import('./protocol.js').SettingsResult;
export type ReportedResult = import('./protocol.js').ReportedResult;
export type ReportsResult = import('./protocol.js').ReportsResult;
export type ProfileResult = import('./protocol.js').ProfileResult;
export type SyncResult = import('./protocol.js').SyncResult;
export type HistoryResult = import('./protocol.js').HistoryResult;
export type Answers = {
    send: SentResult;
    inmail: SentResult;
    create_group: ConversationResult;
    read: OkResult;
    recall: OkResult;
    delete_inmail: OkResult;
    delete_for_me: OkResult;
    connect: ConnectionResult;
    accept: ConnectionResult;
    decline: ConnectionResult;
    disconnect: ConnectionResult;
    block: OkResult;
    unblock: OkResult;
    report: ReportedResult;
    list_reports: ReportsResult;
    mute: OkResult;
    hide: OkResult;
    settings: SettingsResult;
    typing: OkResult;
    lookup: ProfileResult;
    sync: SyncResult;
    history: HistoryResult;
};
export type RequestFields<T extends Request['type']> = Omit<Extract<Request, {
    type: T;
}>, 'id' | 'type'>;
export type EventHandler<E> = {
    handle(event: E): void;
}['handle'];
export type WebSocketLike = {
    send(data: string): void;
    close(code?: number, reason?: string): void;
    onmessage: EventHandler<{
        data: unknown;
    }> | null;
    onclose: EventHandler<{
        code: number;
        reason: string;
    }> | null;
    onerror: EventHandler<unknown> | null;
};
export type WebSocketConstructor = new (url: string) => WebSocketLike;
export type Pending = {
    request: Request;
    /**
     * The request as sent, so a retry carries the same bytes and id.
     */
    text: string;
    resolve: (result: AckResult) => void;
    reject: (error: ParleyError) => void;
    timer: ReturnType<typeof setTimeout> | null;
};
export type ConnectionStatus = 'idle' | 'connecting' | 'open' | 'waiting' | 'closed';
export type ClientOptions = {
    /**
     * First reconnect delay.
     */
    initialBackoffMs?: number;
    /**
     * Longest reconnect delay.
     */
    maxBackoffMs?: number;
    /**
     * A request with no answer this long fails with `timeout`.
     */
    requestTimeoutMs?: number;
    /**
     * Follow-up syncs allowed while updates say `more`.
     */
    maxSyncRounds?: number;
    /**
     * WebSocket implementation: the global one
     * when left out, which Node has only from version 22 (pass the `ws` package's before).
     */
    WebSocket?: WebSocketConstructor;
};
export type ClientErrorCode = 'disconnected' | 'timeout' | 'closed' | 'body_too_long' | 'frame_too_large';
/**
 * @typedef {import('./protocol.js').Request} Request
 * @typedef {import('./protocol.js').ServerFrame} ServerFrame
 * @typedef {import('./protocol.js').HelloFrame} HelloFrame
 * @typedef {import('./protocol.js').ErrorFrame} ErrorFrame
 * @typedef {import('./protocol.js').ErrorCode} ErrorCode
 * @typedef {import('./protocol.js').Limits} Limits
 * @typedef {import('./protocol.js').Settings} Settings
 * @typedef {import('./protocol.js').MessageView} MessageView
 * @typedef {import('./protocol.js').ConversationView} ConversationView
 * @typedef {import('./protocol.js').ConversationUpdate} ConversationUpdate
 * @typedef {import('./protocol.js').ReportTarget} ReportTarget
 * @typedef {import('./protocol.js').AckResult} AckResult
 * @typedef {import('./protocol.js').OkResult} OkResult
 * @typedef {import('./protocol.js').SentResult} SentResult
 * @typedef {import('./protocol.js').ConversationResult} ConversationResult
 * @typedef {import('./protocol.js').ConnectionResult} ConnectionResult
 * @typedef {import('./protocol.js').SettingsResult} SettingsResult
 * @typedef {import('./protocol.js').ReportedResult} ReportedResult
 * @typedef {import('./protocol.js').ReportsResult} ReportsResult
 * @typedef {import('./protocol.js').ProfileResult} ProfileResult
 * @typedef {import('./protocol.js').SyncResult} SyncResult
 * @typedef {import('./protocol.js').HistoryResult} HistoryResult
 */
/**
 * The ack result each request type is answered with (protocol/README.md, "Requests and
 * answers"). A request type the schemas gain without an entry here fails the type check.
 * @typedef {{
 *   send: SentResult, inmail: SentResult, create_group: ConversationResult,
 *   read: OkResult, recall: OkResult, delete_inmail: OkResult, delete_for_me: OkResult,
 *   connect: ConnectionResult, accept: ConnectionResult, decline: ConnectionResult,
 *   disconnect: ConnectionResult, block: OkResult, unblock: OkResult,
 *   report: ReportedResult, list_reports: ReportsResult, mute: OkResult, hide: OkResult,
 *   settings: SettingsResult, typing: OkResult, lookup: ProfileResult, sync: SyncResult,
 *   history: HistoryResult,
 * }} Answers
 */
/**
 * The fields of a request of type `T` besides `id` and `type`.
 * @template {Request['type']} T
 * @typedef {Omit<Extract<Request, {type: T}>, 'id' | 'type'>} RequestFields
 */
/**
 * An event handler property that each implementation may declare with its own, richer
 * event type: TypeScript compares the parameters of methods both ways, which a plain
 * function type would not allow.
 * @template E
 * @typedef {{handle(event: E): void}['handle']} EventHandler
 */
/**
 * The part of the WebSocket API this client uses, which the browser's, Node 22's global
 * and the `ws` package's all provide.
 * @typedef {{
 *   send(data: string): void,
 *   close(code?: number, reason?: string): void,
 *   onmessage: EventHandler<{data: unknown}> | null,
 *   onclose: EventHandler<{code: number, reason: string}> | null,
 *   onerror: EventHandler<unknown> | null,
 * }} WebSocketLike
 * @typedef {new (url: string) => WebSocketLike} WebSocketConstructor
 */
/** A request waiting for its answer.
 * @typedef {object} Pending
 * @property {Request} request
 * @property {string} text The request as sent, so a retry carries the same bytes and id.
 * @property {(result: AckResult) => void} resolve
 * @property {(error: ParleyError) => void} reject
 * @property {ReturnType<typeof setTimeout> | null} timer
 */
/**
 * Client-side states of the connection.
 * @typedef {'idle'|'connecting'|'open'|'waiting'|'closed'} ConnectionStatus
 */
/**
 * Options for {@link ParleyClient}.
 * @typedef {object} ClientOptions
 * @property {number} [initialBackoffMs=500] First reconnect delay.
 * @property {number} [maxBackoffMs=30000] Longest reconnect delay.
 * @property {number} [requestTimeoutMs=15000] A request with no answer this long fails with `timeout`.
 * @property {number} [maxSyncRounds=20] Follow-up syncs allowed while updates say `more`.
 * @property {WebSocketConstructor} [WebSocket] WebSocket implementation: the global one
 *   when left out, which Node has only from version 22 (pass the `ws` package's before).
 */
/** @typedef {'disconnected'|'timeout'|'closed'|'body_too_long'|'frame_too_large'} ClientErrorCode */
/** A refused or failed request. `code` is a protocol error code, or one of the client's own:
 * `disconnected`, `timeout`, `closed`, `body_too_long`, `frame_too_large`. */
export declare class ParleyError extends Error {
    code: "already_read" | "bad_request" | "body_too_long" | "closed" | "disconnected" | "forbidden" | "frame_too_large" | "inmail_delete_window_closed" | "inmail_not_allowed" | "not_connected" | "not_found" | "not_sender" | "rate_limited" | "recall_limit_reached" | "recall_throttled" | "recall_window_closed" | "recipient_unavailable" | "timeout" | "unauthorized" | "unavailable" | "unknown_type" | "wrong_message_kind";
    id: string | undefined;
    /**
     * @param {ErrorCode | ClientErrorCode} code
     * @param {string} message
     * @param {string} [id] The request id, when there was one.
     */
    constructor(code: ErrorCode | ClientErrorCode, message: string, id?: string);
}
/** Length in characters as the server counts them (Unicode scalar values).
 * @param {string} text */
export declare function bodyLength(text: string): number;
/**
 * A parley session that survives disconnects.
 *
 * Events (subscribe with {@link ParleyClient#on}):
 * - every server frame type (`message`, `read`, `recalled`, `deleted-view`, …) with the
 *   frame; frames replayed from a resync come with `{replayed: true}` as second argument;
 * - `frame`: every server frame, `(frame, {replayed})`;
 * - `hello`: the `hello` frame of each new session;
 * - `ready`: `{sync, reconnected}` once a session is open and synced;
 * - `status`: the {@link ConnectionStatus} and, when waiting, the delay in ms;
 * - `fatal`: an {@link ErrorFrame} after which the client stops (a refused token).
 */
export declare class ParleyClient {
    _url: () => string | Promise<string>;
    _opts: {
        WebSocket?: WebSocketConstructor;
        initialBackoffMs: number;
        maxBackoffMs: number;
        requestTimeoutMs: number;
        maxSyncRounds: number;
    };
    /** @type {WebSocketConstructor | undefined} */
    _WS: WebSocketConstructor | undefined;
    /** @type {Map<string, Set<(...args: any[]) => void>>} */
    _handlers: Map<string, Set<(...args: any[]) => void>>;
    /** @type {Map<string, Pending>} */
    _pending: Map<string, Pending>;
    /** @type {Map<string, number>} last position seen per conversation */
    positions: Map<string, number>;
    /** @type {HelloFrame | null} */
    hello: HelloFrame | null;
    /** @type {ConnectionStatus} */
    status: ConnectionStatus;
    /** @type {WebSocketLike | null} */
    _ws: WebSocketLike | null;
    _attempt: number;
    /** @type {ReturnType<typeof setTimeout> | null} */
    _retryTimer: ReturnType<typeof setTimeout> | null;
    _wanted: boolean;
    _synced: boolean;
    _opening: boolean;
    _skewMs: number;
    /**
     * @param {string | (() => string | Promise<string>)} url WebSocket URL, or a function
     *   giving it afresh on each connect (to refresh a token).
     * @param {ClientOptions} [options]
     */
    constructor(url: string | (() => string | Promise<string>), options?: ClientOptions);
    /**
     * Subscribe to an event; returns a function that unsubscribes.
     * @param {string} event
     * @param {(...args: any[]) => void} handler
     */
    on(event: string, handler: (...args: any[]) => void): () => boolean | undefined;
    /** @param {string} event @param {...unknown} args */
    _emit(event: string, ...args: unknown[]): void;
    /** @param {ConnectionStatus} status @param {object} [detail] */
    _setStatus(status: ConnectionStatus, detail?: object): void;
    /** Limits announced by the server (null before the first `hello`).
     * @returns {Limits | null} */
    get limits(): Limits | null;
    /** The signed-in user (null before the first `hello`). */
    get user(): string | null;
    /** The server's clock now, estimated from `hello` (deadlines are on the server's clock). */
    serverNow(): number;
    /** Whether a session is open and synced. */
    get ready(): boolean;
    /** @param {string} conversation @param {number} pos */
    _track(conversation: string, pos: number): void;
    /** Move a conversation's position past a frame that carries one. @param {ServerFrame} frame */
    _trackFrame(frame: ServerFrame): void;
    /** Open the connection (and keep it open until {@link ParleyClient#close}).
     * @throws {TypeError} when there is no WebSocket implementation to open it with. */
    connect(): void;
    /** Close for good: pending requests fail with `closed`, no reconnect. Positions are
     * kept, so a later {@link ParleyClient#connect} resyncs from where this one stopped. */
    close(): void;
    /** Drop the current socket and reconnect now (say, when the network comes back). */
    reconnect(): void;
    _open(): Promise<void>;
    /** The socket is gone: fail what cannot be retried, then back off and reconnect.
     * @param {number} [code] @param {string} [reason] */
    _lost(code?: number, reason?: string): void;
    /** @param {(p: Pending) => boolean} which @param {ClientErrorCode} code @param {string} message */
    _failPending(which: (p: Pending) => boolean, code: ClientErrorCode, message: string): void;
    /** @param {string} text */
    _onText(text: string): Promise<void> | undefined;
    /** @param {ServerFrame} frame @param {boolean} replayed */
    _dispatch(frame: ServerFrame, replayed: boolean): void;
    /** @param {HelloFrame} hello */
    _onHello(hello: HelloFrame): Promise<void>;
    /** Sync; on a reconnect, from the tracked positions, replaying updates until none has
     * `more`.
     * @param {boolean} withPositions
     * @returns {Promise<SyncResult>} the first answer, whose inbox is the current one */
    _resync(withPositions: boolean): Promise<SyncResult>;
    /**
     * Send one request and wait for its answer.
     * @template {Request['type']} T
     * @param {T} type
     * @param {RequestFields<T>} [fields] The request's fields besides `id` and `type`.
     * @returns {Promise<Answers[T]>} the ack's result; rejects with {@link ParleyError}.
     */
    request<T extends Request['type']>(type: T, fields?: RequestFields<T>): Promise<Answers[T]>;
    /** @param {string} id @param {Pending} p */
    _transmit(id: string, p: Pending): void;
    /** Send a message into a conversation (`conversation`) or to a connected user (`to`).
     * @param {RequestFields<'send'>} f */
    send(f: RequestFields<'send'>): Promise<import("./protocol.js").SentResult>;
    /** Send an InMail. @param {RequestFields<'inmail'>} f */
    inmail(f: RequestFields<'inmail'>): Promise<import("./protocol.js").SentResult>;
    /** Create a group. @param {RequestFields<'create_group'>} f */
    createGroup(f: RequestFields<'create_group'>): Promise<import("./protocol.js").ConversationResult>;
    /** Mark read up to a message. @param {string} conversation @param {string} message */
    read(conversation: string, message: string): Promise<import("./protocol.js").OkResult>;
    /** Recall a message for everyone. @param {string} conversation @param {string} message */
    recall(conversation: string, message: string): Promise<import("./protocol.js").OkResult>;
    /** Delete an InMail for sender and primary recipient. @param {string} conversation @param {string} message */
    deleteInmail(conversation: string, message: string): Promise<import("./protocol.js").OkResult>;
    /** Delete a message from your own view. @param {string} conversation @param {string} message */
    deleteForMe(conversation: string, message: string): Promise<import("./protocol.js").OkResult>;
    /** Ask to connect. @param {string} user */
    connectTo(user: string): Promise<import("./protocol.js").ConnectionResult>;
    /** Accept a connection request. @param {string} user */
    accept(user: string): Promise<import("./protocol.js").ConnectionResult>;
    /** Decline a connection request. @param {string} user */
    decline(user: string): Promise<import("./protocol.js").ConnectionResult>;
    /** Remove a connection or withdraw a request. @param {string} user */
    disconnectFrom(user: string): Promise<import("./protocol.js").ConnectionResult>;
    /** Block a user. @param {string} user */
    block(user: string): Promise<import("./protocol.js").OkResult>;
    /** Unblock a user. @param {string} user */
    unblock(user: string): Promise<import("./protocol.js").OkResult>;
    /** Report a message or a user. @param {ReportTarget} target @param {string} reason */
    report(target: ReportTarget, reason: string): Promise<import("./protocol.js").ReportedResult>;
    /** List reports (admins). */
    listReports(): Promise<import("./protocol.js").ReportsResult>;
    /** Mute or unmute a conversation. @param {string} conversation @param {boolean} muted */
    mute(conversation: string, muted: boolean): Promise<import("./protocol.js").OkResult>;
    /** Hide or unhide a conversation. @param {string} conversation @param {boolean} hidden */
    hide(conversation: string, hidden: boolean): Promise<import("./protocol.js").OkResult>;
    /** Change settings. @param {Partial<Settings>} settings */
    updateSettings(settings: Partial<Settings>): Promise<import("./protocol.js").SettingsResult>;
    /** Say you are typing. @param {string} conversation */
    typing(conversation: string): Promise<import("./protocol.js").OkResult>;
    /** Look a user up. @param {string} user */
    lookup(user: string): Promise<import("./protocol.js").ProfileResult>;
    /** Page back through a conversation.
     * @param {string} conversation
     * @param {{before?: number, limit?: number}} [page] */
    history(conversation: string, { before, limit }?: {
        before?: number;
        limit?: number;
    }): Promise<import("./protocol.js").HistoryResult>;
}
