/*
 * libFuzzer target for pathres_resolve: whatever the input, an accepted
 * result is a plain relative path that cannot leave the web root, and
 * resolving is deterministic and respects the output size it is given.
 *
 * Build and run (not part of meson; see tests/fuzz/corpus/pathres for seeds):
 *   clang-14 -fsanitize=fuzzer,address,undefined -Iserver tests/fuzz/pathres_fuzz.c \
 *       server/pathres.c server/util.c -o /tmp/pf
 *   /tmp/pf -max_total_time=20 tests/fuzz/corpus/pathres
 */
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "pathres.h"
#include "util.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static void check(int cond)
{
    if (!cond)
        abort();
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    char out[PATHRES_OUT_MAX], out2[PATHRES_OUT_MAX], small[8];
    char *in = malloc(size ? size : 1); /* exact size, so ASan sees any over-read */

    memcpy(in, data, size);
    int rc = pathres_resolve(in, size, out, sizeof(out));
    check(rc == 0 || rc == -1);
    if (rc == -1) {
        check(out[0] == '\0');
        goto out_in;
    }

    size_t n = strnlen(out, sizeof(out));
    check(n > 0 && n < sizeof(out));
    check(out[0] != '/');
    check(out[n - 1] != '/');
    check(strstr(out, "..") == NULL);
    check(strstr(out, "//") == NULL);
    check(strchr(out, '\\') == NULL);
    check(size <= PATHRES_MAX_IN && size > 0 && in[0] == '/');
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)out[i];
        check(c >= 0x20 && c != 0x7f);
        /* no segment starts with '.' (hidden files, ".", "..") */
        check(c != '.' || (i > 0 && out[i - 1] != '/'));
    }
    check(utf8_count(out, n) >= 0);

    /* deterministic */
    check(pathres_resolve(in, size, out2, sizeof(out2)) == 0);
    check(strcmp(out, out2) == 0);

    /* a result free of '%', '?' and '#' resolves to itself */
    if (!strpbrk(out, "%?#")) {
        char again[PATHRES_OUT_MAX + 1];
        again[0] = '/';
        memcpy(again + 1, out, n + 1);
        check(pathres_resolve(again, n + 1, out2, sizeof(out2)) == 0);
        check(strcmp(out, out2) == 0);
    }

    /* a short buffer either holds the same answer or gets a clean refusal */
    rc = pathres_resolve(in, size, small, sizeof(small));
    if (rc == 0)
        check(strcmp(small, out) == 0);
    else
        check(small[0] == '\0' && n >= sizeof(small));

out_in:
    free(in);
    return 0;
}
