/*
 * textmode_fuzz — libFuzzer target for codec_decode_text. The first input
 * byte picks the current room (none, a public room or a DM room); the rest
 * is the line. Any line must decode or fail cleanly without leaks, and a
 * decoded send must render as exactly one text-mode line.
 *
 * Build (not part of meson's default build):
 *   clang-14 -g -fsanitize=fuzzer,address,undefined -Iserver tests/fuzz/textmode_fuzz.c \
 *     server/codec.c server/textmode.c server/msg.c server/util.c server/log.c \
 *     -ljansson -o /tmp/tf
 *   mkdir -p /tmp/tf-new && /tmp/tf -max_total_time=30 /tmp/tf-new tests/fuzz/corpus/textmode
 * (libFuzzer adds what it finds to the first directory; naming the seed
 * directory first would fill the source tree with generated inputs.)
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "codec.h"
#include "msg.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static const char *const rooms[] = {"", "general", "dm:alice:bob"};
    static const struct codec_limits lim = {.max_text = 64};
    struct req r;
    char msg[256];

    if (size == 0)
        return 0;
    const char *room = rooms[data[0] % 3];
    enum err_code rc = codec_decode_text((const char *)data + 1, size - 1, room, &lim, &r, msg,
                                         sizeof(msg));
    if (rc != ERR_NONE) {
        if (r.text || r.token || !msg[0])
            abort();
        msg_t *e = codec_error(FMT_TEXT, rc, msg, NULL, -1);
        size_t n;
        const unsigned char *t = msg_payload(e, &n);
        if (memchr(t, '\n', n))
            abort();
        msg_unref(&e);
        return 0;
    }
    if (r.type == REQ_SEND) {
        if (!r.room[0] || !r.text || r.text_len == 0 || memchr(r.text, '\n', r.text_len))
            abort();
    }
    if (r.type == REQ_SEND || r.type == REQ_DM) {
        struct chat_msg m = {.room = r.room[0] ? r.room : "dm:alice:bob", .seq = 1,
                             .from = "alice", .text = r.text, .text_len = r.text_len};
        msg_t *f = codec_message(FMT_TEXT, &m);
        size_t n;
        const unsigned char *t = msg_payload(f, &n);
        for (size_t i = 0; i < n; i++) {
            if (t[i] < 0x20 || t[i] == 0x7f)
                abort();
        }
        msg_unref(&f);
    }
    req_release(&r);
    return 0;
}
