/*
 * srpayload — reading the Redis engine's published event (srpayload.h).
 */
#include "srpayload.h"

#include <inttypes.h>
#include <stdio.h>
#include <string.h>

#include "codec.h"
#include "store.h"

/* Reads a decimal number ending at `end` (a space or newline) from *p,
 * advancing past the separator; false if malformed. */
static bool take_num(const char **p, const char *lim, char end, uint64_t *out)
{
    uint64_t v = 0;
    const char *q = *p;
    if (q >= lim || *q < '0' || *q > '9')
        return false;
    for (; q < lim && *q != end; q++) {
        if (*q < '0' || *q > '9' || v > UINT64_MAX / 10 - 1)
            return false;
        v = v * 10 + (uint64_t)(*q - '0');
    }
    if (q >= lim)
        return false;
    *p = q + 1;
    *out = v;
    return true;
}

bool srpayload_parse(const char *payload, size_t len, struct srpayload *out)
{
    const char *p = payload + 1, *lim = payload + len;
    uint64_t seq, ts, kind, rl, fl, il, xl, bl;

    if (len < 2 || payload[0] != 'm' || !take_num(&p, lim, '\n', &seq) || !seq ||
        !take_num(&p, lim, ' ', &ts) || ts > INT64_MAX || !take_num(&p, lim, ' ', &kind) ||
        kind > STORE_KIND_MAX || !take_num(&p, lim, ' ', &rl) ||
        !take_num(&p, lim, ' ', &fl) || !take_num(&p, lim, ' ', &il) ||
        !take_num(&p, lim, ' ', &xl) || !take_num(&p, lim, '\n', &bl))
        return false;
    size_t left = (size_t)(lim - p);
    /* every length but the text's is bounded, so the sums cannot wrap */
    if (rl == 0 || rl > CODEC_ROOMID_MAX || fl == 0 || fl > CODEC_USER_MAX ||
        il > CODEC_ID_MAX || bl > STORE_BODY_MAX || xl > left ||
        rl + fl + il + bl + 2 > left - xl)
        return false;
    const char *room = p, *from = room + rl, *id = from + fl, *text = id + il;
    const char *body = text + xl, *frame = body + bl;
    if (frame[0] != '{' || lim[-1] != '}') /* an object, whole */
        return false;
    if (memchr(room, '\0', rl) || memchr(from, '\0', fl) || (il && memchr(id, '\0', il)))
        return false;
    *out = (struct srpayload){.seq = seq, .ts = (int64_t)ts, .kind = (int)kind, .room = room,
                              .from = from, .id = id, .text = text, .body = bl ? body : NULL,
                              .frame = frame, .room_len = rl, .from_len = fl, .id_len = il,
                              .text_len = xl, .body_len = bl,
                              .frame_len = (size_t)(lim - frame)};
    return true;
}

int srpayload_header(char *out, size_t size, const struct srpayload *p)
{
    if (p->ts < 0)
        return -1;
    int n = snprintf(out, size, "%" PRId64 " %d %zu %zu %zu %zu %zu\n%.*s%.*s%.*s", p->ts, p->kind,
                     p->room_len, p->from_len, p->id_len, p->text_len, p->body_len,
                     (int)p->room_len, p->room, (int)p->from_len, p->from, (int)p->id_len,
                     p->id);
    return n < 0 || (size_t)n >= size ? -1 : n;
}
