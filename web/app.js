/*
 * app — the parley web client: sign-in, the conversation list, the message
 * view and the composer, glued to one Connection (conn.js) and one
 * Conversation per room or DM (model.js).
 *
 * Rule for the DOM: user data only ever goes through textContent or
 * attributes set one by one; no innerHTML anywhere, so a message such as
 * <img src=x onerror=alert(1)> stays text.
 */
import { Connection, socketUrl } from './conn.js';
import {
    Conversation, codePoints, completions, dmPeer, dmRoom, isValidRoom, isValidUser,
    mentionAt, parseDm, sameGroup, typingText,
} from './model.js';

const SESSION_KEY = 'parley.session.v1';
const ROOMS_REFRESH_MS = 15000;
const TYPING_SEND_MS = 3000;
const TYPING_SHOW_MS = 4000;
const PAGE = 50;
const NEAR_BOTTOM_PX = 48;
const NEAR_TOP_PX = 160;

const $ = (id) => document.getElementById(id);

const S = {
    me: null,
    auth: null,                /* {user} or {token} for hello */
    conn: null,
    convs: new Map(),          /* room name -> Conversation */
    active: null,              /* Conversation */
    publicRooms: [],
    limits: { max_text: 4000, max_frame: 65536 },
    loggingIn: false,
    lastTypingSent: 0,
    roomsTimer: 0,
    typingTimer: 0,
    bannerTimer: 0,
    idPrefix: randomId(8),
    idCounter: 0,
    msgEls: new WeakMap(),     /* Conversation -> Map(key -> li) */
    mention: null,             /* {start, prefix, items, index} while the list is open */
    dmHistory: true,           /* false: the server serves no DM history (open mode) */
};

function randomId(n) {
    const b = new Uint8Array(n);
    crypto.getRandomValues(b);
    return Array.from(b, (x) => (x % 36).toString(36)).join('');
}

function newMessageId() {
    S.idCounter += 1;
    return `${S.idPrefix}-${Date.now().toString(36)}-${S.idCounter}`;
}

/* ---------- small DOM helpers (text only) ---------- */

function el(tag, props = {}, ...children) {
    const e = document.createElement(tag);
    for (const [k, v] of Object.entries(props)) {
        if (v === undefined || v === null || v === false) {
            continue;
        }
        if (k === 'class') {
            e.className = v;
        } else if (k === 'text') {
            e.textContent = v;
        } else if (k === 'dataset') {
            Object.assign(e.dataset, v);
        } else if (k.startsWith('on')) {
            e.addEventListener(k.slice(2), v);
        } else {
            e.setAttribute(k, v === true ? '' : String(v));
        }
    }
    for (const c of children) {
        if (c !== null && c !== undefined && c !== false) {
            e.append(c);
        }
    }
    return e;
}

/*
 * Make parent's children exactly `nodes`, in order, moving as few as
 * possible so that appends and prepends do not disturb focus or selection.
 */
function syncChildren(parent, nodes) {
    let cur = parent.firstChild;
    for (const n of nodes) {
        if (cur === n) {
            cur = cur.nextSibling;
        } else {
            parent.insertBefore(n, cur);
        }
    }
    while (cur) {
        const next = cur.nextSibling;
        parent.removeChild(cur);
        cur = next;
    }
}

const timeFmt = new Intl.DateTimeFormat(undefined, { hour: '2-digit', minute: '2-digit' });
const dayFmt = new Intl.DateTimeFormat(undefined,
    { weekday: 'long', year: 'numeric', month: 'long', day: 'numeric' });

/* A stable hue per name so authors are told apart at a glance. */
function hueOf(name) {
    let h = 0;
    for (let i = 0; i < name.length; i++) {
        h = (h * 31 + name.charCodeAt(i)) >>> 0;
    }
    return h % 360;
}

/* ---------- session (per tab) ---------- */

function saveSession() {
    if (!S.auth) {
        return;
    }
    const convs = [...S.convs.values()].map((c) => ({ name: c.name, read: c.readSeq }));
    const data = { auth: S.auth, me: S.me, convs, active: S.active ? S.active.name : null };
    try {
        sessionStorage.setItem(SESSION_KEY, JSON.stringify(data));
    } catch (e) {
        /* storage full or disabled: the tab still works, only reload forgets */
    }
}

function loadSession() {
    try {
        const d = JSON.parse(sessionStorage.getItem(SESSION_KEY) || 'null');
        if (d && d.auth && (typeof d.auth.user === 'string' || typeof d.auth.token === 'string')) {
            return d;
        }
    } catch (e) {
        /* corrupt: start over */
    }
    return null;
}

function clearSession() {
    try {
        sessionStorage.removeItem(SESSION_KEY);
    } catch (e) {
        /* ignore */
    }
}

/* ---------- sign-in ---------- */

let registerMode = false;

function setRegisterMode(on) {
    registerMode = on;
    $('email-row').hidden = !on;
    $('login-submit').textContent = on ? 'Create account' : 'Sign in';
    $('register-hint').textContent = on ? 'Have an account?' : 'No account yet?';
    $('register-toggle').textContent = on ? 'Sign in instead' : 'Create one';
    $('login-password').setAttribute('autocomplete', on ? 'new-password' : 'current-password');
    $('pw-note').textContent = on ? 'Needed for an account.' : 'Leave empty on open servers.';
    $('login-error').textContent = '';
}

function loginError(text) {
    $('login-error').textContent = text;
    S.loggingIn = false;
    $('login-submit').disabled = false;
    $('login-submit').removeAttribute('aria-busy');
}

async function postJson(path, body) {
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

async function onLoginSubmit(ev) {
    ev.preventDefault();
    if (S.loggingIn) {
        return;
    }
    const user = $('login-user').value.trim();
    const password = $('login-password').value;
    if (!isValidUser(user)) {
        $('login-error').textContent =
            'Names are 1 to 32 letters, digits, “_”, “.” or “-”.';
        $('login-user').focus();
        return;
    }
    if (registerMode && !password) {
        $('login-error').textContent = 'Choose a password for your account.';
        $('login-password').focus();
        return;
    }
    S.loggingIn = true;
    $('login-error').textContent = '';
    $('login-submit').disabled = true;
    $('login-submit').setAttribute('aria-busy', 'true');
    try {
        if (!password) {
            startSession({ user }, user, null);
            return;
        }
        if (registerMode) {
            const body = { user, password };
            const email = $('login-email').value.trim();
            if (email) {
                body.email = email;
            }
            const r = await postJson('/api/register', body);
            if (r.status === 409) {
                loginError('That name is already registered.');
                return;
            }
            if (r.status === 404 || r.status === 405) {
                loginError('This server has no accounts: leave the password empty.');
                return;
            }
            if (r.status !== 201 && r.status !== 200) {
                loginError(apiMessage(r.data, `Could not register (HTTP ${r.status}).`));
                return;
            }
        }
        const r = await postJson('/api/login', { user, password });
        if (r.status === 401 || r.status === 403) {
            loginError('Wrong name or password.');
            return;
        }
        if (r.status === 404 || r.status === 405) {
            loginError('This server has no accounts: leave the password empty.');
            return;
        }
        if (r.status !== 200 || !r.data || typeof r.data.token !== 'string') {
            loginError(apiMessage(r.data, `Could not sign in (HTTP ${r.status}).`));
            return;
        }
        $('login-password').value = '';
        startSession({ token: r.data.token }, user, null);
    } catch (e) {
        loginError('Cannot reach the server.');
    }
}

/* ---------- connection lifecycle ---------- */

function startSession(auth, user, saved) {
    S.auth = auth;
    S.me = user;
    S.convs.clear();
    S.active = null;
    S.dmHistory = true;
    if (saved) {
        for (const c of saved.convs || []) {
            if (typeof c.name !== 'string' || (!isValidRoom(c.name) && !parseDm(c.name))) {
                continue;
            }
            const conv = new Conversation(c.name, user);
            conv.readSeq = Number.isSafeInteger(c.read) ? c.read : 0;
            S.convs.set(c.name, conv);
        }
        S.active = (saved.active && S.convs.get(saved.active)) || null;
        showChat();
    }
    S.conn = new Connection(socketUrl(), {
        onState, onReady, onFrame, onHelloError, onClose,
    });
    S.conn.start(auth);
}

function onHelloError(err) {
    const fatal = ['auth_failed', 'bad_request', 'forbidden', 'no_such_user'];
    if (S.loggingIn) {
        const text = {
            name_taken: 'That name is in use right now. Pick another.',
            auth_failed: 'The server refused this sign-in. If it uses accounts, enter ' +
                'your password.',
            bad_request: 'The server refused this name.',
        }[err.code] || `Sign-in failed: ${err.message || err.code}`;
        loginError(text);
        S.conn = null;
        return 'stop';
    }
    if (fatal.includes(err.code)) {
        signOut(err.code === 'auth_failed' ? 'Your session has expired. Please sign in again.'
            : `Signed out: ${err.message || err.code}`);
        return 'stop';
    }
    /* name_taken after a network blip: our old socket is still held open on
     * the server until it notices; keep retrying with backoff. */
    return 'retry';
}

function onClose(code) {
    if (S.loggingIn) {
        S.conn && S.conn.stop();
        S.conn = null;
        loginError('Cannot reach the chat server.');
        return;
    }
    const why = {
        1001: 'The server is restarting; reconnecting…',
        1008: 'The server refused the connection (policy).',
        1009: 'A message was too large for the server.',
        1013: 'The server is overloaded; retrying shortly.',
        4008: 'The connection fell behind and was reset; reconnecting…',
        4029: 'Disconnected for sending too fast; reconnecting shortly.',
    }[code];
    if (why) {
        showBanner(why);
    }
    for (const c of S.convs.values()) {
        c.typing.clear();
        c.joined = false;
    }
    renderTyping();
}

let countdownTimer = 0;

function onState(state, info) {
    const st = $('status');
    st.dataset.state = state;
    st.textContent = { connected: 'connected', connecting: 'connecting…' }[state] ||
        'disconnected';
    const retry = $('reconnect');
    clearInterval(countdownTimer);
    if (state === 'disconnected' && info.retryAt && S.conn && !S.conn.stopped) {
        retry.hidden = false;
        const tick = () => {
            const s = Math.max(0, Math.ceil((info.retryAt - Date.now()) / 1000));
            retry.textContent = s > 0 ? `retry now (${s} s)` : 'retry now';
        };
        tick();
        countdownTimer = setInterval(tick, 1000);
    } else {
        retry.hidden = true;
    }
    renderComposerState();
}

function onReady(welcome, first) {
    if (typeof welcome.user === 'string' && welcome.user) {
        S.me = welcome.user;
    }
    const lim = welcome.limits || {};
    if (Number.isSafeInteger(lim.max_text) && lim.max_text > 0) {
        S.limits.max_text = lim.max_text;
    }
    if (Number.isSafeInteger(lim.max_frame) && lim.max_frame > 0) {
        S.limits.max_frame = lim.max_frame;
    }
    if (S.loggingIn) {
        S.loggingIn = false;
        $('login-submit').disabled = false;
        $('login-submit').removeAttribute('aria-busy');
        setRegisterMode(false);
        showChat();
    }
    $('me-name').textContent = S.me;
    saveSession();
    hideBanner(true);
    resync();
    refreshRooms();
    clearInterval(S.roomsTimer);
    S.roomsTimer = setInterval(refreshRooms, ROOMS_REFRESH_MS);
    if (first && !S.active) {
        renderAll();
    }
}

/* After every (re)connect: rejoin rooms from where we were, reload DMs,
 * then resend whatever was never acknowledged (ids make that safe). */
function resync() {
    for (const c of S.convs.values()) {
        if (c.kind === 'room') {
            joinRoom(c.name, { since: c.maxSeq() || undefined, activate: false, rejoin: true });
        } else {
            loadLatest(c);
        }
    }
}

function resendPending(c) {
    for (const p of c.pending) {
        if (p.state === 'sending') {
            transmit(c, p);
        }
    }
}

function signOut(reason) {
    clearInterval(S.roomsTimer);
    if (S.conn) {
        S.conn.stop();
        S.conn = null;
    }
    clearSession();
    S.auth = null;
    S.me = null;
    S.convs.clear();
    S.active = null;
    S.loggingIn = false;
    $('chat-view').hidden = true;
    $('login-view').hidden = false;
    $('login-submit').disabled = false;
    $('login-error').textContent = reason || '';
    $('login-user').focus();
}

/* ---------- requests ---------- */

function convFor(name) {
    let c = S.convs.get(name);
    if (!c) {
        c = new Conversation(name, S.me);
        S.convs.set(name, c);
    }
    return c;
}

async function joinRoom(name, { since, activate = true, rejoin = false } = {}) {
    const isNew = !S.convs.has(name);
    const c = convFor(name);
    if (activate) {
        setActive(c);
    }
    const req = { type: 'join', room: name, limit: PAGE };
    if (since) {
        req.since = since;
        req.limit = 200;
    }
    try {
        const j = await S.conn.requestRetrying(req);
        c.joined = true;
        if (Array.isArray(j.members)) {
            c.members = new Set(j.members.filter((u) => typeof u === 'string'));
        }
        if (since && Number.isSafeInteger(j.seq) && j.seq < c.maxSeq()) {
            /* The server's room is behind what we hold: its database was
             * replaced. Our copy is meaningless now; start over from its. */
            c.reset();
        }
        const hadAny = c.msgs.length > 0;
        if (Number.isSafeInteger(j.seq) && j.seq > c.latestSeq) {
            c.latestSeq = j.seq;
        }
        c.merge(j.history, S.me);
        if (!hadAny) {
            c.more = c.msgs.length ? c.oldestSeq() > 1 : c.latestSeq > 0;
            /* A room joined just now starts read; one restored from the
             * session keeps its read mark so the badge shows what is new. */
            if (c.readSeq === 0) {
                c.readSeq = c.latestSeq;
            }
        }
        saveSession();
        fillGaps(c);
        resendPending(c);
        render(c);
        renderSidebar();
        if (c === S.active) {
            renderMembers();
        }
        if (activate || rejoin) {
            refreshRooms();
        }
    } catch (err) {
        if (err.code === 'disconnected') {
            return; /* resync will retry */
        }
        if (isNew) {
            S.convs.delete(name);
            if (S.active === c) {
                S.active = null;
                setActive([...S.convs.values()][0] || null);
            }
        }
        showBanner(`Cannot join ${name}: ${errorText(err)}`);
        saveSession();
        renderAll();
    }
}

async function leaveRoom(c) {
    if (c.kind === 'room' && S.conn && S.conn.connected) {
        try {
            await S.conn.request({ type: 'leave', room: c.name });
        } catch (err) {
            if (err.code !== 'not_joined' && err.code !== 'disconnected') {
                showBanner(`Cannot leave ${c.name}: ${errorText(err)}`);
                return;
            }
        }
    }
    S.convs.delete(c.name);
    if (S.active === c) {
        S.active = null;
        setActive([...S.convs.values()][0] || null);
    }
    saveSession();
    renderAll();
    refreshRooms();
}

/* DMs need no join: show the latest page of the conversation. */
async function loadLatest(c) {
    try {
        const r = await S.conn.requestRetrying({ type: 'history', room: c.name, limit: PAGE });
        const hadAny = c.msgs.length > 0;
        c.merge(r.messages, S.me);
        if (!hadAny) {
            c.more = !!r.more;
        }
        fillGaps(c);
        render(c);
        renderSidebar();
    } catch (err) {
        if (err.code !== 'disconnected') {
            noteDmHistory(c, err);
            c.more = false;
            render(c);
        }
    }
    resendPending(c);
}

/* A `forbidden` on the history of our own DM room means the server keeps
 * none to give (open mode: whoever holds a name may not be who held it when
 * the DMs were sent), not an error to show: stop asking. */
function noteDmHistory(c, err) {
    if (c.kind === 'dm' && err.code === 'forbidden') {
        S.dmHistory = false;
        c.more = false;
        return true;
    }
    return false;
}

async function loadOlder(c) {
    if (!c || c.loadingOlder || !c.more || !S.conn || !S.conn.connected) {
        return;
    }
    c.loadingOlder = true;
    renderOlder(c);
    const before = c.oldestSeq();
    const req = { type: 'history', room: c.name, limit: PAGE };
    if (before) {
        req.before = before;
    }
    try {
        const r = await S.conn.requestRetrying(req);
        const added = c.merge(r.messages, S.me);
        /* `added` guards against a server saying more:true with nothing new. */
        c.more = !!r.more && added > 0 && c.oldestSeq() > 1;
    } catch (err) {
        if (err.code !== 'disconnected' && !noteDmHistory(c, err)) {
            c.more = false;
            showBanner(`Cannot load older messages: ${errorText(err)}`);
        }
    }
    c.loadingOlder = false;
    render(c, { keepBottomDistance: true });
}

/* Fetch holes in the seq sequence, one request at a time. */
async function fillGaps(c) {
    if (c.gapBusy || !S.conn || !S.conn.connected) {
        return;
    }
    const g = c.findGap();
    if (!g) {
        return;
    }
    if (g.drop) {
        c.dropBelow(g.drop);
        render(c);
        fillGaps(c);
        return;
    }
    c.gapBusy = true;
    try {
        const r = await S.conn.requestRetrying({ type: 'history', room: c.name, before: g.before,
            limit: g.limit });
        const added = c.merge(r.messages, S.me);
        if (!added) {
            c.gapFloor = Math.max(c.gapFloor, g.before); /* nothing there: stop asking */
        }
    } catch (err) {
        noteDmHistory(c, err);
        c.gapFloor = Math.max(c.gapFloor, g.before);
    }
    c.gapBusy = false;
    render(c);
    renderSidebar();
    fillGaps(c);
}

async function refreshRooms() {
    if (!S.conn || !S.conn.connected) {
        return;
    }
    try {
        const r = await S.conn.request({ type: 'rooms' });
        S.publicRooms = (Array.isArray(r.rooms) ? r.rooms : [])
            .filter((x) => x && typeof x.name === 'string');
        renderPublic();
    } catch (err) {
        /* the next tick retries */
    }
}

async function refreshMembers(c) {
    /* Only once joined: a `who` racing our own join would miss ourselves. */
    if (!c || c.kind !== 'room' || !c.joined || !S.conn || !S.conn.connected) {
        return;
    }
    try {
        const r = await S.conn.request({ type: 'who', room: c.name });
        if (Array.isArray(r.users)) {
            c.members = new Set(r.users.filter((u) => typeof u === 'string'));
            if (c === S.active) {
                renderMembers();
            }
        }
    } catch (err) {
        /* keep what we have */
    }
}

function openDm(peer) {
    if (!isValidUser(peer)) {
        showBanner(`“${peer}” is not a valid name.`);
        return null;
    }
    if (peer === S.me) {
        showBanner('You cannot message yourself.');
        return null;
    }
    const name = dmRoom(S.me, peer);
    const isNew = !S.convs.has(name);
    const c = convFor(name);
    setActive(c);
    if (isNew) {
        saveSession();
        if (S.conn && S.conn.connected) {
            loadLatest(c);
        }
    }
    renderAll();
    return c;
}

/* ---------- sending ---------- */

function errorText(err) {
    switch (err.code) {
    case 'rate_limited': {
        const ms = err.frame && Number.isFinite(err.frame.retry_after_ms)
            ? err.frame.retry_after_ms : 0;
        return `you are sending too fast; try again in ${(ms / 1000).toFixed(1)} s`;
    }
    case 'too_large':
        return 'the message is too long';
    case 'not_joined':
        return 'you are not in that room';
    case 'no_such_user':
        /* the server says why (open mode: the user is not online now) */
        return err.message || 'no such user';
    case 'forbidden':
        return 'not allowed';
    case 'timeout':
        return 'the server did not answer';
    case 'shutting_down':
        return 'the server is shutting down';
    default:
        return err.message || err.code || 'unknown error';
    }
}

function transmit(c, p) {
    p.state = 'sending';
    p.error = null;
    if (!S.conn || !S.conn.connected || (c.kind === 'room' && !c.joined)) {
        return; /* stays pending; the (re)join sends it */
    }
    const req = c.kind === 'dm' ? { type: 'dm', to: c.peer, text: p.text, id: p.id }
        : { type: 'send', room: c.name, text: p.text, id: p.id };
    S.conn.request(req).then((ack) => {
        if (Number.isSafeInteger(ack.seq)) {
            c.ack(p.id, ack.seq, S.me);
        }
        render(c);
        if (c.kind === 'dm') {
            renderSidebar();
        }
    }, (err) => {
        if (err.code === 'disconnected' || !c.findPending(p.id)) {
            return;
        }
        if (err.code === 'timeout') {
            return; /* unknown fate: keep pending, a resend with the id is safe */
        }
        p.state = 'failed';
        p.error = errorText(err);
        if (err.code === 'rate_limited' && err.frame && Number.isFinite(err.frame.retry_after_ms)) {
            p.retryAfter = Date.now() + err.frame.retry_after_ms;
        }
        render(c);
        showBanner(`Message not sent: ${p.error}.`);
    });
}

function handleCommand(text) {
    const m = /^\/(\S+)\s*([\s\S]*)$/.exec(text);
    const cmd = m ? m[1].toLowerCase() : '';
    const arg = m ? m[2].trim() : '';
    if (cmd === 'join') {
        const name = arg.replace(/^#/, '');
        if (!isValidRoom(name)) {
            showBanner('Usage: /join ROOM (letters, digits, _ . -)');
            return false;
        }
        joinRoom(name);
        return true;
    }
    if (cmd === 'leave' || cmd === 'part') {
        const c = arg ? S.convs.get(arg.replace(/^#/, '')) : S.active;
        if (!c) {
            showBanner('Not in that room.');
            return false;
        }
        leaveRoom(c);
        return true;
    }
    if (cmd === 'dm' || cmd === 'msg') {
        const dm = /^@?(\S+)\s*([\s\S]*)$/.exec(arg);
        if (!dm) {
            showBanner('Usage: /dm NAME [TEXT]');
            return false;
        }
        const c = openDm(dm[1]);
        if (c && dm[2]) {
            return sendTo(c, dm[2]);
        }
        return !!c;
    }
    if (cmd === 'help') {
        showBanner('Commands: /join ROOM · /leave [ROOM] · /dm NAME [TEXT]. ' +
            'Start a line with // to send a literal slash.', 15000);
        return true;
    }
    showBanner(`Unknown command “/${cmd}”. Try /help.`);
    return false;
}

function sendTo(c, text) {
    const n = codePoints(text);
    if (n > S.limits.max_text) {
        showBanner(`Message too long: ${n} characters, the limit is ${S.limits.max_text}.`);
        return false;
    }
    const id = newMessageId();
    /* Worst case JSON escaping is 6 bytes per UTF-16 unit; only check
     * precisely when that could exceed the frame limit. */
    if (text.length * 6 + 200 > S.limits.max_frame) {
        const bytes = new TextEncoder().encode(JSON.stringify(
            { type: 'send', room: c.name, text, id, ref: 999999 })).length;
        if (bytes > S.limits.max_frame) {
            showBanner('Message too large for the server.');
            return false;
        }
    }
    const p = c.addPending(id, S.me, text);
    S.lastTypingSent = 0; /* our message ends the others' indicator; typing again is news */
    transmit(c, p);
    render(c, { toBottom: true });
    return true;
}

function onComposerSubmit(ev) {
    ev.preventDefault();
    const box = $('composer');
    let text = box.value;
    if (!text.trim()) {
        return;
    }
    let ok;
    if (text.startsWith('//')) {
        text = text.slice(1);
        ok = S.active ? sendTo(S.active, text) : false;
    } else if (text.startsWith('/')) {
        ok = handleCommand(text.trim());
    } else if (S.active) {
        ok = sendTo(S.active, text);
    } else {
        showBanner('Join a room first.');
        ok = false;
    }
    if (ok) {
        box.value = '';
        closeMention();
        autosize();
    }
}

function onComposerInput() {
    autosize();
    updateMention();
    const c = S.active;
    const now = Date.now();
    if (c && c.kind === 'room' && c.joined && $('composer').value.trim() &&
        !$('composer').value.startsWith('/') && now - S.lastTypingSent >= TYPING_SEND_MS &&
        S.conn && S.conn.connected) {
        S.lastTypingSent = now;
        /* The fixed ref lets onFrame drop errors about it (e.g. not_joined
         * in the moment after a reconnect): a hint is not worth a banner. */
        S.conn.send({ type: 'typing', room: c.name, ref: 'typing' });
    }
}

function autosize() {
    const box = $('composer');
    box.style.height = 'auto';
    box.style.height = `${Math.min(box.scrollHeight + 2, 200)}px`;
}

function onComposerKey(ev) {
    const mn = S.mention;
    if (mn && mn.items.length) {
        if (ev.key === 'ArrowDown' || ev.key === 'ArrowUp') {
            ev.preventDefault();
            const d = ev.key === 'ArrowDown' ? 1 : -1;
            mn.index = (mn.index + d + mn.items.length) % mn.items.length;
            renderMention();
            return;
        }
        if ((ev.key === 'Tab' && !ev.shiftKey) || (ev.key === 'Enter' && !ev.shiftKey)) {
            ev.preventDefault();
            acceptMention(mn.items[mn.index]);
            return;
        }
        if (ev.key === 'Escape') {
            ev.preventDefault();
            closeMention();
            return;
        }
    }
    if (ev.key === 'Enter' && !ev.shiftKey && !ev.isComposing && !ev.altKey &&
        !ev.ctrlKey && !ev.metaKey) {
        ev.preventDefault();
        $('composer-form').requestSubmit();
    }
}

/* ---------- @mention completion ---------- */

function mentionNames(c) {
    const names = [...c.members];
    if (c.peer) {
        names.push(c.peer);
    }
    for (let i = c.msgs.length - 1, n = 0; i >= 0 && n < 200; i--, n++) {
        names.push(c.msgs[i].from);
    }
    return names;
}

function updateMention() {
    const box = $('composer');
    const c = S.active;
    if (!c || box.selectionStart !== box.selectionEnd) {
        closeMention();
        return;
    }
    const at = mentionAt(box.value, box.selectionStart);
    if (!at) {
        closeMention();
        return;
    }
    const items = completions(mentionNames(c), at.prefix, S.me);
    if (!items.length) {
        closeMention();
        return;
    }
    const keep = S.mention && S.mention.items[S.mention.index];
    const index = Math.max(0, items.indexOf(keep));
    S.mention = { start: at.start, prefix: at.prefix, items, index };
    renderMention();
}

function renderMention() {
    const mn = S.mention;
    const list = $('mention-list');
    const box = $('composer');
    list.replaceChildren(...mn.items.map((name, i) => el('li', {
        id: `mention-${i}`,
        role: 'option',
        class: i === mn.index ? 'selected' : '',
        'aria-selected': i === mn.index ? 'true' : 'false',
        text: `@${name}`,
        onmousedown: (e) => {
            e.preventDefault(); /* keep focus in the composer */
            acceptMention(name);
        },
    })));
    list.hidden = false;
    box.setAttribute('aria-expanded', 'true');
    box.setAttribute('aria-activedescendant', `mention-${mn.index}`);
}

function closeMention() {
    S.mention = null;
    $('mention-list').hidden = true;
    $('composer').setAttribute('aria-expanded', 'false');
    $('composer').removeAttribute('aria-activedescendant');
}

function acceptMention(name) {
    const box = $('composer');
    const mn = S.mention;
    if (!mn) {
        return;
    }
    const end = mn.start + 1 + mn.prefix.length;
    const insert = `@${name} `;
    box.value = box.value.slice(0, mn.start) + insert + box.value.slice(end);
    const caret = mn.start + insert.length;
    box.setSelectionRange(caret, caret);
    closeMention();
    autosize();
}

/* ---------- incoming events ---------- */

function onFrame(f) {
    switch (f.type) {
    case 'message':
        onMessage(f);
        break;
    case 'presence': {
        const c = S.convs.get(f.room);
        if (!c || typeof f.user !== 'string') {
            break;
        }
        if (f.event === 'join') {
            c.members.add(f.user);
        } else if (f.event === 'leave') {
            c.members.delete(f.user);
            c.typing.delete(f.user);
        }
        if (c === S.active) {
            renderMembers();
            renderTyping();
        }
        break;
    }
    case 'typing': {
        const c = S.convs.get(f.room);
        if (!c || typeof f.user !== 'string' || f.user === S.me) {
            break;
        }
        c.typing.set(f.user, Date.now() + TYPING_SHOW_MS);
        if (c === S.active) {
            renderTyping();
        }
        break;
    }
    case 'joined': {
        /* Unrequested join (e.g. ?room= on the URL): adopt it. */
        const c = convFor(f.room);
        c.joined = true;
        c.members = new Set(Array.isArray(f.members) ? f.members : []);
        c.merge(f.history, S.me);
        c.readSeq = Math.max(c.readSeq, c.maxSeq());
        renderAll();
        break;
    }
    case 'error':
        if (f.ref === 'typing') {
            break;
        }
        if (f.code === 'shutting_down') {
            showBanner('The server is restarting; reconnecting…');
        } else {
            showBanner(`Server: ${errorText({ code: f.code, message: f.message, frame: f })}`);
        }
        break;
    default:
        break; /* unknown events are ignored: newer servers may add some */
    }
}

function onMessage(m) {
    if (typeof m.room !== 'string') {
        return;
    }
    let c = S.convs.get(m.room);
    if (!c) {
        if (!dmPeer(m.room, S.me)) {
            return; /* a room we left while the message was in flight */
        }
        c = convFor(m.room);
        c.readSeq = Math.max(0, (m.seq || 1) - 1);
        c.more = m.seq > 1 && S.dmHistory;
        saveSession();
    }
    const prevMax = c.maxSeq();
    const added = c.merge([m], S.me);
    c.typing.delete(m.from);
    if (c !== S.active || isAtBottom()) {
        c.trim(); /* a busy room left open for hours must not grow without bound */
    }
    if (added && m.from !== S.me && c === S.active && m.seq > prevMax) {
        announce(`${m.from}: ${m.text.slice(0, 200)}`);
    }
    if (prevMax && m.seq > prevMax + 1) {
        fillGaps(c);
    }
    render(c);
    renderSidebar();
    if (c === S.active) {
        renderTyping();
    }
}

/* ---------- rendering ---------- */

function showChat() {
    $('login-view').hidden = true;
    $('chat-view').hidden = false;
    $('me-name').textContent = S.me || '';
    renderAll();
}

function renderAll() {
    renderSidebar();
    renderPublic();
    renderHeader();
    renderMembers();
    renderTyping();
    renderComposerState();
    if (S.active) {
        render(S.active, { toBottom: true });
    } else {
        syncChildren($('messages'), []);
        $('empty').hidden = false;
        $('empty-join').hidden = false;
        $('empty-text').textContent = 'Pick a room, or make a new one by giving it a name.';
        $('load-older').hidden = true;
        $('older-note').textContent = '';
        $('jump').hidden = true;
    }
}

function setActive(c) {
    if (S.active === c) {
        return;
    }
    closeMention();
    S.active = c;
    saveSession();
    closePanels();
    if (c) {
        refreshMembers(c);
    }
    renderAll();
}

function isNarrow() {
    return window.matchMedia('(max-width: 760px)').matches;
}

function sigil(c) {
    return el('span', { class: 'sigil', 'aria-hidden': 'true', text: c.kind === 'dm' ? '@' : '#' });
}

function convButton(c) {
    const label = c.kind === 'dm' ? c.peer : c.name;
    const b = el('button', { type: 'button', class: 'conv', onclick: () => {
        setActive(c);
        closePanels();
        $('composer').focus();
    } });
    b.append(sigil(c), el('span', { class: 'name', text: label }),
        el('span', { class: 'badge', hidden: true }));
    return b;
}

const convEls = new Map(); /* room name -> li */

function renderSidebar() {
    const rooms = [];
    const dms = [];
    let total = 0;
    for (const c of [...S.convs.values()].sort((a, b) => a.name.localeCompare(b.name))) {
        let li = convEls.get(c.name);
        if (!li || li.conv !== c) {
            li = el('li');
            li.conv = c;
            li.append(convButton(c));
            const label = c.kind === 'dm' ? `Close conversation with ${c.peer}` : `Leave ${c.name}`;
            li.append(el('button', { type: 'button', class: 'icon-btn small close', title: label,
                'aria-label': label, onclick: () => leaveRoom(c), text: '×' }));
            convEls.set(c.name, li);
        }
        const b = li.firstChild;
        const n = c === S.active && !document.hidden ? 0 : c.unread(S.me);
        total += n;
        const badge = b.querySelector('.badge');
        badge.hidden = n === 0;
        badge.textContent = n > 99 ? '99+' : String(n);
        const who = c.kind === 'dm' ? `conversation with ${c.peer}` : `room ${c.name}`;
        b.setAttribute('aria-label', n ? `${who}, ${n} unread` : who);
        if (c === S.active) {
            b.setAttribute('aria-current', 'page');
        } else {
            b.removeAttribute('aria-current');
        }
        b.classList.toggle('unread', n > 0);
        (c.kind === 'dm' ? dms : rooms).push(li);
    }
    for (const name of [...convEls.keys()]) {
        if (!S.convs.has(name)) {
            convEls.delete(name);
        }
    }
    syncChildren($('room-list'), rooms.length ? rooms : [emptyItem('No rooms yet.')]);
    syncChildren($('dm-list'), dms.length ? dms
        : [emptyItem('Nobody yet: pick a member to message them.')]);
    const sb = $('sidebar-unread');
    sb.hidden = total === 0;
    sb.textContent = total > 99 ? '99+' : String(total);
    document.title = total ? `(${total}) parley` : 'parley';
}

const emptyItems = new Map();

function emptyItem(text) {
    if (!emptyItems.has(text)) {
        emptyItems.set(text, el('li', { class: 'none', text }));
    }
    return emptyItems.get(text);
}

function renderPublic() {
    const items = S.publicRooms
        .filter((r) => !S.convs.has(r.name) && isValidRoom(r.name))
        .sort((a, b) => (b.members || 0) - (a.members || 0) || a.name.localeCompare(b.name))
        .slice(0, 50)
        .map((r) => {
            const n = Number.isSafeInteger(r.members) ? r.members : 0;
            const b = el('button', { type: 'button', class: 'conv',
                'aria-label': `Join ${r.name}, ${n} online`, onclick: () => joinRoom(r.name) },
            el('span', { class: 'sigil', 'aria-hidden': 'true', text: '#' }),
            el('span', { class: 'name', text: r.name }),
            el('span', { class: 'count', 'aria-hidden': 'true', text: String(n) }));
            return el('li', {}, b);
        });
    const list = $('public-list');
    /* Keep focus if the user was on this list: rebuilding would drop it. */
    if (list.contains(document.activeElement)) {
        return;
    }
    syncChildren(list, items.length ? items : [emptyItem('No other public rooms.')]);
}

function renderHeader() {
    const c = S.active;
    const t = $('room-title');
    t.textContent = '';
    if (!c) {
        t.textContent = 'No room';
    } else {
        t.append(sigil(c), c.kind === 'dm' ? c.peer : c.name);
    }
    $('composer-label').textContent = c ? `Message ${c.kind === 'dm' ? c.peer : `#${c.name}`}`
        : 'Message';
    $('composer').placeholder = c ? (c.kind === 'dm' ? `Message @${c.peer}` : `Message #${c.name}`)
        : 'Join a room to talk';
}

function renderComposerState() {
    const on = !!S.active;
    $('composer').disabled = !on;
    $('send').disabled = !on;
}

function renderMembers() {
    const c = S.active;
    const list = $('members');
    let names = [];
    if (c && c.kind === 'room') {
        names = [...c.members].sort((a, b) => a.localeCompare(b));
    } else if (c) {
        names = [S.me, c.peer].sort();
    }
    $('members-count').textContent = names.length ? `(${names.length})` : '';
    const focusedName = list.contains(document.activeElement)
        ? document.activeElement.dataset.user : null;
    const items = names.map((u) => {
        const online = c && c.kind === 'room' ? true : null;
        const dot = el('span',
            { class: `presence${online ? ' online' : ''}`, 'aria-hidden': 'true' });
        if (u === S.me) {
            return el('li', {}, el('span', { class: 'member self' }, dot,
                el('span', { class: 'name', text: u }),
                el('span', { class: 'note', text: ' (you)' })));
        }
        const b = el('button', { type: 'button', class: 'member', dataset: { user: u },
            title: `Message ${u}`, 'aria-label': `${u}${online ? ', online' : ''}: send a message`,
            onclick: () => {
                openDm(u);
                $('composer').focus();
            } }, dot, el('span', { class: 'name', text: u }));
        return el('li', {}, b);
    });
    list.replaceChildren(...items);
    if (focusedName) {
        const b = [...list.querySelectorAll('button')].find((x) => x.dataset.user === focusedName);
        b && b.focus();
    }
}

function renderTyping() {
    const c = S.active;
    const now = Date.now();
    const who = c ? c.activeTypists(now) : [];
    $('typing').textContent = typingText(who);
    clearTimeout(S.typingTimer);
    if (who.length) {
        const next = Math.min(...who.map((u) => c.typing.get(u))) - now;
        S.typingTimer = setTimeout(renderTyping, Math.max(100, next + 20));
    }
}

function renderOlder(c) {
    const btn = $('load-older');
    btn.hidden = !c.more || c.loadingOlder;
    $('older-note').textContent = c.loadingOlder ? 'Loading older messages…'
        : c.kind === 'dm' && !S.dmHistory
            ? 'This server keeps no DM history: you see what arrives while you are online.'
            : (!c.more && c.msgs.length ? 'This is the beginning of the conversation.' : '');
}

function messageItem(c, m, grouped, pending) {
    const li = el('li', { 'data-testid': 'message', class: 'msg' });
    li.style.setProperty('--hue', String(hueOf(m.from)));
    const meta = el('div', { class: 'meta' });
    const d = new Date(m.ts);
    meta.append(el('span', { class: 'author', text: m.from }), ' ',
        el('time', { datetime: d.toISOString(), title: d.toLocaleString(),
            text: timeFmt.format(d) }));
    const text = el('div', { class: 'text' });
    text.textContent = m.text;
    li.append(meta, text);
    li.classList.toggle('cont', grouped);
    li.classList.toggle('mine', m.from === S.me);
    if (S.me && m.from !== S.me && new RegExp(`(^|\\W)@${escapeRe(S.me)}(\\W|$)`).test(m.text)) {
        li.classList.add('mention');
    }
    if (pending) {
        li.classList.add(pending.state === 'failed' ? 'failed' : 'pending');
        const st = el('div', { class: 'state' });
        if (pending.state === 'failed') {
            const retry = () => {
                transmit(c, pending);
                render(c);
            };
            const discard = () => {
                c.dropPending(pending.id);
                render(c);
                $('composer').focus();
            };
            st.append(el('span', { text: `Not sent: ${pending.error}. ` }),
                el('button', { type: 'button', class: 'link small', text: 'Retry',
                    onclick: retry }),
                ' ',
                el('button', { type: 'button', class: 'link small', text: 'Discard',
                    onclick: discard }));
        } else {
            st.append(el('span', { text: 'sending…' }));
        }
        li.append(st);
    } else {
        li.dataset.seq = String(m.seq);
    }
    return li;
}

function escapeRe(s) {
    return s.replace(/[.*+?^${}()|[\]\\]/g, '\\$&');
}

function dayItem(cache, ts) {
    const d = new Date(ts);
    const key = `d${d.toDateString()}`;
    let li = cache.get(key);
    if (!li) {
        li = el('li', { class: 'day', role: 'separator' }, el('span', { text: dayFmt.format(d) }));
        cache.set(key, li);
    }
    return li;
}

/*
 * Render conversation c if it is the active one. Elements are cached by
 * key (seq, pending id, day) and reused while their look is unchanged, so
 * appending or prepending moves nothing else.
 */
function render(c, { toBottom = false, keepBottomDistance = false } = {}) {
    if (c !== S.active) {
        renderSidebar();
        return;
    }
    const sc = $('scroller');
    const fromBottom = sc.scrollHeight - sc.scrollTop - sc.clientHeight;
    const atBottom = fromBottom < NEAR_BOTTOM_PX;

    let cache = S.msgEls.get(c);
    if (!cache) {
        cache = new Map();
        S.msgEls.set(c, cache);
    }
    const nodes = [];
    const used = new Set();
    let prev = null;
    const pushMsg = (m, pending) => {
        if (!prev || new Date(prev.ts).toDateString() !== new Date(m.ts).toDateString()) {
            const day = dayItem(cache, m.ts);
            nodes.push(day);
            used.add(`d${new Date(m.ts).toDateString()}`);
            prev = null;
        }
        const grouped = sameGroup(prev, m);
        const key = pending ? `p${pending.id}:${pending.state}:${pending.error || ''}`
            : `s${m.seq}`;
        const sig = `${grouped}|${m.ts}|${m.from}|${m.text}`;
        let li = cache.get(key);
        if (!li || li.sig !== sig) {
            li = messageItem(c, m, grouped, pending);
            li.sig = sig;
            cache.set(key, li);
        }
        used.add(key);
        nodes.push(li);
        prev = m;
    };
    for (const m of c.msgs) {
        pushMsg(m, null);
    }
    for (const p of c.pending) {
        pushMsg(p, p);
    }
    for (const k of [...cache.keys()]) {
        if (!used.has(k)) {
            cache.delete(k);
        }
    }
    syncChildren($('messages'), nodes);
    $('empty').hidden = nodes.length > 0 || c.more;
    $('empty-join').hidden = true;
    if (!nodes.length) {
        $('empty-text').textContent = c.kind === 'dm' ? `No messages with ${c.peer} yet. Say hello!`
            : `No messages in #${c.name} yet.`;
    }
    renderOlder(c);

    if (toBottom || atBottom) {
        sc.scrollTop = sc.scrollHeight;
    } else if (keepBottomDistance) {
        sc.scrollTop = sc.scrollHeight - sc.clientHeight - fromBottom;
    }
    if (!document.hidden && isAtBottom()) {
        c.markRead();
        saveSessionSoon();
    }
    updateJump();
    renderSidebar();
    /* Not enough to scroll yet: keep loading so infinite scroll can start. */
    if (c.more && !c.loadingOlder && sc.scrollHeight <= sc.clientHeight + NEAR_TOP_PX) {
        loadOlder(c);
    }
}

let saveTimer = 0;

function saveSessionSoon() {
    clearTimeout(saveTimer);
    saveTimer = setTimeout(saveSession, 500);
}

function isAtBottom() {
    const sc = $('scroller');
    return sc.scrollHeight - sc.scrollTop - sc.clientHeight < NEAR_BOTTOM_PX;
}

function updateJump() {
    const c = S.active;
    const j = $('jump');
    const show = !!c && !isAtBottom();
    j.hidden = !show;
    if (show) {
        const n = c.unread(S.me);
        j.firstChild.textContent = n ? `${n} new message${n === 1 ? '' : 's'} — jump to latest `
            : 'Jump to latest ';
    }
}

function onScroll() {
    const c = S.active;
    if (!c) {
        return;
    }
    if ($('scroller').scrollTop < NEAR_TOP_PX) {
        loadOlder(c);
    }
    if (isAtBottom() && c.unread(S.me)) {
        c.markRead();
        renderSidebar();
        saveSessionSoon();
    }
    updateJump();
}

function announce(text) {
    const live = $('live');
    live.textContent = '';
    /* A fresh text node each time so screen readers repeat identical lines. */
    setTimeout(() => {
        live.textContent = text;
    }, 30);
}

function showBanner(text, ms = 8000) {
    $('banner-text').textContent = text;
    $('banner').hidden = false;
    clearTimeout(S.bannerTimer);
    S.bannerTimer = setTimeout(() => hideBanner(), ms);
}

function hideBanner(onlyConnection = false) {
    if (onlyConnection && !/reconnect|restart|retry/i.test($('banner-text').textContent)) {
        return;
    }
    $('banner').hidden = true;
}

/* ---------- narrow layout panels ---------- */

function togglePanel(which, open, focus = true) {
    const panel = which === 'sidebar' ? $('sidebar') : $('members-panel');
    const btn = which === 'sidebar' ? $('toggle-sidebar') : $('toggle-members');
    const other = which === 'sidebar' ? 'members' : 'sidebar';
    const isOpen = open === undefined ? !panel.classList.contains('open') : open;
    if (isOpen && isNarrow()) {
        togglePanel(other, false, false);
    }
    panel.classList.toggle('open', isOpen);
    btn.setAttribute('aria-expanded', String(isOpen));
    /* On wide screens the members panel toggles too, but never covers text. */
    $('scrim').hidden = !(isOpen && isNarrow());
    if (isOpen && focus) {
        const first = panel.querySelector('input, button');
        first && first.focus();
    }
}

function closePanels() {
    if (!isNarrow()) {
        return;
    }
    for (const w of ['sidebar', 'members']) {
        const panel = w === 'sidebar' ? $('sidebar') : $('members-panel');
        if (panel.classList.contains('open')) {
            togglePanel(w, false);
        }
    }
}

/* ---------- wiring ---------- */

function onJoinSubmit(ev) {
    ev.preventDefault();
    const input = $('room-join');
    const v = input.value.trim();
    $('join-error').textContent = '';
    if (!v) {
        return;
    }
    if (v.startsWith('@')) {
        if (!isValidUser(v.slice(1))) {
            $('join-error').textContent = 'Not a valid name.';
            return;
        }
        input.value = '';
        openDm(v.slice(1)) && $('composer').focus();
        return;
    }
    const name = v.replace(/^#/, '');
    if (!isValidRoom(name)) {
        $('join-error').textContent =
            'Room names are 1 to 64 letters, digits, “_”, “.” or “-”.';
        return;
    }
    input.value = '';
    const existing = S.convs.get(name);
    if (existing && existing.joined) {
        setActive(existing);
    } else {
        joinRoom(name);
    }
    $('composer').focus();
}

function init() {
    $('login-form').addEventListener('submit', onLoginSubmit);
    $('register-toggle').addEventListener('click', () => setRegisterMode(!registerMode));
    $('join-form').addEventListener('submit', onJoinSubmit);
    $('composer-form').addEventListener('submit', onComposerSubmit);
    $('composer').addEventListener('keydown', onComposerKey);
    $('composer').addEventListener('input', onComposerInput);
    $('composer').addEventListener('click', updateMention);
    $('composer').addEventListener('blur', () => setTimeout(closeMention, 150));
    $('scroller').addEventListener('scroll', onScroll, { passive: true });
    $('jump').addEventListener('click', () => {
        const sc = $('scroller');
        sc.scrollTop = sc.scrollHeight;
        onScroll();
        $('composer').focus();
    });
    $('load-older').addEventListener('click', () => loadOlder(S.active));
    $('empty-join').addEventListener('click', () => {
        if (isNarrow()) {
            togglePanel('sidebar', true);
        } else {
            $('room-join').focus();
        }
    });
    $('banner-close').addEventListener('click', () => hideBanner());
    $('logout').addEventListener('click', () => signOut(''));
    $('reconnect').addEventListener('click', () => S.conn && S.conn.retryNow());
    $('toggle-sidebar').addEventListener('click', () => togglePanel('sidebar'));
    $('toggle-members').addEventListener('click', () => togglePanel('members'));
    $('scrim').addEventListener('click', closePanels);
    document.addEventListener('keydown', (ev) => {
        if (ev.key === 'Escape' && isNarrow() &&
            ($('sidebar').classList.contains('open') ||
             $('members-panel').classList.contains('open'))) {
            const members = $('members-panel').classList.contains('open');
            closePanels();
            $(members ? 'toggle-members' : 'toggle-sidebar').focus();
        }
    });
    window.addEventListener('online', () => S.conn && !S.conn.stopped && S.conn.probe());
    document.addEventListener('visibilitychange', () => {
        if (!document.hidden) {
            if (S.conn && !S.conn.stopped) {
                S.conn.probe();
            }
            if (S.active && isAtBottom()) {
                S.active.markRead();
                renderSidebar();
            }
        }
    });
    /* Crossing the breakpoint: overlays close on narrow screens, the
     * members column comes back on wide ones. */
    window.matchMedia('(max-width: 760px)').addEventListener('change', (ev) => {
        if (ev.matches) {
            togglePanel('sidebar', false, false);
            togglePanel('members', false, false);
        } else {
            togglePanel('sidebar', false, false);
            togglePanel('members', true, false);
            $('scrim').hidden = true;
        }
    });

    if (!isNarrow()) {
        togglePanel('members', true, false);
    }
    const saved = loadSession();
    if (saved) {
        $('login-user').value = saved.me || saved.auth.user || '';
        S.me = saved.me || saved.auth.user;
        startSession(saved.auth, S.me, saved);
    } else {
        $('login-view').hidden = false;
        $('login-user').focus();
    }
}

init();
