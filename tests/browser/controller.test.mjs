// Unit tests of web/controller.js: frames go into the model, user actions come
// out as requests. A fake connection records what is sent and lets each test
// answer; a fake ui records what the views were told. No browser needed.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { ConnError } from '../../web/conn.js';
import {
    ChatController, PAGE, ROOMS_REFRESH_MS, SINCE_LIMIT, TYPING_SEND_MS, TYPING_SHOW_MS,
    errorText,
} from '../../web/controller.js';
import { ChatModel } from '../../web/model.js';

/* Let every promise chain that can run, run. */
const flush = () => new Promise((resolve) => setImmediate(resolve));

const msg = (seq, from = 'bob', extra = {}) =>
    ({ seq, from, text: `m${seq}`, ts: 1700000000000 + seq * 1000, ...extra });
const range = (lo, hi, from = 'bob') =>
    Array.from({ length: hi - lo + 1 }, (_, i) => msg(lo + i, from));
const refused = (code, extra = {}) => new ConnError({ type: 'error', code, ...extra });

/* conn.js' Connection as the controller uses it: requests wait for the test. */
class FakeConn {
    constructor() {
        this.connected = true;
        this.stopped = false;
        this.sent = [];     /* fire-and-forget frames */
        this.out = [];      /* requests not answered yet: {obj, retrying, resolve, reject} */
    }

    send(obj) {
        if (!this.connected) {
            return false;
        }
        this.sent.push(obj);
        return true;
    }

    request(obj) {
        return this.push(obj, false);
    }

    requestRetrying(obj) {
        return this.push(obj, true);
    }

    push(obj, retrying) {
        if (!this.connected) {
            return Promise.reject(refused('disconnected'));
        }
        return new Promise((resolve, reject) => this.out.push({ obj, retrying, resolve, reject }));
    }

    /* The oldest unanswered request of this type (the test fails without one). */
    take(type) {
        const i = this.out.findIndex((r) => r.obj.type === type);
        assert.ok(i >= 0, `expected a ${type} request, have ${JSON.stringify(this.types())}`);
        return this.out.splice(i, 1)[0];
    }

    types() {
        return this.out.map((r) => r.obj.type);
    }
}

/* The views: every call recorded as [name, ...args]. */
class FakeUi {
    constructor() {
        this.calls = [];
        this.bottom = true;
    }

    named(name) {
        return this.calls.filter((c) => c[0] === name);
    }

    notices() {
        return this.named('notice').map((c) => c[1]);
    }

    atBottom() {
        return this.bottom;
    }
}
for (const name of ['changed', 'listChanged', 'publicChanged', 'membersChanged',
    'typingChanged', 'olderChanged', 'activeChanged', 'all', 'announce', 'notice',
    'clearNotice']) {
    FakeUi.prototype[name] = function record(...args) {
        this.calls.push([name, ...args]);
    };
}

class FakeClock {
    constructor() {
        this.t = 1700000000000;
        this.intervals = new Map();
        this.next = 1;
    }

    now() {
        return this.t;
    }

    setInterval(fn, ms) {
        const id = this.next++;
        this.intervals.set(id, { fn, ms });
        return id;
    }

    clearInterval(id) {
        this.intervals.delete(id);
    }
}

function setup(me = 'alice') {
    const model = new ChatModel(me);
    const ui = new FakeUi();
    const conn = new FakeConn();
    const clock = new FakeClock();
    const saves = { now: 0, soon: 0 };
    let ids = 0;
    const ctl = new ChatController(model, ui, {
        persist: { save: () => saves.now++, saveSoon: () => saves.soon++ },
        newId: () => `id${++ids}`,
        clock,
    });
    ctl.attach(conn);
    return { model, ui, conn, clock, saves, ctl };
}

/* Join `room` through the controller and answer like the server would. */
async function joinAs(t, room, { seq = 0, history = [], members = [t.model.me] } = {}) {
    t.ctl.joinRoom(room);
    t.conn.take('join').resolve({ type: 'joined', room, seq, history, members });
    await flush();
    t.conn.take('rooms').resolve({ type: 'rooms', rooms: [] });
    await flush();
    return t.model.get(room);
}

test('join: one request, and the reply fills the conversation', async () => {
    const t = setup();
    t.ctl.joinRoom('lobby');
    const c = t.model.get('lobby');
    assert.equal(t.model.active, c, 'a join from the user shows the room');
    const req = t.conn.take('join');
    assert.deepEqual(req.obj, { type: 'join', room: 'lobby', limit: PAGE });
    assert.equal(req.retrying, true, 'reads are retried when the server is busy');
    assert.equal(c.joined, false);

    req.resolve({ type: 'joined', room: 'lobby', seq: 120, history: range(71, 120),
        members: ['alice', 'bob', 7] });
    await flush();
    assert.equal(c.joined, true);
    assert.deepEqual([...c.members], ['alice', 'bob'], 'non-string members are dropped');
    assert.equal(c.msgs.length, 50);
    assert.equal(c.latestSeq, 120);
    assert.equal(c.readSeq, 120, 'a room joined just now starts read');
    assert.equal(c.more, true, 'older messages exist');
    assert.ok(t.saves.now > 0, 'the conversation list is saved');
    assert.ok(t.ui.named('changed').some((x) => x[1] === c));
    assert.ok(t.ui.named('membersChanged').some((x) => x[1] === c));

    t.conn.take('rooms').resolve({ type: 'rooms',
        rooms: [{ name: 'lobby', members: 2 }, { name: 'dev', members: 1 }, null, { x: 1 }] });
    await flush();
    assert.deepEqual(t.model.publicRooms.map((r) => r.name), ['lobby', 'dev']);
    assert.equal(t.ui.named('publicChanged').length, 1);
    assert.deepEqual(t.conn.types(), [], 'nothing else asked');
});

test('join of an empty room: nothing older to page back to', async () => {
    const t = setup();
    const c = await joinAs(t, 'quiet');
    assert.equal(c.more, false);
    assert.equal(c.msgs.length, 0);
});

test('a refused join forgets the new room and says why', async () => {
    const t = setup();
    t.ctl.joinRoom('secret');
    t.conn.take('join').reject(refused('forbidden'));
    await flush();
    assert.equal(t.model.has('secret'), false);
    assert.equal(t.model.active, null);
    assert.deepEqual(t.ui.notices(), ['Cannot join secret: not allowed']);
});

test('a join cut by a disconnect is left for the resync', async () => {
    const t = setup();
    t.ctl.joinRoom('lobby');
    t.conn.take('join').reject(refused('disconnected'));
    await flush();
    assert.equal(t.model.has('lobby'), true, 'kept: the rejoin will ask again');
    assert.deepEqual(t.ui.notices(), []);
});

test('message frames merge by seq and a gap is fetched with history {before, limit}', async () => {
    const t = setup();
    const c = await joinAs(t, 'lobby', { seq: 3, history: range(1, 3) });
    t.ctl.onFrame({ type: 'message', room: 'lobby', ...msg(4) });
    assert.deepEqual(c.msgs.map((m) => m.seq), [1, 2, 3, 4]);
    assert.deepEqual(t.ui.named('announce').map((x) => x[1]), ['bob: m4']);
    assert.deepEqual(t.conn.types(), [], 'no gap, no request');

    t.ctl.onFrame({ type: 'message', room: 'lobby', ...msg(8) });
    const h = t.conn.take('history');
    assert.deepEqual(h.obj, { type: 'history', room: 'lobby', before: 8, limit: 3 });
    assert.equal(h.retrying, true);
    h.resolve({ type: 'history', room: 'lobby', messages: range(5, 7), more: true });
    await flush();
    assert.deepEqual(c.msgs.map((m) => m.seq), [1, 2, 3, 4, 5, 6, 7, 8]);
    assert.deepEqual(t.conn.types(), [], 'the gap is closed');

    t.ctl.onFrame({ type: 'message', room: 'lobby', ...msg(9, 'alice') });
    assert.equal(t.ui.named('announce').length, 2, 'own messages are not announced');
    t.ctl.onFrame({ type: 'message', room: 'elsewhere', ...msg(1) });
    t.ctl.onFrame({ type: 'message', ...msg(10) });
    assert.equal(t.model.has('elsewhere'), false, 'a room we are not in stays out');
    assert.equal(c.maxSeq(), 9);
});

test('an empty gap is not asked for twice', async () => {
    const t = setup();
    const c = await joinAs(t, 'lobby', { seq: 2, history: range(1, 2) });
    t.ctl.onFrame({ type: 'message', room: 'lobby', ...msg(5) });
    t.conn.take('history').resolve({ type: 'history', room: 'lobby', messages: [] });
    await flush();
    assert.equal(c.gapFloor, 5);
    t.ctl.onFrame({ type: 'message', room: 'lobby', ...msg(6) });
    assert.deepEqual(t.conn.types(), []);
});

test('a DM from someone new opens its conversation', () => {
    const t = setup();
    t.ctl.onFrame({ type: 'message', room: 'dm:alice:bob', ...msg(5) });
    const c = t.model.get('dm:alice:bob');
    assert.ok(c);
    assert.equal(c.kind, 'dm');
    assert.equal(c.peer, 'bob');
    assert.equal(c.readSeq, 4, 'only the new message is unread');
    assert.equal(c.unread('alice'), 1);
    assert.equal(c.more, true, 'older ones may be loaded');
    assert.equal(t.saves.now, 1);
    t.ctl.onFrame({ type: 'message', room: 'dm:bob:carol:x', ...msg(1) });
    assert.equal(t.model.convs.size, 1, 'not a DM room name');
});

test('a busy room not on screen keeps a bounded window', async () => {
    const t = setup();
    const c = await joinAs(t, 'busy', { seq: 1, history: [msg(1)] });
    t.model.active = null;
    for (let s = 2; s <= 2100; s++) {
        t.ctl.onFrame({ type: 'message', room: 'busy', ...msg(s) });
    }
    assert.ok(c.msgs.length <= 2000, `${c.msgs.length} messages held`);
    assert.equal(c.maxSeq(), 2100);
});

test('presence and typing frames', async () => {
    const t = setup();
    const c = await joinAs(t, 'lobby', { members: ['alice', 'bob'] });
    t.ctl.onFrame({ type: 'presence', room: 'lobby', user: 'carol', event: 'join' });
    assert.deepEqual([...c.members].sort(), ['alice', 'bob', 'carol']);
    assert.ok(t.ui.named('membersChanged').some((x) => x[1] === c));

    t.ctl.onFrame({ type: 'typing', room: 'lobby', user: 'bob' });
    t.ctl.onFrame({ type: 'typing', room: 'lobby', user: 'alice' });
    t.ctl.onFrame({ type: 'typing', room: 'lobby', user: 'carol' });
    assert.equal(c.typing.get('bob'), t.clock.t + TYPING_SHOW_MS);
    assert.equal(c.typing.has('alice'), false, 'our own hint is not shown');
    assert.ok(t.ui.named('typingChanged').some((x) => x[1] === c));

    t.ctl.onFrame({ type: 'presence', room: 'lobby', user: 'bob', event: 'leave' });
    assert.equal(c.members.has('bob'), false);
    assert.equal(c.typing.has('bob'), false, 'who left types no more');
    t.ctl.onFrame({ type: 'message', room: 'lobby', ...msg(1, 'carol') });
    assert.equal(c.typing.has('carol'), false, 'a message ends the hint');
    t.ctl.onFrame({ type: 'presence', room: 'nowhere', user: 'x', event: 'join' });
    assert.equal(t.model.has('nowhere'), false);
});

test('an unrequested joined adopts the room, read', () => {
    const t = setup();
    t.ctl.onFrame({ type: 'joined', room: 'general', seq: 2, history: range(1, 2),
        members: ['alice', 'bob'] });
    const c = t.model.get('general');
    assert.equal(c.joined, true);
    assert.deepEqual([...c.members], ['alice', 'bob']);
    assert.equal(c.unread('alice'), 0);
    assert.equal(t.ui.named('all').length, 1);
});

test('error frames show a banner, except about typing hints', () => {
    const t = setup();
    t.ctl.onFrame({ type: 'error', code: 'not_joined', ref: 'typing' });
    t.ctl.onFrame({ type: 'error', code: 'shutting_down' });
    t.ctl.onFrame({ type: 'error', code: 'bad_request', message: 'what?' });
    t.ctl.onFrame({ type: 'frobnicate' });
    assert.deepEqual(t.ui.notices(),
        ['The server is restarting; reconnecting…', 'Server: what?']);
});

test('send: an optimistic copy, a send with an id, the ack settles it', async () => {
    const t = setup();
    const c = await joinAs(t, 'lobby', { seq: 3, history: range(1, 3) });
    assert.equal(t.ctl.submit('hello'), true);
    assert.deepEqual(c.pending.map((p) => [p.id, p.text, p.state]), [['id1', 'hello', 'sending']]);
    assert.ok(t.ui.named('changed').some((x) => x[1] === c && x[2] && x[2].toBottom));
    const req = t.conn.take('send');
    assert.deepEqual(req.obj, { type: 'send', room: 'lobby', text: 'hello', id: 'id1' });
    req.resolve({ type: 'ack', seq: 4, id: 'id1' });
    await flush();
    assert.deepEqual(c.pending, []);
    assert.deepEqual(c.msgs.map((m) => [m.seq, m.from, m.text]).at(-1), [4, 'alice', 'hello']);
    assert.equal(c.latestSeq, 4);
    /* the broadcast of the same message afterwards changes nothing */
    t.ctl.onFrame({ type: 'message', room: 'lobby',
        ...msg(4, 'alice', { id: 'id1', text: 'hello' }) });
    assert.equal(c.msgs.length, 4);
});

test('a refused send is marked failed; Retry sends the same id, Discard drops it', async () => {
    const t = setup();
    const c = await joinAs(t, 'lobby');
    t.ctl.submit('too fast');
    t.conn.take('send').reject(refused('rate_limited', { retry_after_ms: 1500 }));
    await flush();
    const p = c.pending[0];
    assert.equal(p.state, 'failed');
    assert.equal(p.error, 'you are sending too fast; try again in 1.5 s');
    assert.equal(p.retryAfter, t.clock.t + 1500);
    assert.deepEqual(t.ui.notices(),
        ['Message not sent: you are sending too fast; try again in 1.5 s.']);

    t.ctl.retry(c, p);
    assert.equal(p.state, 'sending');
    const again = t.conn.take('send');
    assert.equal(again.obj.id, p.id, 'the same id: the server drops a duplicate');
    again.reject(refused('timeout'));
    await flush();
    assert.equal(p.state, 'sending', 'unknown fate: stays pending for the resend');

    t.ctl.submit('second');
    t.conn.take('send').reject(refused('too_large'));
    await flush();
    const q = c.findPending('id2');
    assert.equal(q.error, 'the message is too long');
    t.ctl.discard(c, q);
    assert.equal(c.findPending('id2'), null);
});

test('offline sends wait; the rejoin after a reconnect sends them with their ids', async () => {
    const t = setup();
    const c = await joinAs(t, 'lobby', { seq: 3, history: range(1, 3) });
    t.ctl.onFrame({ type: 'typing', room: 'lobby', user: 'bob' });
    t.conn.connected = false;
    t.ctl.connectionLost(1006);
    assert.equal(c.joined, false);
    assert.equal(c.typing.size, 0);
    assert.deepEqual(t.ui.notices(), [], '1006 needs no words');

    assert.equal(t.ctl.submit('queued'), true);
    assert.equal(c.pending.length, 1);
    assert.deepEqual(t.conn.types(), [], 'nothing sent while down');

    t.conn.connected = true;
    t.ctl.ready(false);
    const j = t.conn.take('join');
    assert.deepEqual(j.obj, { type: 'join', room: 'lobby', since: 3, limit: SINCE_LIMIT },
        'rejoin from where we were');
    assert.equal(t.model.active, c, 'a rejoin does not change what is on screen');
    t.conn.take('rooms').resolve({ type: 'rooms', rooms: [] });
    j.resolve({ type: 'joined', room: 'lobby', seq: 5, history: range(4, 5) });
    await flush();
    assert.deepEqual(c.msgs.map((m) => m.seq), [1, 2, 3, 4, 5]);
    const s = t.conn.take('send');
    assert.deepEqual(s.obj, { type: 'send', room: 'lobby', text: 'queued', id: 'id1' });
});

test('a rejoin that finds the server behind us starts over from its history', async () => {
    const t = setup();
    const c = await joinAs(t, 'lobby', { seq: 9, history: range(5, 9) });
    t.ctl.ready(false);
    t.conn.take('join').resolve({ type: 'joined', room: 'lobby', seq: 2, history: range(1, 2) });
    await flush();
    assert.deepEqual(c.msgs.map((m) => m.seq), [1, 2]);
    assert.equal(c.latestSeq, 2);
});

test('close codes are explained; nothing is joined after a close', async () => {
    const t = setup();
    const c = await joinAs(t, 'lobby');
    t.ctl.connectionLost(4008);
    t.ctl.connectionLost(4029);
    assert.equal(c.joined, false);
    assert.equal(t.ui.notices().length, 2);
    assert.match(t.ui.notices()[0], /fell behind/);
    assert.match(t.ui.notices()[1], /too fast/);
});

test('commands from the composer', async () => {
    const t = setup();
    assert.equal(t.ctl.submit('hello'), false, 'no room yet');
    assert.deepEqual(t.ui.notices(), ['Join a room first.']);

    assert.equal(t.ctl.submit('/join #dev'), true);
    assert.equal(t.conn.take('join').obj.room, 'dev');
    assert.equal(t.ctl.submit('/join no spaces!'), false);
    assert.match(t.ui.notices().at(-1), /^Usage: \/join/);
    assert.equal(t.ctl.submit('/nope'), false);
    assert.equal(t.ui.notices().at(-1), 'Unknown command “/nope”. Try /help.');
    assert.equal(t.ctl.submit('/help'), true);
    assert.deepEqual(t.ui.named('notice').at(-1)[2], 15000, 'help stays up longer');

    const c = await joinAs(t, 'lobby');
    assert.equal(t.ctl.submit('//shrug'), true);
    assert.equal(t.conn.take('send').obj.text, '/shrug', '// sends a literal slash');

    assert.equal(t.ctl.submit('/dm @bob hi there'), true);
    const dm = t.model.active;
    assert.equal(dm.name, 'dm:alice:bob');
    assert.deepEqual(t.conn.take('history').obj,
        { type: 'history', room: 'dm:alice:bob', limit: PAGE });
    assert.deepEqual(t.conn.take('dm').obj, { type: 'dm', to: 'bob', text: 'hi there', id: 'id2' });

    assert.equal(t.ctl.submit('/leave nowhere'), false);
    assert.equal(t.ui.notices().at(-1), 'Not in that room.');
    assert.equal(t.ctl.submit('/leave #lobby'), true);
    t.conn.take('leave').resolve({ type: 'left', room: 'lobby' });
    await flush();
    assert.equal(t.model.has('lobby'), false);
    assert.equal(t.model.has(c.name), false);
    t.conn.take('rooms');
});

test('closing a DM sends nothing; a refused leave keeps the room', async () => {
    const t = setup();
    await joinAs(t, 'lobby');
    const dm = t.ctl.openDm('bob');
    t.conn.take('history');
    await t.ctl.leave(dm);
    assert.equal(t.model.has(dm.name), false);
    assert.equal(t.conn.types().includes('leave'), false);
    t.conn.take('rooms');

    const room = t.model.get('lobby');
    const left = t.ctl.leave(room);
    t.conn.take('leave').reject(refused('internal', { message: 'disk on fire' }));
    await left;
    assert.equal(t.model.has('lobby'), true);
    assert.equal(t.ui.notices().at(-1), 'Cannot leave lobby: disk on fire');
});

test('limits from welcome bound what may be sent', async () => {
    const t = setup();
    t.ctl.welcome({ type: 'welcome', user: 'alice', limits: { max_text: 5, max_frame: 'x' } });
    assert.equal(t.model.limits.max_text, 5);
    assert.equal(t.model.limits.max_frame, 65536, 'a bogus limit keeps the default');
    const c = await joinAs(t, 'lobby');
    assert.equal(t.ctl.submit('123456'), false);
    assert.equal(t.ui.notices().at(-1), 'Message too long: 6 characters, the limit is 5.');
    assert.equal(t.ctl.submit('😀😀😀😀😀'), true, 'counted in code points, not UTF-16 units');
    t.conn.take('send');
    t.ctl.welcome({ limits: { max_frame: 90 } });
    assert.equal(t.ctl.submit('\u0001'.repeat(5)), false, 'escaped, it is over the frame limit');
    assert.equal(t.ui.notices().at(-1), 'Message too large for the server.');
    assert.equal(c.pending.length, 1);
    assert.deepEqual(t.conn.types(), []);
    assert.equal(t.ctl.submit('abcde'), true, 'the same length unescaped fits');
    t.conn.take('send');
});

test('welcome names us', () => {
    const t = setup('guest');
    t.ctl.welcome({ user: 'alice' });
    assert.equal(t.model.me, 'alice');
    t.ctl.welcome({ user: '' });
    assert.equal(t.model.me, 'alice');
});

test('typing hints: at most one per TYPING_SEND_MS, never for commands', async () => {
    const t = setup();
    await joinAs(t, 'lobby');
    t.ctl.typed('h');
    assert.deepEqual(t.conn.sent, [{ type: 'typing', room: 'lobby', ref: 'typing' }]);
    t.ctl.typed('he');
    t.clock.t += TYPING_SEND_MS - 1;
    t.ctl.typed('hel');
    assert.equal(t.conn.sent.length, 1);
    t.clock.t += 1;
    t.ctl.typed('/join');
    t.ctl.typed('   ');
    assert.equal(t.conn.sent.length, 1);
    t.ctl.typed('hell');
    assert.equal(t.conn.sent.length, 2);
    t.ctl.submit('hello');
    t.ctl.typed('n');
    assert.equal(t.conn.sent.length, 3, 'after a send, typing again is news');
});

test('paging back asks for history before the oldest, one page at a time', async () => {
    const t = setup();
    const c = await joinAs(t, 'long', { seq: 120, history: range(71, 120) });
    t.ctl.loadOlder(c);
    t.ctl.loadOlder(c);
    assert.equal(c.loadingOlder, true);
    assert.ok(t.ui.named('olderChanged').some((x) => x[1] === c));
    const h = t.conn.take('history');
    assert.deepEqual(h.obj, { type: 'history', room: 'long', limit: PAGE, before: 71 });
    assert.deepEqual(t.conn.types(), [], 'one request while one is out');
    h.resolve({ type: 'history', room: 'long', messages: range(21, 70), more: true });
    await flush();
    assert.equal(c.loadingOlder, false);
    assert.equal(c.more, true);
    assert.ok(t.ui.named('changed').some((x) => x[1] === c && x[2] && x[2].keepBottomDistance));

    t.ctl.loadOlder(c);
    t.conn.take('history').resolve({ type: 'history', room: 'long', messages: range(1, 20),
        more: false });
    await flush();
    assert.equal(c.more, false);
    assert.equal(c.msgs.length, 120);
    t.ctl.loadOlder(c);
    assert.deepEqual(t.conn.types(), [], 'nothing more to load');
});

test('a server saying more with nothing new stops the paging', async () => {
    const t = setup();
    const c = await joinAs(t, 'r', { seq: 60, history: range(11, 60) });
    t.ctl.loadOlder(c);
    t.conn.take('history').resolve({ type: 'history', messages: [], more: true });
    await flush();
    assert.equal(c.more, false);
});

test('DM history refused in open mode: no error, and no more asking', async () => {
    const t = setup();
    const c = t.ctl.openDm('bob');
    assert.equal(t.model.active, c);
    t.conn.take('history').reject(refused('forbidden'));
    await flush();
    assert.equal(t.model.dmHistory, false);
    assert.equal(c.more, false);
    assert.deepEqual(t.ui.notices(), []);
    t.ctl.loadOlder(c);
    assert.deepEqual(t.conn.types(), []);
    t.ctl.onFrame({ type: 'message', room: 'dm:alice:carol', ...msg(7, 'carol') });
    assert.equal(t.model.get('dm:alice:carol').more, false, 'no paging where there is no history');
});

test('openDm refuses bad names and ourselves', () => {
    const t = setup();
    assert.equal(t.ctl.openDm('no way'), null);
    assert.equal(t.ctl.openDm('alice'), null);
    assert.deepEqual(t.ui.notices(),
        ['“no way” is not a valid name.', 'You cannot message yourself.']);
    assert.equal(t.model.convs.size, 0);
    assert.deepEqual(t.conn.types(), []);
});

test('showing a joined room asks who is there; the join box reuses a joined room', async () => {
    const t = setup();
    const a = await joinAs(t, 'a');
    const b = await joinAs(t, 'b');
    assert.equal(t.model.active, b);
    t.ctl.openRoom('a');
    assert.equal(t.model.active, a);
    assert.equal(t.ui.named('activeChanged').length >= 3, true);
    const who = t.conn.take('who');
    assert.deepEqual(who.obj, { type: 'who', room: 'a' });
    assert.deepEqual(t.conn.types(), [], 'no second join');
    who.resolve({ type: 'who', room: 'a', users: ['alice', 'zed', null] });
    await flush();
    assert.deepEqual([...a.members], ['alice', 'zed']);
    t.ctl.openRoom('c');
    assert.equal(t.conn.take('join').obj.room, 'c');
});

test('ready saves and refreshes public rooms now and on a timer; detach stops it', async () => {
    const t = setup();
    t.ctl.ready(true);
    assert.equal(t.saves.now, 1);
    assert.deepEqual(t.ui.named('clearNotice'), [['clearNotice', true]]);
    assert.equal(t.ui.named('all').length, 1, 'first connect with nothing on screen draws all');
    t.conn.take('rooms');
    assert.equal(t.clock.intervals.size, 1);
    const [{ fn, ms }] = t.clock.intervals.values();
    assert.equal(ms, ROOMS_REFRESH_MS);
    fn();
    t.conn.take('rooms');
    t.ctl.ready(false);
    t.conn.take('rooms');
    assert.equal(t.clock.intervals.size, 1, 'one timer, however often we reconnect');
    t.ctl.detach();
    assert.equal(t.clock.intervals.size, 0);
    t.ctl.joinRoom('x');
    await flush();
    assert.deepEqual(t.ui.notices(), [], 'without a connection a join waits quietly');
});

test('markRead moves the read mark and saves soon', async () => {
    const t = setup();
    const c = await joinAs(t, 'lobby', { seq: 1, history: [msg(1)] });
    t.ctl.onFrame({ type: 'message', room: 'lobby', ...msg(2) });
    assert.equal(c.unread('alice'), 1);
    t.ctl.markRead(c);
    assert.equal(c.unread('alice'), 0);
    assert.equal(t.saves.soon, 1);
    t.ctl.markRead(c, { save: false });
    assert.equal(t.saves.soon, 1);
});

test('errorText words for refusals', () => {
    assert.equal(errorText(refused('not_joined')), 'you are not in that room');
    assert.equal(errorText(refused('no_such_user', { message: 'bob is not online' })),
        'bob is not online');
    assert.equal(errorText({ code: 'weird' }), 'weird');
});
