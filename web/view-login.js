/*
 * view-login — the sign-in card: the form (sign in or create an account),
 * its checks before anything is sent, and its busy and error states. The
 * sign-in itself is the session's (session.js).
 */
import { isValidUser } from './model.js';

export class LoginView {
    constructor(doc) {
        this.$ = (id) => doc.getElementById(id);
        this.registerMode = false;
        this.session = null;
    }

    bind(session) {
        const $ = this.$;
        this.session = session;
        $('login-form').addEventListener('submit', (ev) => this.onSubmit(ev));
        $('register-toggle').addEventListener('click',
            () => this.setRegisterMode(!this.registerMode));
    }

    setRegisterMode(on) {
        const $ = this.$;
        this.registerMode = on;
        $('email-row').hidden = !on;
        $('login-submit').textContent = on ? 'Create account' : 'Sign in';
        $('register-hint').textContent = on ? 'Have an account?' : 'No account yet?';
        $('register-toggle').textContent = on ? 'Sign in instead' : 'Create one';
        $('login-password').setAttribute('autocomplete', on ? 'new-password' : 'current-password');
        $('pw-note').textContent = on ? 'Needed for an account.' : 'Leave empty on open servers.';
        $('login-error').textContent = '';
    }

    onSubmit(ev) {
        const $ = this.$;
        ev.preventDefault();
        if (this.session.loggingIn) {
            return;
        }
        const user = $('login-user').value.trim();
        const password = $('login-password').value;
        if (!isValidUser(user)) {
            $('login-error').textContent =
                'Names are 1 to 32 letters, digits, “_”, “.” or “-”.';
            $('login-user').focus();
            return;
        }
        if (this.registerMode && !password) {
            $('login-error').textContent = 'Choose a password for your account.';
            $('login-password').focus();
            return;
        }
        const email = this.registerMode ? $('login-email').value.trim() : '';
        this.session.logIn({ user, password, register: this.registerMode, email });
    }

    busy() {
        const $ = this.$;
        $('login-error').textContent = '';
        $('login-submit').disabled = true;
        $('login-submit').setAttribute('aria-busy', 'true');
    }

    failed(text) {
        const $ = this.$;
        $('login-error').textContent = text;
        $('login-submit').disabled = false;
        $('login-submit').removeAttribute('aria-busy');
    }

    forgetPassword() {
        this.$('login-password').value = '';
    }

    /* Signed in: the form is back to its first state for next time. */
    done() {
        const $ = this.$;
        $('login-submit').disabled = false;
        $('login-submit').removeAttribute('aria-busy');
        this.setRegisterMode(false);
    }

    prefill(user) {
        this.$('login-user').value = user || '';
    }

    show(reason = '') {
        const $ = this.$;
        $('login-view').hidden = false;
        $('login-submit').disabled = false;
        $('login-error').textContent = reason;
        $('login-user').focus();
    }
}
