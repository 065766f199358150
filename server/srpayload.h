/*
 * srpayload — the Redis engine's published event, as a receiving node
 * reads it: "m<seq>\n<ts> <kind> <room len> <from len> <id len> <text len>
 * <body len>\n" then <room><from><id><text><body><frame> (APPEND_LUA in
 * store_redis.c writes it). Fields are taken by length, without parsing
 * the JSON frame.
 *
 * Its own module so the parser can be fuzzed alone (tests/fuzz): the
 * payload comes from Redis, which is trusted, but a bug or another version
 * of parleyd on the same Redis must not crash a node.
 */
#ifndef PARLEY_SRPAYLOAD_H
#define PARLEY_SRPAYLOAD_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* Views into the payload (not NUL-terminated). room, from and id hold no
 * NUL; text is any bytes; the frame starts with '{' and ends the payload
 * with '}'. */
struct srpayload {
    uint64_t seq; /* >= 1 */
    int64_t ts;   /* >= 0 */
    int kind;     /* 0 .. STORE_KIND_MAX (0: a message) */
    const char *room, *from, *id, *text, *body, *frame;
    size_t room_len, from_len, id_len, text_len, body_len, frame_len;
};

/* Parse len bytes of payload into *out; false if malformed (room 1 ..
 * CODEC_ROOMID_MAX bytes, from 1 .. CODEC_USER_MAX, id 0 .. CODEC_ID_MAX,
 * body 0 .. STORE_BODY_MAX (any bytes), the lengths within the payload).
 * Thread: any. */
bool srpayload_parse(const char *payload, size_t len, struct srpayload *out);

/* The header a publisher writes for p's ts, kind, room, from, id and the
 * text and body lengths (APPEND_LUA puts "m<seq>\n" before it and the
 * text, body and frame after): "<ts> <kind> <room len> <from len> <id len>
 * <text len> <body len>\n<room><from><id>". Its length, or -1 if it does
 * not fit in size bytes (with a NUL) or ts is negative. Thread: any. */
int srpayload_header(char *out, size_t size, const struct srpayload *p);

#endif
