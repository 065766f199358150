/*
 * view-members — the members panel of the conversation on screen: a room's
 * members, or the two people of a DM; a click on someone opens a DM.
 */
import { el, View } from './dom.js';

/* Built as new MembersView(doc, model, controller, shell); shell:
 * focusComposer() of the page (views.js). */
export class MembersView extends View {
    render() {
        const $ = this.$;
        const { model } = this;
        const c = model.active;
        const list = $('members');
        let names = [];
        if (c && c.kind === 'room') {
            names = [...c.members].sort((a, b) => a.localeCompare(b));
        } else if (c) {
            names = [model.me, c.peer].sort();
        }
        $('members-count').textContent = names.length ? `(${names.length})` : '';
        const active = this.doc.activeElement;
        const focusedName = list.contains(active) ? active.dataset.user : null;
        const items = names.map((u) => {
            const online = c && c.kind === 'room' ? true : null;
            const dot = el('span',
                { class: `presence${online ? ' online' : ''}`, 'aria-hidden': 'true' });
            if (u === model.me) {
                return el('li', {}, el('span', { class: 'member self' }, dot,
                    el('span', { class: 'name', text: u }),
                    el('span', { class: 'note', text: ' (you)' })));
            }
            const b = el('button', { type: 'button', class: 'member', dataset: { user: u },
                title: `Message ${u}`,
                'aria-label': `${u}${online ? ', online' : ''}: send a message`,
                onclick: () => {
                    this.controller.openDm(u);
                    this.shell.focusComposer();
                } }, dot, el('span', { class: 'name', text: u }));
            return el('li', {}, b);
        });
        list.replaceChildren(...items);
        if (focusedName) {
            const b = [...list.querySelectorAll('button')]
                .find((x) => x.dataset.user === focusedName);
            b && b.focus();
        }
    }
}
