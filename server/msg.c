/*
 * msg — see msg.h. Layout of one allocation:
 *   [struct msg][MSG_PRE headroom][payload]
 * The frame header is written at the end of the headroom so header and
 * payload are contiguous.
 */
#include "msg.h"

#include <stdarg.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "refcount.h"
#include "util.h"

struct msg {
    _Atomic unsigned refs;
    bool placeholder;
    bool counted;          /* placeholder: msg_size is its content's (set before fill) */
    _Atomic(msg_t *) fill; /* placeholder content, NULL until filled */
    size_t frame_off;      /* offset of the frame header within data */
    size_t frame_len;
    size_t payload_len;
    unsigned char data[]; /* MSG_PRE + payload */
};

void mb_init(struct msgbuf *b, size_t hint)
{
    b->cap = hint < 64 ? 64 : hint;
    b->len = 0;
    b->mem = xmalloc(sizeof(struct msg) + MSG_PRE + b->cap);
}

static unsigned char *mb_payload(struct msgbuf *b)
{
    return b->mem + sizeof(struct msg) + MSG_PRE;
}

static void mb_reserve(struct msgbuf *b, size_t more)
{
    if (b->len + more <= b->cap)
        return;
    size_t cap = b->cap * 2;
    while (cap < b->len + more)
        cap *= 2;
    b->mem = xrealloc(b->mem, sizeof(struct msg) + MSG_PRE + cap);
    b->cap = cap;
}

void mb_put(struct msgbuf *b, const void *p, size_t n)
{
    mb_reserve(b, n);
    memcpy(mb_payload(b) + b->len, p, n);
    b->len += n;
}

void mb_putc(struct msgbuf *b, char c)
{
    mb_reserve(b, 1);
    mb_payload(b)[b->len++] = (unsigned char)c;
}

void mb_puts(struct msgbuf *b, const char *s)
{
    mb_put(b, s, strlen(s));
}

void mb_printf(struct msgbuf *b, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(NULL, 0, fmt, ap);
    va_end(ap);
    if (n <= 0)
        return;
    mb_reserve(b, (size_t)n + 1);
    va_start(ap, fmt);
    vsnprintf((char *)mb_payload(b) + b->len, (size_t)n + 1, fmt, ap);
    va_end(ap);
    b->len += (size_t)n;
}

void mb_trim(struct msgbuf *b, size_t n)
{
    b->len = n > b->len ? 0 : b->len - n;
}

void mb_release(struct msgbuf *b)
{
    free(b->mem);
    b->mem = NULL;
    b->len = b->cap = 0;
}

/* Server-to-client frames are unmasked: FIN|text, then a 7, 16 or 64-bit length. */
static size_t frame_header(unsigned char *h, size_t len)
{
    h[0] = 0x81;
    if (len < 126) {
        h[1] = (unsigned char)len;
        return 2;
    }
    if (len <= 0xffff) {
        h[1] = 126;
        h[2] = (unsigned char)(len >> 8);
        h[3] = (unsigned char)len;
        return 4;
    }
    h[1] = 127;
    for (int i = 0; i < 8; i++)
        h[2 + i] = (unsigned char)((uint64_t)len >> (56 - 8 * i));
    return 10;
}

msg_t *mb_finish(struct msgbuf *b)
{
    msg_t *m = (msg_t *)b->mem;
    unsigned char h[10];
    size_t hl = frame_header(h, b->len);

    ref_init(&m->refs, 1);
    m->placeholder = false;
    m->counted = false;
    atomic_init(&m->fill, NULL);
    m->payload_len = b->len;
    m->frame_off = MSG_PRE - hl;
    m->frame_len = hl + b->len;
    memcpy(m->data + m->frame_off, h, hl);
    b->mem = NULL;
    b->len = b->cap = 0;
    return m;
}

msg_t *msg_new_text(const void *payload, size_t len)
{
    struct msgbuf b;
    mb_init(&b, len);
    mb_put(&b, payload, len);
    return mb_finish(&b);
}

msg_t *msg_new_placeholder(void)
{
    msg_t *m = xcalloc(1, sizeof(*m));
    ref_init(&m->refs, 1);
    atomic_init(&m->fill, NULL);
    m->placeholder = true;
    return m;
}

static void fill(msg_t *placeholder, msg_t *content, bool counted)
{
    if (!placeholder->placeholder || content->placeholder ||
        atomic_load_explicit(&placeholder->fill, memory_order_relaxed))
        abort(); /* not a placeholder, placeholder content, or filled twice */
    /* written before the release below; msg_size reads it only after an
     * acquire load that saw the content */
    placeholder->counted = counted;
    msg_t *expect = NULL;
    /* release: the content's bytes are visible to whoever acquires it */
    if (!atomic_compare_exchange_strong_explicit(&placeholder->fill, &expect, content,
                                                 memory_order_release, memory_order_relaxed))
        abort(); /* filled twice */
}

void msg_fill(msg_t *placeholder, msg_t *content)
{
    fill(placeholder, content, false);
}

void msg_fill_counted(msg_t *placeholder, msg_t *content)
{
    fill(placeholder, content, true);
}

const msg_t *msg_resolve(const msg_t *m)
{
    if (!m->placeholder)
        return m;
    return atomic_load_explicit(&((msg_t *)m)->fill, memory_order_acquire);
}

msg_t *msg_ref(msg_t *m)
{
    ref_get(&m->refs);
    return m;
}

void msg_unref(msg_t **mp)
{
    msg_t *m = *mp;
    if (!m)
        return;
    *mp = NULL;
    if (ref_put(&m->refs, "msg")) {
        if (m->placeholder) {
            msg_t *c = atomic_load_explicit(&m->fill, memory_order_acquire);
            msg_unref(&c);
        }
        free(m);
    }
}

const unsigned char *msg_frame(const msg_t *m, size_t *len)
{
    *len = m->frame_len;
    return m->data + m->frame_off;
}

const unsigned char *msg_payload(const msg_t *m, size_t *len)
{
    *len = m->payload_len;
    return m->data + MSG_PRE;
}

size_t msg_size(const msg_t *m)
{
    if (!m->placeholder)
        return m->frame_len;
    const msg_t *c = atomic_load_explicit(&((msg_t *)m)->fill, memory_order_acquire);
    return c && m->counted ? c->frame_len : 0;
}
