// The Bun peer that tools/bench/run measures parley against: Bun's built-in
// WebSocket server (uWebSockets underneath) with its native topics, speaking
// the part of parley's protocol v1 that loadgen and a chat client use, kept in
// memory (no persistence, one process, one thread).
//
//   GET /ws?user=U[&room=R]   protocol v1 (JSON): welcome, join/joined with
//                             members and recent history, send -> message to
//                             every member (the sender's connection included)
//                             then ack, dm, leave, who, rooms, history, typing,
//                             ping, presence events, idempotent `id`
//   GET /raw?room=R           no protocol: every text frame goes unchanged to
//                             every connection of R, the sender's included,
//                             as the node `ws` peer and the lws mirror do
//
// Each message is encoded once and handed to server.publish(topic), so the
// fan-out is uWebSockets' own loop over the topic's subscribers, the fastest
// path Bun offers. A connection whose send buffer passes 4 MiB is closed (as
// parley cuts a slow consumer) instead of losing messages silently.
//
// Usage: bun bun-server.js [--host 127.0.0.1] [--port 8082]
// Listens on loopback unless --host says otherwise; exits on SIGINT/SIGTERM.

const arg = (name, dflt) => {
  const i = process.argv.indexOf(name);
  return i > 0 && i + 1 < process.argv.length ? process.argv[i + 1] : dflt;
};

const host = arg('--host', '127.0.0.1');
const port = Number(arg('--port', '8082'));

const MAX_TEXT = 4000;        // code points, as parley
const MAX_FRAME = 64 * 1024;  // bigger frames close with 1009
const HISTORY_KEEP = 1000;    // messages kept per room for join/history
const HISTORY_LIMIT = 50;     // default join/history page
const HISTORY_MAX = 200;
const IDS_KEEP = 10000;       // idempotency keys remembered per room
const NAME_RE = /^[A-Za-z0-9_.-]{1,32}$/;
const ROOM_RE = /^[A-Za-z0-9_.-]{1,64}$/;

// room name -> {seq, users: Map user -> connections in the room, ring, ids}
const rooms = new Map();
// user -> live connections (open mode: one; a second one gets name_taken)
const users = new Map();
let sessions = 0;

function room_get(name) {
  let r = rooms.get(name);
  if (!r) {
    r = { seq: 0, users: new Map(), ring: new Array(HISTORY_KEEP), ids: new Map() };
    rooms.set(name, r);
  }
  return r;
}

// Encoded messages with seq in (after, r.seq], oldest first, at most limit; with before,
// the latest ones below it.
function history_of(r, after, before, limit) {
  const oldest = Math.max(1, r.seq - HISTORY_KEEP + 1);
  let lo, hi;
  if (before !== undefined) {
    hi = Math.min(r.seq, before - 1);
    lo = Math.max(oldest, hi - limit + 1);
  } else if (after !== undefined) {
    lo = Math.max(oldest, after + 1);
    hi = Math.min(r.seq, lo + limit - 1);
  } else {
    hi = r.seq;
    lo = Math.max(oldest, hi - limit + 1);
  }
  const out = [];
  for (let s = lo; s <= hi; s++) out.push(r.ring[s % HISTORY_KEEP]);
  return { list: out, more: lo > oldest };
}

function reply(ws, obj, ref) {
  if (ref !== undefined) obj.ref = ref;
  ws.send(JSON.stringify(obj));
}

function error(ws, code, message, ref) {
  reply(ws, { type: 'error', code, message }, ref);
}

function limit_of(v) {
  if (v === undefined) return HISTORY_LIMIT;
  return Number.isInteger(v) && v >= 0 ? Math.min(v, HISTORY_MAX) : -1;
}

function join(ws, name, since, limit, ref) {
  const d = ws.data;
  const r = room_get(name);
  if (!d.rooms.has(name)) {
    d.rooms.add(name);
    ws.subscribe('r:' + name);
    const n = r.users.get(d.user) || 0;
    r.users.set(d.user, n + 1);
    if (n === 0)
      ws.publish('r:' + name,
                 JSON.stringify({ type: 'presence', room: name, user: d.user, event: 'join' }));
  }
  const h = history_of(r, since, undefined, limit);
  const head = JSON.stringify({ type: 'joined', room: name, seq: r.seq,
                                members: [...r.users.keys()] });
  ws.send(head.slice(0, -1) + ',"history":[' + h.list.join(',') + ']' +
          (ref !== undefined ? ',"ref":' + JSON.stringify(ref) : '') + '}');
}

function leave(ws, name) {
  const d = ws.data;
  const r = rooms.get(name);
  d.rooms.delete(name);
  ws.unsubscribe('r:' + name);
  if (!r) return;
  const n = r.users.get(d.user) - 1;
  if (n > 0) {
    r.users.set(d.user, n);
    return;
  }
  r.users.delete(d.user);
  server.publish('r:' + name,
                 JSON.stringify({ type: 'presence', room: name, user: d.user, event: 'leave' }));
}

// One atomic step, as parley's engine: next seq, keep it, remember the id, publish, ack.
function post(ws, name, topics, text, id, ref) {
  const r = room_get(name);
  const key = id === undefined ? undefined : ws.data.user + '\0' + id;
  const dup = key === undefined ? undefined : r.ids.get(key);
  if (dup !== undefined) {
    reply(ws, { type: 'ack', room: name, seq: dup, id }, ref);
    return;
  }
  const seq = ++r.seq;
  const m = { type: 'message', room: name, seq, from: ws.data.user, text, ts: Date.now() };
  if (id !== undefined) m.id = id;
  const frame = JSON.stringify(m);
  r.ring[seq % HISTORY_KEEP] = frame;
  if (key !== undefined) {
    if (r.ids.size >= IDS_KEEP) r.ids.delete(r.ids.keys().next().value);
    r.ids.set(key, seq);
  }
  for (const t of topics) server.publish(t, frame);
  const ack = { type: 'ack', room: name, seq };
  if (id !== undefined) ack.id = id;
  reply(ws, ack, ref);
}

function sign_in(ws, user, ref) {
  if (typeof user !== 'string' || !NAME_RE.test(user))
    return error(ws, 'bad_request', 'bad user name', ref);
  if (users.has(user)) return error(ws, 'name_taken', 'name is in use', ref);
  users.set(user, 1);
  ws.data.user = user;
  ws.subscribe('u:' + user);
  reply(ws, { type: 'welcome', user, session: 's' + ++sessions, protocol: 1,
              limits: { max_text: MAX_TEXT, max_frame: MAX_FRAME } }, ref);
  return true;
}

function good_text(t) {
  return typeof t === 'string' && (t.length <= MAX_TEXT || [...t].length <= MAX_TEXT);
}

function good_id(id) {
  return id === undefined || (typeof id === 'string' && id.length >= 1 && id.length <= 64);
}

function on_request(ws, q) {
  const d = ws.data;
  const ref = typeof q.ref === 'string' || typeof q.ref === 'number' ? q.ref : undefined;
  if (q.type === 'ping') return reply(ws, { type: 'pong' }, ref);
  if (q.type === 'hello') {
    if (d.user) return error(ws, 'bad_request', 'already signed in', ref);
    return sign_in(ws, q.user, ref);
  }
  if (!d.user) return error(ws, 'auth_required', 'say hello first', ref);
  const room = q.room;
  const needs_room = ['join', 'leave', 'send', 'history', 'who', 'typing'];
  if (needs_room.includes(q.type) && (typeof room !== 'string' || !ROOM_RE.test(room)))
    return error(ws, 'bad_request', 'bad room name', ref);
  switch (q.type) {
  case 'join': {
    const lim = limit_of(q.limit);
    const since = q.since;
    if (lim < 0 || (since !== undefined && !(Number.isInteger(since) && since >= 0)))
      return error(ws, 'bad_request', 'bad limit or since', ref);
    return join(ws, room, since, lim, ref);
  }
  case 'leave':
    if (!d.rooms.has(room)) return error(ws, 'not_joined', 'not in that room', ref);
    leave(ws, room);
    return reply(ws, { type: 'left', room }, ref);
  case 'send':
    if (!good_text(q.text) || !good_id(q.id))
      return error(ws, 'bad_request', 'bad text or id', ref);
    if (!d.rooms.has(room)) return error(ws, 'not_joined', 'join the room first', ref);
    return post(ws, room, ['r:' + room], q.text, q.id, ref);
  case 'dm': {
    const to = q.to;
    if (typeof to !== 'string' || !NAME_RE.test(to) || !good_text(q.text) || !good_id(q.id))
      return error(ws, 'bad_request', 'bad to, text or id', ref);
    if (!users.has(to)) return error(ws, 'no_such_user', 'no such user', ref);
    const [a, b] = d.user < to ? [d.user, to] : [to, d.user];
    const topics = a === b ? ['u:' + a] : ['u:' + a, 'u:' + b];
    return post(ws, 'dm:' + a + ':' + b, topics, q.text, q.id, ref);
  }
  case 'history': {
    const r = rooms.get(room);
    const lim = limit_of(q.limit);
    const before = q.before;
    if (lim < 0 || (before !== undefined && !(Number.isInteger(before) && before >= 0)))
      return error(ws, 'bad_request', 'bad limit or before', ref);
    const h = r ? history_of(r, undefined, before, lim) : { list: [], more: false };
    return ws.send('{"type":"history","room":' + JSON.stringify(room) + ',"messages":[' +
                   h.list.join(',') + '],"more":' + h.more +
                   (ref !== undefined ? ',"ref":' + JSON.stringify(ref) : '') + '}');
  }
  case 'who': {
    const r = rooms.get(room);
    return reply(ws, { type: 'members', room, users: r ? [...r.users.keys()] : [] }, ref);
  }
  case 'rooms': {
    const list = [];
    for (const [name, r] of rooms)
      if (r.users.size) list.push({ name, members: r.users.size, seq: r.seq });
    return reply(ws, { type: 'rooms', rooms: list }, ref);
  }
  case 'typing':
    if (!d.rooms.has(room)) return error(ws, 'not_joined', 'join the room first', ref);
    return ws.publish('r:' + room, JSON.stringify({ type: 'typing', room, user: d.user }));
  default:
    return error(ws, 'unknown_type', 'unknown request type', ref);
  }
}

const server = Bun.serve({
  hostname: host,
  port,
  fetch(req, srv) {
    const u = new URL(req.url);
    const q = u.searchParams;
    const raw = u.pathname === '/raw';
    if (!raw && u.pathname !== '/ws') return new Response('not found\n', { status: 404 });
    const data = raw ? { raw: true, room: q.get('room') || '' }
                     : { raw: false, user: null, hello: q.get('user'), join: q.get('room'),
                         rooms: new Set() };
    if (srv.upgrade(req, { data })) return undefined;
    return new Response('websocket upgrade expected\n', { status: 400 });
  },
  websocket: {
    perMessageDeflate: false,
    maxPayloadLength: MAX_FRAME,
    backpressureLimit: 4 * 1024 * 1024,
    closeOnBackpressureLimit: true,
    idleTimeout: 0,
    open(ws) {
      const d = ws.data;
      if (d.raw) return ws.subscribe('raw:' + d.room);
      if (d.hello === null) return;
      if (sign_in(ws, d.hello) !== true) return ws.close(1008, 'bad user');
      if (d.join !== null) {
        if (!ROOM_RE.test(d.join)) return error(ws, 'bad_request', 'bad room name');
        join(ws, d.join, undefined, HISTORY_LIMIT);
      }
    },
    message(ws, data) {
      const d = ws.data;
      if (typeof data !== 'string')
        return d.raw ? undefined : error(ws, 'bad_request', 'binary frame');
      if (d.raw) return server.publish('raw:' + d.room, data);
      let q;
      try {
        q = JSON.parse(data);
      } catch {
        return error(ws, 'bad_json', 'not JSON');
      }
      if (q === null || typeof q !== 'object' || Array.isArray(q) || typeof q.type !== 'string')
        return error(ws, 'bad_request', 'expected an object with a string type');
      on_request(ws, q);
    },
    close(ws) {
      const d = ws.data;
      if (d.raw || !d.user) return;
      for (const name of [...d.rooms]) leave(ws, name);
      users.delete(d.user);
    },
  },
});

process.stdout.write(`listening on ${host}:${server.port}\n`);
const stop = () => {
  server.stop(true);
  process.exit(0);
};
process.on('SIGINT', stop);
process.on('SIGTERM', stop);
