/*
 * libFuzzer target for srpayload_parse (the Redis engine's published
 * event): whatever the bytes, parsing reads only within them, and an
 * accepted payload's fields lie in order inside it, within their bounds,
 * with no NUL in room, from or id and a frame that is "{...}" to the end.
 * Then a payload built from the accepted fields parses back to them.
 *
 * Build and run: tools/fuzz srpayload SECONDS (or by hand:
 *   clang-14 -g -fsanitize=fuzzer,address,undefined -Iserver \
 *       tests/fuzz/srpayload_fuzz.c server/srpayload.c -o /tmp/sf
 *   mkdir -p /tmp/sf-new && /tmp/sf -max_total_time=60 /tmp/sf-new tests/fuzz/corpus/srpayload)
 */
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "codec.h"
#include "srpayload.h"
#include "store.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static void check(int cond)
{
    if (!cond)
        abort();
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    char *in = malloc(size ? size : 1); /* exact size, so ASan sees any over-read */
    if (size)
        memcpy(in, data, size);
    struct srpayload pl;
    if (!srpayload_parse(in, size, &pl)) {
        free(in);
        return 0;
    }
    const char *end = in + size;
    check(pl.seq >= 1 && pl.ts >= 0);
    check(pl.room_len >= 1 && pl.room_len <= CODEC_ROOMID_MAX);
    check(pl.from_len >= 1 && pl.from_len <= CODEC_USER_MAX);
    check(pl.id_len <= CODEC_ID_MAX);
    check(pl.kind >= 0 && pl.kind <= STORE_KIND_MAX && pl.body_len <= STORE_BODY_MAX);
    check(pl.room > in && pl.from == pl.room + pl.room_len && pl.id == pl.from + pl.from_len);
    check((pl.body == NULL) == (pl.body_len == 0));
    check(pl.frame == pl.id + pl.id_len + pl.text_len + pl.body_len);
    check(!pl.body || pl.body == pl.text + pl.text_len);
    check(pl.frame_len >= 2 && pl.frame + pl.frame_len == end);
    check(pl.frame[0] == '{' && pl.frame[pl.frame_len - 1] == '}');
    check(!memchr(pl.room, '\0', pl.room_len) && !memchr(pl.from, '\0', pl.from_len));
    check(!pl.id_len || !memchr(pl.id, '\0', pl.id_len));

    /* what a publisher writes from these fields reads back the same */
    char hdr[256];
    int pl0 = snprintf(hdr, sizeof(hdr), "m%" PRIu64 "\n", pl.seq);
    int hl = srpayload_header(hdr + pl0, sizeof(hdr) - (size_t)pl0, &pl);
    check(hl > 0);
    hl += pl0;
    size_t rest = (size_t)(end - pl.text), n = (size_t)hl + rest;
    char *again = malloc(n);
    memcpy(again, hdr, (size_t)hl);
    memcpy(again + hl, pl.text, rest);
    struct srpayload p2;
    check(srpayload_parse(again, n, &p2));
    check(p2.seq == pl.seq && p2.ts == pl.ts && p2.room_len == pl.room_len &&
          p2.from_len == pl.from_len && p2.id_len == pl.id_len && p2.text_len == pl.text_len &&
          p2.kind == pl.kind && p2.body_len == pl.body_len && p2.frame_len == pl.frame_len);
    check(memcmp(p2.room, pl.room, (size_t)(end - pl.room)) == 0);
    free(again);
    free(in);
    return 0;
}
