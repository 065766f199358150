/*
 * conn — one logical connection to parleyd that survives socket loss: it
 * opens the WebSocket, authenticates with `hello`, matches replies to
 * requests by `ref`, pings, notices a dead link, and reconnects with capped
 * exponential backoff plus jitter. What to do after a (re)connect — rejoin
 * rooms, resend unacked messages — is the app's business (onReady).
 */
import { backoffDelay } from './model.js';

const PING_MS = 25000;
/* Two missed pongs and some slack: the link is dead even if TCP says not. */
const DEAD_MS = 2 * PING_MS + 10000;
const REQUEST_TIMEOUT_MS = 30000;

/* Attempts of requestRetrying before its rate_limited goes to the caller. */
const READ_TRIES = 10;

export class ConnError extends Error {
    constructor(frame) {
        super(frame.message || frame.code);
        this.code = frame.code;
        this.frame = frame;
    }
}

export class Connection {
    /*
     * handlers: onState(state, info), onReady(welcome, isFirst),
     * onFrame(frame) for events and unmatched replies,
     * onHelloError(err) -> 'stop' | 'retry', onClose(code, reason).
     */
    constructor(url, handlers) {
        this.url = url;
        this.h = handlers;
        this.ws = null;
        this.state = 'disconnected';
        this.stopped = true;
        this.attempt = 0;
        this.retryTimer = 0;
        this.retryAt = 0;
        this.pingTimer = 0;
        this.lastRx = 0;
        this.nextRef = 1;
        this.waiting = new Map(); /* ref -> {resolve, reject, timer} */
        this.hello = null;
        this.everReady = false;
    }

    get connected() {
        return this.state === 'connected';
    }

    start(hello) {
        this.hello = hello;
        this.stopped = false;
        this.attempt = 0;
        this.open();
    }

    stop() {
        this.stopped = true;
        clearTimeout(this.retryTimer);
        this.drop(1000, 'bye');
        this.setState('disconnected');
    }

    /* Skip the rest of the backoff (the user asked, or the network came back). */
    retryNow() {
        if (this.stopped || this.ws) {
            return;
        }
        clearTimeout(this.retryTimer);
        this.attempt = 0;
        this.open();
    }

    /*
     * The network just came back or the tab woke up: a socket that looks
     * open may be dead (the server restarted meanwhile and its close never
     * arrived). Ping now and give up on the socket if nothing comes back.
     */
    probe(timeoutMs = 5000) {
        const ws = this.ws;
        if (!ws || !this.connected) {
            this.retryNow();
            return;
        }
        const since = Date.now();
        this.send({ type: 'ping' });
        setTimeout(() => {
            if (this.ws === ws && this.lastRx < since) {
                this.drop(4000, 'no pong');
                this.afterClose(ws, 1006, 'no pong');
            }
        }, timeoutMs);
    }

    setState(state) {
        if (this.state !== state) {
            this.state = state;
            this.h.onState(state, { retryAt: this.retryAt });
        }
    }

    open() {
        this.retryAt = 0;
        this.setState('connecting');
        let ws;
        try {
            ws = new WebSocket(this.url);
        } catch (e) {
            this.scheduleRetry();
            return;
        }
        this.ws = ws;
        ws.onopen = () => this.onOpen(ws);
        ws.onmessage = (ev) => this.onMessage(ws, ev);
        ws.onclose = (ev) => this.onSocketClose(ws, ev.code, ev.reason);
        ws.onerror = () => {}; /* always followed by close */
    }

    onOpen(ws) {
        if (ws !== this.ws) {
            return;
        }
        this.lastRx = Date.now();
        clearInterval(this.pingTimer);
        this.pingTimer = setInterval(() => this.heartbeat(), PING_MS);
        const failed = (err) => {
            if (ws !== this.ws || err.code === 'disconnected') {
                return;
            }
            if (this.h.onHelloError(err) === 'stop') {
                this.stop();
            } else {
                this.drop(1000, 'retry');
                this.scheduleRetry();
            }
        };
        this.request({ ...this.hello, type: 'hello' }, { beforeAuth: true }).then((welcome) => {
            if (welcome.type !== 'welcome') {
                failed(new ConnError({ code: 'bad_reply', message: `got ${welcome.type}` }));
                return;
            }
            const first = !this.everReady;
            this.everReady = true;
            this.attempt = 0;
            this.setState('connected');
            /* Outside the rejection handler on purpose: a bug in the app's
             * handler must not look like a refused hello. */
            this.h.onReady(welcome, first);
        }, failed);
    }

    heartbeat() {
        if (!this.ws) {
            return;
        }
        if (Date.now() - this.lastRx > DEAD_MS) {
            const ws = this.ws;
            this.drop(4000, 'no pong');
            this.afterClose(ws, 1006, 'no pong');
            return;
        }
        if (this.connected) {
            this.send({ type: 'ping' });
        }
    }

    onMessage(ws, ev) {
        if (ws !== this.ws) {
            return;
        }
        this.lastRx = Date.now();
        let f;
        try {
            f = JSON.parse(ev.data);
        } catch (e) {
            return;
        }
        if (!f || typeof f !== 'object' || typeof f.type !== 'string') {
            return;
        }
        if (f.ref !== undefined && this.waiting.has(f.ref)) {
            const w = this.waiting.get(f.ref);
            this.waiting.delete(f.ref);
            clearTimeout(w.timer);
            if (f.type === 'error') {
                w.reject(new ConnError(f));
            } else {
                w.resolve(f);
            }
            return;
        }
        if (f.type !== 'pong') {
            this.h.onFrame(f);
        }
    }

    onSocketClose(ws, code, reason) {
        if (ws !== this.ws) {
            return;
        }
        this.ws = null;
        this.afterClose(ws, code, reason);
    }

    afterClose(ws, code, reason) {
        clearInterval(this.pingTimer);
        this.failWaiting();
        this.h.onClose(code, reason);
        if (!this.stopped) {
            this.scheduleRetry();
        }
    }

    /* Forget the socket without waiting for its close handshake. */
    drop(code, reason) {
        const ws = this.ws;
        this.ws = null;
        clearInterval(this.pingTimer);
        this.failWaiting();
        if (ws) {
            ws.onopen = ws.onmessage = ws.onclose = null;
            try {
                ws.close(code, reason);
            } catch (e) {
                /* already closing */
            }
        }
    }

    scheduleRetry() {
        clearTimeout(this.retryTimer);
        const delay = backoffDelay(this.attempt++);
        this.retryAt = Date.now() + delay;
        this.state = 'disconnected';
        this.h.onState(this.state, { retryAt: this.retryAt });
        this.retryTimer = setTimeout(() => {
            if (!this.stopped && !this.ws) {
                this.open();
            }
        }, delay);
    }

    failWaiting() {
        for (const w of this.waiting.values()) {
            clearTimeout(w.timer);
            w.reject(new ConnError({ code: 'disconnected', message: 'connection lost' }));
        }
        this.waiting.clear();
    }

    /* Fire and forget; false if the socket cannot take it now. */
    send(obj, { beforeAuth = false } = {}) {
        const ws = this.ws;
        if (!ws || ws.readyState !== WebSocket.OPEN || (!this.connected && !beforeAuth)) {
            return false;
        }
        ws.send(JSON.stringify(obj));
        return true;
    }

    /* Send with a fresh ref; resolves with the reply, rejects with ConnError. */
    request(obj, { beforeAuth = false, timeout = REQUEST_TIMEOUT_MS } = {}) {
        const ref = this.nextRef++;
        return new Promise((resolve, reject) => {
            if (!this.send({ ...obj, ref }, { beforeAuth })) {
                reject(new ConnError({ code: 'disconnected', message: 'not connected' }));
                return;
            }
            const timer = setTimeout(() => {
                this.waiting.delete(ref);
                reject(new ConnError({ code: 'timeout', message: 'no reply from server' }));
            }, timeout);
            this.waiting.set(ref, { resolve, reject, timer });
        });
    }

    /* request() for join and history: the server refuses a read while this
     * connection already has a few waiting for storage (rate_limited with
     * retry_after_ms), so ask again after that, a little jittered, up to
     * READ_TRIES times in all. */
    async requestRetrying(obj, opts = {}) {
        for (let i = 1; ; i++) {
            try {
                return await this.request(obj, opts);
            } catch (err) {
                const ms = err.frame && Number.isFinite(err.frame.retry_after_ms)
                    ? err.frame.retry_after_ms : -1;
                if (err.code !== 'rate_limited' || ms < 0 || i >= READ_TRIES) {
                    throw err;
                }
                const wait = Math.min(ms, 5000) * (1 + Math.random());
                await new Promise((resolve) => setTimeout(resolve, wait));
            }
        }
    }
}

/* ws://host/ws or wss://host/ws for the page's own origin. */
export function socketUrl(loc = window.location) {
    return `${loc.protocol === 'https:' ? 'wss:' : 'ws:'}//${loc.host}/ws`;
}
