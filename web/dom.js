/*
 * dom — the two DOM helpers every view uses.
 *
 * Rule for the DOM: user data only ever goes through textContent or
 * attributes set one by one; no innerHTML anywhere, so a message such as
 * <img src=x onerror=alert(1)> stays text.
 */

export function el(tag, props = {}, ...children) {
    const e = document.createElement(tag);
    for (const [k, v] of Object.entries(props)) {
        if (v === undefined || v === null || v === false) {
            continue;
        }
        if (k === 'class') {
            e.className = v;
        } else if (k === 'text') {
            e.textContent = v;
        } else if (k === 'dataset') {
            Object.assign(e.dataset, v);
        } else if (k.startsWith('on')) {
            e.addEventListener(k.slice(2), v);
        } else {
            e.setAttribute(k, v === true ? '' : String(v));
        }
    }
    for (const c of children) {
        if (c !== null && c !== undefined && c !== false) {
            e.append(c);
        }
    }
    return e;
}

/*
 * Make parent's children exactly `nodes`, in order, moving as few as
 * possible so that appends and prepends do not disturb focus or selection.
 */
export function syncChildren(parent, nodes) {
    let cur = parent.firstChild;
    for (const n of nodes) {
        if (cur === n) {
            cur = cur.nextSibling;
        } else {
            parent.insertBefore(n, cur);
        }
    }
    while (cur) {
        const next = cur.nextSibling;
        parent.removeChild(cur);
        cur = next;
    }
}

/* The '#' or '@' in front of a conversation's name. */
export function sigil(c) {
    return el('span', { class: 'sigil', 'aria-hidden': 'true', text: c.kind === 'dm' ? '@' : '#' });
}

/* What every view of the chat page starts with: the document (and $ for
 * its elements by id), the model it renders, the controller its DOM events
 * go to, and the page shell it asks for focus and panels. */
export class View {
    constructor(doc, model, controller, shell = null) {
        this.$ = (id) => doc.getElementById(id);
        this.doc = doc;
        this.model = model;
        this.controller = controller;
        this.shell = shell;
    }
}
