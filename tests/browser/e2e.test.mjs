// End-to-end test of the web client (web/) against a real parleyd, in headless Chromium.
//
// Env: PARLEYD (path of the parleyd binary; the suite is skipped without it),
// PARLEY_SOURCE (repo root, default ../..), CHROMIUM (default /usr/bin/chromium),
// UPDATE_DOCS_SCREENSHOT=1 to also refresh docs/screenshot.png.
//
// The steps build on each other (sign in, join, talk, reload, restart the
// server, DM), so they run in order and a step after a failed one is skipped.
import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { spawn, spawnSync } from 'node:child_process';
import fs from 'node:fs';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { chromium } from 'playwright-core';

const HERE = path.dirname(fileURLToPath(import.meta.url));
const PARLEYD = process.env.PARLEYD ? path.resolve(process.env.PARLEYD) : '';
const SOURCE = path.resolve(process.env.PARLEY_SOURCE || path.join(HERE, '..', '..'));
const CHROMIUM = process.env.CHROMIUM || '/usr/bin/chromium';
const OUT = path.join(HERE, 'out');
const STEP_MS = 60000;
const WAIT_MS = 15000;

const XSS = '<img src=x onerror=alert(1)>';

function freePort() {
    return new Promise((resolve, reject) => {
        const s = net.createServer();
        s.on('error', reject);
        s.listen(0, '127.0.0.1', () => {
            const { port } = s.address();
            s.close(() => resolve(port));
        });
    });
}

const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

/* One parleyd process; start() can be called again after stop() (same port, same db). */
class Parleyd {
    constructor(port, dir, extraArgs = []) {
        this.port = port;
        this.dir = dir;
        this.extraArgs = extraArgs;
        this.proc = null;
        this.runs = 0;
    }

    get base() {
        return `http://127.0.0.1:${this.port}`;
    }

    async start() {
        this.runs += 1;
        this.logPath = path.join(OUT, `parleyd-${this.port}-${this.runs}.log`);
        const log = fs.openSync(this.logPath, 'w');
        this.proc = spawn(PARLEYD, [
            '--listen', `127.0.0.1:${this.port}`,
            '--db', path.join(this.dir, 'p.db'),
            '--web-root', path.join(SOURCE, 'web'),
            '--threads', '2',
            ...this.extraArgs,
        ], { stdio: ['ignore', log, log] });
        fs.closeSync(log);
        let spawnError = null;
        const proc = this.proc;
        proc.on('error', (e) => {
            spawnError = e;
        });
        this.exited = new Promise((resolve) => {
            proc.on('exit', (code, signal) => resolve([code, signal]));
        });
        const deadline = Date.now() + WAIT_MS;
        while (Date.now() < deadline) {
            if (spawnError) {
                throw new Error(`cannot start parleyd: ${spawnError.message}`);
            }
            if (proc.exitCode !== null || proc.signalCode !== null) {
                const how = proc.exitCode ?? proc.signalCode;
                throw new Error(`parleyd exited at start (${how}); see ${this.logPath}`);
            }
            try {
                const r = await fetch(`${this.base}/healthz`);
                if (r.status === 200) {
                    return;
                }
            } catch (e) {
                /* not listening yet */
            }
            await sleep(100);
        }
        throw new Error('parleyd did not answer /healthz in time');
    }

    /* SIGTERM, then SIGKILL if it does not exit within 10 s. Returns the exit. */
    async stop() {
        const p = this.proc;
        if (!p || !p.pid || p.exitCode !== null || p.signalCode !== null) {
            return null;
        }
        p.kill('SIGTERM');
        const timer = setTimeout(() => p.kill('SIGKILL'), 10000);
        const [code, signal] = await this.exited;
        clearTimeout(timer);
        this.proc = null;
        return { code, signal };
    }

    killNow() {
        if (this.proc && this.proc.exitCode === null && this.proc.signalCode === null) {
            this.proc.kill('SIGKILL');
        }
    }
}

/* A browser tab with its dialogs and page errors recorded. */
async function openUser(browser, name, viewport = { width: 1280, height: 760 }) {
    const context = await browser.newContext({ viewport });
    await context.addInitScript(() => {
        window.__alerts = [];
        for (const f of ['alert', 'confirm', 'prompt']) {
            window[f] = (...a) => {
                window.__alerts.push([f, ...a.map(String)]);
            };
        }
    });
    const page = await context.newPage();
    const u = { name, context, page, dialogs: [], errors: [] };
    page.on('dialog', (d) => {
        u.dialogs.push(d.message());
        d.dismiss().catch(() => {});
    });
    page.on('pageerror', (e) => u.errors.push(String(e)));
    page.on('console', (m) => {
        if (m.type() === 'error' && !/WebSocket|Failed to load resource/.test(m.text())) {
            u.errors.push(`console: ${m.text()}`);
        }
    });
    return u;
}

const tid = (id) => `[data-testid="${id}"]`;

async function statusIs(page, text, timeout = WAIT_MS) {
    await page.waitForFunction((t) => {
        const e = document.querySelector('[data-testid="connection-status"]');
        return e && e.textContent.trim() === t;
    }, text, { timeout });
}

async function signIn(u, base) {
    await u.page.goto(`${base}/`);
    await u.page.fill(tid('login-user'), u.name);
    await u.page.click(tid('login-submit'));
    await statusIs(u.page, 'connected');
}

/* Joined when the members panel lists ourselves (it comes from `joined`). */
async function join(u, room) {
    await u.page.fill(tid('room-join'), room);
    await u.page.press(tid('room-join'), 'Enter');
    await u.page.locator(`${tid('members')} >> text=${u.name}`).first()
        .waitFor({ timeout: WAIT_MS });
    await u.page.waitForFunction(
        (r) => document.getElementById('room-title').textContent.includes(r),
        room, { timeout: WAIT_MS });
}

/* Type and send; resolves once the server acknowledged (nothing pending). */
async function say(u, text) {
    await u.page.fill(tid('composer'), text);
    await u.page.press(tid('composer'), 'Enter');
    await u.page.waitForFunction((t) => [...document.querySelectorAll('[data-testid="message"]')]
        .some((m) => m.querySelector('.text').textContent === t &&
            !m.classList.contains('pending') && !m.classList.contains('failed')),
    text, { timeout: WAIT_MS });
}

/* Wait until a message with exactly this text shows; returns the element's full text. */
async function seen(u, text, timeout = WAIT_MS) {
    await u.page.waitForFunction((t) => [...document.querySelectorAll('[data-testid="message"]')]
        .some((m) => m.querySelector('.text').textContent === t), text, { timeout });
    return u.page.evaluate((t) => [...document.querySelectorAll('[data-testid="message"]')]
        .find((m) => m.querySelector('.text').textContent === t).textContent, text);
}

async function countText(u, text) {
    return u.page.evaluate((t) => [...document.querySelectorAll('[data-testid="message"]')]
        .filter((m) => m.querySelector('.text').textContent === t).length, text);
}

async function seqsUnique(u) {
    const seqs = await u.page.evaluate(() =>
        [...document.querySelectorAll('[data-testid="message"]')]
            .map((m) => m.dataset.seq).filter(Boolean));
    return seqs.length === new Set(seqs).size;
}

describe('web client against parleyd', { skip: PARLEYD ? false : 'PARLEYD is not set' }, () => {
    let dir;
    let server;
    let browser;
    let alice;
    let bob;
    let failed = false;

    /* Each step is skipped once an earlier one failed: they share one story. */
    const step = (name, fn) => it(name, { timeout: STEP_MS }, async (t) => {
        if (failed) {
            t.skip('an earlier step failed');
            return;
        }
        try {
            await fn(t);
        } catch (e) {
            failed = true;
            for (const u of [alice, bob]) {
                if (u) {
                    await u.page.screenshot({ path: path.join(OUT, `fail-${u.name}.png`) })
                        .catch(() => {});
                }
            }
            throw e;
        }
    });

    before(async () => {
        fs.mkdirSync(OUT, { recursive: true });
        dir = fs.mkdtempSync(path.join(os.tmpdir(), 'parley-e2e-'));
        server = new Parleyd(await freePort(), dir);
        process.on('exit', () => server && server.killNow());
        await server.start();
        browser = await chromium.launch({
            executablePath: CHROMIUM,
            headless: true,
            args: ['--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run',
                '--disable-background-networking', '--disable-component-update', '--disable-sync'],
        });
        alice = await openUser(browser, 'alice');
        bob = await openUser(browser, 'bob');
    });

    after(async () => {
        if (browser) {
            await browser.close().catch(() => {});
        }
        if (server) {
            await server.stop().catch(() => server.killNow());
        }
        if (dir) {
            fs.rmSync(dir, { recursive: true, force: true });
        }
    });

    step('serves the client with no external resources', async () => {
        const r = await fetch(`${server.base}/`);
        assert.equal(r.status, 200);
        const html = await r.text();
        assert.match(html, /data-testid="login-user"/);
        assert.doesNotMatch(html, /(src|href)="(https?:)?\/\//, 'no external resources');
        assert.doesNotMatch(html, /<script>(?!<\/)/, 'no inline scripts');
        for (const f of ['app.js', 'conn.js', 'model.js', 'style.css']) {
            const res = await fetch(`${server.base}/${f}`);
            assert.equal(res.status, 200, f);
            if (f.endsWith('.js')) {
                assert.match(res.headers.get('content-type') || '', /javascript/,
                    `${f} must be served as JavaScript for module scripts`);
            }
        }
    });

    step('alice and bob sign in and join a room', async () => {
        await signIn(alice, server.base);
        await signIn(bob, server.base);
        await join(alice, 'lobby');
        await join(bob, 'lobby');
        await alice.page.locator(`${tid('members')} >> text=bob`).waitFor({ timeout: WAIT_MS });
    });

    step('messages flow both ways with author and text', async () => {
        await say(alice, 'Hello bob, welcome to parley.');
        const got = await seen(bob, 'Hello bob, welcome to parley.');
        assert.match(got, /alice/);
        await say(bob, 'Hi alice! Glad to be here.');
        assert.match(await seen(alice, 'Hi alice! Glad to be here.'), /bob/);
        assert.equal(await countText(alice, 'Hello bob, welcome to parley.'), 1,
            'optimistic echo and broadcast are one message');
        assert.ok(await seqsUnique(alice));
    });

    step('typing indicator and @mention completion', async () => {
        await bob.page.fill(tid('composer'), '');
        await bob.page.type(tid('composer'), 'thinking');
        await alice.page.waitForFunction(() =>
            document.getElementById('typing').textContent.includes('bob is typing'),
        null, { timeout: WAIT_MS });
        await bob.page.fill(tid('composer'), '');
        await alice.page.fill(tid('composer'), '');
        await alice.page.type(tid('composer'), 'ping @b');
        await alice.page.locator('#mention-list >> text=@bob').waitFor({ timeout: WAIT_MS });
        await alice.page.press(tid('composer'), 'Tab');
        assert.equal(await alice.page.inputValue(tid('composer')), 'ping @bob ');
        await alice.page.type(tid('composer'), 'look at this');
        await alice.page.press(tid('composer'), 'Enter');
        await seen(bob, 'ping @bob look at this');
        await bob.page.locator('.msg.mention').first().waitFor({ timeout: WAIT_MS });
    });

    step('markup in a message is shown as text and runs nothing', async () => {
        await say(alice, XSS);
        const got = await seen(bob, XSS);
        assert.ok(got.includes(XSS));
        await sleep(300); /* a broken <img> would have fired onerror by now */
        for (const u of [alice, bob]) {
            assert.equal(await u.page.locator('#messages img').count(), 0, `${u.name}: no <img>`);
            const html = await u.page.evaluate((t) => [...document.querySelectorAll('.msg .text')]
                .find((e) => e.textContent === t).innerHTML, XSS);
            assert.equal(html, '&lt;img src=x onerror=alert(1)&gt;');
            assert.deepEqual(await u.page.evaluate(() => window.__alerts), []);
            assert.deepEqual(u.dialogs, []);
        }
    });

    step('a message over the text limit is refused with a visible error', async () => {
        const long = 'x'.repeat(4001);
        await alice.page.fill(tid('composer'), long);
        await alice.page.press(tid('composer'), 'Enter');
        await alice.page.locator('#banner >> text=too long').waitFor({ timeout: WAIT_MS });
        assert.equal((await alice.page.inputValue(tid('composer'))).length, 4001,
            'the text is kept for editing');
        await alice.page.fill(tid('composer'), '');
        await alice.page.click('#banner-close');
    });

    step('reload keeps the session and shows the history', async () => {
        await bob.page.reload();
        await statusIs(bob.page, 'connected');
        assert.match(await seen(bob, 'Hello bob, welcome to parley.'), /alice/);
        await seen(bob, XSS);
        await bob.page.locator(`${tid('members')} >> text=alice`).waitFor({ timeout: WAIT_MS });
        assert.ok(await seqsUnique(bob));
    });

    step('server restart: both reconnect and alice recovers what bob sent meanwhile', async () => {
        const exit = await server.stop();
        assert.ok(exit, 'parleyd was running');
        const notConnected = (u) => u.page.waitForFunction(() =>
            document.querySelector('[data-testid="connection-status"]').textContent !==
                'connected', null, { timeout: WAIT_MS });
        await notConnected(alice);
        await notConnected(bob);
        /* Alice stays offline so that bob's messages are sent while she is
         * away: she must fetch them with join {since}, not get them live. */
        await alice.context.setOffline(true);
        /* Written while the server is down: kept pending, sent after the rejoin. */
        await bob.page.fill(tid('composer'), 'Queued while the server was down.');
        await bob.page.press(tid('composer'), 'Enter');
        await bob.page.locator('.msg.pending', { hasText: 'Queued while' })
            .waitFor({ timeout: WAIT_MS });
        await server.start();
        await statusIs(bob.page, 'connected', 30000);
        await bob.page.locator('.msg.pending').waitFor({ state: 'detached', timeout: WAIT_MS });
        await say(bob, 'Sent while you were away.');
        assert.notEqual(await alice.page.textContent(tid('connection-status')), 'connected',
            'alice was offline when bob sent');
        assert.equal(await countText(alice, 'Sent while you were away.'), 0);
        await alice.context.setOffline(false);
        await statusIs(alice.page, 'connected', 30000);
        assert.match(await seen(alice, 'Sent while you were away.'), /bob/);
        await seen(alice, 'Queued while the server was down.');
        await say(alice, 'Back again.');
        await seen(bob, 'Back again.');
        for (const u of [alice, bob]) {
            assert.equal(await countText(u, 'Sent while you were away.'), 1, `${u.name}: no dup`);
            assert.equal(await countText(u, 'Queued while the server was down.'), 1,
                `${u.name}: no dup`);
            assert.equal(await countText(u, 'Hello bob, welcome to parley.'), 1,
                `${u.name}: no dup`);
            assert.ok(await seqsUnique(u));
        }
    });

    step('direct messages between alice and bob', async () => {
        await alice.page.click(`${tid('members')} button[data-user="bob"]`);
        await alice.page.waitForFunction(() =>
            document.getElementById('room-title').textContent.includes('bob'), null,
        { timeout: WAIT_MS });
        await say(alice, 'Psst, bob: a private word.');
        const dm = bob.page.locator('#dm-list button.conv', { hasText: 'alice' });
        await dm.waitFor({ timeout: WAIT_MS });
        await bob.page.locator('#dm-list .badge:not([hidden])').waitFor({ timeout: WAIT_MS });
        assert.equal(await countText(bob, 'Psst, bob: a private word.'), 0,
            'a DM does not show in the room');
        await dm.click();
        assert.match(await seen(bob, 'Psst, bob: a private word.'), /alice/);
        await say(bob, 'Got it, thanks.');
        assert.match(await seen(alice, 'Got it, thanks.'), /bob/);
    });

    step('open mode: DMs have no history to load and go only to users online', async () => {
        /* After a reload the conversation is restored empty: the server
         * serves no DM history in open mode, and the client says so once,
         * without an error. */
        await bob.page.reload();
        await statusIs(bob.page, 'connected');
        await bob.page.click('#dm-list button.conv:has-text("alice")');
        await bob.page.locator('#older-note >> text=keeps no DM history')
            .waitFor({ timeout: WAIT_MS });
        assert.equal(await bob.page.isVisible('#banner'), false, 'no error banner');
        assert.equal(await countText(bob, 'Psst, bob: a private word.'), 0);
        assert.equal(await bob.page.isVisible('#load-older'), false);
        await say(alice, 'After your reload.');
        await seen(bob, 'After your reload.');
        /* a DM to a name nobody holds is refused with the server's reason */
        await bob.page.fill(tid('composer'), '/dm nobody_here are you there?');
        await bob.page.press(tid('composer'), 'Enter');
        await bob.page.locator('#banner >> text=online').waitFor({ timeout: WAIT_MS });
        const failed = bob.page.locator('.msg.failed');
        await failed.first().waitFor({ timeout: WAIT_MS });
        await failed.first().locator('button:has-text("Discard")').click();
        await bob.page.click('button[aria-label="Close conversation with nobody_here"]');
        await bob.page.click('#banner-close');
    });

    step('scrolling up loads older messages; jump to latest', async () => {
        const N = 120;
        /* A third user fills a room from bob's page over its own socket. */
        await bob.page.evaluate(async (n) => {
            const scheme = location.protocol === 'https:' ? 'wss' : 'ws';
            const ws = new WebSocket(`${scheme}://${location.host}/ws`);
            await new Promise((resolve, reject) => {
                ws.onopen = resolve;
                ws.onerror = reject;
            });
            let ref = 0;
            const waiting = new Map();
            ws.onmessage = (e) => {
                const f = JSON.parse(e.data);
                if (waiting.has(f.ref)) {
                    waiting.get(f.ref)(f);
                    waiting.delete(f.ref);
                }
            };
            const req = (o) => new Promise((resolve) => {
                ref += 1;
                waiting.set(ref, resolve);
                ws.send(JSON.stringify({ ...o, ref }));
            });
            const check = (f, type) => {
                if (f.type !== type) {
                    throw new Error(`seeder: ${JSON.stringify(f)}`);
                }
            };
            check(await req({ type: 'hello', user: 'seeder' }), 'welcome');
            check(await req({ type: 'join', room: 'long' }), 'joined');
            for (let i = 1; i <= n; i++) {
                for (;;) {
                    const f = await req(
                        { type: 'send', room: 'long', text: `line ${i}`, id: `seed-${i}` });
                    if (f.type === 'error' && f.code === 'rate_limited') {
                        await new Promise((r) => setTimeout(r, f.retry_after_ms || 200));
                        continue;
                    }
                    check(f, 'ack');
                    break;
                }
            }
            ws.close();
        }, N);
        await join(alice, 'long');
        await seen(alice, `line ${N}`);
        const count = () => alice.page.locator(tid('message')).count();
        assert.equal(await count(), 50, 'join shows the latest page');
        assert.equal(await alice.page.isVisible('#jump'), false);
        const deadline = Date.now() + 20000;
        while (await count() < N && Date.now() < deadline) {
            await alice.page.evaluate(() => {
                document.getElementById('scroller').scrollTop = 0;
            });
            await sleep(150);
        }
        assert.equal(await count(), N, 'every older message was loaded');
        const texts = await alice.page.locator(`${tid('message')} .text`).allTextContents();
        assert.deepEqual(texts, Array.from({ length: N }, (_, i) => `line ${i + 1}`),
            'in order, no duplicates');
        await alice.page.locator('#older-note >> text=beginning').waitFor({ timeout: WAIT_MS });
        await alice.page.evaluate(() => {
            document.getElementById('scroller').scrollTop = 0;
        });
        await alice.page.locator('#jump').waitFor({ state: 'visible', timeout: WAIT_MS });
        await alice.page.click('#jump');
        await alice.page.locator('#jump').waitFor({ state: 'hidden', timeout: WAIT_MS });
        assert.ok(await alice.page.evaluate(() => {
            const sc = document.getElementById('scroller');
            return sc.scrollHeight - sc.scrollTop - sc.clientHeight < 50;
        }), 'scrolled to the newest message');
    });

    step('screenshots of the chat view', async () => {
        await alice.page.click('#room-list button.conv:has-text("lobby")');
        await seen(alice, 'Back again.');
        await alice.page.fill(tid('composer'), '');
        await alice.page.screenshot({ path: path.join(OUT, 'chat.png') });
        await alice.page.setViewportSize({ width: 960, height: 540 });
        const small = path.join(OUT, 'screenshot.png');
        await alice.page.screenshot({ path: small });
        const size = fs.statSync(small).size;
        assert.ok(size < 160 * 1024, `README screenshot is small (${size} bytes)`);
        if (process.env.UPDATE_DOCS_SCREENSHOT === '1') {
            fs.mkdirSync(path.join(SOURCE, 'docs'), { recursive: true });
            fs.copyFileSync(small, path.join(SOURCE, 'docs', 'screenshot.png'));
        }
        await alice.page.setViewportSize({ width: 1280, height: 760 });
    });

    step('narrow screen, keyboard only', async () => {
        const carol = await openUser(browser, 'carol', { width: 360, height: 740 });
        const p = carol.page;
        await p.goto(`${server.base}/`);
        await p.keyboard.type('carol'); /* the name field has focus on load */
        await p.keyboard.press('Enter');
        await statusIs(p, 'connected');
        assert.equal(await p.locator(tid('room-join')).isVisible(), false,
            'the sidebar is collapsed');
        await p.focus('#toggle-sidebar');
        await p.keyboard.press('Enter');
        await p.locator(tid('room-join')).waitFor({ state: 'visible', timeout: WAIT_MS });
        await p.waitForFunction(() => document.activeElement.id === 'room-join');
        await p.keyboard.type('lobby');
        await p.keyboard.press('Enter');
        await p.waitForFunction(() => document.activeElement.id === 'composer');
        await seen(carol, 'Back again.');
        await p.keyboard.type('Hello from a phone.');
        await p.keyboard.press('Enter');
        await seen(alice, 'Hello from a phone.');
        const overflow = await p.evaluate(() => document.documentElement.scrollWidth);
        assert.ok(overflow <= 360, `no horizontal scrolling (${overflow}px)`);
        await p.screenshot({ path: path.join(OUT, 'narrow.png') });
        assert.deepEqual(carol.errors, []);
        await carol.context.close();
    });

    step('sending too fast shows rate_limited on the message; retry and discard', async () => {
        const erin = await openUser(browser, 'erin');
        await signIn(erin, server.base);
        await join(erin, 'flood');
        /* Faster than any typist: 60 sends in one task, over the burst of 40. */
        await erin.page.evaluate(() => {
            const box = document.getElementById('composer');
            for (let i = 0; i < 60; i++) {
                box.value = `flood ${i}`;
                box.dispatchEvent(new KeyboardEvent('keydown', { key: 'Enter', bubbles: true }));
            }
        });
        const failed = erin.page.locator('.msg.failed');
        await failed.first().waitFor({ timeout: WAIT_MS });
        assert.match(await failed.first().textContent(), /too fast; try again in \d+(\.\d)? s/);
        await erin.page.locator('#banner >> text=too fast').waitFor({ timeout: WAIT_MS });
        await erin.page.waitForFunction(() => !document.querySelector('.msg.pending'), null,
            { timeout: WAIT_MS });
        const nFailed = await failed.count();
        assert.ok(nFailed >= 1 && nFailed <= 20, `${nFailed} refused`);
        await sleep(1500); /* the bucket refills */
        const text = await failed.first().locator('.text').textContent();
        await failed.first().locator('button:has-text("Retry")').click();
        await seen(erin, text);
        await erin.page.waitForFunction((t) => [...document.querySelectorAll('.msg')]
            .some((m) => m.querySelector('.text').textContent === t &&
                !m.classList.contains('failed') && !m.classList.contains('pending')),
        text, { timeout: WAIT_MS });
        while (await failed.count()) {
            await failed.first().locator('button:has-text("Discard")').click();
        }
        assert.equal(await erin.page.locator(tid('message')).count(), 61 - nFailed);
        assert.deepEqual(erin.errors, []);
        await erin.context.close();
    });

    step('no script errors in the pages', async () => {
        assert.deepEqual(alice.errors, []);
        assert.deepEqual(bob.errors, []);
    });
});

/* Accounts mode needs a parleyd that knows --auth; older builds skip this part. */
function supportsAccounts() {
    if (!PARLEYD) {
        return false;
    }
    try {
        const r = spawnSync(PARLEYD, ['--help'], { encoding: 'utf8', timeout: 10000 });
        return /--auth\b/.test(`${r.stdout}${r.stderr}`);
    } catch (e) {
        return false;
    }
}

describe('web client in accounts mode', {
    skip: !PARLEYD ? 'PARLEYD is not set' : !supportsAccounts() && 'parleyd has no --auth',
}, () => {
    let dir;
    let server;
    let browser;
    let dana;
    let failed = false;
    const PASSWORD = 'correct-horse-battery-staple';

    const step = (name, fn) => it(name, { timeout: STEP_MS }, async (t) => {
        if (failed) {
            t.skip('an earlier step failed');
            return;
        }
        try {
            await fn(t);
        } catch (e) {
            failed = true;
            if (dana) {
                await dana.page.screenshot({ path: path.join(OUT, 'fail-accounts.png') })
                    .catch(() => {});
            }
            throw e;
        }
    });

    before(async () => {
        fs.mkdirSync(OUT, { recursive: true });
        dir = fs.mkdtempSync(path.join(os.tmpdir(), 'parley-e2e-acc-'));
        server = new Parleyd(await freePort(), dir, ['--auth', 'accounts']);
        process.on('exit', () => server && server.killNow());
        await server.start();
        browser = await chromium.launch({
            executablePath: CHROMIUM,
            headless: true,
            args: ['--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run',
                '--disable-background-networking', '--disable-component-update', '--disable-sync'],
        });
        dana = await openUser(browser, 'dana');
    });

    after(async () => {
        if (browser) {
            await browser.close().catch(() => {});
        }
        if (server) {
            await server.stop().catch(() => server.killNow());
        }
        if (dir) {
            fs.rmSync(dir, { recursive: true, force: true });
        }
    });

    const loginError = () => dana.page.textContent('#login-error');

    step('a name without a password is refused with a hint', async () => {
        const p = dana.page;
        await p.goto(`${server.base}/`);
        await p.fill(tid('login-user'), 'dana');
        await p.click(tid('login-submit'));
        await p.waitForFunction(() => document.getElementById('login-error').textContent !== '',
            null, { timeout: WAIT_MS });
        assert.match(await loginError(), /password/i);
    });

    step('register, then talk', async () => {
        const p = dana.page;
        await p.click('#register-toggle');
        await p.fill(tid('login-user'), 'dana');
        await p.fill(tid('login-password'), PASSWORD);
        await p.fill('#login-email', 'dana@example.test');
        await p.click(tid('login-submit'));
        await statusIs(p, 'connected');
        await join(dana, 'members-only');
        await say(dana, 'Signed in with a token.');
    });

    step('reload keeps the token session', async () => {
        await dana.page.reload();
        await statusIs(dana.page, 'connected');
        await seen(dana, 'Signed in with a token.');
    });

    step('sign out; a wrong password is refused, the right one works', async () => {
        const p = dana.page;
        await p.click('#logout');
        await p.locator(tid('login-user')).waitFor({ state: 'visible', timeout: WAIT_MS });
        await p.fill(tid('login-user'), 'dana');
        await p.fill(tid('login-password'), 'not-the-password');
        await p.click(tid('login-submit'));
        await p.locator('#login-error >> text=Wrong name or password').waitFor({ timeout: WAIT_MS });
        await p.fill(tid('login-password'), PASSWORD);
        await p.click(tid('login-submit'));
        await statusIs(p, 'connected');
        assert.equal(await p.inputValue(tid('login-password')), '', 'password not kept');
        await join(dana, 'members-only');
        await seen(dana, 'Signed in with a token.');
        assert.deepEqual(dana.errors, []);
    });

    step('registering a taken name says so', async () => {
        const p = dana.page;
        await p.click('#logout');
        await p.click('#register-toggle');
        await p.fill(tid('login-user'), 'dana');
        await p.fill(tid('login-password'), 'another-password-here');
        await p.click(tid('login-submit'));
        await p.locator('#login-error >> text=already registered').waitFor({ timeout: WAIT_MS });
    });
});
