/*
 * msg — one immutable, reference-counted, fully framed WebSocket message.
 *
 * The broadcaster encodes an event once into a msg and pushes a pointer to it
 * onto every recipient's queue; each queue entry owns one reference and the
 * last unref frees it. The WebSocket frame header is written into headroom in
 * front of the payload when the msg is finished, so a writer can send the
 * bytes from msg_frame() as they are, several frames per syscall, and nobody
 * ever rewrites a shared buffer (lws_write would: it puts its header into the
 * LWS_PRE bytes, which would race when one msg goes out on several threads).
 *
 * A placeholder is a msg whose content arrives later (an asynchronous history
 * read): queues hold it in order and stop draining at it until msg_fill().
 *
 * Thread: any. Refcounts are atomic; content is immutable once finished.
 */
#ifndef PARLEY_MSG_H
#define PARLEY_MSG_H

#include <stdbool.h>
#include <stddef.h>

/* Headroom before the payload: >= the largest server frame header (10) and
 * == LWS_PRE so a payload can also be handed to lws_write() directly. */
#define MSG_PRE 16

typedef struct msg msg_t;

/* A growable builder whose buffer becomes the msg without a copy. */
struct msgbuf {
    unsigned char *mem; /* [struct msg][MSG_PRE][payload...] */
    size_t len;         /* payload bytes written */
    size_t cap;         /* payload bytes available */
};

void mb_init(struct msgbuf *b, size_t hint);
void mb_put(struct msgbuf *b, const void *p, size_t n);
void mb_putc(struct msgbuf *b, char c);
void mb_puts(struct msgbuf *b, const char *s);
void mb_printf(struct msgbuf *b, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
/* Drop the last n payload bytes (n <= len). */
void mb_trim(struct msgbuf *b, size_t n);
/* Turn the builder into a finished text frame (refcount 1); b is reset. */
msg_t *mb_finish(struct msgbuf *b);
/* Free a builder that will not be finished. */
void mb_release(struct msgbuf *b);

/* A finished text frame holding a copy of payload. */
msg_t *msg_new_text(const void *payload, size_t len);
/* An empty placeholder (refcount 1), see msg_fill. */
msg_t *msg_new_placeholder(void);
/* Give a placeholder its content; takes ownership of content's reference.
 * msg_size(placeholder) stays 0. */
void msg_fill(msg_t *placeholder, msg_t *content);
/* Like msg_fill, but from then on msg_size(placeholder) is content's frame
 * length: for the one queue holding the placeholder, which charges the
 * content as it arrives (cq_fill does both under the queue owner's lock). */
void msg_fill_counted(msg_t *placeholder, msg_t *content);
/* The msg to send for m: m itself, a placeholder's content, or NULL while a
 * placeholder is still empty. */
const msg_t *msg_resolve(const msg_t *m);

msg_t *msg_ref(msg_t *m);
/* Drop one reference and NULL the caller's pointer. Underflow aborts. */
void msg_unref(msg_t **mp);

/* The complete frame (header + payload) and the payload alone. */
const unsigned char *msg_frame(const msg_t *m, size_t *len);
const unsigned char *msg_payload(const msg_t *m, size_t *len);
/* Bytes charged to a queue for m: its frame length; for a placeholder 0,
 * or its content's frame length once filled with msg_fill_counted. It
 * changes only in that fill, which the queue holding m charges at the same
 * time (cq_fill), so push + fill and pop charge the same. */
size_t msg_size(const msg_t *m);

#endif
