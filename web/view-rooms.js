/*
 * view-rooms — the sidebar: the join box, our rooms and DMs with their
 * unread badges, and the server's public rooms.
 */
import { el, sigil, syncChildren, View } from './dom.js';
import { isValidRoom, isValidUser } from './model.js';

export class RoomsView extends View {
    /* shell: closePanels(), focusComposer() of the page (views.js). */
    constructor(doc, model, controller, shell) {
        super(doc, model, controller, shell);
        this.convEls = new Map();  /* room name -> li */
        this.emptyItems = new Map();
        this.$('join-form').addEventListener('submit', (ev) => this.onJoinSubmit(ev));
    }

    onJoinSubmit(ev) {
        const $ = this.$;
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
            this.controller.openDm(v.slice(1)) && this.shell.focusComposer();
            return;
        }
        const name = v.replace(/^#/, '');
        if (!isValidRoom(name)) {
            $('join-error').textContent =
                'Room names are 1 to 64 letters, digits, “_”, “.” or “-”.';
            return;
        }
        input.value = '';
        this.controller.openRoom(name);
        this.shell.focusComposer();
    }

    convButton(c) {
        const label = c.kind === 'dm' ? c.peer : c.name;
        const b = el('button', { type: 'button', class: 'conv', onclick: () => {
            this.controller.select(c);
            this.shell.closePanels();
            this.shell.focusComposer();
        } });
        b.append(sigil(c), el('span', { class: 'name', text: label }),
            el('span', { class: 'badge', hidden: true }));
        return b;
    }

    emptyItem(text) {
        if (!this.emptyItems.has(text)) {
            this.emptyItems.set(text, el('li', { class: 'none', text }));
        }
        return this.emptyItems.get(text);
    }

    /* Our rooms and DMs, with unread counts (also in the title and the menu button). */
    render() {
        const $ = this.$;
        const { model } = this;
        const rooms = [];
        const dms = [];
        let total = 0;
        for (const c of model.list().sort((a, b) => a.name.localeCompare(b.name))) {
            let li = this.convEls.get(c.name);
            if (!li || li.conv !== c) {
                li = el('li');
                li.conv = c;
                li.append(this.convButton(c));
                const label = c.kind === 'dm' ? `Close conversation with ${c.peer}`
                    : `Leave ${c.name}`;
                li.append(el('button', { type: 'button', class: 'icon-btn small close',
                    title: label, 'aria-label': label, onclick: () => this.controller.leave(c),
                    text: '×' }));
                this.convEls.set(c.name, li);
            }
            const b = li.firstChild;
            const n = c === model.active && !this.doc.hidden ? 0 : c.unread(model.me);
            total += n;
            const badge = b.querySelector('.badge');
            badge.hidden = n === 0;
            badge.textContent = n > 99 ? '99+' : String(n);
            const who = c.kind === 'dm' ? `conversation with ${c.peer}` : `room ${c.name}`;
            b.setAttribute('aria-label', n ? `${who}, ${n} unread` : who);
            if (c === model.active) {
                b.setAttribute('aria-current', 'page');
            } else {
                b.removeAttribute('aria-current');
            }
            b.classList.toggle('unread', n > 0);
            (c.kind === 'dm' ? dms : rooms).push(li);
        }
        for (const name of [...this.convEls.keys()]) {
            if (!model.has(name)) {
                this.convEls.delete(name);
            }
        }
        syncChildren($('room-list'), rooms.length ? rooms : [this.emptyItem('No rooms yet.')]);
        syncChildren($('dm-list'), dms.length ? dms
            : [this.emptyItem('Nobody yet: pick a member to message them.')]);
        const sb = $('sidebar-unread');
        sb.hidden = total === 0;
        sb.textContent = total > 99 ? '99+' : String(total);
        this.doc.title = total ? `(${total}) parley` : 'parley';
    }

    renderPublic() {
        const { model } = this;
        const items = model.publicRooms
            .filter((r) => !model.has(r.name) && isValidRoom(r.name))
            .sort((a, b) => (b.members || 0) - (a.members || 0) || a.name.localeCompare(b.name))
            .slice(0, 50)
            .map((r) => {
                const n = Number.isSafeInteger(r.members) ? r.members : 0;
                const b = el('button', { type: 'button', class: 'conv',
                    'aria-label': `Join ${r.name}, ${n} online`,
                    onclick: () => this.controller.joinRoom(r.name) },
                el('span', { class: 'sigil', 'aria-hidden': 'true', text: '#' }),
                el('span', { class: 'name', text: r.name }),
                el('span', { class: 'count', 'aria-hidden': 'true', text: String(n) }));
                return el('li', {}, b);
            });
        const list = this.$('public-list');
        /* Keep focus if the user was on this list: rebuilding would drop it. */
        if (list.contains(this.doc.activeElement)) {
            return;
        }
        syncChildren(list, items.length ? items : [this.emptyItem('No other public rooms.')]);
    }
}
