/*
 * session — who is signed in on this tab: the sign-in (POST /api/register
 * and /api/login for a token on servers with accounts, a bare name on open
 * ones), the credentials `hello` sends ({user} or {token}), kept in
 * sessionStorage with the conversation list so that a reload resumes, the
 * Connection's life (started on sign-in, stopped on sign-out) and the
 * reconnect policy: which refused hellos end the session and which are
 * retried. The chat itself is the controller's; the session attaches the
 * connection to it and hands it the connection's events.
 *
 * The ui port (views.js): loginBusy(), loginFailed(text), passwordUsed(),
 * showChat(), loggedIn(), identity(me), signedOut(reason),
 * connection(state, retryAt) with retryAt 0 unless a retry is scheduled.
 *
 * Thread: the page's.
 */

export const SESSION_KEY = 'parley.session.v1';
const SAVE_SOON_MS = 500;

/* Hello refusals that end a resumed session; others (name_taken while the
 * server still holds our old socket) are retried with backoff. */
const FATAL_HELLO = ['auth_failed', 'bad_request', 'forbidden', 'no_such_user'];

export async function postJson(path, body) {
    const r = await fetch(path, {
        method: 'POST',
        headers: { 'Content-Type': 'application/json' },
        body: JSON.stringify(body),
        credentials: 'same-origin',
    });
    let data = null;
    try {
        data = await r.json();
    } catch (e) {
        /* not JSON: status alone tells */
    }
    return { status: r.status, data };
}

function apiMessage(data, fallback) {
    if (data && typeof data.message === 'string') {
        return data.message;
    }
    if (data && typeof data.error === 'string') {
        return data.error;
    }
    return fallback;
}

/* The server closed the connection because its credentials were revoked. */
export const CLOSE_REVOKED = 4003;

export class Session {
    /*
     * model: the ChatModel (reset per session, saved with it); controller:
     * the ChatController; ui: the port above; connect(handlers) makes a
     * Connection (conn.js); storage() returns the Storage to keep the
     * session in (a function: merely touching a disabled sessionStorage
     * throws); post(path, body) -> {status, data} for the HTTP API.
     */
    constructor({ model, controller, ui, connect, storage = () => globalThis.sessionStorage,
        post = postJson, timers = globalThis }) {
        this.model = model;
        this.controller = controller;
        this.ui = ui;
        this.connect = connect;
        this.storage = storage;
        this.post = post;
        this.timers = timers;
        this.auth = null;          /* {user} or {token} for hello */
        this.conn = null;
        this.loggingIn = false;    /* from the sign-in form until welcome or refusal */
        this.saveTimer = 0;
    }

    /* ---------- storage ---------- */

    save() {
        if (!this.auth) {
            return;
        }
        const data = { auth: this.auth, me: this.model.me, ...this.model.snapshot() };
        try {
            this.storage().setItem(SESSION_KEY, JSON.stringify(data));
        } catch (e) {
            /* storage full or disabled: the tab still works, only reload forgets */
        }
    }

    saveSoon() {
        this.timers.clearTimeout(this.saveTimer);
        this.saveTimer = this.timers.setTimeout(() => this.save(), SAVE_SOON_MS);
    }

    load() {
        try {
            const d = JSON.parse(this.storage().getItem(SESSION_KEY) || 'null');
            if (d && d.auth &&
                (typeof d.auth.user === 'string' || typeof d.auth.token === 'string')) {
                return d;
            }
        } catch (e) {
            /* corrupt: start over */
        }
        return null;
    }

    clear() {
        try {
            this.storage().removeItem(SESSION_KEY);
        } catch (e) {
            /* ignore */
        }
    }

    /* ---------- signing in and out ---------- */

    /* Page load: continue the tab's saved session. Returns its user name
     * ('' if a token session never learnt it), or null if there is none. */
    resume() {
        const saved = this.load();
        if (!saved) {
            return null;
        }
        const me = saved.me || saved.auth.user;
        this.start(saved.auth, me, saved);
        return me || '';
    }

    /* The sign-in form, already checked by the view. A password means the
     * HTTP API (register first if asked), then hello with the token. */
    async logIn({ user, password, register = false, email = '' }) {
        if (this.loggingIn) {
            return;
        }
        this.loggingIn = true;
        this.ui.loginBusy();
        try {
            if (!password) {
                this.start({ user }, user, null);
                return;
            }
            if (register) {
                const body = { user, password };
                if (email) {
                    body.email = email;
                }
                const r = await this.post('/api/register', body);
                if (r.status === 409) {
                    this.loginFailed('That name is already registered.');
                    return;
                }
                if (r.status === 404 || r.status === 405) {
                    this.loginFailed('This server has no accounts: leave the password empty.');
                    return;
                }
                if (r.status !== 201 && r.status !== 200) {
                    this.loginFailed(apiMessage(r.data, `Could not register (HTTP ${r.status}).`));
                    return;
                }
            }
            const r = await this.post('/api/login', { user, password });
            if (r.status === 401 || r.status === 403) {
                this.loginFailed('Wrong name or password.');
                return;
            }
            if (r.status === 404 || r.status === 405) {
                this.loginFailed('This server has no accounts: leave the password empty.');
                return;
            }
            if (r.status !== 200 || !r.data || typeof r.data.token !== 'string') {
                this.loginFailed(apiMessage(r.data, `Could not sign in (HTTP ${r.status}).`));
                return;
            }
            this.ui.passwordUsed();
            this.start({ token: r.data.token }, user, null);
        } catch (e) {
            this.loginFailed('Cannot reach the server.');
        }
    }

    loginFailed(text) {
        this.loggingIn = false;
        this.ui.loginFailed(text);
    }

    start(auth, user, saved) {
        this.auth = auth;
        this.model.reset(user);
        if (saved) {
            this.model.restore(saved);
            this.ui.showChat();
        }
        this.conn = this.connect({
            onState: (state, info) => this.onState(state, info),
            onReady: (welcome, first) => this.onReady(welcome, first),
            onFrame: (f) => this.controller.onFrame(f),
            onHelloError: (err) => this.onHelloError(err),
            onClose: (code) => this.onClose(code),
        });
        this.controller.attach(this.conn);
        this.conn.start(auth);
    }

    signOut(reason) {
        this.controller.detach();
        if (this.conn) {
            this.conn.stop();
            this.conn = null;
        }
        this.clear();
        this.auth = null;
        this.model.reset(null);
        this.loggingIn = false;
        this.ui.signedOut(reason || '');
    }

    /* The user asked to reconnect now. */
    retryNow() {
        if (this.conn) {
            this.conn.retryNow();
        }
    }

    /* The network came back or the tab woke up: check the socket. */
    probe() {
        if (this.conn && !this.conn.stopped) {
            this.conn.probe();
        }
    }

    /* ---------- the connection's events ---------- */

    onState(state, info) {
        const retrying = state === 'disconnected' && !!this.conn && !this.conn.stopped;
        this.ui.connection(state, retrying && info.retryAt ? info.retryAt : 0);
    }

    onReady(welcome, first) {
        this.controller.welcome(welcome);
        if (this.loggingIn) {
            this.loggingIn = false;
            this.ui.loggedIn();
        }
        this.ui.identity(this.model.me);
        this.controller.ready(first);
    }

    /* Returns what conn.js should do: 'stop' or 'retry'. */
    onHelloError(err) {
        if (this.loggingIn) {
            const text = {
                name_taken: 'That name is in use right now. Pick another.',
                auth_failed: 'The server refused this sign-in. If it uses accounts, enter ' +
                    'your password.',
                bad_request: 'The server refused this name.',
            }[err.code] || `Sign-in failed: ${err.message || err.code}`;
            this.loginFailed(text);
            this.controller.detach();
            this.conn = null;
            return 'stop';
        }
        if (FATAL_HELLO.includes(err.code)) {
            this.signOut(err.code === 'auth_failed'
                ? 'Your session has expired. Please sign in again.'
                : `Signed out: ${err.message || err.code}`);
            return 'stop';
        }
        /* name_taken after a network blip: our old socket is still held open on
         * the server until it notices; keep retrying with backoff. */
        return 'retry';
    }

    onClose(code) {
        if (this.loggingIn) {
            if (this.conn) {
                this.conn.stop();
            }
            this.controller.detach();
            this.conn = null;
            this.loginFailed('Cannot reach the chat server.');
            return;
        }
        if (code === CLOSE_REVOKED) {
            /* reconnecting would only be refused: the token is dead */
            this.signOut('You were signed out: your account was deleted or its password '
                + 'changed. Please sign in again.');
            return;
        }
        this.controller.connectionLost(code);
    }
}
