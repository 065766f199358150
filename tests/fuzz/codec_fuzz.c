/*
 * codec_fuzz — libFuzzer target for codec_decode_json. Any input must
 * decode or fail cleanly, without leaks; when it decodes, what the encoders
 * make of the request must be JSON that jansson accepts back with the same
 * values, so the decoder and the encoders agree on what is valid.
 *
 * Build (not part of meson's default build):
 *   clang-14 -g -fsanitize=fuzzer,address,undefined -Iserver tests/fuzz/codec_fuzz.c \
 *     server/codec.c server/textmode.c server/msg.c server/util.c server/log.c \
 *     -ljansson -o /tmp/cf
 *   mkdir -p /tmp/cf-new && /tmp/cf -max_total_time=30 /tmp/cf-new tests/fuzz/corpus/codec
 * (libFuzzer adds what it finds to the first directory; naming the seed
 * directory first would fill the source tree with generated inputs.)
 */
#include <jansson.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "codec.h"
#include "msg.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static json_t *parse(msg_t *m)
{
    size_t n;
    const unsigned char *p = msg_payload(m, &n);
    json_t *j = json_loadb((const char *)p, n, JSON_REJECT_DUPLICATES, NULL);
    if (!j || !json_is_object(j))
        abort(); /* an encoder produced invalid JSON */
    return j;
}

static void check_str(json_t *o, const char *key, const char *want, size_t len)
{
    json_t *v = json_object_get(o, key);
    if (!json_is_string(v) || json_string_length(v) != len ||
        memcmp(json_string_value(v), want, len) != 0)
        abort();
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static const struct codec_limits lim = {.max_text = 4000};
    struct req r;
    char msg[256];

    enum err_code rc = codec_decode_json((const char *)data, size, &lim, &r, msg, sizeof(msg));
    if (rc != ERR_NONE) {
        if (r.text || r.token || !msg[0])
            abort();
        /* the error frame, with whatever ref was salvaged, is valid JSON */
        msg_t *e = codec_error(FMT_JSON, rc, msg, r.ref, -1);
        json_decref(parse(e));
        msg_unref(&e);
        return 0;
    }

    msg_t *p = codec_pong(FMT_JSON, r.ref);
    json_t *j = parse(p);
    if (r.ref[0] && !json_object_get(j, "ref"))
        abort();
    json_decref(j);
    msg_unref(&p);

    if (r.type == REQ_SEND || r.type == REQ_DM) {
        struct chat_msg m = {
            .room = r.room[0] ? r.room : "dm:a:b",
            .seq = 1,
            .from = "a",
            .text = r.text,
            .text_len = r.text_len,
            .ts = 0,
            .id = r.id,
        };
        msg_t *f = codec_message(FMT_JSON, &m);
        j = parse(f);
        check_str(j, "text", r.text, r.text_len);
        if (r.id[0])
            check_str(j, "id", r.id, strlen(r.id));
        json_decref(j);
        msg_unref(&f);
        f = codec_message(FMT_TEXT, &m);
        size_t n;
        const unsigned char *t = msg_payload(f, &n);
        if (memchr(t, '\n', n) || memchr(t, '\r', n))
            abort(); /* one event, one line */
        msg_unref(&f);
    }
    req_release(&r);
    return 0;
}
