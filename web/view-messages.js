/*
 * view-messages — the main pane: the title, the message list (grouped by
 * author and day, pending and failed sends with Retry and Discard), paging
 * back on scroll, "jump to latest", who is typing, and the screen-reader
 * announcements of new messages.
 */
import { el, sigil, syncChildren, View } from './dom.js';
import { sameGroup, typingText } from './model.js';

const NEAR_BOTTOM_PX = 48;
const NEAR_TOP_PX = 160;

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

function escapeRe(s) {
    return s.replace(/[.*+?^${}()|[\]\\]/g, '\\$&');
}

export class MessagesView extends View {
    /* shell: seen(c) after scrolling to the end, focusComposer() (views.js). */
    constructor(doc, model, controller, shell) {
        super(doc, model, controller, shell);
        this.msgEls = new WeakMap(); /* Conversation -> Map(key -> li) */
        this.typingTimer = 0;
        const $ = this.$;
        $('scroller').addEventListener('scroll', () => this.onScroll(), { passive: true });
        $('jump').addEventListener('click', () => {
            const sc = $('scroller');
            sc.scrollTop = sc.scrollHeight;
            this.onScroll();
            shell.focusComposer();
        });
        $('load-older').addEventListener('click', () => controller.loadOlder(model.active));
    }

    renderTitle() {
        const c = this.model.active;
        const t = this.$('room-title');
        t.textContent = '';
        if (!c) {
            t.textContent = 'No room';
        } else {
            t.append(sigil(c), c.kind === 'dm' ? c.peer : c.name);
        }
    }

    renderTyping() {
        const c = this.model.active;
        const now = Date.now();
        const who = c ? c.activeTypists(now) : [];
        this.$('typing').textContent = typingText(who);
        clearTimeout(this.typingTimer);
        if (who.length) {
            const next = Math.min(...who.map((u) => c.typing.get(u))) - now;
            this.typingTimer = setTimeout(() => this.renderTyping(), Math.max(100, next + 20));
        }
    }

    renderOlder(c) {
        this.$('load-older').hidden = !c.more || c.loadingOlder;
        this.$('older-note').textContent = c.loadingOlder ? 'Loading older messages…'
            : c.kind === 'dm' && !this.model.dmHistory
                ? 'This server keeps no DM history: you see what arrives while you are online.'
                : (!c.more && c.msgs.length ? 'This is the beginning of the conversation.' : '');
    }

    messageItem(c, m, grouped, pending) {
        const me = this.model.me;
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
        li.classList.toggle('mine', m.from === me);
        if (me && m.from !== me && new RegExp(`(^|\\W)@${escapeRe(me)}(\\W|$)`).test(m.text)) {
            li.classList.add('mention');
        }
        if (pending) {
            li.classList.add(pending.state === 'failed' ? 'failed' : 'pending');
            const st = el('div', { class: 'state' });
            if (pending.state === 'failed') {
                const retry = () => this.controller.retry(c, pending);
                const discard = () => {
                    this.controller.discard(c, pending);
                    this.shell.focusComposer();
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

    /*
     * Show conversation c (the active one). Elements are cached by key (seq,
     * pending id, day) and reused while their look is unchanged, so
     * appending or prepending moves nothing else.
     */
    render(c, { toBottom = false, keepBottomDistance = false } = {}) {
        const $ = this.$;
        const sc = $('scroller');
        const fromBottom = sc.scrollHeight - sc.scrollTop - sc.clientHeight;
        const atBottom = fromBottom < NEAR_BOTTOM_PX;

        let cache = this.msgEls.get(c);
        if (!cache) {
            cache = new Map();
            this.msgEls.set(c, cache);
        }
        const nodes = [];
        const used = new Set();
        let prev = null;
        const pushMsg = (m, pending) => {
            const day = new Date(m.ts).toDateString();
            if (!prev || new Date(prev.ts).toDateString() !== day) {
                const key = `d${day}`;
                let li = cache.get(key);
                if (!li) {
                    li = el('li', { class: 'day', role: 'separator' },
                        el('span', { text: dayFmt.format(new Date(m.ts)) }));
                    cache.set(key, li);
                }
                nodes.push(li);
                used.add(key);
                prev = null;
            }
            const grouped = sameGroup(prev, m);
            const key = pending ? `p${pending.id}:${pending.state}:${pending.error || ''}`
                : `s${m.seq}`;
            const sig = `${grouped}|${m.ts}|${m.from}|${m.text}`;
            let li = cache.get(key);
            if (!li || li.sig !== sig) {
                li = this.messageItem(c, m, grouped, pending);
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
            $('empty-text').textContent = c.kind === 'dm'
                ? `No messages with ${c.peer} yet. Say hello!`
                : `No messages in #${c.name} yet.`;
        }
        this.renderOlder(c);

        if (toBottom || atBottom) {
            sc.scrollTop = sc.scrollHeight;
        } else if (keepBottomDistance) {
            sc.scrollTop = sc.scrollHeight - sc.clientHeight - fromBottom;
        }
    }

    /* Nothing on screen: the invitation to join a room. */
    renderNone() {
        const $ = this.$;
        syncChildren($('messages'), []);
        $('empty').hidden = false;
        $('empty-join').hidden = false;
        $('empty-text').textContent = 'Pick a room, or make a new one by giving it a name.';
        $('load-older').hidden = true;
        $('older-note').textContent = '';
        $('jump').hidden = true;
    }

    /* Too few messages to scroll: c should page back so that scrolling can start. */
    wantsOlder(c) {
        const sc = this.$('scroller');
        return c.more && !c.loadingOlder && sc.scrollHeight <= sc.clientHeight + NEAR_TOP_PX;
    }

    atBottom() {
        const sc = this.$('scroller');
        return sc.scrollHeight - sc.scrollTop - sc.clientHeight < NEAR_BOTTOM_PX;
    }

    updateJump() {
        const c = this.model.active;
        const j = this.$('jump');
        const show = !!c && !this.atBottom();
        j.hidden = !show;
        if (show) {
            const n = c.unread(this.model.me);
            j.firstChild.textContent = n ? `${n} new message${n === 1 ? '' : 's'} — jump to latest `
                : 'Jump to latest ';
        }
    }

    onScroll() {
        const c = this.model.active;
        if (!c) {
            return;
        }
        if (this.$('scroller').scrollTop < NEAR_TOP_PX) {
            this.controller.loadOlder(c);
        }
        if (this.atBottom() && c.unread(this.model.me)) {
            this.shell.seen(c);
        }
        this.updateJump();
    }

    announce(text) {
        const live = this.$('live');
        live.textContent = '';
        /* A fresh text node each time so screen readers repeat identical lines. */
        setTimeout(() => {
            live.textContent = text;
        }, 30);
    }
}
