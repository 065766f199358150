/*
 * srpayload — the Redis engine's published event, as a receiving node
 * reads it: "m<seq>\n<ts> <room len> <from len> <id len> <text len>\n"
 * then <room><from><id><text><frame> (APPEND_LUA in store_redis.c writes
 * it). Fields are taken by length, without parsing the JSON frame.
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
    const char *room, *from, *id, *text, *frame;
    size_t room_len, from_len, id_len, text_len, frame_len;
};

/* Parse len bytes of payload into *out; false if malformed (room 1 ..
 * CODEC_ROOMID_MAX bytes, from 1 .. CODEC_USER_MAX, id 0 .. CODEC_ID_MAX,
 * the lengths within the payload). Thread: any. */
bool srpayload_parse(const char *payload, size_t len, struct srpayload *out);

#endif
