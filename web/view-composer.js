/*
 * view-composer — the message box: Enter sends (what it means is the
 * controller's), Shift+Enter adds a line, it grows with its text, and "@"
 * opens the completion list of names.
 */
import { el, View } from './dom.js';
import { completions, mentionAt } from './model.js';

export class ComposerView extends View {
    constructor(doc, model, controller) {
        super(doc, model, controller);
        this.mention = null;       /* {start, prefix, items, index} while the list is open */
        const $ = this.$;
        const box = $('composer');
        $('composer-form').addEventListener('submit', (ev) => this.onSubmit(ev));
        box.addEventListener('keydown', (ev) => this.onKey(ev));
        box.addEventListener('input', () => this.onInput());
        box.addEventListener('click', () => this.updateMention());
        box.addEventListener('blur', () => setTimeout(() => this.closeMention(), 150));
    }

    focus() {
        this.$('composer').focus();
    }

    /* The label and placeholder name the conversation on screen. */
    renderLabel() {
        const c = this.model.active;
        this.$('composer-label').textContent = c
            ? `Message ${c.kind === 'dm' ? c.peer : `#${c.name}`}` : 'Message';
        this.$('composer').placeholder = c
            ? (c.kind === 'dm' ? `Message @${c.peer}` : `Message #${c.name}`)
            : 'Join a room to talk';
    }

    renderState() {
        const on = !!this.model.active;
        this.$('composer').disabled = !on;
        this.$('send').disabled = !on;
    }

    onSubmit(ev) {
        ev.preventDefault();
        const box = this.$('composer');
        if (!box.value.trim()) {
            return;
        }
        if (this.controller.submit(box.value)) {
            box.value = '';
            this.closeMention();
            this.autosize();
        }
    }

    onInput() {
        this.autosize();
        this.updateMention();
        this.controller.typed(this.$('composer').value);
    }

    autosize() {
        const box = this.$('composer');
        box.style.height = 'auto';
        box.style.height = `${Math.min(box.scrollHeight + 2, 200)}px`;
    }

    onKey(ev) {
        const mn = this.mention;
        if (mn && mn.items.length) {
            if (ev.key === 'ArrowDown' || ev.key === 'ArrowUp') {
                ev.preventDefault();
                const d = ev.key === 'ArrowDown' ? 1 : -1;
                mn.index = (mn.index + d + mn.items.length) % mn.items.length;
                this.renderMention();
                return;
            }
            if ((ev.key === 'Tab' && !ev.shiftKey) || (ev.key === 'Enter' && !ev.shiftKey)) {
                ev.preventDefault();
                this.acceptMention(mn.items[mn.index]);
                return;
            }
            if (ev.key === 'Escape') {
                ev.preventDefault();
                this.closeMention();
                return;
            }
        }
        if (ev.key === 'Enter' && !ev.shiftKey && !ev.isComposing && !ev.altKey &&
            !ev.ctrlKey && !ev.metaKey) {
            ev.preventDefault();
            this.$('composer-form').requestSubmit();
        }
    }

    /* ---------- @mention completion ---------- */

    mentionNames(c) {
        const names = [...c.members];
        if (c.peer) {
            names.push(c.peer);
        }
        for (let i = c.msgs.length - 1, n = 0; i >= 0 && n < 200; i--, n++) {
            names.push(c.msgs[i].from);
        }
        return names;
    }

    updateMention() {
        const box = this.$('composer');
        const c = this.model.active;
        if (!c || box.selectionStart !== box.selectionEnd) {
            this.closeMention();
            return;
        }
        const at = mentionAt(box.value, box.selectionStart);
        if (!at) {
            this.closeMention();
            return;
        }
        const items = completions(this.mentionNames(c), at.prefix, this.model.me);
        if (!items.length) {
            this.closeMention();
            return;
        }
        const keep = this.mention && this.mention.items[this.mention.index];
        const index = Math.max(0, items.indexOf(keep));
        this.mention = { start: at.start, prefix: at.prefix, items, index };
        this.renderMention();
    }

    renderMention() {
        const mn = this.mention;
        const list = this.$('mention-list');
        const box = this.$('composer');
        list.replaceChildren(...mn.items.map((name, i) => el('li', {
            id: `mention-${i}`,
            role: 'option',
            class: i === mn.index ? 'selected' : '',
            'aria-selected': i === mn.index ? 'true' : 'false',
            text: `@${name}`,
            onmousedown: (e) => {
                e.preventDefault(); /* keep focus in the composer */
                this.acceptMention(name);
            },
        })));
        list.hidden = false;
        box.setAttribute('aria-expanded', 'true');
        box.setAttribute('aria-activedescendant', `mention-${mn.index}`);
    }

    closeMention() {
        this.mention = null;
        this.$('mention-list').hidden = true;
        this.$('composer').setAttribute('aria-expanded', 'false');
        this.$('composer').removeAttribute('aria-activedescendant');
    }

    acceptMention(name) {
        const box = this.$('composer');
        const mn = this.mention;
        if (!mn) {
            return;
        }
        const end = mn.start + 1 + mn.prefix.length;
        const insert = `@${name} `;
        box.value = box.value.slice(0, mn.start) + insert + box.value.slice(end);
        const caret = mn.start + insert.length;
        box.setSelectionRange(caret, caret);
        this.closeMention();
        this.autosize();
    }
}
