/*
 * event — the unit a room's log is made of.
 *
 * Every change to a room is an event with the room's next seq: today only
 * chat messages (EV_MESSAGE); protocol v1.1 adds membership, settings,
 * edits, deletes and reactions as kinds of their own, stored, replayed by
 * join {since} and fanned out like a message. The storage seam (store.h)
 * stores and reads events without knowing the kinds: the fields below are
 * what every kind has, and `body` carries whatever else a kind needs, as
 * opaque bytes the codec that wrote them reads back.
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
    enum room_event_kind kind;
    const char *room;
    uint64_t seq;        /* the room's seq of this event, from 1, gapless */
    const char *from;    /* the user who caused it */
    int64_t ts;          /* ms since epoch */
    const char *id;      /* the client's idempotency id; "" or NULL: none */
    const char *text;    /* EV_MESSAGE: the text (text_len bytes, NUL-terminated) */
    size_t text_len;
    const void *body;    /* other kinds: opaque, stored as is; NULL for EV_MESSAGE */
    size_t body_len;
};

#endif
