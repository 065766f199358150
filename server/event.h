/*
 * event — the unit a room's log is made of.
 *
 * Every change to a room is an event with the room's next seq: today only
 * chat messages (EV_MESSAGE); protocol v1.1 adds membership, settings,
 * edits, deletes and reactions as kinds of their own, stored, replayed by
 * join {since} and fanned out like a message. The storage seam (store.h)
 * stores and reads events without knowing the kinds: the fields below are
 * what every kind has, and `body` carries whatever else a kind needs, as
 * opaque bytes the codec that wrote them reads back. Every engine stores
 * any kind 0..255 and reads it back exactly (kind, text, body bytes and
 * length); only the broker and the codecs know what a kind means.
 *
 * A leaf: plain data, no functions.
 */
#ifndef PARLEY_EVENT_H
#define PARLEY_EVENT_H

#include <stddef.h>
#include <stdint.h>

enum room_event_kind {
    EV_MESSAGE = 0, /* a chat message: text */
    /* v1.1 (not yet): EV_MEMBER, EV_ROOM, EV_EDIT, EV_DELETE, EV_REACT */
};

/* Strings are borrowed: whoever hands an event on says how long they live. */
struct room_event {
    enum room_event_kind kind; /* 0..255 (STORE_KIND_MAX); 0 is a message */
    const char *room;
    uint64_t seq;        /* the room's seq of this event, from 1, gapless */
    const char *from;    /* the user who caused it */
    int64_t ts;          /* ms since epoch */
    const char *id;      /* the client's idempotency id; "" or NULL: none */
    const char *text;    /* the text (text_len bytes, NUL-terminated): required for
                            EV_MESSAGE; other kinds may leave it NULL (read back as "") */
    size_t text_len;
    const void *body;    /* opaque bytes (body_len, may contain NULs), stored as is; NULL
                            or 0 bytes: none (read back as NULL, 0). At most
                            STORE_BODY_MAX (store.h). A message has none today */
    size_t body_len;
};

#endif
