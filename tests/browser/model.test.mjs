// Unit tests of web/model.js (pure logic of the web client), no browser needed.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import {
    ChatModel, Conversation, DEFAULT_LIMITS, GROUP_WINDOW_MS, MAX_GAP_FILL, backoffDelay,
    codePoints, completions, dmPeer, dmRoom, mentionAt, parseDm, sameGroup, typingText,
} from '../../web/model.js';

const msg = (seq, from = 'bob', extra = {}) =>
    ({ seq, from, text: `m${seq}`, ts: 1700000000000 + seq * 1000, ...extra });

test('dm room names are ordered and parsed back', () => {
    assert.equal(dmRoom('bob', 'alice'), 'dm:alice:bob');
    assert.equal(dmRoom('alice', 'bob'), 'dm:alice:bob');
    assert.deepEqual(parseDm('dm:alice:bob'), ['alice', 'bob']);
    assert.equal(parseDm('dm:bob:alice'), null, 'unordered names are not a DM room');
    assert.equal(parseDm('general'), null);
    assert.equal(dmPeer('dm:alice:bob', 'alice'), 'bob');
    assert.equal(dmPeer('dm:alice:bob', 'bob'), 'alice');
    const c = new Conversation('dm:alice:bob', 'bob');
    assert.equal(c.kind, 'dm');
    assert.equal(c.peer, 'alice');
    assert.equal(new Conversation('general', 'bob').kind, 'room');
});

test('merge keeps seq order and drops duplicates', () => {
    const c = new Conversation('r', 'me');
    assert.equal(c.merge([msg(3), msg(1)], 'me'), 2);
    assert.equal(c.merge([msg(2), msg(3), msg(1)], 'me'), 1);
    assert.deepEqual(c.msgs.map((m) => m.seq), [1, 2, 3]);
    assert.equal(c.merge([{ seq: 'x', from: 'a', text: 't' }, null, { seq: 4 }], 'me'), 0,
        'malformed messages are ignored');
    assert.equal(c.maxSeq(), 3);
    assert.equal(c.oldestSeq(), 1);
    assert.equal(c.latestSeq, 3);
});

test('own message settles the pending copy whether ack or broadcast comes first', () => {
    const c = new Conversation('r', 'me');
    const p1 = c.addPending('id1', 'me', 'hello');
    c.addPending('id2', 'me', 'again');
    assert.equal(c.pending.length, 2);
    // broadcast first, then the ack: one copy, no pending left
    c.merge([msg(5, 'me', { id: 'id1', text: 'hello' })], 'me');
    assert.equal(c.findPending(p1.id), null);
    assert.equal(c.ack('id1', 5, 'me'), false, 'late ack finds nothing to settle');
    // ack first, then the broadcast replaces the optimistic copy
    assert.equal(c.ack('id2', 6, 'me'), true);
    assert.equal(c.pending.length, 0);
    c.merge([msg(6, 'me', { id: 'id2', text: 'again', ts: 42 })], 'me');
    assert.deepEqual(c.msgs.map((m) => [m.seq, m.text]), [[5, 'hello'], [6, 'again']]);
    assert.equal(c.msgs[1].ts, 42, 'server timestamp wins');
    // someone else's message with the same id does not settle ours
    c.addPending('id3', 'me', 'x');
    c.merge([msg(7, 'bob', { id: 'id3' })], 'me');
    assert.equal(c.pending.length, 1);
});

test('unread counts other people\'s messages above the read mark', () => {
    const c = new Conversation('r', 'me');
    c.merge([msg(1), msg(2, 'me'), msg(3)], 'me');
    assert.equal(c.unread('me'), 2);
    c.readSeq = 1;
    assert.equal(c.unread('me'), 1);
    c.markRead();
    assert.equal(c.unread('me'), 0);
    c.merge([msg(4)], 'me');
    assert.equal(c.unread('me'), 1);
});

test('gaps are found from the top, small ones filled, big ones dropped', () => {
    const c = new Conversation('r', 'me');
    assert.equal(c.findGap(), null, 'nothing loaded: no gap');
    c.merge([msg(1), msg(2), msg(5), msg(6)], 'me');
    assert.deepEqual(c.findGap(), { before: 5, limit: 2 });
    c.latestSeq = 9;
    assert.deepEqual(c.findGap(), { before: 10, limit: 3 }, 'missing newest first');
    c.merge([msg(7), msg(8), msg(9)], 'me');
    assert.deepEqual(c.findGap(), { before: 5, limit: 2 });
    c.gapFloor = 5;
    assert.equal(c.findGap(), null, 'unfillable gap is not asked again');

    const d = new Conversation('r', 'me');
    d.merge([msg(1), msg(MAX_GAP_FILL + 10)], 'me');
    const g = d.findGap();
    assert.deepEqual(g, { drop: MAX_GAP_FILL + 10 });
    d.dropBelow(g.drop);
    assert.deepEqual(d.msgs.map((m) => m.seq), [MAX_GAP_FILL + 10]);
    assert.equal(d.more, true);
    assert.equal(d.findGap(), null);
});

test('trim keeps the newest messages, reset forgets all', () => {
    const c = new Conversation('r', 'me');
    c.merge(Array.from({ length: 30 }, (_, i) => msg(i + 1)), 'me');
    c.trim(40, 10);
    assert.equal(c.msgs.length, 30, 'under the limit nothing goes');
    c.trim(20, 10);
    assert.deepEqual(c.msgs.map((m) => m.seq), [21, 22, 23, 24, 25, 26, 27, 28, 29, 30]);
    assert.equal(c.more, true);
    assert.equal(c.findGap(), null);
    c.readSeq = 30;
    c.reset();
    assert.equal(c.msgs.length, 0);
    assert.equal(c.readSeq, 0);
    assert.equal(c.latestSeq, 0);
});

test('grouping needs the same author, day and a short pause', () => {
    const a = { from: 'x', ts: Date.UTC(2024, 0, 2, 12, 0, 0) };
    assert.equal(sameGroup(a, { from: 'x', ts: a.ts + 1000 }), true);
    assert.equal(sameGroup(a, { from: 'y', ts: a.ts + 1000 }), false);
    assert.equal(sameGroup(a, { from: 'x', ts: a.ts + GROUP_WINDOW_MS + 1 }), false);
    assert.equal(sameGroup(null, a), false);
});

test('mention completion finds the word before the caret', () => {
    assert.deepEqual(mentionAt('hi @al', 6), { start: 3, prefix: 'al' });
    assert.deepEqual(mentionAt('@', 1), { start: 0, prefix: '' });
    assert.equal(mentionAt('mail@al', 7), null, 'an e-mail address is not a mention');
    assert.equal(mentionAt('hi @al x', 8), null);
    assert.deepEqual(completions(['bob', 'Alice', 'alan', 'me', 'bob'], 'al', 'me'),
        ['alan', 'Alice']);
    assert.deepEqual(completions(['bob', 'me'], '', 'me'), ['bob']);
});

test('backoff doubles from 500 ms, is capped at 15 s and jittered', () => {
    assert.equal(backoffDelay(0, () => 0), 250);
    assert.equal(backoffDelay(0, () => 1), 500);
    assert.equal(backoffDelay(3, () => 1), 4000);
    assert.equal(backoffDelay(10, () => 1), 15000);
    assert.equal(backoffDelay(1000, () => 0.5), 11250);
    for (let i = 0; i < 50; i++) {
        const d = backoffDelay(i);
        assert.ok(d >= 250 && d <= 15000, `attempt ${i}: ${d}`);
    }
});

test('typing text and code points', () => {
    assert.equal(typingText([]), '');
    assert.equal(typingText(['alice']), 'alice is typing…');
    assert.equal(typingText(['a', 'b']), 'a and b are typing…');
    assert.equal(typingText(['a', 'b', 'c']), 'several people are typing…');
    assert.equal(codePoints('a😀b'), 3);
});

test('the chat model: conversations by name, snapshot and restore', () => {
    const m = new ChatModel('alice');
    const lobby = m.conv('lobby');
    assert.equal(m.conv('lobby'), lobby, 'one conversation per name');
    assert.equal(m.conv('dm:alice:bob').peer, 'bob');
    lobby.readSeq = 9;
    m.active = lobby;
    const snap = m.snapshot();
    assert.deepEqual(snap, {
        convs: [{ name: 'lobby', read: 9 }, { name: 'dm:alice:bob', read: 0 }], active: 'lobby',
    });

    m.dmHistory = false;
    m.reset('alice');
    assert.equal(m.convs.size, 0);
    assert.equal(m.active, null);
    assert.equal(m.dmHistory, true);
    m.restore({ convs: [...snap.convs, { name: 'no spaces' }, null, { name: 'dm:bob:alice' },
        { name: 'x', read: 'NaN' }], active: 'lobby' });
    assert.deepEqual([...m.convs.keys()], ['lobby', 'dm:alice:bob', 'x'],
        'invalid names are skipped');
    assert.equal(m.get('lobby').readSeq, 9);
    assert.equal(m.get('x').readSeq, 0);
    assert.equal(m.active, m.get('lobby'));
    m.reset('bob');
    m.restore({ convs: 'junk', active: 'gone' });
    assert.equal(m.convs.size, 0);
    assert.equal(m.active, null);
});

test('the chat model takes sane limits and public rooms only', () => {
    const m = new ChatModel('alice');
    assert.deepEqual(m.limits, DEFAULT_LIMITS);
    m.setLimits({ max_text: 10, max_frame: -1 });
    assert.deepEqual(m.limits, { max_text: 10, max_frame: DEFAULT_LIMITS.max_frame });
    m.setLimits(undefined);
    assert.equal(m.limits.max_text, 10);
    assert.deepEqual(new ChatModel().limits, DEFAULT_LIMITS, 'the defaults are not shared');
    m.setPublicRooms([{ name: 'a', members: 1 }, { name: 3 }, null]);
    assert.deepEqual(m.publicRooms, [{ name: 'a', members: 1 }]);
    m.setPublicRooms('nope');
    assert.deepEqual(m.publicRooms, []);
});
