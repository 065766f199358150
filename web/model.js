/*
 * model — the client's state, with no DOM and no network: one Conversation
 * per public room or DM (messages merged by seq, optimistic sends waiting for
 * their ack, unread counting and gap detection) and the ChatModel that holds
 * them with what the server told us (who we are, its limits, its public
 * rooms). Only the controller (controller.js) changes it; the views read it.
 * Kept pure so that node can test it without a browser
 * (tests/browser/model.test.mjs).
 */

/* Consecutive messages of one author closer than this are shown as a group. */
export const GROUP_WINDOW_MS = 5 * 60 * 1000;
/* A gap bigger than one history request is not filled: older messages are
 * dropped and left to scroll-back, so a long absence costs one request. */
export const MAX_GAP_FILL = 200;

const USER_RE = /^[A-Za-z0-9_.-]{1,32}$/;
const ROOM_RE = /^[A-Za-z0-9_.-]{1,64}$/;
const DM_RE = /^dm:([A-Za-z0-9_.-]{1,32}):([A-Za-z0-9_.-]{1,32})$/;

export const isValidUser = (s) => USER_RE.test(s);
export const isValidRoom = (s) => ROOM_RE.test(s);

/* Names are ASCII, so comparing UTF-16 units is the contract's byte order. */
export function dmRoom(a, b) {
    return a < b ? `dm:${a}:${b}` : `dm:${b}:${a}`;
}

export function parseDm(room) {
    const m = DM_RE.exec(room);
    return m && m[1] < m[2] ? [m[1], m[2]] : null;
}

/* The other person of a DM room as seen by `me`, or null if not a DM. */
export function dmPeer(room, me) {
    const p = parseDm(room);
    if (!p) {
        return null;
    }
    return p[0] === me ? p[1] : p[0];
}

/* Unicode code points, the unit of the server's max_text. */
export function codePoints(s) {
    let n = 0;
    for (const _ of s) {
        n++;
    }
    return n;
}

/* True when b continues a's group: same author, same day, close in time. */
export function sameGroup(a, b) {
    if (!a || !b || a.from !== b.from || b.ts - a.ts > GROUP_WINDOW_MS || b.ts < a.ts) {
        return false;
    }
    return new Date(a.ts).toDateString() === new Date(b.ts).toDateString();
}

function validMessage(m) {
    return m && Number.isSafeInteger(m.seq) && m.seq > 0 && typeof m.from === 'string' &&
        typeof m.text === 'string';
}

export class Conversation {
    constructor(name, me) {
        this.name = name;
        const peer = dmPeer(name, me);
        this.kind = peer ? 'dm' : 'room';
        this.peer = peer;
        this.msgs = [];            /* confirmed, ascending seq, no duplicates */
        this.pending = [];         /* own sends without a seq yet, in send order */
        this.latestSeq = 0;        /* the room's latest seq as last told by the server */
        this.readSeq = 0;          /* everything up to here has been seen */
        this.more = false;         /* older messages exist on the server */
        this.gapFloor = 0;         /* gaps ending at or below this are known unfillable */
        this.members = new Set();
        this.typing = new Map();   /* user -> expiry time (ms) */
        this.joined = false;
        this.loadingOlder = false; /* a history {before} request is out */
        this.gapBusy = false;      /* a gap-filling history request is out */
    }

    maxSeq() {
        return this.msgs.length ? this.msgs[this.msgs.length - 1].seq : 0;
    }

    oldestSeq() {
        return this.msgs.length ? this.msgs[0].seq : 0;
    }

    /*
     * Merge server messages (any order, possibly already known). A message
     * replaces the copy with the same seq (the server's ts wins over our
     * optimistic one) and settles our pending send with the same id.
     * Returns how many seqs were new.
     */
    merge(list, me) {
        let added = 0;
        for (const raw of list || []) {
            if (!validMessage(raw)) {
                continue;
            }
            const m = {
                seq: raw.seq, from: raw.from, text: raw.text,
                ts: Number.isFinite(raw.ts) ? raw.ts : Date.now(),
                id: typeof raw.id === 'string' ? raw.id : undefined,
            };
            if (m.id && m.from === me) {
                this.pending = this.pending.filter((p) => p.id !== m.id);
            }
            added += this.insert(m) ? 1 : 0;
        }
        if (this.maxSeq() > this.latestSeq) {
            this.latestSeq = this.maxSeq();
        }
        return added;
    }

    /* Binary search insert; returns true if the seq was not known before. */
    insert(m) {
        const a = this.msgs;
        if (!a.length || a[a.length - 1].seq < m.seq) {
            a.push(m);
            return true;
        }
        let lo = 0;
        let hi = a.length;
        while (lo < hi) {
            const mid = (lo + hi) >> 1;
            if (a[mid].seq < m.seq) {
                lo = mid + 1;
            } else {
                hi = mid;
            }
        }
        if (lo < a.length && a[lo].seq === m.seq) {
            a[lo] = m;
            return false;
        }
        a.splice(lo, 0, m);
        return true;
    }

    addPending(id, from, text) {
        const p = { id, from, text, ts: Date.now(), state: 'sending', error: null };
        this.pending.push(p);
        return p;
    }

    findPending(id) {
        return this.pending.find((p) => p.id === id) || null;
    }

    dropPending(id) {
        this.pending = this.pending.filter((p) => p.id !== id);
    }

    /* The ack may overtake the broadcast: confirm the pending copy right away. */
    ack(id, seq, me) {
        const p = this.findPending(id);
        if (!p || !Number.isSafeInteger(seq)) {
            return false;
        }
        this.dropPending(id);
        if (!this.msgs.some((m) => m.seq === seq)) {
            this.insert({ seq, from: me, text: p.text, ts: p.ts, id });
        }
        if (seq > this.latestSeq) {
            this.latestSeq = seq;
        }
        return true;
    }

    unread(me) {
        let n = 0;
        for (let i = this.msgs.length - 1; i >= 0 && this.msgs[i].seq > this.readSeq; i--) {
            if (this.msgs[i].from !== me) {
                n++;
            }
        }
        return n;
    }

    markRead() {
        this.readSeq = Math.max(this.readSeq, this.maxSeq());
    }

    /*
     * The highest hole in what we hold (including messages the server said
     * exist above our newest one). Returns null, {before, limit} for one
     * history request, or {drop: before} when the hole is too big to fill:
     * the caller then forgets everything below `before` and lets the user
     * scroll back instead.
     */
    findGap() {
        const a = this.msgs;
        if (!a.length) {
            return null;
        }
        let hi = this.latestSeq > this.maxSeq() ? this.latestSeq + 1 : 0;
        for (let i = a.length - 1; i >= 0; i--) {
            const lo = a[i].seq;
            if (hi && hi - lo > 1 && hi > this.gapFloor) {
                const size = hi - lo - 1;
                if (size > MAX_GAP_FILL) {
                    return { drop: hi };
                }
                return { before: hi, limit: size };
            }
            hi = lo;
        }
        return null;
    }

    /* Forget messages below seq (see findGap); older ones come back by scrolling. */
    dropBelow(seq) {
        this.msgs = this.msgs.filter((m) => m.seq >= seq);
        this.more = true;
        if (this.gapFloor < seq) {
            this.gapFloor = seq;
        }
    }

    /* Forget everything (the server lost the room's history). */
    reset() {
        this.msgs = [];
        this.latestSeq = 0;
        this.readSeq = 0;
        this.gapFloor = 0;
        this.more = false;
    }

    /* Keep the newest `keep` messages once there are more than `max`. */
    trim(max = 2000, keep = 1000) {
        if (this.msgs.length > max) {
            this.msgs.splice(0, this.msgs.length - keep);
            this.more = true;
            this.gapFloor = Math.max(this.gapFloor, this.oldestSeq());
        }
    }

    activeTypists(now) {
        const out = [];
        for (const [user, until] of this.typing) {
            if (until > now) {
                out.push(user);
            } else {
                this.typing.delete(user);
            }
        }
        return out.sort();
    }
}

/* The limits a server states in `welcome` until it says otherwise. */
export const DEFAULT_LIMITS = Object.freeze({ max_text: 4000, max_frame: 65536 });

/*
 * Everything one signed-in tab knows: the conversations by name, the one on
 * screen, and what the server told us. reset() starts over for a new
 * session; the public room list and the limits are kept until the server
 * sends fresh ones.
 */
export class ChatModel {
    constructor(me = null) {
        this.me = me;
        this.convs = new Map();    /* room name -> Conversation */
        this.active = null;        /* the Conversation on screen, or null */
        this.publicRooms = [];     /* [{name, members}] from the last `rooms` reply */
        this.limits = { ...DEFAULT_LIMITS };
        this.dmHistory = true;     /* false: the server serves no DM history (open mode) */
    }

    reset(me) {
        this.me = me;
        this.convs.clear();
        this.active = null;
        this.dmHistory = true;
    }

    get(name) {
        return this.convs.get(name) || null;
    }

    has(name) {
        return this.convs.has(name);
    }

    /* The conversation of that name, created (empty, not joined) if new. */
    conv(name) {
        let c = this.convs.get(name);
        if (!c) {
            c = new Conversation(name, this.me);
            this.convs.set(name, c);
        }
        return c;
    }

    remove(name) {
        this.convs.delete(name);
    }

    list() {
        return [...this.convs.values()];
    }

    /* Take the limits a `welcome` states; anything missing or bogus keeps ours. */
    setLimits(lim) {
        for (const k of ['max_text', 'max_frame']) {
            if (lim && Number.isSafeInteger(lim[k]) && lim[k] > 0) {
                this.limits[k] = lim[k];
            }
        }
    }

    setPublicRooms(rooms) {
        this.publicRooms = (Array.isArray(rooms) ? rooms : [])
            .filter((x) => x && typeof x.name === 'string');
    }

    /* What a reload needs to come back: names, read marks, the active one. */
    snapshot() {
        return {
            convs: this.list().map((c) => ({ name: c.name, read: c.readSeq })),
            active: this.active ? this.active.name : null,
        };
    }

    /* The inverse of snapshot(), from untrusted storage: bad entries are skipped. */
    restore(saved) {
        for (const c of (saved && Array.isArray(saved.convs) ? saved.convs : [])) {
            if (!c || typeof c.name !== 'string' || (!isValidRoom(c.name) && !parseDm(c.name))) {
                continue;
            }
            const conv = this.conv(c.name);
            conv.readSeq = Number.isSafeInteger(c.read) ? c.read : 0;
        }
        this.active = (saved && typeof saved.active === 'string' && this.get(saved.active)) ||
            null;
    }
}

/* "alice is typing…", "alice and bob are typing…", "several people are typing…" */
export function typingText(users) {
    if (!users.length) {
        return '';
    }
    if (users.length === 1) {
        return `${users[0]} is typing…`;
    }
    if (users.length === 2) {
        return `${users[0]} and ${users[1]} are typing…`;
    }
    return 'several people are typing…';
}

/*
 * The @mention being typed just before the caret, or null:
 * {start, prefix} where text.slice(start, caret) === '@' + prefix.
 */
export function mentionAt(text, caret) {
    const before = text.slice(0, caret);
    const m = /(^|\s)@([A-Za-z0-9_.-]{0,32})$/.exec(before);
    if (!m) {
        return null;
    }
    return { start: caret - m[2].length - 1, prefix: m[2] };
}

/* Completion candidates for prefix, case-insensitive, at most max. */
export function completions(names, prefix, me, max = 8) {
    const p = prefix.toLowerCase();
    const out = [...new Set(names)]
        .filter((n) => n !== me && n.toLowerCase().startsWith(p))
        .sort((a, b) => a.localeCompare(b));
    return out.slice(0, max);
}

/* Capped exponential backoff with jitter: attempt 0 -> ~500 ms ... 15 s. */
export function backoffDelay(attempt, rnd = Math.random, min = 500, max = 15000) {
    const base = Math.min(max, min * 2 ** Math.min(attempt, 30));
    /* Half fixed, half random: spreads a crowd of clients that lost the same
     * server without ever retrying sooner than half the nominal delay. */
    return Math.round(base / 2 + (rnd() * base) / 2);
}
