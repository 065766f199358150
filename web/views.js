/*
 * views — the page: which card shows (sign-in or chat), the connection
 * status, the banner, the sidebar and members panels of narrow screens, and
 * the views of each part (view-*.js). It implements the two ports the rest
 * calls: the controller's (what in the model changed) and the session's
 * (sign-in progress, connection state), and sends DOM events on to the
 * controller or the session. It reads the model; it never writes it.
 */
import { LoginView } from './view-login.js';
import { ComposerView } from './view-composer.js';
import { MembersView } from './view-members.js';
import { MessagesView } from './view-messages.js';
import { RoomsView } from './view-rooms.js';

const NARROW = '(max-width: 760px)';

export class ChatView {
    constructor(doc, model) {
        this.doc = doc;
        this.$ = (id) => doc.getElementById(id);
        this.model = model;
        this.login = new LoginView(doc);
        this.controller = null;
        this.session = null;
        this.bannerTimer = 0;
        this.countdownTimer = 0;
    }

    /* Connect the DOM to the controller and the session, then show the page:
     * the saved session if this tab has one, else the sign-in card. */
    start(controller, session) {
        const $ = this.$;
        const doc = this.doc;
        this.controller = controller;
        this.session = session;
        this.login.bind(session);
        this.rooms = new RoomsView(doc, this.model, controller, this);
        this.members = new MembersView(doc, this.model, controller, this);
        this.messages = new MessagesView(doc, this.model, controller, this);
        this.composer = new ComposerView(doc, this.model, controller);

        $('empty-join').addEventListener('click', () => {
            if (this.isNarrow()) {
                this.togglePanel('sidebar', true);
            } else {
                $('room-join').focus();
            }
        });
        $('banner-close').addEventListener('click', () => this.clearNotice());
        $('logout').addEventListener('click', () => session.signOut(''));
        $('reconnect').addEventListener('click', () => session.retryNow());
        $('toggle-sidebar').addEventListener('click', () => this.togglePanel('sidebar'));
        $('toggle-members').addEventListener('click', () => this.togglePanel('members'));
        $('scrim').addEventListener('click', () => this.closePanels());
        doc.addEventListener('keydown', (ev) => {
            if (ev.key === 'Escape' && this.isNarrow() &&
                ($('sidebar').classList.contains('open') ||
                 $('members-panel').classList.contains('open'))) {
                const members = $('members-panel').classList.contains('open');
                this.closePanels();
                $(members ? 'toggle-members' : 'toggle-sidebar').focus();
            }
        });
        window.addEventListener('online', () => session.probe());
        doc.addEventListener('visibilitychange', () => {
            if (!doc.hidden) {
                session.probe();
                const c = this.model.active;
                if (c && this.messages.atBottom()) {
                    controller.markRead(c, { save: false });
                    this.rooms.render();
                }
            }
        });
        /* Crossing the breakpoint: overlays close on narrow screens, the
         * members column comes back on wide ones. */
        window.matchMedia(NARROW).addEventListener('change', (ev) => {
            if (ev.matches) {
                this.togglePanel('sidebar', false, false);
                this.togglePanel('members', false, false);
            } else {
                this.togglePanel('sidebar', false, false);
                this.togglePanel('members', true, false);
                $('scrim').hidden = true;
            }
        });

        if (!this.isNarrow()) {
            this.togglePanel('members', true, false);
        }
        const me = session.resume();
        if (me !== null) {
            this.login.prefill(me);
        } else {
            this.login.show();
        }
    }

    focusComposer() {
        this.composer.focus();
    }

    /* ---------- the controller's port ---------- */

    /* Conversation c changed: redraw it if it is on screen, else its badge. */
    changed(c, opts = {}) {
        if (c !== this.model.active) {
            this.rooms.render();
            return;
        }
        this.messages.render(c, opts);
        if (!this.doc.hidden && this.messages.atBottom()) {
            this.controller.markRead(c);
        }
        this.messages.updateJump();
        this.rooms.render();
        if (this.messages.wantsOlder(c)) {
            this.controller.loadOlder(c);
        }
    }

    /* The user scrolled to the end of c. */
    seen(c) {
        this.controller.markRead(c);
        this.rooms.render();
    }

    listChanged() {
        this.rooms.render();
    }

    publicChanged() {
        this.rooms.renderPublic();
    }

    membersChanged(c) {
        if (c === this.model.active) {
            this.members.render();
        }
    }

    typingChanged(c) {
        if (c === this.model.active) {
            this.messages.renderTyping();
        }
    }

    olderChanged(c) {
        this.messages.renderOlder(c);
    }

    activeChanged() {
        this.composer.closeMention();
        this.closePanels();
        this.all();
    }

    all() {
        this.rooms.render();
        this.rooms.renderPublic();
        this.messages.renderTitle();
        this.composer.renderLabel();
        this.members.render();
        this.messages.renderTyping();
        this.composer.renderState();
        if (this.model.active) {
            this.changed(this.model.active, { toBottom: true });
        } else {
            this.messages.renderNone();
        }
    }

    atBottom() {
        return this.messages.atBottom();
    }

    announce(text) {
        this.messages.announce(text);
    }

    notice(text, ms = 8000) {
        this.$('banner-text').textContent = text;
        this.$('banner').hidden = false;
        clearTimeout(this.bannerTimer);
        this.bannerTimer = setTimeout(() => this.clearNotice(), ms);
    }

    /* onlyConnection: only if the banner is about the connection. */
    clearNotice(onlyConnection = false) {
        if (onlyConnection &&
            !/reconnect|restart|retry/i.test(this.$('banner-text').textContent)) {
            return;
        }
        this.$('banner').hidden = true;
    }

    /* ---------- the session's port ---------- */

    loginBusy() {
        this.login.busy();
    }

    loginFailed(text) {
        this.login.failed(text);
    }

    passwordUsed() {
        this.login.forgetPassword();
    }

    loggedIn() {
        this.login.done();
        this.showChat();
    }

    showChat() {
        this.$('login-view').hidden = true;
        this.$('chat-view').hidden = false;
        this.identity(this.model.me);
        this.all();
    }

    identity(me) {
        this.$('me-name').textContent = me || '';
    }

    signedOut(reason) {
        this.$('chat-view').hidden = true;
        this.login.show(reason);
    }

    connection(state, retryAt) {
        const st = this.$('status');
        st.dataset.state = state;
        st.textContent = { connected: 'connected', connecting: 'connecting…' }[state] ||
            'disconnected';
        const retry = this.$('reconnect');
        clearInterval(this.countdownTimer);
        if (retryAt) {
            retry.hidden = false;
            const tick = () => {
                const s = Math.max(0, Math.ceil((retryAt - Date.now()) / 1000));
                retry.textContent = s > 0 ? `retry now (${s} s)` : 'retry now';
            };
            tick();
            this.countdownTimer = setInterval(tick, 1000);
        } else {
            retry.hidden = true;
        }
        this.composer.renderState();
    }

    /* ---------- narrow layout panels ---------- */

    isNarrow() {
        return window.matchMedia(NARROW).matches;
    }

    togglePanel(which, open, focus = true) {
        const $ = this.$;
        const panel = which === 'sidebar' ? $('sidebar') : $('members-panel');
        const btn = which === 'sidebar' ? $('toggle-sidebar') : $('toggle-members');
        const other = which === 'sidebar' ? 'members' : 'sidebar';
        const isOpen = open === undefined ? !panel.classList.contains('open') : open;
        if (isOpen && this.isNarrow()) {
            this.togglePanel(other, false, false);
        }
        panel.classList.toggle('open', isOpen);
        btn.setAttribute('aria-expanded', String(isOpen));
        /* On wide screens the members panel toggles too, but never covers text. */
        $('scrim').hidden = !(isOpen && this.isNarrow());
        if (isOpen && focus) {
            const first = panel.querySelector('input, button');
            first && first.focus();
        }
    }

    closePanels() {
        if (!this.isNarrow()) {
            return;
        }
        for (const w of ['sidebar', 'members']) {
            const panel = w === 'sidebar' ? this.$('sidebar') : this.$('members-panel');
            if (panel.classList.contains('open')) {
                this.togglePanel(w, false);
            }
        }
    }
}
