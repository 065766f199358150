/*
 * controller — the chat between the connection and the model: server frames
 * and replies go into the model (model.js), user actions become requests on
 * the connection (conn.js). Besides conn.js it is the only module that knows
 * the protocol's frame types. It owns no DOM and no storage; it tells the
 * views what changed through the `ui` port and asks `persist` to save.
 *
 * The ui port (implemented by views.js; a recorder in the tests):
 *   changed(c, {toBottom, keepBottomDistance})  c's messages, sends or paging
 *   listChanged()      the conversation list or an unread count
 *   publicChanged()    the public room list
 *   membersChanged(c)  c's members          typingChanged(c)  c's typists
 *   olderChanged(c)    c started loading older messages
 *   activeChanged()    another conversation is on screen
 *   all()              everything          announce(text)    for screen readers
 *   notice(text, ms)   a banner            clearNotice(onlyConnection)
 *   atBottom()         the one question: is the message list scrolled down?
 *
 * Thread: the page's (everything here runs on the event loop of one tab).
 */
import { ConnError } from './conn.js';
import { codePoints, dmPeer, dmRoom, isValidRoom, isValidUser } from './model.js';

/* Messages per join or history page. */
export const PAGE = 50;
/* A rejoin asks for up to this many missed messages; more is a gap to drop. */
export const SINCE_LIMIT = 200;
export const ROOMS_REFRESH_MS = 15000;
/* At most one typing hint per this long; others show it for TYPING_SHOW_MS. */
export const TYPING_SEND_MS = 3000;
export const TYPING_SHOW_MS = 4000;

/* What a close code means to the user (codes not here say nothing). */
const CLOSE_TEXT = {
    1001: 'The server is restarting; reconnecting…',
    1008: 'The server refused the connection (policy).',
    1009: 'A message was too large for the server.',
    1013: 'The server is overloaded; retrying shortly.',
    4008: 'The connection fell behind and was reset; reconnecting…',
    4029: 'Disconnected for sending too fast; reconnecting shortly.',
};

const NO_PERSIST = Object.freeze({ save() {}, saveSoon() {} });
const CLOCK = Object.freeze({
    now: () => Date.now(),
    setInterval: (fn, ms) => setInterval(fn, ms),
    clearInterval: (t) => clearInterval(t),
});

function randomId(n) {
    const b = new Uint8Array(n);
    crypto.getRandomValues(b);
    return Array.from(b, (x) => (x % 36).toString(36)).join('');
}

/* Client message ids: a random prefix per page load, then time and a counter,
 * so a resend after a reconnect carries the same id and the server dedups. */
export function messageIds(prefix = randomId(8)) {
    let counter = 0;
    return () => {
        counter += 1;
        return `${prefix}-${Date.now().toString(36)}-${counter}`;
    };
}

/* A refused request (ConnError) in words for a banner or a failed send. */
export function errorText(err) {
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

export class ChatController {
    /*
     * model: a ChatModel; ui: the port above. Options: persist {save(),
     * saveSoon()} (the session's storage), newId() for message ids, clock
     * {now, setInterval, clearInterval}.
     */
    constructor(model, ui, { persist = NO_PERSIST, newId = messageIds(), clock = CLOCK } = {}) {
        this.model = model;
        this.ui = ui;
        this.persist = persist;
        this.newId = newId;
        this.clock = clock;
        this.conn = null;          /* the session's Connection while one is attached */
        this.roomsTimer = 0;
        this.lastTypingSent = 0;
    }

    get online() {
        return !!this.conn && this.conn.connected;
    }

    /* The session's connection: requests go there from now on. */
    attach(conn) {
        this.conn = conn;
    }

    detach() {
        this.clock.clearInterval(this.roomsTimer);
        this.roomsTimer = 0;
        this.conn = null;
    }

    request(obj, { retrying = false } = {}) {
        if (!this.conn) {
            return Promise.reject(
                new ConnError({ code: 'disconnected', message: 'not connected' }));
        }
        return retrying ? this.conn.requestRetrying(obj) : this.conn.request(obj);
    }

    /* ---------- connection events ---------- */

    /* `welcome`: who the server says we are, and its limits. */
    welcome(w) {
        if (typeof w.user === 'string' && w.user) {
            this.model.me = w.user;
        }
        this.model.setLimits(w.limits);
    }

    /* After every (re)connect, once the session is settled: catch up. */
    ready(first) {
        this.persist.save();
        this.ui.clearNotice(true);
        this.resync();
        this.refreshRooms();
        this.clock.clearInterval(this.roomsTimer);
        this.roomsTimer = this.clock.setInterval(() => this.refreshRooms(), ROOMS_REFRESH_MS);
        if (first && !this.model.active) {
            this.ui.all();
        }
    }

    /* The socket closed (conn.js reconnects): nobody is typing, nothing is joined. */
    connectionLost(code) {
        const why = CLOSE_TEXT[code];
        if (why) {
            this.ui.notice(why);
        }
        for (const c of this.model.list()) {
            c.typing.clear();
            c.joined = false;
        }
        this.ui.typingChanged(this.model.active);
    }

    /* Rejoin rooms from where we were, reload DMs, then resend whatever was
     * never acknowledged (ids make that safe). */
    resync() {
        for (const c of this.model.list()) {
            if (c.kind === 'room') {
                this.joinRoom(c.name,
                    { since: c.maxSeq() || undefined, activate: false, rejoin: true });
            } else {
                this.loadLatest(c);
            }
        }
    }

    resendPending(c) {
        for (const p of c.pending) {
            if (p.state === 'sending') {
                this.transmit(c, p);
            }
        }
    }

    /* ---------- frames (events and unmatched replies) ---------- */

    onFrame(f) {
        const model = this.model;
        switch (f.type) {
        case 'message':
            this.onMessage(f);
            break;
        case 'presence': {
            const c = model.get(f.room);
            if (!c || typeof f.user !== 'string') {
                break;
            }
            if (f.event === 'join') {
                c.members.add(f.user);
            } else if (f.event === 'leave') {
                c.members.delete(f.user);
                c.typing.delete(f.user);
            }
            this.ui.membersChanged(c);
            this.ui.typingChanged(c);
            break;
        }
        case 'typing': {
            const c = model.get(f.room);
            if (!c || typeof f.user !== 'string' || f.user === model.me) {
                break;
            }
            c.typing.set(f.user, this.clock.now() + TYPING_SHOW_MS);
            this.ui.typingChanged(c);
            break;
        }
        case 'joined': {
            /* Unrequested join (e.g. ?room= on the URL): adopt it. */
            if (typeof f.room !== 'string') {
                break;
            }
            const c = model.conv(f.room);
            c.joined = true;
            c.members = new Set(Array.isArray(f.members) ? f.members : []);
            c.merge(f.history, model.me);
            c.readSeq = Math.max(c.readSeq, c.maxSeq());
            this.ui.all();
            break;
        }
        case 'error':
            /* errors about our typing hints (ref 'typing') are not worth a banner */
            if (f.ref === 'typing') {
                break;
            }
            if (f.code === 'shutting_down') {
                this.ui.notice('The server is restarting; reconnecting…');
            } else {
                const err = { code: f.code, message: f.message, frame: f };
                this.ui.notice(`Server: ${errorText(err)}`);
            }
            break;
        default:
            break; /* unknown events are ignored: newer servers may add some */
        }
    }

    onMessage(m) {
        const model = this.model;
        if (typeof m.room !== 'string') {
            return;
        }
        let c = model.get(m.room);
        if (!c) {
            if (!dmPeer(m.room, model.me)) {
                return; /* a room we left while the message was in flight */
            }
            c = model.conv(m.room);
            c.readSeq = Math.max(0, (m.seq || 1) - 1);
            c.more = m.seq > 1 && model.dmHistory;
            this.persist.save();
        }
        const prevMax = c.maxSeq();
        const added = c.merge([m], model.me);
        c.typing.delete(m.from);
        if (c !== model.active || this.ui.atBottom()) {
            c.trim(); /* a busy room left open for hours must not grow without bound */
        }
        if (added && m.from !== model.me && c === model.active && m.seq > prevMax) {
            this.ui.announce(`${m.from}: ${m.text.slice(0, 200)}`);
        }
        if (prevMax && m.seq > prevMax + 1) {
            this.fillGaps(c);
        }
        this.ui.changed(c);
        this.ui.listChanged();
        this.ui.typingChanged(c);
    }

    /* ---------- requests ---------- */

    async joinRoom(name, { since, activate = true, rejoin = false } = {}) {
        const model = this.model;
        const isNew = !model.has(name);
        const c = model.conv(name);
        if (activate) {
            this.select(c);
        }
        const req = { type: 'join', room: name, limit: PAGE };
        if (since) {
            req.since = since;
            req.limit = SINCE_LIMIT;
        }
        try {
            const j = await this.request(req, { retrying: true });
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
            c.merge(j.history, model.me);
            if (!hadAny) {
                c.more = c.msgs.length ? c.oldestSeq() > 1 : c.latestSeq > 0;
                /* A room joined just now starts read; one restored from the
                 * session keeps its read mark so the badge shows what is new. */
                if (c.readSeq === 0) {
                    c.readSeq = c.latestSeq;
                }
            }
            this.persist.save();
            this.fillGaps(c);
            this.resendPending(c);
            this.ui.changed(c);
            this.ui.listChanged();
            this.ui.membersChanged(c);
            if (activate || rejoin) {
                this.refreshRooms();
            }
        } catch (err) {
            if (err.code === 'disconnected') {
                return; /* resync will retry */
            }
            if (isNew) {
                model.remove(name);
                if (model.active === c) {
                    model.active = null;
                    this.select(model.list()[0] || null);
                }
            }
            this.ui.notice(`Cannot join ${name}: ${errorText(err)}`);
            this.persist.save();
            this.ui.all();
        }
    }

    async leave(c) {
        const model = this.model;
        if (c.kind === 'room' && this.online) {
            try {
                await this.request({ type: 'leave', room: c.name });
            } catch (err) {
                if (err.code !== 'not_joined' && err.code !== 'disconnected') {
                    this.ui.notice(`Cannot leave ${c.name}: ${errorText(err)}`);
                    return;
                }
            }
        }
        model.remove(c.name);
        if (model.active === c) {
            model.active = null;
            this.select(model.list()[0] || null);
        }
        this.persist.save();
        this.ui.all();
        this.refreshRooms();
    }

    /* DMs need no join: show the latest page of the conversation. */
    async loadLatest(c) {
        try {
            const r = await this.request({ type: 'history', room: c.name, limit: PAGE },
                { retrying: true });
            const hadAny = c.msgs.length > 0;
            c.merge(r.messages, this.model.me);
            if (!hadAny) {
                c.more = !!r.more;
            }
            this.fillGaps(c);
            this.ui.changed(c);
            this.ui.listChanged();
        } catch (err) {
            if (err.code !== 'disconnected') {
                this.noteDmHistory(c, err);
                c.more = false;
                this.ui.changed(c);
            }
        }
        this.resendPending(c);
    }

    /* A `forbidden` on the history of our own DM room means the server keeps
     * none to give (open mode: whoever holds a name may not be who held it
     * when the DMs were sent), not an error to show: stop asking. */
    noteDmHistory(c, err) {
        if (c.kind === 'dm' && err.code === 'forbidden') {
            this.model.dmHistory = false;
            c.more = false;
            return true;
        }
        return false;
    }

    async loadOlder(c) {
        if (!c || c.loadingOlder || !c.more || !this.online) {
            return;
        }
        c.loadingOlder = true;
        this.ui.olderChanged(c);
        const before = c.oldestSeq();
        const req = { type: 'history', room: c.name, limit: PAGE };
        if (before) {
            req.before = before;
        }
        try {
            const r = await this.request(req, { retrying: true });
            const added = c.merge(r.messages, this.model.me);
            /* `added` guards against a server saying more:true with nothing new. */
            c.more = !!r.more && added > 0 && c.oldestSeq() > 1;
        } catch (err) {
            if (err.code !== 'disconnected' && !this.noteDmHistory(c, err)) {
                c.more = false;
                this.ui.notice(`Cannot load older messages: ${errorText(err)}`);
            }
        }
        c.loadingOlder = false;
        this.ui.changed(c, { keepBottomDistance: true });
    }

    /* Fetch holes in the seq sequence, one request at a time. */
    async fillGaps(c) {
        if (c.gapBusy || !this.online) {
            return;
        }
        const g = c.findGap();
        if (!g) {
            return;
        }
        if (g.drop) {
            c.dropBelow(g.drop);
            this.ui.changed(c);
            this.fillGaps(c);
            return;
        }
        c.gapBusy = true;
        try {
            const r = await this.request(
                { type: 'history', room: c.name, before: g.before, limit: g.limit },
                { retrying: true });
            const added = c.merge(r.messages, this.model.me);
            if (!added) {
                c.gapFloor = Math.max(c.gapFloor, g.before); /* nothing there: stop asking */
            }
        } catch (err) {
            this.noteDmHistory(c, err);
            c.gapFloor = Math.max(c.gapFloor, g.before);
        }
        c.gapBusy = false;
        this.ui.changed(c);
        this.ui.listChanged();
        this.fillGaps(c);
    }

    async refreshRooms() {
        if (!this.online) {
            return;
        }
        try {
            const r = await this.request({ type: 'rooms' });
            this.model.setPublicRooms(r.rooms);
            this.ui.publicChanged();
        } catch (err) {
            /* the next tick retries */
        }
    }

    async refreshMembers(c) {
        /* Only once joined: a `who` racing our own join would miss ourselves. */
        if (!c || c.kind !== 'room' || !c.joined || !this.online) {
            return;
        }
        try {
            const r = await this.request({ type: 'who', room: c.name });
            if (Array.isArray(r.users)) {
                c.members = new Set(r.users.filter((u) => typeof u === 'string'));
                this.ui.membersChanged(c);
            }
        } catch (err) {
            /* keep what we have */
        }
    }

    /* ---------- user actions ---------- */

    /* Put c (or nothing) on screen. */
    select(c) {
        if (this.model.active === c) {
            return;
        }
        this.model.active = c;
        this.persist.save();
        if (c) {
            this.refreshMembers(c);
        }
        this.ui.activeChanged();
    }

    /* The join box: show a room we are in, join any other. */
    openRoom(name) {
        const existing = this.model.get(name);
        if (existing && existing.joined) {
            this.select(existing);
        } else {
            this.joinRoom(name);
        }
    }

    openDm(peer) {
        const model = this.model;
        if (!isValidUser(peer)) {
            this.ui.notice(`“${peer}” is not a valid name.`);
            return null;
        }
        if (peer === model.me) {
            this.ui.notice('You cannot message yourself.');
            return null;
        }
        const name = dmRoom(model.me, peer);
        const isNew = !model.has(name);
        const c = model.conv(name);
        this.select(c);
        if (isNew) {
            this.persist.save();
            if (this.online) {
                this.loadLatest(c);
            }
        }
        this.ui.all();
        return c;
    }

    /* What the composer sends: text, "//text" (a literal slash) or a command.
     * True when it was taken (the composer then clears). */
    submit(text) {
        const c = this.model.active;
        if (text.startsWith('//')) {
            return c ? this.sendTo(c, text.slice(1)) : false;
        }
        if (text.startsWith('/')) {
            return this.command(text.trim());
        }
        if (c) {
            return this.sendTo(c, text);
        }
        this.ui.notice('Join a room first.');
        return false;
    }

    command(text) {
        const m = /^\/(\S+)\s*([\s\S]*)$/.exec(text);
        const cmd = m ? m[1].toLowerCase() : '';
        const arg = m ? m[2].trim() : '';
        if (cmd === 'join') {
            const name = arg.replace(/^#/, '');
            if (!isValidRoom(name)) {
                this.ui.notice('Usage: /join ROOM (letters, digits, _ . -)');
                return false;
            }
            this.joinRoom(name);
            return true;
        }
        if (cmd === 'leave' || cmd === 'part') {
            const c = arg ? this.model.get(arg.replace(/^#/, '')) : this.model.active;
            if (!c) {
                this.ui.notice('Not in that room.');
                return false;
            }
            this.leave(c);
            return true;
        }
        if (cmd === 'dm' || cmd === 'msg') {
            const dm = /^@?(\S+)\s*([\s\S]*)$/.exec(arg);
            if (!dm) {
                this.ui.notice('Usage: /dm NAME [TEXT]');
                return false;
            }
            const c = this.openDm(dm[1]);
            if (c && dm[2]) {
                return this.sendTo(c, dm[2]);
            }
            return !!c;
        }
        if (cmd === 'help') {
            this.ui.notice('Commands: /join ROOM · /leave [ROOM] · /dm NAME [TEXT]. ' +
                'Start a line with // to send a literal slash.', 15000);
            return true;
        }
        this.ui.notice(`Unknown command “/${cmd}”. Try /help.`);
        return false;
    }

    sendTo(c, text) {
        const lim = this.model.limits;
        const n = codePoints(text);
        if (n > lim.max_text) {
            this.ui.notice(`Message too long: ${n} characters, the limit is ${lim.max_text}.`);
            return false;
        }
        const id = this.newId();
        /* Worst case JSON escaping is 6 bytes per UTF-16 unit; only check
         * precisely when that could exceed the frame limit. */
        if (text.length * 6 + 200 > lim.max_frame) {
            const bytes = new TextEncoder().encode(JSON.stringify(
                { type: 'send', room: c.name, text, id, ref: 999999 })).length;
            if (bytes > lim.max_frame) {
                this.ui.notice('Message too large for the server.');
                return false;
            }
        }
        const p = c.addPending(id, this.model.me, text);
        this.lastTypingSent = 0; /* our message ends the others' indicator; typing again is news */
        this.transmit(c, p);
        this.ui.changed(c, { toBottom: true });
        return true;
    }

    transmit(c, p) {
        p.state = 'sending';
        p.error = null;
        if (!this.online || (c.kind === 'room' && !c.joined)) {
            return; /* stays pending; the (re)join sends it */
        }
        const req = c.kind === 'dm' ? { type: 'dm', to: c.peer, text: p.text, id: p.id }
            : { type: 'send', room: c.name, text: p.text, id: p.id };
        this.request(req).then((ack) => {
            if (Number.isSafeInteger(ack.seq)) {
                c.ack(p.id, ack.seq, this.model.me);
            }
            this.ui.changed(c);
            if (c.kind === 'dm') {
                this.ui.listChanged();
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
            if (err.code === 'rate_limited' && err.frame &&
                Number.isFinite(err.frame.retry_after_ms)) {
                p.retryAfter = this.clock.now() + err.frame.retry_after_ms;
            }
            this.ui.changed(c);
            this.ui.notice(`Message not sent: ${p.error}.`);
        });
    }

    /* A failed send's Retry and Discard. */
    retry(c, p) {
        this.transmit(c, p);
        this.ui.changed(c);
    }

    discard(c, p) {
        c.dropPending(p.id);
        this.ui.changed(c);
    }

    /* The composer's text changed: tell the room we are typing, now and then. */
    typed(text) {
        const c = this.model.active;
        const now = this.clock.now();
        if (c && c.kind === 'room' && c.joined && text.trim() && !text.startsWith('/') &&
            now - this.lastTypingSent >= TYPING_SEND_MS && this.online) {
            this.lastTypingSent = now;
            /* The fixed ref lets onFrame drop errors about it (e.g. not_joined
             * in the moment after a reconnect): a hint is not worth a banner. */
            this.conn.send({ type: 'typing', room: c.name, ref: 'typing' });
        }
    }

    /* The user has seen the end of c. */
    markRead(c, { save = true } = {}) {
        c.markRead();
        if (save) {
            this.persist.saveSoon();
        }
    }
}
