/*
 * app — the parley web client's entry point: builds the parts and wires
 * them together. Nothing else lives here.
 *
 *   conn.js        one WebSocket that reconnects; requests matched by ref
 *   session.js     sign-in, credentials in sessionStorage, the connection's life
 *   controller.js  frames -> model, user actions -> requests
 *   model.js       the state: conversations, who we are, server limits
 *   views.js       the page (+ view-*.js, dom.js): model -> DOM, DOM events -> calls
 *
 * A frame travels conn -> session -> controller -> model, and the
 * controller tells the views what changed; a click travels view ->
 * controller -> conn.
 */
import { Connection, socketUrl } from './conn.js';
import { ChatController } from './controller.js';
import { ChatModel } from './model.js';
import { Session } from './session.js';
import { ChatView } from './views.js';

const model = new ChatModel();
const view = new ChatView(document, model);
/* The controller saves through the session, which is made after it. */
const controller = new ChatController(model, view, {
    persist: { save: () => session.save(), saveSoon: () => session.saveSoon() },
});
const session = new Session({
    model,
    controller,
    ui: view,
    connect: (handlers) => new Connection(socketUrl(), handlers),
});
view.start(controller, session);
