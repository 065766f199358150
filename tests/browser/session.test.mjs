// Unit tests of web/session.js: sign-in over the HTTP API, the saved session,
// and which connection events end the session. Storage, HTTP, the connection
// and the controller are fakes; no browser needed.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { ConnError } from '../../web/conn.js';
import { ChatModel } from '../../web/model.js';
import { CLOSE_REVOKED, SESSION_KEY, Session } from '../../web/session.js';


class FakeStorage {
    constructor(init = {}) {
        this.m = new Map(Object.entries(init));
    }

    getItem(k) {
        return this.m.has(k) ? this.m.get(k) : null;
    }

    setItem(k, v) {
        this.m.set(k, String(v));
    }

    removeItem(k) {
        this.m.delete(k);
    }
}

class FakeConn {
    constructor(handlers) {
        this.h = handlers;
        this.started = null;
        this.stopped = true;
        this.calls = [];
    }

    start(hello) {
        this.started = hello;
        this.stopped = false;
    }

    stop() {
        this.stopped = true;
        this.calls.push('stop');
        this.h.onState('disconnected', { retryAt: 0 });
    }

    retryNow() {
        this.calls.push('retryNow');
    }

    probe() {
        this.calls.push('probe');
    }
}

/* Records every call as [name, ...args]. */
function recorder(names) {
    const r = { calls: [] };
    for (const n of names) {
        r[n] = (...args) => {
            r.calls.push([n, ...args]);
        };
    }
    r.named = (n) => r.calls.filter((c) => c[0] === n);
    return r;
}

function setup({ stored = {}, replies = {}, storage } = {}) {
    const model = new ChatModel();
    const ui = recorder(['loginBusy', 'loginFailed', 'passwordUsed', 'showChat', 'loggedIn',
        'identity', 'signedOut', 'connection']);
    const controller = recorder(['attach', 'detach', 'onFrame', 'welcome', 'ready',
        'connectionLost']);
    controller.welcome = (w) => {
        controller.calls.push(['welcome', w]);
        model.me = w.user || model.me;
    };
    const store = storage || new FakeStorage(stored);
    const posts = [];
    const conns = [];
    const session = new Session({
        model, controller, ui,
        storage: () => store,
        connect: (h) => {
            const c = new FakeConn(h);
            conns.push(c);
            return c;
        },
        post: async (path, body) => {
            posts.push([path, body]);
            const r = replies[path];
            if (r instanceof Error) {
                throw r;
            }
            return r || { status: 404, data: null };
        },
        timers: { setTimeout: () => 0, clearTimeout: () => {} },
    });
    return { model, ui, controller, store, posts, conns, session };
}

test('open server: a name alone starts the connection; welcome shows the chat', async () => {
    const t = setup();
    await t.session.logIn({ user: 'alice', password: '' });
    assert.deepEqual(t.posts, [], 'no HTTP without a password');
    assert.equal(t.ui.named('loginBusy').length, 1);
    assert.equal(t.conns.length, 1);
    const conn = t.conns[0];
    assert.deepEqual(conn.started, { user: 'alice' });
    assert.deepEqual(t.controller.named('attach'), [['attach', conn]]);
    assert.equal(t.model.me, 'alice');
    assert.equal(t.session.loggingIn, true, 'until the server says welcome');

    conn.h.onReady({ type: 'welcome', user: 'alice' }, true);
    assert.equal(t.session.loggingIn, false);
    assert.equal(t.ui.named('loggedIn').length, 1);
    assert.deepEqual(t.ui.named('identity'), [['identity', 'alice']]);
    assert.deepEqual(t.controller.named('ready'), [['ready', true]]);

    conn.h.onFrame({ type: 'message' });
    assert.deepEqual(t.controller.named('onFrame'), [['onFrame', { type: 'message' }]]);

    t.model.conv('lobby').readSeq = 7;
    t.model.active = t.model.get('lobby');
    t.session.save();
    assert.deepEqual(JSON.parse(t.store.getItem(SESSION_KEY)), {
        auth: { user: 'alice' }, me: 'alice', convs: [{ name: 'lobby', read: 7 }],
        active: 'lobby',
    });
});

test('password: login over the API, then hello with the token', async () => {
    const t = setup({ replies: { '/api/login': { status: 200, data: { token: 'tok' } } } });
    await t.session.logIn({ user: 'dana', password: 'pw' });
    assert.deepEqual(t.posts, [['/api/login', { user: 'dana', password: 'pw' }]]);
    assert.equal(t.ui.named('passwordUsed').length, 1, 'the form forgets the password');
    assert.deepEqual(t.conns[0].started, { token: 'tok' });
});

test('register first when asked, with the email only if given', async () => {
    const t = setup({ replies: {
        '/api/register': { status: 201, data: {} },
        '/api/login': { status: 200, data: { token: 'tok' } },
    } });
    await t.session.logIn({ user: 'dana', password: 'pw', register: true, email: 'd@x.test' });
    assert.deepEqual(t.posts.map((p) => p[0]), ['/api/register', '/api/login']);
    assert.deepEqual(t.posts[0][1], { user: 'dana', password: 'pw', email: 'd@x.test' });
    const u = setup({ replies: { '/api/register': { status: 201 } } });
    await u.session.logIn({ user: 'erin', password: 'pw', register: true });
    assert.deepEqual(u.posts[0][1], { user: 'erin', password: 'pw' });
});

test('sign-in refusals are told in words and start nothing', async () => {
    const cases = [
        [{ '/api/register': { status: 409 } }, true, 'That name is already registered.'],
        [{ '/api/register': { status: 400, data: { message: 'weak' } } }, true, 'weak'],
        [{ '/api/login': { status: 401 } }, false, 'Wrong name or password.'],
        [{ '/api/login': { status: 404 } }, false,
            'This server has no accounts: leave the password empty.'],
        [{ '/api/login': { status: 500, data: { error: 'oops' } } }, false, 'oops'],
        [{ '/api/login': { status: 200, data: {} } }, false, 'Could not sign in (HTTP 200).'],
        [{ '/api/login': new Error('offline') }, false, 'Cannot reach the server.'],
    ];
    for (const [replies, register, text] of cases) {
        const t = setup({ replies });
        await t.session.logIn({ user: 'dana', password: 'pw', register });
        assert.deepEqual(t.ui.named('loginFailed'), [['loginFailed', text]]);
        assert.equal(t.session.loggingIn, false);
        assert.equal(t.conns.length, 0);
    }
});

test('one sign-in at a time', async () => {
    const t = setup();
    await t.session.logIn({ user: 'alice', password: '' });
    await t.session.logIn({ user: 'bob', password: '' });
    assert.equal(t.conns.length, 1);
});

test('a hello refused while signing in stops and explains', async () => {
    const t = setup();
    await t.session.logIn({ user: 'alice', password: '' });
    const conn = t.conns[0];
    const r = conn.h.onHelloError(new ConnError({ code: 'name_taken' }));
    assert.equal(r, 'stop');
    assert.deepEqual(t.ui.named('loginFailed'),
        [['loginFailed', 'That name is in use right now. Pick another.']]);
    assert.equal(t.controller.named('detach').length, 1);
    assert.equal(t.session.conn, null);
    assert.equal(t.session.loggingIn, false);
});

test('the socket closing while signing in ends the attempt', async () => {
    const t = setup();
    await t.session.logIn({ user: 'alice', password: '' });
    const conn = t.conns[0];
    conn.h.onClose(1006, '');
    assert.deepEqual(conn.calls, ['stop']);
    assert.deepEqual(t.ui.named('loginFailed'), [['loginFailed', 'Cannot reach the chat server.']]);
    assert.equal(t.controller.named('connectionLost').length, 0);
});

test('a resumed session: restored from storage, closes go to the controller', () => {
    const saved = { auth: { user: 'bob' }, me: 'bob',
        convs: [{ name: 'lobby', read: 4 }, { name: 'bad name' }, { name: 'dm:alice:bob' }],
        active: 'dm:alice:bob' };
    const t = setup({ stored: { [SESSION_KEY]: JSON.stringify(saved) } });
    assert.equal(t.session.resume(), 'bob');
    assert.deepEqual([...t.model.convs.keys()], ['lobby', 'dm:alice:bob']);
    assert.equal(t.model.get('lobby').readSeq, 4);
    assert.equal(t.model.active, t.model.get('dm:alice:bob'));
    assert.equal(t.ui.named('showChat').length, 1, 'shown before the connection is up');
    const conn = t.conns[0];
    assert.deepEqual(conn.started, { user: 'bob' });
    conn.h.onReady({ type: 'welcome', user: 'bob' }, true);
    assert.equal(t.ui.named('loggedIn').length, 0, 'no sign-in form to reset');
    conn.h.onClose(4008, '');
    assert.deepEqual(t.controller.named('connectionLost'), [['connectionLost', 4008]]);
    assert.deepEqual(conn.calls, [], 'conn.js reconnects by itself');
});

test('resume: nothing saved, corrupt, or storage disabled', () => {
    assert.equal(setup().session.resume(), null);
    assert.equal(setup({ stored: { [SESSION_KEY]: '{not json' } }).session.resume(), null);
    assert.equal(setup({ stored: { [SESSION_KEY]: '{"auth":{}}' } }).session.resume(), null);
    const broken = {
        getItem() {
            throw new Error('SecurityError');
        },
        setItem() {
            throw new Error('QuotaExceededError');
        },
        removeItem() {
            throw new Error('SecurityError');
        },
    };
    const t = setup({ storage: broken });
    assert.equal(t.session.resume(), null);
    t.session.auth = { user: 'x' };
    t.session.save();
    t.session.clear();
});

test('a token that no longer works signs out; name_taken on a resume is retried', () => {
    const saved = { auth: { token: 'old' }, me: 'dana', convs: [] };
    const t = setup({ stored: { [SESSION_KEY]: JSON.stringify(saved) } });
    t.session.resume();
    const conn = t.conns[0];
    assert.equal(conn.h.onHelloError(new ConnError({ code: 'name_taken' })), 'retry');
    assert.equal(t.ui.named('signedOut').length, 0);
    assert.equal(conn.h.onHelloError(new ConnError({ code: 'auth_failed' })), 'stop');
    assert.deepEqual(t.ui.named('signedOut'),
        [['signedOut', 'Your session has expired. Please sign in again.']]);
    assert.equal(t.store.getItem(SESSION_KEY), null, 'the saved session is gone');
    assert.equal(t.session.auth, null);
    assert.equal(t.model.me, null);
    assert.deepEqual(conn.calls, ['stop']);
    assert.equal(t.controller.named('detach').length, 1);
});

test('a close for revoked credentials (4003) signs out instead of reconnecting', () => {
    const saved = { auth: { token: 'old' }, me: 'erin', convs: [] };
    const t = setup({ stored: { [SESSION_KEY]: JSON.stringify(saved) } });
    t.session.resume();
    const conn = t.conns[0];
    conn.h.onReady({ type: 'welcome', user: 'erin' }, true);
    conn.h.onClose(CLOSE_REVOKED, 'credentials revoked');
    assert.equal(CLOSE_REVOKED, 4003);
    assert.equal(t.ui.named('signedOut').length, 1);
    assert.match(t.ui.named('signedOut')[0][1], /signed out/);
    assert.equal(t.controller.named('connectionLost').length, 0, 'no reconnect');
    assert.deepEqual(conn.calls, ['stop']);
    assert.equal(t.store.getItem(SESSION_KEY), null, 'the saved session is gone');
});

test('the retry countdown shows only while a retry is scheduled', async () => {
    const t = setup();
    await t.session.logIn({ user: 'alice', password: '' });
    const conn = t.conns[0];
    conn.h.onState('disconnected', { retryAt: 12345 });
    conn.h.onState('connecting', { retryAt: 12345 });
    t.session.signOut('');
    assert.deepEqual(t.ui.named('connection'), [
        ['connection', 'disconnected', 12345],
        ['connection', 'connecting', 0],
        ['connection', 'disconnected', 0],
    ]);
    t.session.retryNow();
    t.session.probe();
    assert.deepEqual(conn.calls, ['stop'], 'signed out: nothing to retry or probe');
});
